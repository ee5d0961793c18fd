"""Crop refinement: a second, zoomed-in pass over each detection for finer keypoints.

The first pass sees the whole image, where a small object covers few feature cells. A second
pass on a square crop centred on each detected box (side = ``context`` x the box's longer side,
resized to the model's input like any image) sees the object larger and without the rest of the
scene; the detection keeps its box and score from the first pass and takes the keypoints of the
crop's detection that overlaps it most. This is the top-down second stage of SLEAP's and
MMPose's pipelines, done with the same model. It costs one extra forward pass per detection (for
at most MAX_REFINED_PER_IMAGE detections per image, the best-scoring ones; the rest keep their
first-pass keypoints).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .box_ops import box_iou

MIN_MATCH_IOU = 0.3  # the crop's detection must be the same object, not a neighbour
MAX_CROP_FRACTION = 0.9  # a crop covering more of the image than this (per side) gains little
MAX_REFINED_PER_IMAGE = 20  # best-scoring detections refined per image: bounds the cost in crowds


@dataclass(frozen=True)
class Crop:
    x0: int
    y0: int
    x1: int
    y1: int

    def cut(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[self.y0:self.y1, self.x0:self.x1])


def crop_around(box, context: float, height: int, width: int) -> Crop | None:
    """The square crop of side ``context`` x the box's longer side, centred on the box and
    shifted (then clipped) to lie inside the image; None when it would be nearly the whole
    image (a second pass would see what the first saw)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = context * max(x1 - x0, y1 - y0, 1.0)
    if side >= MAX_CROP_FRACTION * width and side >= MAX_CROP_FRACTION * height:
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0.0), max(width - side, 0.0))))
    top = int(round(min(max(cy - side / 2, 0.0), max(height - side, 0.0))))
    right, bottom = min(width, left + int(round(side))), min(height, top + int(round(side)))
    if right - left < 8 or bottom - top < 8:
        return None
    return Crop(left, top, right, bottom)


def best_match(box, class_index: int, candidates, crop: Crop):
    """The crop detection (an Instance in crop pixels) of the same class that overlaps ``box``
    (image pixels) most, with IoU >= MIN_MATCH_IOU; None otherwise."""
    best, best_iou = None, MIN_MATCH_IOU
    for cand in candidates:
        if cand.class_index != class_index:
            continue
        shifted = (cand.box[0] + crop.x0, cand.box[1] + crop.y0, cand.box[2] + crop.x0, cand.box[3] + crop.y0)
        iou = float(box_iou([box], [shifted])[0, 0])
        if iou >= best_iou:
            best, best_iou = cand, iou
    return best


def refined_keypoints(keypoints: np.ndarray, match, crop: Crop) -> np.ndarray:
    """The detection's (K, 3) keypoints with x, y taken from its crop match (scores unchanged)."""
    out = keypoints.copy()
    out[:, 0] = match.keypoints[:, 0] + crop.x0
    out[:, 1] = match.keypoints[:, 1] + crop.y0
    return out
