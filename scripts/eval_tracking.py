#!/usr/bin/env python
"""Score the tracker on the bundled fly clip against the labels' own track ids.

    python scripts/eval_tracking.py                        # detect once (cached), then track
    python scripts/eval_tracking.py --steps 1 3 5 --json /tmp/tracking.json
    python scripts/eval_tracking.py --smooth 0.5          # with keypoint smoothing

The bundled model runs once over the clip's 1500 frames and its detections are cached
(``--detections``, default /tmp/fly_dets.json), down to ``--cache-threshold`` so the tracker's
low-score pass has something to work with. Frames are independent, so processing every 3rd or
5th frame (what the node does under load) reuses the cache. For each step the tracker runs over
the processed frames and is scored with CLEAR-MOT (MOTA, identity switches) and IDF1
(unipose_model/tracking_metrics.py) over all frames and over the held-out frames 1200-1499.
A bare IoU-Hungarian matcher (``iou``) is scored beside it for scale. With ``--smooth`` the
keypoint PCK@0.2 with and without smoothing is reported too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("UNIPOSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
LABELS = SHARED / "lab" / "fly_clip" / "clip_keypoints_coco.json"
HELD_OUT_START = 1200


def detect_clip(checkpoint: str, video: str, num_frames: int, cache_threshold: float, start: int = 0) -> dict:
    """Run the Predictor over frames start..num_frames-1; keep detections down to ``cache_threshold``."""
    import cv2

    from unipose_model.predictor import Predictor

    predictor = Predictor(checkpoint=checkpoint, device="cpu")
    own_threshold = predictor.box_threshold
    predictor.box_threshold = min(own_threshold, cache_threshold)
    cap = cv2.VideoCapture(video)
    if start:
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames, t0 = {}, time.perf_counter()
    for index in range(start, num_frames):
        ok, frame = cap.read()
        if not ok:
            raise IOError(f"cannot read frame {index} of {video}")
        instances = predictor.predict(frame, "fly", color="bgr")
        frames[str(index)] = [inst.to_coco(index, category_id=1) for inst in instances]
        if index % 100 == 99:
            print(f"  detected {index + 1}/{num_frames} frames ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    cap.release()
    return {"checkpoint": str(predictor.checkpoint), "video": video, "box_threshold": own_threshold,
            "cache_threshold": predictor.box_threshold, "frames": frames}


def load_or_detect(path: Path, checkpoint: str, video: str, num_frames: int, cache_threshold: float,
                   redetect: bool = False) -> dict:
    if path.exists() and not redetect:
        cached = json.loads(path.read_text())
        if len(cached["frames"]) >= num_frames and cached["cache_threshold"] <= cache_threshold:
            return cached
        print(f"{path} does not cover {num_frames} frames down to score {cache_threshold}; detecting again",
              file=sys.stderr)
    print(f"detecting {num_frames} frames of {video} (cached in {path})", file=sys.stderr)
    cached = detect_clip(checkpoint, video, num_frames, cache_threshold)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached))
    return cached


class _Det:
    """A cached detection in the shape the tracker reads."""

    def __init__(self, entry: dict):
        x, y, w, h = entry["bbox"]
        self.box = (x, y, x + w, y + h)
        self.score = float(entry["score"])
        self.keypoints = np.asarray(entry["keypoints"], float).reshape(-1, 3)
        self.class_index = 0
        self.track_id = None


def ground_truth(frames: list[int]) -> list[dict]:
    """Per processed frame: {label track_id: box xyxy}."""
    labels = json.loads(LABELS.read_text())
    by_frame: dict[int, dict] = {}
    for a in labels["annotations"]:
        x, y, w, h = a["bbox"]
        by_frame.setdefault(a["image_id"], {})[int(a["track_id"])] = (x, y, x + w, y + h)
    return [by_frame.get(f, {}) for f in frames]


def run_tracker(cached: dict, frames: list[int], **config) -> tuple[list[dict], list[dict], float]:
    """Hypothesis frames {track_id: box}, the tracked detections as COCO results, seconds/frame."""
    from unipose_model.tracking import Tracker

    config.setdefault("high_threshold", cached["box_threshold"])
    tracker = Tracker(**config)
    hyp, results, seconds = [], [], 0.0
    for f in frames:
        dets = [_Det(e) for e in cached["frames"][str(f)]]
        t0 = time.perf_counter()
        tracked = tracker.update(dets)
        seconds += time.perf_counter() - t0
        frame = {}
        for d in tracked:
            if d.track_id is not None and d.track_id > 0:
                frame[d.track_id] = d.box
                x0, y0, x1, y1 = d.box
                results.append({"image_id": f, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "score": d.score, "keypoints": np.asarray(d.keypoints).reshape(-1).tolist(),
                                "track_id": d.track_id})
        hyp.append(frame)
    return hyp, results, seconds / max(1, len(frames))


def run_iou_baseline(cached: dict, frames: list[int], iou_threshold: float = 0.3) -> list[dict]:
    """For scale: a bare frame-to-frame IoU-Hungarian matcher; an unmatched detection is a new id."""
    from scipy.optimize import linear_sum_assignment

    from unipose_model.box_ops import box_iou

    hyp, previous, next_id = [], {}, 1
    for f in frames:
        boxes = [_Det(e).box for e in cached["frames"][str(f)] if e["score"] >= cached["box_threshold"]]
        current = {}
        if previous and boxes:
            ids = list(previous)
            iou = box_iou(np.array([previous[i] for i in ids]), np.array(boxes))
            for r, c in zip(*linear_sum_assignment(-iou)):
                if iou[r, c] >= iou_threshold:
                    current[ids[r]] = boxes[c]
        taken = {tuple(b) for b in current.values()}
        for b in boxes:
            if tuple(b) not in taken:
                current[next_id] = b
                next_id += 1
        hyp.append(current)
        previous = current
    return hyp


def keypoint_pck(results: list[dict], frames: list[int], thr: float = 0.2) -> float:
    """PCK@thr of the tracked keypoints (unipose_train.evaluation.pck, as the model card)."""
    from unipose_train.dataset import SourceConfig, load_source
    from unipose_train.evaluation.pck import pck

    gt = load_source(SourceConfig(ann=str(LABELS), images=str(LABELS.parent), name="fly_clip"))
    wanted = set(frames)
    gt.images = [im for im in gt.images if im.id in wanted]
    gt.instances = [i for i in gt.instances if i.image_id in wanted]
    return float(pck(gt, results, thr=thr)["PCK"])


def score(gt: list[dict], hyp: list[dict], frames: list[int], start: int = 0) -> dict:
    from unipose_model.tracking_metrics import evaluate_tracking

    keep = [i for i, f in enumerate(frames) if f >= start]
    out = evaluate_tracking([gt[i] for i in keep], [hyp[i] for i in keep]).as_dict()
    for s in out["switches"]:
        s["frame"] = frames[keep[s["frame"]]]
    return out


def main(argv=None) -> int:
    from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_VIDEO

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(BUNDLED_CHECKPOINT))
    p.add_argument("--video", default=str(BUNDLED_VIDEO))
    p.add_argument("--num-frames", type=int, default=1500)
    p.add_argument("--detections", default="/tmp/fly_dets.json", help="detection cache (written when missing)")
    p.add_argument("--redetect", action="store_true", help="run the detector again even when cached")
    p.add_argument("--cache-threshold", type=float, default=0.05,
                   help="keep detections down to this score in the cache (the tracker's low pass)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 3, 5], help="process every n-th frame")
    p.add_argument("--low-threshold", type=float, default=0.1)
    p.add_argument("--min-hits", type=int, default=2)
    p.add_argument("--max-age", type=int, default=30)
    p.add_argument("--keypoint-weight", type=float, default=0.5)
    p.add_argument("--report-low", action="store_true",
                   help="also report the low-score detections that continue a track (ByteTrack's output)")
    p.add_argument("--smooth", type=float, nargs="*", default=[],
                   help="also measure keypoint smoothing at these weights (PCK@0.2 with and without)")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)  # 2 threads lose to 1 on a shared 2-core machine

    cached = load_or_detect(Path(args.detections), args.checkpoint, args.video, args.num_frames,
                            args.cache_threshold, args.redetect)
    config = dict(low_threshold=args.low_threshold, min_hits=args.min_hits, max_age=args.max_age,
                  keypoint_weight=args.keypoint_weight, report_low=args.report_low)
    report = {"checkpoint": cached["checkpoint"], "box_threshold": cached["box_threshold"],
              "cache_threshold": cached["cache_threshold"], "tracker": config, "steps": {}}
    for step in args.steps:
        frames = list(range(0, args.num_frames, step))
        gt = ground_truth(frames)
        hyp, results, seconds = run_tracker(cached, frames, **config)
        baseline = run_iou_baseline(cached, frames)
        row = {"frames": len(frames), "tracker_ms_per_frame": round(seconds * 1e3, 4),
               "all": score(gt, hyp, frames), f"held_out_{HELD_OUT_START}+": score(gt, hyp, frames, HELD_OUT_START),
               "iou_baseline_all": score(gt, baseline, frames),
               "iou_baseline_held_out": score(gt, baseline, frames, HELD_OUT_START)}
        if args.smooth:
            row["PCK@0.2"] = {"off": round(keypoint_pck(results, frames), 4)}
            held = [f for f in frames if f >= HELD_OUT_START]
            row["PCK@0.2_held_out"] = {"off": round(keypoint_pck(results, held), 4)}
            for a in args.smooth:
                _, smoothed, _ = run_tracker(cached, frames, smoothing=a, **config)
                row["PCK@0.2"][str(a)] = round(keypoint_pck(smoothed, frames), 4)
                row["PCK@0.2_held_out"][str(a)] = round(keypoint_pck(smoothed, held), 4)
        report["steps"][str(step)] = row
        a, h, b = row["all"], row[f"held_out_{HELD_OUT_START}+"], row["iou_baseline_all"]
        print(f"every {step}: {len(frames)} frames, switches {a['id_switches']} (held-out {h['id_switches']}), "
              f"IDF1 {a['IDF1']:.4f} ({h['IDF1']:.4f}), MOTA {a['MOTA']:.4f} ({h['MOTA']:.4f}); "
              f"IoU baseline: switches {b['id_switches']}, IDF1 {b['IDF1']:.4f}, MOTA {b['MOTA']:.4f}; "
              f"tracker {row['tracker_ms_per_frame']:.3f} ms/frame", file=sys.stderr)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
