#!/usr/bin/env python3
"""The official X-Pose code against this project's model in ONE process, forwards alternated.

    python scripts/bench_official_interleaved.py --official-src ~/X-Pose --size 480x640 --repeats 2
        (run it with a Python that has the official code's extra packages: timm, transformers)

scripts/bench_model.py runs each variant in its own process, one after the other: exact peak
memory, but on a shared machine the two see different loads. Here both models live in one
process and their forwards alternate (official, ours, then ours, official, ...), so both see the
same machine; the ratio of the medians is the figure to quote. Same inputs, prompt and weights
as bench_model.py (its builders are reused); ours runs its CPU inference default (fast sampling
core).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-src", required=True, help="checkout of IDEA-Research/X-Pose")
    p.add_argument("--size", default="480x640", help="HxW input size")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards of each after one warm-up pair")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    import bench_model
    from unipose_model import build_model
    from unipose_model.checkpoint import fill_reference_weights

    torch.set_num_threads(args.threads)
    h, w = map(int, args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        bench_model.make_inputs(h, w, Path(tmp) / "inputs.npz")
        data = dict(np.load(Path(tmp) / "inputs.npz"))
    image = torch.from_numpy(data["image"])
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    inst, kpts = torch.from_numpy(data["instance"]), torch.from_numpy(data["keypoints"])
    k = kpts.shape[0]
    target = {"instance_text_prompt": ["x"], "object_embeddings_text": inst,
              "kpts_embeddings_text": torch.cat((kpts, torch.zeros(100 - k, 512))),
              "kpt_vis_text": torch.cat((torch.ones(k), torch.zeros(100 - k)))}
    official = bench_model.build_official(Path(args.official_src))
    ours = fill_reference_weights(build_model("unipose_swint")).eval()
    runs = {"official": lambda: official(image, [target]), "ours": lambda: ours(image, mask, inst, kpts)}
    times, outs = {name: [] for name in runs}, {}
    with torch.inference_mode():
        for r in range(args.repeats + 1):  # round 0 is the warm-up
            for name in ("official", "ours") if r % 2 == 0 else ("ours", "official"):
                t0 = time.perf_counter()
                outs[name] = runs[name]()
                seconds = time.perf_counter() - t0
                print(f"round {r} {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
                if r:
                    times[name].append(seconds)
    diff = (outs["ours"]["pred_boxes"] - outs["official"]["pred_boxes"]).abs().max().item()
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"{args.size}, {args.threads} threads, {args.repeats} alternated forwards each: official "
          f"{med['official']:.2f} s, ours {med['ours']:.2f} s (median); official / ours "
          f"{med['official'] / med['ours']:.2f}x; boxes max abs diff {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
