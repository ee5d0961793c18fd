#!/usr/bin/env python3
"""Speed profiles (unipose_model/speed.py): time per 640x480 camera frame, and what they cost.

    python scripts/bench_speed_profiles.py --write docs/BENCHMARKS.md

* Swin-T (`unipose_swint`, reference weights: the official checkpoint cannot be shipped, and the
  timing does not depend on the weights' values), one 640x480 frame (a COCO photo), prompt
  "person" (1 class, 17 keypoints, hash features), the Predictor end to end (resize, model,
  post-processing), per profile: median of `--repeats` after a warm-up. The first row is the
  plain path (the reference grid_sample sampling core) in the same run.
* Accuracy cost, where it can be measured here: the bundled fly model (text prompt "fly") on the
  held-out fly frames, per profile: PCK@0.2, both flies found, seconds per frame; plus "accurate"
  without the file's heatmap refiner (unipose_model/heatmap_refiner.py; fastest and realtime skip
  it), with and without crop refinement (unipose_model/refine.py; only accurate runs it), and the
  full input in bfloat16 alone (the precision's own cost, apart from the smaller input).
Each configuration runs in one process, one after the other, with `--threads` torch threads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
SHARED = Path(os.environ.get("UNIPOSE_SHARED_DATA", REPO.parent / "shared" / "data"))
PHOTO = SHARED / "samples" / "coco" / "000000000785.jpg"
BEGIN, END = "<!-- bench_speed_profiles.py: begin -->", "<!-- bench_speed_profiles.py: end -->"


def time_swint(profile: str, repeats: int, core: str = "auto", compile: bool = False) -> dict:
    import cv2

    from unipose_model.ops import use_deform_attn_impl
    from unipose_model.predictor import Predictor
    from unipose_model.speed import apply_profile

    frame = cv2.resize(cv2.imread(str(PHOTO)), (640, 480), interpolation=cv2.INTER_AREA)
    predictor = Predictor("unipose_swint", "reference", device="cpu", text_encoder="hash", compile=compile)
    apply_profile(predictor, profile, 800, 1333)
    times, stages = [], []
    with use_deform_attn_impl(core):
        t0 = time.perf_counter()
        predictor.predict(frame, "person", color="bgr")  # warm-up (prompt encoding; compiling)
        first_call = time.perf_counter() - t0
        for _ in range(repeats):
            t0 = time.perf_counter()
            predictor.predict(frame, "person", color="bgr")
            times.append(time.perf_counter() - t0)
            stages.append(dict(predictor.last_timing))
    best = times.index(statistics.median_low(times))
    h, w = frame.shape[:2]
    label = profile + (" (plain path)" if core == "pytorch" else "") + (" + torch.compile" if compile else "")
    if compile and predictor.compiled.failed:
        raise SystemExit(f"torch.compile failed: {predictor.compiled.failed}")
    return {"profile": label, "dtype": str(predictor.dtype).replace("torch.", ""),
            "input": f"{predictor.short_side}x{predictor.max_size}",
            "model_input": list(_resized(h, w, predictor.short_side, predictor.max_size)),
            "num_queries": predictor.model.transformer.num_queries,
            "num_select": predictor.model.transformer.decoder.num_select,
            "seconds": statistics.median(times), "fps": 1.0 / statistics.median(times),
            "first_call_s": first_call, **stages[best]}


def _resized(h, w, short, max_size):
    from unipose_model.preprocess import compute_resize
    return compute_resize(w, h, short, max_size)


def fly_accuracy(profile: str, frames: str, dtype: str = "float32", refine="auto", heatmap=True) -> dict:
    from eval_fly_demo import evaluate, frame_range
    from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_VIDEO

    out = evaluate(str(BUNDLED_CHECKPOINT), frame_range(frames), str(BUNDLED_VIDEO), None, speed_profile=profile,
                   dtype=dtype, refine=refine, heatmap_refiner="auto" if heatmap else None)
    label = (profile + (f" in {dtype}" if dtype != "float32" else "") + ("" if heatmap else ", no heatmap refiner")
             + (f", crop refinement {refine:g}" if refine not in ("auto", 0) else "")
             + (", crop refinement off" if refine == 0 else ""))
    return {"profile": label, "input": out["input_size"], "refine": out["refine"],
            "heatmap_refiner": out["heatmap_refiner"], "PCK@0.2": out["PCK@0.2"],
            "both_flies_found": out["both_flies_found"], "seconds_per_frame": out["seconds_per_frame"],
            "frames": frames}


def markdown(swint: list, fly: list, threads: int) -> str:
    import torch
    lines = [BEGIN, "## Speed profiles (CPU)", "",
             f"`python scripts/bench_speed_profiles.py --write docs/BENCHMARKS.md` on {platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s), "
             f"{time.strftime('%Y-%m-%d')}. A profile scales the input size and the query counts, "
             "`realtime` (input x0.35) also runs the matrix products in bfloat16 (`unipose_model/speed.py`; node "
             "parameter `speed_profile`). All rows but the first use the CPU fast sampling core "
             "(same function). Machine otherwise idle.", "",
             "Swin-T (reference weights), one 640x480 camera frame, prompt `person` (17 keypoints), "
             "Predictor end to end:", "",
             "| profile | dtype | model input | proposals / keypoint instances | preprocess | model | postprocess | per frame | frames/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in swint:
        lines.append(f"| {r['profile']} | {r['dtype']} | {r['model_input'][1]}x{r['model_input'][0]} | {r['num_queries']} / "
                     f"{r['num_select']} | {r['preprocess_s'] * 1e3:.0f} ms | {r['model_s']:.2f} s | "
                     f"{r['postprocess_s'] * 1e3:.1f} ms | **{r['seconds']:.2f} s** | {r['fps']:.2f} |")
    compiled = [r for r in swint if "torch.compile" in r["profile"]]
    if compiled:
        lines += ["", "`+ torch.compile`: `Predictor(compile=True)` (node parameter `compile`, CLI `--compile`; "
                  "inductor with frozen weights). The first call compiles: "
                  + ", ".join(f"{r['profile']} {r['first_call_s']:.0f} s" for r in compiled)
                  + " (once per input size and profile; inductor caches it on disk for later processes)."]
    if fly:
        lines += ["", f"Accuracy cost, bundled fly model (`fly`, held-out frames {fly[0]['frames']}):", "",
                  "| profile | input (short / max) | crop refinement | heatmap refiner | PCK@0.2 | both flies found | s/frame |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in fly:
            lines.append(f"| {r['profile']} | {r['input'][0]} / {r['input'][1]} | {r['refine'] or 'off'} | "
                         f"{'on' if r['heatmap_refiner'] else 'off'} | {r['PCK@0.2']:.3f} | "
                         f"{r['both_flies_found']:.3f} | {r['seconds_per_frame']:.3f} |")
    lines += ["", "The input-size cost is the model's: the fly model was trained with the flies at one scale "
              "(~47 px), so at 0.6x input it loses them. The official Swin-T was trained on 480-800 px "
              "short sides, so its cost should be far smaller, but it cannot be measured here (no "
              "official weights on this machine).", END]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n" + text + "\n"
    path.write_text(doc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", default="accurate,fast,fastest,realtime")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", default="",
                   help="also time these profiles with torch.compile (comma list; minutes of compiling each)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fly-frames", default="1200:1500:5", help="held-out frames for the accuracy cost ('' = skip)")
    p.add_argument("--json", help="write the raw numbers here")
    p.add_argument("--write", help="replace this script's section of a markdown file (docs/BENCHMARKS.md)")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    profiles = [s for s in args.profiles.split(",") if s]
    swint = [time_swint("accurate", args.repeats, core="pytorch")] if "accurate" in profiles else []
    for name in profiles:
        swint.append(time_swint(name, args.repeats))
        print(json.dumps(swint[-1]), flush=True)
    for name in [s for s in args.compile.split(",") if s]:
        swint.append(time_swint(name, args.repeats, compile=True))
        print(json.dumps(swint[-1]), flush=True)
    fly = []
    if args.fly_frames:
        from unipose_model.predictor import cpu_supports_bf16
        runs = [(name, "float32", "auto", True) for name in profiles]
        if "accurate" in profiles:  # UniPose alone, with and without crop refinement (accurate only)
            runs[1:1] = [("accurate", "float32", 7.5, False), ("accurate", "float32", 0, False)]
            if cpu_supports_bf16():
                runs.insert(3, ("accurate", "bfloat16", "auto", True))
        for name, dtype, refine, heatmap in runs:
            fly.append(fly_accuracy(name, args.fly_frames, dtype, refine, heatmap))
            print(json.dumps(fly[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"swint": swint, "fly": fly}, indent=1))
    text = markdown(swint, fly, args.threads)
    print(text)
    if args.write:
        write_section(Path(args.write), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
