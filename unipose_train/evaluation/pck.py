"""PCK@thr with box normalisation, for datasets without OKS sigmas (flies, locusts, lab data).

A labelled keypoint is correct when its distance to the prediction is below ``thr * max(w, h)``
of the ground-truth box. Predictions are matched to ground truth per image and category, highest
score first, each to the unmatched instance it is closest to (mean normalised distance); a
ground-truth instance left without a prediction counts all its keypoints wrong. Crowd instances
and instances without labelled keypoints are not scored. Two averages:

- ``PCK``: mean over instances of the fraction of its keypoints that are correct (the MP-100 /
  few-shot protocol);
- ``PCK_keypoints``: correct keypoints / labelled keypoints over the whole set.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..unikpt.format import Instance, UniKPT

__all__ = ["match_by_distance", "pck", "normalized_errors", "keypoint_errors", "correct_keypoints"]


def keypoint_errors(pred_xy: np.ndarray, gt_kpts: np.ndarray, box_wh) -> np.ndarray:
    """Distance / max(box w, h) for each labelled keypoint (visibility > 0) of `gt_kpts` (K, 3).

    The one PCK distance of the project: unipose-eval, validation during training, MP-100 and the
    heatmap refiner's validation all score with it."""
    labelled = np.asarray(gt_kpts)[:, 2] > 0
    norm = max(float(box_wh[0]), float(box_wh[1]))
    d = np.linalg.norm(np.asarray(pred_xy, np.float64)[labelled, :2] - np.asarray(gt_kpts, np.float64)[labelled, :2],
                       axis=1)
    return d / max(norm, np.spacing(1))


def correct_keypoints(pred_xy: np.ndarray, gt_kpts: np.ndarray, box_wh, thr: float) -> np.ndarray:
    """(K,) bool: labelled and within thr * max(box w, h) of the truth (PCK@thr per keypoint)."""
    ok = np.zeros(len(gt_kpts), bool)
    ok[np.asarray(gt_kpts)[:, 2] > 0] = keypoint_errors(pred_xy, gt_kpts, box_wh) < thr
    return ok


def normalized_errors(inst: Instance, pred_kpts: np.ndarray | None) -> np.ndarray:
    """Distance / max(w, h) for each labelled keypoint of `inst` (inf where nothing predicted)."""
    if pred_kpts is None:
        return np.full(int((inst.keypoints[:, 2] > 0).sum()), np.inf)
    return keypoint_errors(pred_kpts, inst.keypoints, inst.bbox[2:4])


def match_by_distance(gt: UniKPT, results: Sequence[dict]) -> list[tuple[Instance, dict | None]]:
    """(ground truth, matched result or None) for every scored instance."""
    preds: dict[tuple[int, int], list[dict]] = {}
    for r in results:
        preds.setdefault((r["image_id"], r["category_id"]), []).append(r)
    groups: dict[tuple[int, int], list[Instance]] = {}
    for inst in gt.instances:
        if inst.iscrowd or inst.num_keypoints == 0:
            continue
        groups.setdefault((inst.image_id, inst.category_id), []).append(inst)
    pairs = []
    for key, insts in groups.items():
        cands = sorted(preds.get(key, []), key=lambda r: -float(r["score"]))
        free = list(range(len(insts)))
        matched: dict[int, dict] = {}
        for r in cands:
            if not free:
                break
            k = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
            costs = [float(np.mean(normalized_errors(insts[g], k))) for g in free]
            g = free.pop(int(np.argmin(costs)))
            matched[g] = r
        pairs += [(inst, matched.get(g)) for g, inst in enumerate(insts)]
    return pairs


def pck(gt: UniKPT, results: Sequence[dict], thr: float = 0.2) -> dict:
    """PCK per instance (mean over instances), over all keypoints, and of each keypoint name
    ("per_keypoint", pooled over the categories that list it, in their order: which parts a
    model misses). A missed instance counts as a miss of each of its labelled keypoints."""
    per_instance, correct, total = [], 0, 0
    cats = {c.id: c.keypoints for c in gt.categories}
    hits: dict[str, list[bool]] = {name: [] for c in gt.categories for name in c.keypoints}
    for inst, r in match_by_distance(gt, results):
        k = None if r is None else np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
        ok = normalized_errors(inst, k) < thr
        per_instance.append(float(ok.mean()))
        correct += int(ok.sum())
        total += ok.size
        for j, hit in zip(np.flatnonzero(inst.keypoints[:, 2] > 0), ok):
            hits[cats[inst.category_id][j]].append(bool(hit))
    return {"PCK": float(np.mean(per_instance)) if per_instance else -1.0,
            "PCK_keypoints": correct / total if total else -1.0,
            "instances": len(per_instance), "keypoints": total,
            "per_keypoint": {name: float(np.mean(v)) for name, v in hits.items() if v}}
