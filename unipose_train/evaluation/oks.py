"""Similarity measures between detections and ground truth: OKS for keypoints, IoU for boxes.

Both follow the COCO definitions exactly (same as pycocotools / xtcocotools), so the AP built on
them in `coco_eval` reproduces those tools to floating-point rounding:

OKS(d, g) = mean over g's labelled keypoints of exp(-d_i^2 / (2 * s * (2 sigma_i)^2)), s = the
ground truth's area (segment area in COCO). When g has no labelled keypoint the distance is
measured to a box twice g's size around g's box (the COCO rule for such ground truth).
"""
from __future__ import annotations

import numpy as np

from unipose_model.box_ops import box_iou

__all__ = ["oks_matrix", "box_iou_matrix", "XTCOCO_BOX_AREA_FACTOR"]

# xtcocotools' use_area=False replaces the segment area by box area * 0.53 (CrowdPose/OCHuman).
XTCOCO_BOX_AREA_FACTOR = 0.53


def oks_matrix(dt_kpts: np.ndarray, gt_kpts: np.ndarray, gt_areas: np.ndarray, gt_boxes: np.ndarray,
               sigmas: np.ndarray) -> np.ndarray:
    """(D, G) OKS between D detections (D, K, >=2) and G ground truths (G, K, 3)."""
    dt = np.asarray(dt_kpts, dtype=np.float64)
    gt = np.asarray(gt_kpts, dtype=np.float64)
    out = np.zeros((len(dt), len(gt)))
    if len(dt) == 0 or len(gt) == 0:
        return out
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    xd, yd = dt[:, :, 0], dt[:, :, 1]
    for j in range(len(gt)):
        xg, yg, vg = gt[j, :, 0], gt[j, :, 1], gt[j, :, 2]
        labelled = vg > 0
        if labelled.any():
            dx, dy = xd - xg, yd - yg
        else:
            bx, by, bw, bh = gt_boxes[j]
            x0, x1, y0, y1 = bx - bw, bx + bw * 2, by - bh, by + bh * 2
            dx = np.maximum(0, x0 - xd) + np.maximum(0, xd - x1)
            dy = np.maximum(0, y0 - yd) + np.maximum(0, yd - y1)
        e = (dx ** 2 + dy ** 2) / variances / (gt_areas[j] + np.spacing(1)) / 2
        if labelled.any():
            e = e[:, labelled]
        out[:, j] = np.exp(-e).sum(1) / e.shape[1]
    return out


def box_iou_matrix(dt_boxes: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """(D, G) IoU of xywh boxes; for crowd ground truth the union is the detection's area."""
    return box_iou(dt_boxes, gt_boxes, fmt="xywh", crowd=gt_crowd)
