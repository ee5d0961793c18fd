#!/usr/bin/env python
"""Score the bundled fly model on the held-out frames of the fly clip (frames >= 1200).

    python scripts/eval_fly_demo.py                       # all 300 held-out frames
    python scripts/eval_fly_demo.py --frames 1200:1500:10 --checkpoint outputs/fly_demo/best.pth
    python scripts/eval_fly_demo.py --support-frame 1100 --checkpoint outputs/fly_visual/last.pth
        # 1-shot visual prompt: fly 0 of training frame 1100 with its labelled keypoints is the
        # support; the text prompt is not used

Runs the Predictor exactly as users do (prompt "fly", the checkpoint's own input size and prompt
features) and scores it with unipose_train.evaluation:
  * found: a ground-truth fly is found when a detection overlaps its box with IoU >= 0.5
    (one detection per fly, best score first); "both found" = frames where both flies are;
  * PCK@0.2: keypoint within 0.2 x max(box w, h) of the truth (unipose_train/evaluation/pck.py), also
    per keypoint (which parts the model misses);
  * box AP (COCO) and the count of detections that match no fly (false positives).
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


def frame_range(text: str) -> range:
    parts = [int(p) for p in text.split(":")]
    return range(*parts)


def support_prompt(video: str, frame: int, instance: int = 0):
    """A 1-shot visual prompt: one labelled fly of a (training) frame of the clip."""
    from unipose_model.media import read_video_frame
    from unipose_model.visual_prompt import VisualPrompt, read_support_keypoints

    kpts, names, skeleton, box, _ = read_support_keypoints(LABELS, instance=instance,
                                                           image_name=f"clip.mp4#frame={frame}")
    return VisualPrompt(read_video_frame(video, frame, color="rgb"), kpts, "fly", names, skeleton, box)


def evaluate(checkpoint: str | None, frames: range, video: str, box_threshold: float | None,
             iou_thr: float = 0.5, visual=None, speed_profile: str = "accurate", dtype: str = "float32",
             refine="auto", compile: bool = False, refine_size="auto", heatmap_refiner="auto") -> dict:
    import cv2

    from unipose_train.dataset import SourceConfig, load_source
    from unipose_train.evaluation.report import evaluate_dataset
    from unipose_train.evaluation.support_ranking import found_and_extra
    from unipose_model.predictor import Predictor

    gt = load_source(SourceConfig(ann=str(LABELS), images=str(LABELS.parent), name="fly_clip"))
    wanted = set(frames)
    gt.images = [im for im in gt.images if im.id in wanted]
    gt.instances = [i for i in gt.instances if i.image_id in wanted]
    by_image = gt.instances_by_image()
    kwargs = {} if box_threshold is None else {"box_threshold": box_threshold}
    predictor = Predictor(checkpoint=checkpoint, device="cpu", dtype=dtype, refine=refine, compile=compile,
                          refine_size=refine_size, heatmap_refiner=heatmap_refiner, **kwargs)
    if speed_profile != "accurate":
        from unipose_model.speed import apply_profile
        apply_profile(predictor, speed_profile, predictor.short_side, predictor.max_size)

    cap = cv2.VideoCapture(video)
    cap.set(cv2.CAP_PROP_POS_FRAMES, frames.start)
    results, per_frame, seconds = [], [], []
    for index in range(frames.start, frames.stop):
        ok, frame = cap.read()
        if not ok:
            raise IOError(f"cannot read frame {index} of {video}")
        if index not in wanted:
            continue
        t0 = time.perf_counter()
        if visual is not None:
            instances = predictor.predict(frame, visual_prompt=visual, color="bgr")
        else:
            instances = predictor.predict(frame, "fly", color="bgr")
        seconds.append(time.perf_counter() - t0)
        dets = [inst.to_coco(index, category_id=1) for inst in instances]
        results += dets
        found, extra = found_and_extra(dets, by_image.get(index, []), iou_thr)
        per_frame.append({"frame": index, "detections": len(dets), "found": found, "extra": extra,
                          "flies": len(by_image.get(index, []))})
    cap.release()
    row = evaluate_dataset(gt, results, pck_thr=0.2)
    both = sum(f["found"] == f["flies"] for f in per_frame)
    return {
        "checkpoint": str(predictor.checkpoint), "frames": f"{frames.start}:{frames.stop}:{frames.step}",
        "prompt": "text 'fly'" if visual is None else f"1-shot visual prompt ({visual.class_name}, {len(visual.keypoints)} keypoints)",
        "num_frames": len(per_frame), "box_threshold": predictor.box_threshold,
        "input_size": [predictor.short_side, predictor.max_size], "refine": predictor.refine,
        "refine_size": predictor.refine_size, "heatmap_refiner": predictor.heatmap_refiner is not None,
        "dtype": str(predictor.dtype).replace("torch.", ""), "compiled": compile,
        "both_flies_found": both / max(1, len(per_frame)),
        "flies_found": sum(f["found"] for f in per_frame) / max(1, sum(f["flies"] for f in per_frame)),
        "false_positives_per_frame": sum(f["extra"] for f in per_frame) / max(1, len(per_frame)),
        "frames_with_exactly_2_detections": sum(f["detections"] == 2 for f in per_frame) / max(1, len(per_frame)),
        "PCK@0.2": row["PCK@0.2"], "PCK_keypoints@0.2": row["PCK_keypoints"],
        "PCK@0.1": evaluate_dataset(gt, results, pck_thr=0.1)["PCK@0.1"],
        "PCK@0.2_per_keypoint": {k: round(v, 4) for k, v in row["PCK@0.2 per keypoint"].items()},
        "box_AP": row.get("box AP"), "seconds_per_frame": float(np.mean(seconds)),
        "missed_frames": [f["frame"] for f in per_frame if f["found"] < f["flies"]][:20],
        "found_per_frame": {f["frame"]: f["found"] for f in per_frame},  # to compare two runs frame by frame
    }


def main(argv=None) -> int:
    from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_VIDEO

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(BUNDLED_CHECKPOINT))
    p.add_argument("--frames", default="1200:1500", help="start:stop[:step] (default 1200:1500, all held out)")
    p.add_argument("--video", default=str(BUNDLED_VIDEO))
    p.add_argument("--box-threshold", type=float, default=None, help="default: the checkpoint's (the Predictor's)")
    p.add_argument("--refine", type=float, default=None,
                   help="crop-refinement factor (0: off; default: the checkpoint's)")
    p.add_argument("--refine-size", type=int, default=None,
                   help="input size of the crop pass (default: the checkpoint's, else the first pass's)")
    p.add_argument("--no-heatmap-refiner", action="store_true",
                   help="keep UniPose's keypoints (skip the file's heatmap refiner, if it has one)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (the first frame compiles)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--json", help="also write the numbers to this file")
    p.add_argument("--support-frame", type=int, default=None,
                   help="1-shot visual prompt: the labelled fly of this frame (a training frame, < 1200) is the "
                        "support instead of the text prompt")
    p.add_argument("--support-instance", type=int, default=0, help="which fly of --support-frame (default 0)")
    p.add_argument("--support-image", help="1-shot visual prompt from files instead (e.g. the support that "
                                           "unipose-rank-supports wrote); needs --support-keypoints")
    p.add_argument("--support-keypoints", help="keypoints of --support-image (COCO json or 'name: x y' lines)")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)  # 2 threads lose to 1 on a shared 2-core machine
    frames = frame_range(args.frames)
    if frames.start < 1200:
        print("warning: frames below 1200 were used for training", file=sys.stderr)
    visual = None
    if args.support_frame is not None:
        if args.support_frame >= 1200:
            print("warning: the support frame is a held-out frame", file=sys.stderr)
        visual = support_prompt(args.video, args.support_frame, args.support_instance)
    elif args.support_image:
        from unipose_model.visual_prompt import load_visual_prompt
        if not args.support_keypoints:
            p.error("--support-image needs --support-keypoints")
        visual = load_visual_prompt(args.support_image, args.support_keypoints)
    out = evaluate(args.checkpoint, frames, args.video, args.box_threshold, visual=visual,
                   refine="auto" if args.refine is None else args.refine, compile=args.compile, dtype=args.dtype,
                   refine_size="auto" if args.refine_size is None else args.refine_size,
                   heatmap_refiner=None if args.no_heatmap_refiner else "auto")
    if args.support_frame is not None:
        out["support"] = {"frame": args.support_frame, "instance": args.support_instance}
    elif visual is not None:
        out["support"] = {"image": args.support_image, "keypoints": args.support_keypoints}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
