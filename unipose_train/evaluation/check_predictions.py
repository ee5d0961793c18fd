"""Predictions checked before scoring: each unusable entry is named and left out, so one bad
entry (NaN keypoints, an unknown id, a wrong keypoint count) costs that entry, not the report."""
from __future__ import annotations

import math

from ..unikpt.format import UniKPT

__all__ = ["usable_predictions"]


def _finite_numbers(value, count: int | None = None) -> bool:
    if not isinstance(value, (list, tuple)) or (count is not None and len(value) != count):
        return False
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)


def _problem(r, image_ids: set, cats: dict) -> str | None:
    """Why the COCO result `r` cannot be scored, or None."""
    if not isinstance(r, dict):
        return f"not a JSON object ({type(r).__name__})"
    if r.get("image_id") not in image_ids:
        return f"image_id {r.get('image_id')!r} is not in the ground truth"
    cat = cats.get(r.get("category_id"))
    if cat is None:
        return f"category_id {r.get('category_id')!r} is not in the ground truth"
    score = r.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        return f"score {score!r} is not a finite number"
    k = len(cat.keypoints)
    if not _finite_numbers(r.get("keypoints"), 3 * k):
        kpts = r.get("keypoints")
        if isinstance(kpts, (list, tuple)) and len(kpts) == 3 * k:
            return "its keypoints hold NaN, Inf or non-numbers"
        n = len(kpts) if isinstance(kpts, (list, tuple)) else "no"
        return f"'keypoints' holds {n} values; category {cat.id} ({cat.name}) needs {3 * k} (x, y, score per keypoint)"
    if "bbox" in r and r["bbox"] is not None and not _finite_numbers(r["bbox"], 4):
        return f"'bbox' {str(r['bbox'])[:60]} is not 4 finite numbers (x, y, w, h)"
    return None


def usable_predictions(gt: UniKPT, results, source: str = "predictions") -> tuple[list[dict], list[str]]:
    """(the results that can be scored, one message per result left out, naming it).

    Results where only some entries carry a 'bbox' are all kept: box AP is computed over those
    with one, and the keypoint AP's object areas then come from keypoint extents (see
    coco_eval.COCOStyleEval)."""
    if not isinstance(results, list):
        return [], [f"{source}: expected a JSON list of COCO results, found {type(results).__name__}"]
    image_ids = {im.id for im in gt.images}
    cats = {c.id: c for c in gt.categories}
    kept, problems = [], []
    for n, r in enumerate(results):
        why = _problem(r, image_ids, cats)
        if why is None:
            kept.append(r)
        else:
            image = f" (image_id {r.get('image_id')!r})" if isinstance(r, dict) else ""
            problems.append(f"{source}: prediction #{n}{image} skipped: {why}")
    with_box = sum(1 for r in kept if r.get("bbox"))
    if 0 < with_box < len(kept):
        problems.append(f"{source}: {len(kept) - with_box} of {len(kept)} predictions have no 'bbox': box AP is "
                        f"computed over the {with_box} that have one")
    return kept, problems
