#!/usr/bin/env python3
"""Training throughput (images/s) and peak memory of the tiny and Swin-T models.

Real data through the whole training path (fly clip frames decoded from the mp4, augmentation,
prompts, matcher, all losses, backward, AdamW step). Each configuration runs in its own process
so its peak memory (RSS on CPU, max allocated on GPU) is its own.

    python scripts/bench_train.py                      # tiny + swint on CPU, print a table
    python scripts/bench_train.py --write docs/BENCHMARKS.md   # also (re)write its "Training" section
    python scripts/bench_train.py --device cuda --amp bf16 --sizes swint=800
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FLY = Path(os.environ.get("UNIPOSE_SHARED", REPO.parent / "shared")) / "data" / "lab" / "fly_clip"
MODELS = {"tiny": "unipose_tiny", "swint": "unipose_swint"}
DEFAULT_SIZES = {"tiny": 320, "swint": 512}


def run_one(model: str, size: int, batch: int, steps: int, warmup: int, device: str, amp: str, workers: int,
            threads: int = 0) -> dict:
    import torch
    from unipose_train.config import load_config
    from unipose_train.trainer import Trainer
    cfg = load_config(None, data={
        "model": {"name": MODELS[model]},
        "data": {"train": [{"ann": str(FLY / "clip_keypoints_coco.json"), "images": str(FLY), "max_images": 64}],
                 "augment": {"scales": [size], "max_size": size, "flip_prob": 0.5, "crop_prob": 0.0},
                 "prompts": {"num_negatives": 5}, "batch_size": batch, "num_workers": workers,
                 "negative_pool": "vocabulary"},
        "text": {"encoder": "hash"},
        "optim": {"max_steps": warmup + steps},
        "run": {"out_dir": f"/tmp/unipose_bench_train_{model}", "device": device, "amp": amp,
                "checkpoint_every": 0, "progress": False, "threads": threads},
    })
    trainer = Trainer(cfg)
    it = iter(trainer.loader())
    for _ in range(warmup):
        trainer.train_step(next(it))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(it))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if trainer.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": model, "size": size, "batch": batch, "steps": steps, "device": str(trainer.device),
            "amp": amp if trainer.device.type == "cuda" else "none", "threads": torch.get_num_threads(),
            "images_per_s": steps * batch / dt, "s_per_step": dt / steps, "peak_memory_mib": peak / 2 ** 20,
            "params_m": sum(p.numel() for p in trainer.model.parameters()) / 1e6}


def table(rows) -> str:
    lines = ["| model | input (short side) | batch | device | images/s | s/step | peak memory (MiB) | params (M) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        dev = r["device"] + (f" ({r['threads']} threads)" if r["device"] == "cpu" else f", {r['amp']}")
        lines.append(f"| {MODELS[r['model']]} | {r['size']} | {r['batch']} | {dev} | {r['images_per_s']:.2f} | "
                     f"{r['s_per_step']:.2f} | {r['peak_memory_mib']:.0f} | {r['params_m']:.1f} |")
    return "\n".join(lines)


def write_section(path: Path, rows, args) -> None:
    """Replace (or append) only this script's marked block; other sections stay as they are."""
    cpu = platform.processor() or platform.machine()
    body = (f"## Training\n\nMeasured by `scripts/bench_train.py` ({time.strftime('%Y-%m-%d')}, {cpu}, "
            f"{os.cpu_count()} cores): real fly-clip frames through augmentation, prompts, matcher, all "
            f"losses (final + earlier decoder layers + two-stage), backward and AdamW; {args.steps} timed steps after "
            f"{args.warmup} warm-up steps. Peak memory is the process RSS on CPU, max allocated on GPU.\n\n"
            f"{table(rows)}\n" + (f"\n{args.note}\n" if args.note else ""))
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    begin, end = "<!-- bench_train.py: begin -->", "<!-- bench_train.py: end -->"
    block = f"{begin}\n{body}{end}\n"
    if begin in text and end in text:
        rest = text[text.index(end) + len(end):].lstrip("\n")
        text = text[:text.index(begin)] + block + ("\n" + rest if rest.strip() else "")
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "swint"], choices=sorted(MODELS))
    ap.add_argument("--sizes", nargs="*", default=[], help="model=short_side, e.g. swint=800")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="bf16")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--write", type=Path, help="markdown file whose '## Training' section is (re)written")
    ap.add_argument("--note", default="", help="a sentence added under the table (e.g. the machine's load)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = dict(DEFAULT_SIZES, **{k: int(v) for k, v in (s.split("=") for s in args.sizes)})
    if args.one:
        print(json.dumps(run_one(args.one, sizes[args.one], args.batch, args.steps, args.warmup, args.device,
                                 args.amp, args.workers, args.threads)))
        return 0
    rows = []
    for m in args.models:
        cmd = [sys.executable, __file__, "--one", m, "--sizes", f"{m}={sizes[m]}", "--batch", str(args.batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
               "--amp", args.amp, "--workers", str(args.workers), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    print(table(rows))
    if args.write:
        write_section(args.write, rows, args)
        print(f"wrote the Training section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
