"""Box formats and overlap, written once for the library, the tracker and training.

Formats: ``xyxy`` (x0, y0, x1, y1), ``cxcywh`` (centre and size; the model's normalised boxes),
``xywh`` (COCO: corner and size). The conversions take torch tensors or numpy arrays (..., 4) and
return the same kind; IoU is numpy (scores and matching run on the CPU), NMS stays torchvision's.
"""
from __future__ import annotations

import numpy as np


def _stack(like, parts):
    if isinstance(like, np.ndarray):
        return np.stack(parts, axis=-1)
    import torch
    return torch.stack(parts, dim=-1)


def _unbind(boxes):
    return tuple(boxes[..., i] for i in range(4)) if isinstance(boxes, np.ndarray) else boxes.unbind(-1)


def box_cxcywh_to_xyxy(boxes):
    """(..., 4) centre-size boxes -> corner boxes (tensor or array, as given)."""
    cx, cy, w, h = _unbind(boxes)
    return _stack(boxes, [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h])


def box_xyxy_to_cxcywh(boxes):
    """(..., 4) corner boxes -> centre-size boxes (tensor or array, as given)."""
    x0, y0, x1, y1 = _unbind(boxes)
    return _stack(boxes, [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])


def box_iou(a, b, *, fmt: str = "xyxy", crowd=None) -> np.ndarray:
    """IoU of every box of `a` (N, 4) with every box of `b` (M, 4) -> (N, M) float64.

    fmt: "xyxy" or "xywh" (COCO; sizes are used as given, so areas equal pycocotools' exactly).
    crowd: optional (M,) bools; for a crowd box of `b` the union is the area of the box of `a`
    (COCO's iscrowd rule). Boxes that do not overlap score 0, also when degenerate.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    if fmt == "xywh":
        a_x1, a_y1, b_x1, b_y1 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
    elif fmt == "xyxy":
        a_x1, a_y1, b_x1, b_y1 = a[:, 2], a[:, 3], b[:, 2], b[:, 3]
        area_a, area_b = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    else:
        raise ValueError(f"box format must be 'xyxy' or 'xywh', got {fmt!r}")
    w = np.minimum(a_x1[:, None], b_x1[None, :]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a_y1[:, None], b_y1[None, :]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    if crowd is not None:
        union = np.where(np.asarray(crowd, bool)[None, :], area_a[:, None], union)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


__all__ = ["box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "box_iou"]
