"""Identities across frames: a tracking-by-detection multi-object tracker for keypoint instances.

    tracker = Tracker(high_threshold=0.3)
    for frame in video:
        instances = tracker.update(predictor.predict(frame, "fly"))   # each has .track_id

The ByteTrack recipe (Zhang et al., 2022) with keypoints in the similarity:
  * each track has a constant-velocity Kalman filter on its box centre and size (cx, cy, w, h);
  * similarity of a track and a detection = mean of the IoU of the predicted box with the detected
    box and an OKS-like keypoint similarity (the track's last keypoints moved with the predicted
    box); detections of another class never match;
  * Hungarian assignment (scipy) in passes: high-score detections against active and lost tracks,
    then low-score detections (below the user's threshold, which the detector is asked to keep)
    against the active tracks still unmatched, then the remaining high-score detections against
    the tentative tracks; unmatched high-score detections start tentative tracks;
  * hysteresis: a track gets its id once matched ``min_hits`` frames in a row (at once in the
    first frame of a stream); a confirmed track that misses is kept "lost" for ``max_age`` frames,
    its box predicted, so a short miss re-finds the same id; a tentative track that misses dies.

Time is counted in calls to :meth:`Tracker.update` (processed frames), as ByteTrack does, so the
filter's velocity is per processed frame; processing every 5th frame works the same way.
Optional keypoint smoothing (``smoothing`` > 0) blends each matched track's keypoints with its
previous ones; scripts/eval_tracking.py measures what it does to accuracy (see
docs/BENCHMARKS.md) rather than assuming it helps.

Pure numpy + scipy: no ROS, no torch.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

UNCONFIRMED = -1  # track_id of a detection whose track has not yet earned an id (birth hysteresis)


@dataclass
class TrackerConfig:
    """Tracker settings. Scores are detection scores in [0, 1]."""

    high_threshold: float = 0.3      # detections at or above: first pass, may start tracks
    low_threshold: float = 0.1       # detections in [low, high): second pass only (ByteTrack)
    match_threshold: float = 0.2     # least similarity of a high-score match
    low_match_threshold: float = 0.4  # least similarity of a low-score match (stricter)
    min_hits: int = 2                # frames in a row before a new track gets its id
    max_age: int = 30                # processed frames a lost track is kept for re-finding
    keypoint_weight: float = 0.5     # share of the keypoint similarity (rest: box IoU)
    oks_sigma: float = 0.2           # keypoint tolerance, a fraction of the box scale (covers motion)
    smoothing: float = 0.0           # 0: off; else the weight of the previous keypoints in [0, 1)

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_threshold <= self.high_threshold <= 1.0:
            raise ValueError(f"need 0 <= low_threshold <= high_threshold <= 1, got "
                             f"{self.low_threshold}, {self.high_threshold}")
        if self.min_hits < 1 or self.max_age < 0:
            raise ValueError(f"min_hits must be >= 1 and max_age >= 0, got {self.min_hits}, {self.max_age}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if not 0.0 <= self.keypoint_weight <= 1.0:
            raise ValueError(f"keypoint_weight must be in [0, 1], got {self.keypoint_weight}")


# ------------------------------------------------------------------------------- motion model
class BoxKalman:
    """Constant-velocity Kalman filter on (cx, cy, w, h); noise scales with the box size
    (the weights of ByteTrack / DeepSORT, which use the height; here the mean side)."""

    _POS, _VEL = 1.0 / 20.0, 1.0 / 160.0
    _F = np.eye(8) + np.eye(8, k=4)
    _H = np.eye(4, 8)

    def __init__(self, box: np.ndarray) -> None:
        z = _xyxy_to_cxcywh(box)
        s = self._scale(z)
        self.x = np.concatenate([z, np.zeros(4)])
        std = np.r_[2 * self._POS * s * np.ones(4), 10 * self._VEL * s * np.ones(4)]
        self.P = np.diag(std ** 2)

    @staticmethod
    def _scale(z: np.ndarray) -> float:
        return max(1.0, 0.5 * (abs(z[2]) + abs(z[3])))

    def predict(self) -> None:
        s = self._scale(self.x[:4])
        q = np.r_[self._POS * s * np.ones(4), self._VEL * s * np.ones(4)] ** 2
        self.x = self._F @ self.x
        self.P = self._F @ self.P @ self._F.T + np.diag(q)
        self.x[2:4] = np.maximum(self.x[2:4], 1.0)  # a box never shrinks to nothing

    def update(self, box: np.ndarray) -> None:
        z = _xyxy_to_cxcywh(box)
        r = (self._POS * self._scale(z) * np.ones(4)) ** 2
        S = self._H @ self.P @ self._H.T + np.diag(r)
        K = np.linalg.solve(S, self._H @ self.P).T
        self.x = self.x + K @ (z - self._H @ self.x)
        self.P = (np.eye(8) - K @ self._H) @ self.P

    @property
    def box(self) -> np.ndarray:
        cx, cy, w, h = self.x[:4]
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _xyxy_to_cxcywh(box) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1.0), max(y1 - y0, 1.0)])


# ------------------------------------------------------------------------------- similarity
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (N, 4) with every box of `b` (M, 4), xyxy -> (N, M)."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def keypoint_similarity(a: np.ndarray, b: np.ndarray, scale: np.ndarray, sigma: float = 0.1) -> np.ndarray:
    """OKS-like similarity of keypoint sets `a` (N, K, 2) and `b` (M, K, 2): the mean over the
    keypoints of exp(-d^2 / (2 (sigma * scale)^2)), `scale` (N, M) a box size in pixels. Sets of
    different lengths (another class) score 0."""
    if a.shape[1:] != b.shape[1:] or a.shape[1] == 0:
        return np.zeros((len(a), len(b)))
    d2 = ((a[:, None] - b[None]) ** 2).sum(-1)                       # (N, M, K)
    tol = (2.0 * (sigma * np.maximum(scale, 1.0)) ** 2)[..., None]
    return np.exp(-d2 / tol).mean(-1)


# ------------------------------------------------------------------------------- tracks
@dataclass(eq=False)  # compared by identity
class Track:
    kalman: BoxKalman
    keypoints: np.ndarray       # (K, 2), the last matched (smoothed) keypoints
    box: np.ndarray             # the last matched box (xyxy)
    class_index: int
    hits: int = 1               # frames matched in a row
    misses: int = 0             # processed frames since the last match
    track_id: int = UNCONFIRMED
    state: str = "tentative"    # tentative -> confirmed <-> lost -> removed

    def predicted_keypoints(self) -> np.ndarray:
        """The last keypoints moved and scaled with the predicted box."""
        old = _xyxy_to_cxcywh(self.box)
        new = self.kalman.x[:4]
        ratio = new[2:4] / old[2:4]
        return (self.keypoints - old[:2]) * ratio + new[:2]


class Tracker:
    """Gives each detected instance a persistent ``track_id`` across the frames of a stream.

    :meth:`update` takes one frame's instances (unipose_model Instances, or anything with
    ``box``, ``keypoints``, ``score``, ``class_index`` and a ``track_id`` field) and returns the
    ones to report: every high-score detection and the low-score ones that continue a track, each a
    copy with ``track_id`` set (:data:`UNCONFIRMED`, -1, while its track is being confirmed).
    :meth:`reset` starts over (a new prompt, a new video)."""

    def __init__(self, config: TrackerConfig | None = None, **overrides) -> None:
        self.config = dataclasses.replace(config or TrackerConfig(), **overrides)
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []
        self.frame_count = 0
        self._next_id = 1

    @property
    def active_tracks(self) -> list[Track]:
        return [t for t in self.tracks if t.state == "confirmed"]

    def update(self, instances: Sequence) -> list:
        cfg = self.config
        self.frame_count += 1
        for track in self.tracks:
            track.kalman.predict()
        scores = np.array([float(i.score) for i in instances])
        high = [i for i, s in enumerate(scores) if s >= cfg.high_threshold]
        low = [i for i, s in enumerate(scores) if cfg.low_threshold <= s < cfg.high_threshold]
        matched: dict[int, Track] = {}   # detection index -> track

        def associate(dets: list[int], tracks: list[Track], threshold: float) -> tuple[list[int], list[Track]]:
            if not dets or not tracks:
                return dets, tracks
            sim = self._similarity(tracks, [instances[d] for d in dets])
            rows, cols = linear_sum_assignment(-sim)
            used_t, used_d = set(), set()
            for r, c in zip(rows, cols):
                if sim[r, c] >= threshold:
                    matched[dets[c]] = tracks[r]
                    used_t.add(r)
                    used_d.add(c)
            return ([d for j, d in enumerate(dets) if j not in used_d],
                    [t for j, t in enumerate(tracks) if j not in used_t])

        established = [t for t in self.tracks if t.state in ("confirmed", "lost")]
        tentative = [t for t in self.tracks if t.state == "tentative"]
        high_left, tracks_left = associate(high, established, cfg.match_threshold)
        # ByteTrack's second pass: a weak detection may continue a track seen in the last frame
        recent = [t for t in tracks_left if t.state == "confirmed"]
        associate(low, recent, cfg.low_match_threshold)
        high_left, _ = associate(high_left, tentative, cfg.match_threshold)

        first_frame = self.frame_count == 1
        for d, track in matched.items():
            self._match(track, instances[d])
        matched_tracks = {id(t) for t in matched.values()}
        for track in self.tracks:
            if id(track) not in matched_tracks:
                track.misses += 1
                track.hits = 0
                if track.state == "confirmed":
                    track.state = "lost"
                if track.state == "tentative" or track.misses > cfg.max_age:
                    track.state = "removed"
        for d in high_left:
            inst = instances[d]
            track = Track(BoxKalman(np.asarray(inst.box, float)), _xy(inst.keypoints),
                          np.asarray(inst.box, float), int(inst.class_index))
            matched[d] = track
            self.tracks.append(track)
        for track in matched.values():
            if track.state != "confirmed" and (track.hits >= cfg.min_hits or first_frame
                                               or track.track_id != UNCONFIRMED):
                if track.track_id == UNCONFIRMED:
                    track.track_id = self._next_id
                    self._next_id += 1
                track.state = "confirmed"
        self.tracks = [t for t in self.tracks if t.state != "removed"]

        out = []
        for d in sorted(matched, key=lambda d: -scores[d]):
            track = matched[d]
            inst = instances[d]
            changes = {"track_id": track.track_id}
            if cfg.smoothing > 0:
                kpts = np.array(inst.keypoints, dtype=float, copy=True)
                kpts[:, :2] = track.keypoints
                changes["keypoints"] = kpts
            out.append(dataclasses.replace(inst, **changes) if dataclasses.is_dataclass(inst)
                       else _with(inst, changes))
        return out

    def _match(self, track: Track, inst) -> None:
        box = np.asarray(inst.box, float)
        kpts = _xy(inst.keypoints)
        a = self.config.smoothing
        if a > 0 and track.keypoints.shape == kpts.shape:
            kpts = a * track.predicted_keypoints() + (1 - a) * kpts
        track.kalman.update(box)
        track.box, track.keypoints = box, kpts
        track.hits += 1
        track.misses = 0
        if track.state == "lost":
            track.state = "confirmed"

    def _similarity(self, tracks: list[Track], dets: list) -> np.ndarray:
        w = self.config.keypoint_weight
        pred_boxes = np.stack([t.kalman.box for t in tracks])
        det_boxes = np.stack([np.asarray(d.box, float) for d in dets])
        sim = (1.0 - w) * box_iou(pred_boxes, det_boxes)
        if w > 0:
            # the scale of the pair: the geometric mean of the two boxes' mean sides
            sides_t = 0.5 * ((pred_boxes[:, 2] - pred_boxes[:, 0]) + (pred_boxes[:, 3] - pred_boxes[:, 1]))
            sides_d = 0.5 * ((det_boxes[:, 2] - det_boxes[:, 0]) + (det_boxes[:, 3] - det_boxes[:, 1]))
            scale = np.sqrt(np.outer(np.maximum(sides_t, 1), np.maximum(sides_d, 1)))
            by_shape: dict[tuple, list[int]] = {}
            for j, d in enumerate(dets):
                by_shape.setdefault(_xy(d.keypoints).shape, []).append(j)
            for shape, cols in by_shape.items():
                rows = [i for i, t in enumerate(tracks) if t.keypoints.shape == shape]
                if not rows or shape[0] == 0:
                    continue
                a = np.stack([tracks[i].predicted_keypoints() for i in rows])
                b = np.stack([_xy(dets[j].keypoints) for j in cols])
                sim[np.ix_(rows, cols)] += w * keypoint_similarity(a, b, scale[np.ix_(rows, cols)],
                                                                   self.config.oks_sigma)
        same_class = (np.array([t.class_index for t in tracks])[:, None]
                      == np.array([int(d.class_index) for d in dets])[None, :])
        return np.where(same_class, sim, 0.0)


def _xy(keypoints) -> np.ndarray:
    k = np.asarray(keypoints, dtype=float)
    return k.reshape(-1, k.shape[-1] if k.ndim > 1 else 3)[:, :2].copy()


def _with(inst, changes: dict):
    """A shallow copy of a non-dataclass instance with `changes` applied."""
    import copy

    out = copy.copy(inst)
    for k, v in changes.items():
        setattr(out, k, v)
    return out


@contextmanager
def keep_low_scores(predictor, low_threshold: float):
    """While tracking, let `predictor` also return the detections in [low_threshold, its own
    threshold) for the tracker's second pass; yields its own threshold (the tracker's
    ``high_threshold``, so what the user asked for still decides which objects start tracks)."""
    own = float(predictor.box_threshold)
    predictor.box_threshold = min(own, float(low_threshold))
    try:
        yield own
    finally:
        predictor.box_threshold = own
