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

__all__ = ["match_by_distance", "pck", "pck_per_keypoint", "normalized_errors"]


def normalized_errors(inst: Instance, pred_kpts: np.ndarray | None) -> np.ndarray:
    """Distance / max(w, h) for each labelled keypoint of `inst` (inf where nothing predicted)."""
    labelled = inst.keypoints[:, 2] > 0
    if pred_kpts is None:
        return np.full(int(labelled.sum()), np.inf)
    norm = max(inst.bbox[2], inst.bbox[3])
    d = np.linalg.norm(pred_kpts[labelled, :2] - inst.keypoints[labelled, :2], axis=1)
    return d / max(norm, np.spacing(1))


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


def pck(gt: UniKPT, results: Sequence[dict], thr: float = 0.2) -> dict[str, float]:
    per_instance, correct, total = [], 0, 0
    for inst, r in match_by_distance(gt, results):
        k = None if r is None else np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
        ok = normalized_errors(inst, k) < thr
        per_instance.append(float(ok.mean()))
        correct += int(ok.sum())
        total += ok.size
    return {"PCK": float(np.mean(per_instance)) if per_instance else -1.0,
            "PCK_keypoints": correct / total if total else -1.0,
            "instances": len(per_instance), "keypoints": total}


def pck_per_keypoint(gt: UniKPT, results: Sequence[dict], thr: float = 0.2, merge_categories: bool = False
                     ) -> dict:
    """PCK of each keypoint over the instances where it is labelled (which parts a model misses;
    a missed instance counts as a miss of each of its labelled keypoints): {category: {keypoint:
    PCK}}, or {keypoint: PCK} pooled over the categories that share a name with `merge_categories`."""
    names = {c.id: (c.name, list(c.keypoints)) for c in gt.categories}
    hits: dict[tuple, list[bool]] = {}
    for inst, r in match_by_distance(gt, results):
        cat, kpts = names[inst.category_id]
        k = None if r is None else np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
        ok = normalized_errors(inst, k) < thr
        for j, hit in zip(np.flatnonzero(inst.keypoints[:, 2] > 0), ok):
            key = (kpts[j],) if merge_categories else (cat, kpts[j])
            hits.setdefault(key, []).append(bool(hit))
    # in the categories' own keypoint order (first listing of a name, when pooled)
    order = {}
    for c in gt.categories:
        for j, name in enumerate(c.keypoints):
            order.setdefault((name,) if merge_categories else (c.name, name), (len(order), j))
    if merge_categories:
        return {key[0]: float(np.mean(hits[key])) for key in sorted(hits, key=order.__getitem__)}
    out: dict[str, dict[str, float]] = {}
    for cat, name in sorted(hits, key=order.__getitem__):
        out.setdefault(cat, {})[name] = float(np.mean(hits[(cat, name)]))
    return out
