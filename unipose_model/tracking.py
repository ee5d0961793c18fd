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
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from .box_ops import box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh

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
    # report the low-score detections that continue a track (ByteTrack's output); False: they keep
    # their track alive (its box, its id) but are not returned, so every reported detection passes
    # high_threshold, the user's score threshold
    report_low: bool = False

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
# A constant-velocity Kalman filter on (cx, cy, w, h), as ByteTrack / DeepSORT, with noise that
# scales with the box size (their weights; they scale with the height, here the mean side). F, H,
# Q and R act on each coordinate alone, so the covariance is four independent 2x2 blocks: each
# track's state is a (5, 4) array of rows position, velocity, var(p), cov(p, v), var(v), and every
# track is predicted (and every match updated) at once in closed form.
_POS, _VEL = 1.0 / 20.0, 1.0 / 160.0


def kalman_init(centre_size: np.ndarray) -> np.ndarray:
    """The state of a new track at box (cx, cy, w, h): unknown velocity."""
    s = max(1.0, 0.5 * (abs(centre_size[2]) + abs(centre_size[3])))
    state = np.zeros((5, 4))
    state[0] = centre_size
    state[2] = (2 * _POS * s) ** 2
    state[4] = (10 * _VEL * s) ** 2
    return state


def kalman_predict(states: np.ndarray) -> np.ndarray:
    """(N, 5, 4) states one step ahead."""
    p, v, pp, pv, vv = (states[:, i] for i in range(5))
    s2 = _size(p)[:, None] ** 2
    out = np.empty_like(states)
    out[:, 0] = p + v
    out[:, 1] = v
    out[:, 2] = pp + 2 * pv + vv + _POS ** 2 * s2
    out[:, 3] = pv + vv
    out[:, 4] = vv + _VEL ** 2 * s2
    np.maximum(out[:, 0, 2:4], 1.0, out=out[:, 0, 2:4])  # a box never shrinks to nothing
    return out


