#!/usr/bin/env python
"""Benchmark of the tracker alone (unipose_model/tracking.py): milliseconds per frame (one
Tracker.update) for N objects with K keypoints each, moving and jittering, one detection missed now
and then, a few spurious low-score detections.

    python scripts/bench_tracking.py [--objects 20] [--keypoints 17] [--frames 500]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unipose_model.predictor import Instance  # noqa: E402
from unipose_model.tracking import Tracker  # noqa: E402


def scene(objects: int, keypoints: int, frames: int, seed: int = 0) -> list[list[Instance]]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(100, 1800, (objects, 2))
    velocity = rng.normal(0, 3, (objects, 2))
    shapes = rng.normal(0, 25, (objects, keypoints, 2))
    names = tuple(f"k{i}" for i in range(keypoints))
    out = []
    for _ in range(frames):
        centres += velocity
        dets = []
        for i in range(objects):
            if rng.random() < 0.03:
                continue  # missed
            kp = centres[i] + shapes[i] + rng.normal(0, 2, (keypoints, 2))
            score = float(rng.uniform(0.4, 0.95))
            x0, y0 = kp.min(0) - 5
            x1, y1 = kp.max(0) + 5
            dets.append(Instance("obj", 0, score, (x0, y0, x1, y1), np.c_[kp, np.full(keypoints, score)], names))
        for _ in range(2):  # clutter
            c = rng.uniform(100, 1800, 2)
            dets.append(Instance("obj", 0, 0.15, (c[0], c[1], c[0] + 40, c[1] + 40),
                                 np.c_[c + rng.uniform(0, 40, (keypoints, 2)), np.full(keypoints, 0.15)], names))
        out.append(dets)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--keypoints", type=int, default=17)
    p.add_argument("--frames", type=int, default=500)
    args = p.parse_args(argv)
    frames = scene(args.objects, args.keypoints, args.frames)
    tracker = Tracker()
    wall, cpu = [], []
    for dets in frames:
        t0, c0 = time.perf_counter(), time.thread_time()
        tracker.update(dets)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    wall, cpu = np.array(wall[10:]) * 1e3, np.array(cpu[10:]) * 1e3
    ids = {i.track_id for i in tracker.update(frames[-1])}
    # CPU time of this thread: what the tracker itself costs, also on a machine busy with other work
    print(f"{args.objects} objects x {args.keypoints} keypoints, {len(wall)} frames: CPU time median "
          f"{statistics.median(cpu):.3f} ms (mean {cpu.mean():.3f}); wall median {statistics.median(wall):.3f} ms "
          f"(p95 {np.percentile(wall, 95):.3f}) per frame; {len(tracker.active_tracks)} active tracks, "
          f"largest id {max(ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
