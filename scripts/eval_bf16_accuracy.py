#!/usr/bin/env python
"""What bfloat16 `accurate` costs in accuracy against float32 (issue 22).

    python scripts/eval_bf16_accuracy.py --json /tmp/bf16_accuracy.json
    python scripts/eval_bf16_accuracy.py --fly-frames 1200:1500:5 --skip-fixtures

Both runs are the Predictor as users run it (`accurate`: full input size, all queries), once in
float32 and once with dtype bfloat16 (autocast: matrix products in bf16, sampling positions float32):
  * parity fixtures (shared/reference, Swin-T with the reference weights, COCO images through the
    Predictor as in test_official_end_to_end.py): detections kept in each run, how many match
    (box IoU >= 0.5), keypoint drift in pixels of the original image, score drift;
  * the bundled fly model on its held-out frames (scripts/eval_fly_demo.py): PCK@0.2, both flies
    found, and whether the same flies are found in every frame.

On a CPU without bf16 units (`--products auto` there) the bf16 run computes its matrix products in
float32 on bf16 operands and rounds the results to bf16 (unipose_model/bf16_reference.py): the
same numbers as a native bf16 matrix product up to float32 summation order, at float32 speed
(oneDNN's own emulation runs at ~1 GFLOP/s here). `--check-frames N` measures that claim: the
fly model's outputs through oneDNN's emulated bf16 against the float32 route on N frames.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
FIXTURES = ("coco_person", "multi_class")


@contextlib.contextmanager
def bf16_products(mode: str):
    """bf16 matrix products: oneDNN's own ("native", emulated where the CPU lacks bf16 units) or
    float32 on bf16 operands ("float32"); the Predictor is allowed bf16 on this CPU for the run."""
    from unipose_model import predictor as predictor_module
    from unipose_model.bf16_reference import Bf16MatmulsInFloat32

    saved = predictor_module.cpu_supports_bf16
    predictor_module.cpu_supports_bf16 = lambda: True
    try:
        if mode == "float32":
            with Bf16MatmulsInFloat32() as m:
                yield m
        else:
            yield None
    finally:
        predictor_module.cpu_supports_bf16 = saved


def iou(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(hi - lo, 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


def compare_detections(ref, other) -> dict:
    """One-to-one match of `other`'s detections to `ref`'s (Hungarian, on the largest box-corner
    distance), counting a pair as the same detection at box IoU >= 0.5; drifts over those pairs."""
    from scipy.optimize import linear_sum_assignment

    rb = np.array([np.asarray(r.box, float) for r in ref]).reshape(-1, 4)
    ob = np.array([np.asarray(o.box, float) for o in other]).reshape(-1, 4)
    cost = np.abs(rb[:, None] - ob[None]).max(-1)
    rows, cols = linear_sum_assignment(cost) if cost.size else ([], [])
    matched = [(i, j) for i, j in zip(rows, cols) if iou(rb[i], ob[j]) >= 0.5]
    drift = np.concatenate([np.linalg.norm(np.asarray(ref[i].keypoints)[:, :2] - np.asarray(other[j].keypoints)[:, :2],
                                           axis=-1) for i, j in matched]) if matched else np.zeros(0)
    stat = lambda f: float(f(drift)) if drift.size else None
    return {"detections_ref": len(ref), "detections": len(other), "matched": len(matched),
            "keypoint_drift_px": {"median": stat(np.median), "p95": stat(lambda d: np.percentile(d, 95)),
                                  "max": stat(np.max)},
            "box_drift_px_max": max((float(cost[i, j]) for i, j in matched), default=None),
            "score_drift_max": max((abs(ref[i].score - other[j].score) for i, j in matched), default=None)}


def run_fixture(name: str, dtype: str, products: str):
    import cv2

    from unipose_model import Predictor
    from unipose_model.text_encoder import HashTextEncoder

    ref_dir = ROOT.parent / "shared" / "reference" / "fixtures"
    meta = json.loads((ref_dir / f"{name}.json").read_text())
    image = ROOT.parent / "shared" / "data" / "samples" / "coco" / meta["image"].rsplit("/", 1)[-1]
    with (bf16_products(products) if dtype == "bfloat16" else contextlib.nullcontext()):
        predictor = Predictor("unipose_swint", "reference", device="cpu", dtype=dtype,
                              text_encoder=HashTextEncoder(salt=meta["text_salt"], scale=meta["text_scale"]),
                              box_threshold=meta["box_threshold"], iou_threshold=meta["iou_threshold"],
                              short_side=meta["short_side"], max_size=meta["max_size"],
                              refine=None, heatmap_refiner=None)
        prompt = (meta["keypoint_set"] if meta["instances"] == [meta["keypoint_set"]]
                  else f"{', '.join(meta['instances'])}: {', '.join(meta['keypoints'])}")
        t0 = time.perf_counter()
        instances = predictor.predict(cv2.imread(str(image)), prompt, color="bgr")
        return instances, time.perf_counter() - t0


def fly_runs(frames: str, products: str) -> dict:
    from eval_fly_demo import evaluate, frame_range
    from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_VIDEO

    rng = frame_range(frames)
    out = {"float32": evaluate(str(BUNDLED_CHECKPOINT), rng, str(BUNDLED_VIDEO), None, dtype="float32")}
    with bf16_products(products):
        out["bfloat16"] = evaluate(str(BUNDLED_CHECKPOINT), rng, str(BUNDLED_VIDEO), None, dtype="bfloat16")
    a, b = out["float32"]["found_per_frame"], out["bfloat16"]["found_per_frame"]
    out["frames_with_other_flies_found"] = sorted(f for f in a if a[f] != b[f])
    for run in out.values():
        if isinstance(run, dict):
            run.pop("found_per_frame", None)
    out["PCK@0.2_difference"] = out["bfloat16"]["PCK@0.2"] - out["float32"]["PCK@0.2"]
    return out


def check_products(frames: int) -> dict:
    """The fly model's raw outputs, oneDNN's bf16 against float32 products on bf16 operands."""
    import torch

    from unipose_model import Predictor
    from unipose_model.media import read_video_frame
    from unipose_model.model_file import BUNDLED_VIDEO

    diffs, bf16_cost = [], []
    with bf16_products("native"):
        predictor = Predictor(model="fly", device="cpu", dtype="bfloat16", refine=None, heatmap_refiner=None)
    reference = Predictor(model="fly", device="cpu", refine=None, heatmap_refiner=None)
    for index in range(1200, 1200 + frames):
        frame = read_video_frame(str(BUNDLED_VIDEO), index, color="rgb")
        outs = {}
        for mode in ("native", "float32"):
            with bf16_products(mode):
                outs[mode] = predictor.predict(frame, "fly")
        diffs.append(compare_detections(outs["native"], outs["float32"]))
        # the scale it is judged on: bf16's own distance from float32 on the same frame
        bf16_cost.append(compare_detections(reference.predict(frame, "fly"), outs["native"]))
    return {"frames": frames, "native_vs_float32_route": diffs, "float32_vs_native_bf16": bf16_cost,
            "torch": torch.__version__}


def main(argv=None) -> int:
    from unipose_model.cpu_info import read_cpu_info

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fly-frames", default="1200:1500", help="held-out frames, start:stop[:step]")
    p.add_argument("--products", choices=("auto", "native", "float32"), default="auto",
                   help="bf16 matrix products: oneDNN's (native) or float32 on bf16 operands; auto: native "
                        "where the CPU has bf16 units")
    p.add_argument("--skip-fixtures", action="store_true")
    p.add_argument("--skip-fly", action="store_true")
    p.add_argument("--check-frames", type=int, default=0,
                   help="also compare oneDNN's bf16 with the float32 route on this many fly frames")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    cpu = read_cpu_info()
    products = args.products if args.products != "auto" else ("native" if cpu.native_bf16 else "float32")
    result = {"cpu": cpu.describe(), "products": products, "torch": torch.__version__}
    if not args.skip_fixtures:
        result["fixtures"] = {}
        for name in FIXTURES:
            ref, t32 = run_fixture(name, "float32", products)
            bf, t16 = run_fixture(name, "bfloat16", products)
            result["fixtures"][name] = dict(compare_detections(ref, bf), seconds_float32=t32, seconds_bfloat16=t16)
            print(name, json.dumps(result["fixtures"][name]), file=sys.stderr, flush=True)
    if not args.skip_fly:
        result["fly"] = fly_runs(args.fly_frames, products)
    if args.check_frames:
        result["products_check"] = check_products(args.check_frames)
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
