"""Post-processing identical to the official UniPose / X-Pose inference.

Per image: score = max over classes of sigmoid(logit); keep queries whose score is strictly above
``box_threshold``; class-agnostic torchvision NMS on the (normalised) xyxy boxes; then scale
boxes and keypoints to the pixels of the original image (x * W, y * H).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import nms

from .box_ops import box_cxcywh_to_xyxy
from .settings import DEFAULT_BOX_THRESHOLD, DEFAULT_IOU_THRESHOLD


@dataclass
class Selection:
    """Queries chosen for one image, all coordinates still normalised to [0, 1].

    ``filter_index`` / ``filter_scores`` describe the thresholded set (ascending query order);
    ``keep`` indexes into it in NMS output order (decreasing score, ties by index).  The other
    fields are in ``keep`` order.
    """

    filter_index: torch.Tensor   # (M,) int64 query indices passing the threshold
    filter_scores: torch.Tensor  # (M,) float32 their best sigmoid score (the NMS input)
    keep: torch.Tensor           # (P,) int64 indices into the filtered set
    query_index: torch.Tensor    # (P,) int64 query indices of the output
    scores: torch.Tensor         # (P,) float32
    labels: torch.Tensor         # (P,) int64 argmax class
    boxes_cxcywh: torch.Tensor   # (P, 4)
    keypoints: torch.Tensor      # (P, K, 2) x, y


@dataclass
class Detections:
    """Final detections of one image in original-image pixels (numpy, float64 coordinates)."""

    scores: np.ndarray      # (P,)
    labels: np.ndarray      # (P,) int64 class index into the prompt's classes
    boxes: np.ndarray       # (P, 4) x0, y0, x1, y1
    keypoints: np.ndarray   # (P, K, 2) x, y
    query_index: np.ndarray  # (P,) which model query each detection came from

    def __len__(self) -> int:
        return len(self.scores)


def select_queries(logits: torch.Tensor, boxes: torch.Tensor, keypoints: torch.Tensor, *,
                   box_threshold: float = DEFAULT_BOX_THRESHOLD,
                   iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                   allowed_classes=None) -> Selection:
    """Official threshold + NMS on one image's outputs.

    logits (S, N) raw, boxes (S, 4) cxcywh, keypoints (S, K, 2).  ``allowed_classes`` (optional
    iterable of class indices) additionally drops queries whose best class is not in it (used to
    split detections between keypoint groups); it does not change the scores.
    """
    # contiguous: torch's vectorised and strided sigmoid kernels can differ in the last bit
    logits = logits.detach().float().cpu().contiguous()
    boxes = boxes.detach().float().cpu()
    keypoints = keypoints.detach().float().cpu()
    best, labels = _best_class(logits)
    passing = best > box_threshold
    if allowed_classes is not None:
        allowed = torch.zeros(logits.shape[-1], dtype=torch.bool)
        allowed[torch.as_tensor(list(allowed_classes), dtype=torch.long)] = True
        passing &= allowed[labels]
    filter_index = torch.nonzero(passing, as_tuple=False).flatten()
    filter_scores = best[filter_index]
    keep = nms(box_cxcywh_to_xyxy(boxes[filter_index]), filter_scores, iou_threshold)
    query_index = filter_index[keep]
    return Selection(filter_index, filter_scores, keep, query_index, best[query_index],
                     labels[query_index], boxes[query_index], keypoints[query_index])


def _best_class(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The score is the max sigmoid (as official).  The label comes from the raw logits, because
    # float32 sigmoids saturate at 1.0 above ~16.6 and would tie several classes.
    best = logits.sigmoid().max(dim=-1).values
    labels = logits.argmax(dim=-1)
    return best, labels


def to_pixels(sel: Selection, height: int, width: int, *, max_instances: int | None = None,
              clip_boxes: bool = True) -> Detections:
    """Scale a selection to original-image pixels; optionally keep only the best ``max_instances``.

    Boxes are clipped to the image (the official output is not clipped: a box centre minus half
    its size can fall below 0).  Keypoints are sigmoids, so always inside the image.
    """
    n = len(sel.scores) if max_instances is None else min(max_instances, len(sel.scores))
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    cxcywh = sel.boxes_cxcywh[:n].double() * scale
    boxes = box_cxcywh_to_xyxy(cxcywh)
    if clip_boxes:
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    kpts = sel.keypoints[:n].double() * torch.tensor([width, height], dtype=torch.float64)
    return Detections(sel.scores[:n].numpy().astype(np.float64), sel.labels[:n].numpy(),
                      boxes.numpy(), kpts.numpy(), sel.query_index[:n].numpy())


def merge_selections(selections: list[Selection], iou_threshold: float) -> tuple[list[int], list[int]]:
    """Class-agnostic NMS across several selections (one per keypoint group).

    Returns (selection number, row) pairs of the survivors, by decreasing score.  With one
    selection this is the identity (its rows already survived the same NMS).
    """
    if len(selections) == 1:
        n = len(selections[0].scores)
        return [0] * n, list(range(n))
    owners = [torch.full((len(s.scores),), i, dtype=torch.long) for i, s in enumerate(selections)]
    rows = [torch.arange(len(s.scores)) for s in selections]
    boxes = torch.cat([box_cxcywh_to_xyxy(s.boxes_cxcywh) for s in selections])
    scores = torch.cat([s.scores for s in selections])
    keep = nms(boxes, scores, iou_threshold)
    return torch.cat(owners)[keep].tolist(), torch.cat(rows)[keep].tolist()


def from_official_layout(pred_logits, pred_boxes, pred_keypoints, num_classes: int,
                         num_keypoints: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official raw outputs -> this package's layout.

    pred_logits (B, S, 350) -> (B, S, N); pred_boxes unchanged; pred_keypoints
    (B, S, 3*68) laid out [x0, y0, ..., x67, y67, v0..v67] -> (B, S, K, 2).
    """
    logits = torch.as_tensor(pred_logits)[..., :num_classes]
    boxes = torch.as_tensor(pred_boxes)
    flat = torch.as_tensor(pred_keypoints)[..., :2 * num_keypoints]
    return logits, boxes, flat.reshape(*flat.shape[:-1], num_keypoints, 2)
