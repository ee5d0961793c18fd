"""Multi-object tracking scores: CLEAR-MOT (MOTA, identity switches) and IDF1.

The standard definitions (Bernardin & Stiefelhagen 2008; Ristani et al. 2016), as py-motmetrics
computes them, with boxes matched at IoU >= ``iou_threshold``:
  * per frame, a ground-truth object keeps the hypothesis it was matched to in the previous frame
    while their IoU still passes; the rest is a Hungarian assignment on 1 - IoU;
  * an identity switch: an object matched to a hypothesis other than the one it was last matched to
    (in any earlier frame, gaps allowed);
  * MOTA = 1 - (misses + false positives + switches) / ground-truth boxes;
  * IDF1 = 2 IDTP / (ground-truth boxes + hypothesis boxes), IDTP the frames matched under the one
    global one-to-one pairing of ground-truth and hypothesis trajectories that maximises it.

A frame is {id: box (x0, y0, x1, y1)}; sequences are lists of frames (ground truth, hypotheses).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from .box_ops import box_iou

Frame = Mapping[int, Sequence[float]]


@dataclass
class Switch:
    frame: int              # position in the sequence
    gt_id: int
    previous_hyp: int
    new_hyp: int


@dataclass
class MotScores:
    num_gt: int
    num_hyp: int
    matches: int
    misses: int
    false_positives: int
    id_switches: int
    idtp: int
    switches: list[Switch] = field(default_factory=list)

    @property
    def mota(self) -> float:
        return 1.0 - (self.misses + self.false_positives + self.id_switches) / max(1, self.num_gt)

    @property
    def idf1(self) -> float:
        return 2.0 * self.idtp / max(1, self.num_gt + self.num_hyp)

    def as_dict(self) -> dict:
        return {"frames_gt_boxes": self.num_gt, "hyp_boxes": self.num_hyp, "id_switches": self.id_switches,
                "IDF1": round(self.idf1, 4), "MOTA": round(self.mota, 4), "misses": self.misses,
                "false_positives": self.false_positives,
                "switches": [vars(s) for s in self.switches]}


def _ious(gt: Frame, hyp: Frame) -> tuple[list, list, np.ndarray]:
    g, h = list(gt), list(hyp)
    if not g or not h:
        return g, h, np.zeros((len(g), len(h)))
    return g, h, box_iou(np.array([gt[k] for k in g], float), np.array([hyp[k] for k in h], float))


def evaluate_tracking(gt_frames: Sequence[Frame], hyp_frames: Sequence[Frame],
                      iou_threshold: float = 0.5) -> MotScores:
    if len(gt_frames) != len(hyp_frames):
        raise ValueError(f"{len(gt_frames)} ground-truth frames but {len(hyp_frames)} hypothesis frames")
    last_match: dict[int, int] = {}   # gt id -> hypothesis id it was last matched to
    num_gt = num_hyp = matches = switches = 0
    switch_list: list[Switch] = []
    pair_counts: dict[tuple[int, int], int] = {}
    gt_ids: set = set()
    hyp_ids: set = set()
    for t, (gt, hyp) in enumerate(zip(gt_frames, hyp_frames)):
        g, h, iou = _ious(gt, hyp)
        num_gt += len(g)
        num_hyp += len(h)
        gt_ids.update(g)
        hyp_ids.update(h)
        # IDF1 counts every pair that overlaps enough, frame by frame
        for i, j in zip(*np.nonzero(iou >= iou_threshold)):
            pair_counts[(g[i], h[j])] = pair_counts.get((g[i], h[j]), 0) + 1
        # CLEAR-MOT: keep last frame's correspondences that still hold, assign the rest
        frame_pairs: list[tuple[int, int]] = []
        free_g, free_h = set(range(len(g))), set(range(len(h)))
        for i in range(len(g)):
            prev = last_match.get(g[i])
            if prev is not None and prev in h:
                j = h.index(prev)
                if j in free_h and iou[i, j] >= iou_threshold:
                    frame_pairs.append((i, j))
                    free_g.discard(i)
                    free_h.discard(j)
        fg, fh = sorted(free_g), sorted(free_h)
        if fg and fh:
            sub = iou[np.ix_(fg, fh)]
            cost = np.where(sub >= iou_threshold, 1.0 - sub, 1e6)
            for r, c in zip(*linear_sum_assignment(cost)):
                if sub[r, c] >= iou_threshold:
                    frame_pairs.append((fg[r], fh[c]))
        for i, j in frame_pairs:
            prev = last_match.get(g[i])
            if prev is not None and prev != h[j]:
                switches += 1
                switch_list.append(Switch(t, g[i], prev, h[j]))
            last_match[g[i]] = h[j]
        matches += len(frame_pairs)
    # IDF1: the one-to-one trajectory pairing with the most frames in common
    go, ho = sorted(gt_ids), sorted(hyp_ids)
    idtp = 0
    if go and ho:
        common = np.zeros((len(go), len(ho)))
        gi, hi = {k: i for i, k in enumerate(go)}, {k: i for i, k in enumerate(ho)}
        for (a, b), n in pair_counts.items():
            common[gi[a], hi[b]] = n
        rows, cols = linear_sum_assignment(common, maximize=True)
        idtp = int(common[rows, cols].sum())
    return MotScores(num_gt, num_hyp, matches, num_gt - matches, num_hyp - matches, switches, idtp, switch_list)