def kalman_update(states: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(N, 5, 4) states corrected by measurements z (N, 4) of (cx, cy, w, h)."""
    p, v, pp, pv, vv = (states[:, i] for i in range(5))
    r = (_POS * _size(z))[:, None] ** 2
    gain_p, gain_v = pp / (pp + r), pv / (pp + r)
    innovation = z - p
    out = np.empty_like(states)
    out[:, 0] = p + gain_p * innovation
    out[:, 1] = v + gain_v * innovation
    out[:, 2] = (1 - gain_p) * pp
    out[:, 3] = (1 - gain_p) * pv
    out[:, 4] = vv - gain_v * pv
    return out


def _size(cxcywh: np.ndarray) -> np.ndarray:
    return np.maximum(1.0, 0.5 * (np.abs(cxcywh[:, 2]) + np.abs(cxcywh[:, 3])))


# ------------------------------------------------------------------------------- similarity
def keypoint_similarity(a: np.ndarray, b: np.ndarray, scale: np.ndarray, sigma: float = 0.1) -> np.ndarray:
    """OKS-like similarity of keypoint sets `a` (N, K, 2) and `b` (M, K, 2): the mean over the
    keypoints of exp(-d^2 / (2 (sigma * scale)^2)), `scale` (N, M) a box size in pixels. Sets of
    different lengths (another class) score 0."""
    if a.shape[1:] != b.shape[1:] or a.shape[1] == 0:
        return np.zeros((len(a), len(b)))
    dx = a[:, None, :, 0] - b[None, :, :, 0]                         # (N, M, K)
    dy = a[:, None, :, 1] - b[None, :, :, 1]
    tol = (-0.5 / (sigma * np.maximum(scale, 1.0)) ** 2)[..., None]
    # exp((dx^2 + dy^2) * tol) in place: the same operations in the same order, no temporaries
    dx *= dx
    dy *= dy
    dx += dy
    dx *= tol
    return np.exp(dx, out=dx).sum(-1) / a.shape[1]


# ------------------------------------------------------------------------------- tracks
@dataclass(eq=False)  # compared by identity
class Track:
    kf: np.ndarray              # (5, 4) Kalman state (see kalman_init)
    keypoints: np.ndarray       # (K, 2), the last matched (smoothed) keypoints
    box: np.ndarray             # the last matched box (xyxy)
    centre_size: np.ndarray     # the same box as (cx, cy, w, h)
    class_index: int
    hits: int = 1               # frames matched in a row
    misses: int = 0             # processed frames since the last match
    track_id: int = UNCONFIRMED
    state: str = "tentative"    # tentative -> confirmed <-> lost -> removed

    def predicted_keypoints(self) -> np.ndarray:
        """The last keypoints moved and scaled with the predicted box."""
        old = self.centre_size
        new = self.kf[0]
        return (self.keypoints - old[:2]) * (new[2:4] / old[2:4]) + new[:2]

    @property
    def predicted_box(self) -> np.ndarray:
        return box_cxcywh_to_xyxy(self.kf[0][None])[0]


class Tracker:
    """Gives each detected instance a persistent ``track_id`` across the frames of a stream.

    :meth:`update` takes one frame's instances (unipose_model Instances, or anything with
    ``box``, ``keypoints``, ``score``, ``class_index`` and a ``track_id`` field) and returns the
    ones to report: every high-score detection (and, with ``report_low``, the low-score ones that
    continue a track), each a copy with ``track_id`` set (:data:`UNCONFIRMED`, -1, while its track is being confirmed).
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
        if self.tracks:
            predicted = kalman_predict(np.array([t.kf for t in self.tracks]))
            for track, kf in zip(self.tracks, predicted):
                track.kf = kf
        scores = np.array([float(i.score) for i in instances])
        # per detection, once: boxes as xyxy and (cx, cy, w, h), keypoints (K, 2), class
        boxes = np.array([i.box for i in instances], dtype=float).reshape(-1, 4)
        centre_size = box_xyxy_to_cxcywh(boxes)
        centre_size[:, 2:] = np.maximum(centre_size[:, 2:], 1.0)  # the filter needs a size
        det_xy = [_xy(i.keypoints) for i in instances]
        classes = np.array([int(i.class_index) for i in instances])
        high = [i for i, s in enumerate(scores) if s >= cfg.high_threshold]
        low = [i for i, s in enumerate(scores) if cfg.low_threshold <= s < cfg.high_threshold]
        matched: dict[int, Track] = {}   # detection index -> track
        # one similarity matrix of every track with every detection serves all passes
        candidates = high + low
        full = (self._similarity(self.tracks, boxes, det_xy, classes, candidates)
                if self.tracks and candidates else None)
        row_of = {id(t): i for i, t in enumerate(self.tracks)}

        def associate(dets: list[int], tracks: list[Track], threshold: float) -> tuple[list[int], list[Track]]:
            if not dets or not tracks:
                return dets, tracks
            sim = full[np.array([row_of[id(t)] for t in tracks])[:, None], dets]  # np.ix_, cheaper
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
        if matched:
            dets = list(matched)
            tracks = [matched[d] for d in dets]
            updated = kalman_update(np.array([t.kf for t in tracks]), centre_size[dets])
            for track, kf, d in zip(tracks, updated, dets):
                track.kf = kf
                self._match(track, det_xy[d], boxes[d], centre_size[d])
        self._age_unmatched({id(t) for t in matched.values()})
        for d in high_left:
            track = Track(kalman_init(centre_size[d]), det_xy[d], boxes[d], centre_size[d], int(classes[d]))
            matched[d] = track
            self.tracks.append(track)
        self._confirm(matched.values(), first_frame)
        self.tracks = [t for t in self.tracks if t.state != "removed"]
        return self._results(instances, matched, scores)

    def _age_unmatched(self, matched_tracks: set) -> None:
        """Tracks without a detection this frame: a miss; confirmed ones become lost, tentative
        ones and those missed for longer than max_age are removed."""
        for track in self.tracks:
            if id(track) not in matched_tracks:
                track.misses += 1
                track.hits = 0
                if track.state == "confirmed":
                    track.state = "lost"
                if track.state == "tentative" or track.misses > self.config.max_age:
                    track.state = "removed"

    def _confirm(self, tracks, first_frame: bool) -> None:
        """Birth with hysteresis: a track is confirmed (and gets its id) after min_hits frames,
        at once on the first frame, and again at once when a lost track is found."""
        for track in tracks:
            if track.state != "confirmed" and (track.hits >= self.config.min_hits or first_frame
                                               or track.track_id != UNCONFIRMED):
                if track.track_id == UNCONFIRMED:
                    track.track_id = self._next_id
                    self._next_id += 1
                track.state = "confirmed"

    def _results(self, instances: Sequence, matched: dict, scores: np.ndarray) -> list:
        """The matched detections, best first, with their track ids (and smoothed keypoints)."""
        cfg = self.config
        out = []
        for d in sorted(matched, key=lambda d: -scores[d]):
            if scores[d] < cfg.high_threshold and not cfg.report_low:
                continue
            track = matched[d]
            inst = instances[d]
            changes = {"track_id": track.track_id}
            if cfg.smoothing > 0:
                kpts = np.array(inst.keypoints, dtype=float, copy=True)
                kpts[:, :2] = track.keypoints
                changes["keypoints"] = kpts
            out.append(_with(inst, changes))
        return out

    def _match(self, track: Track, kpts: np.ndarray, box: np.ndarray, centre_size: np.ndarray) -> None:
        a = self.config.smoothing
        if a > 0 and track.keypoints.shape == kpts.shape:
            kpts = a * track.predicted_keypoints() + (1 - a) * kpts
        track.box, track.centre_size, track.keypoints = box, centre_size, kpts
        track.hits += 1
        track.misses = 0
        if track.state == "lost":
            track.state = "confirmed"

    def _similarity(self, tracks: list[Track], boxes: np.ndarray, det_xy: list, classes: np.ndarray,
                    use: list[int]) -> np.ndarray:
        """(tracks, detections) similarity; only the columns in `use` are computed (others 0)."""
        w = self.config.keypoint_weight
        pred_boxes = box_cxcywh_to_xyxy(np.array([t.kf[0] for t in tracks]))
        det_boxes = boxes[use]
        sim = (1.0 - w) * box_iou(pred_boxes, det_boxes)
        if w > 0:
            # the scale of the pair: the geometric mean of the two boxes' mean sides
            sides_t = 0.5 * ((pred_boxes[:, 2] - pred_boxes[:, 0]) + (pred_boxes[:, 3] - pred_boxes[:, 1]))
            sides_d = 0.5 * ((det_boxes[:, 2] - det_boxes[:, 0]) + (det_boxes[:, 3] - det_boxes[:, 1]))
            scale = np.sqrt(np.maximum(sides_t, 1)[:, None] * np.maximum(sides_d, 1)[None, :])  # np.outer
            by_shape: dict[tuple, list[int]] = {}
            for j, d in enumerate(use):
                by_shape.setdefault(det_xy[d].shape, []).append(j)
            for shape, cols in by_shape.items():
                rows = [i for i, t in enumerate(tracks) if t.keypoints.shape == shape]
                if not rows or shape[0] == 0:
                    continue
                # the tracks' last keypoints moved and scaled with their predicted boxes, all at once
                old = np.array([tracks[i].centre_size for i in rows])
                new = np.array([tracks[i].kf[0] for i in rows])
                a = ((np.array([tracks[i].keypoints for i in rows]) - old[:, None, :2])
                     * (new[:, None, 2:4] / old[:, None, 2:4]) + new[:, None, :2])
                b = np.array([det_xy[use[j]] for j in cols])
                block = (np.array(rows)[:, None], np.array(cols))  # np.ix_(rows, cols), cheaper
                sim[block] += w * keypoint_similarity(a, b, scale[block],
                                                                   self.config.oks_sigma)
        same_class = np.array([t.class_index for t in tracks])[:, None] == classes[use][None, :]
        full = np.zeros((len(tracks), len(boxes)))
        full[:, use] = np.where(same_class, sim, 0.0)
        return full


def _xy(keypoints) -> np.ndarray:
    """(K, 2) positions of (K, 3) keypoints (a view: the tracker never writes into it)."""
    k = np.asarray(keypoints, dtype=float)
    return (k if k.ndim == 2 else k.reshape(-1, 3))[:, :2]


def _with(inst, changes: dict):
    """A shallow copy of `inst` with `changes` applied (the input is left as it was); cheaper than
    dataclasses.replace, which re-runs __init__."""
    if hasattr(inst, "__dict__"):
        out = object.__new__(type(inst))
        out.__dict__.update(inst.__dict__)
    else:
        import copy

        out = copy.copy(inst)
    for k, v in changes.items():
        setattr(out, k, v)
    return out
