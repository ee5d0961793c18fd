"""Instance-level box AP (the paper's Table 8: AP, APM, APL of the predicted object boxes)."""
from __future__ import annotations

from typing import Sequence

from ..unikpt.format import UniKPT
from .coco_eval import COCOStyleEval

__all__ = ["evaluate_boxes"]


def evaluate_boxes(gt: UniKPT, results: Sequence[dict]) -> dict[str, float]:
    """COCO box AP/AR (AP, AP50, AP75, APS, APM, APL, AR1, AR10, AR100, ...) of results with 'bbox'."""
    return COCOStyleEval(gt, [r for r in results if r.get("bbox")], "bbox").run()
