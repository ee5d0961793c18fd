"""Hungarian matching between predictions and ground-truth objects (DETR-style set prediction).

Cost of assigning query q to target t (all weights are config fields):

    cost_class * focal(q, class_t) + cost_bbox * L1(box_q, box_t) + cost_giou * -GIoU(box_q, box_t)
    [+ cost_keypoint * L1 over visible keypoints + cost_oks * -OKS, for outputs with keypoints]

The focal classification cost is the difference of the positive and negative focal terms for
the target's class column (Deformable DETR / DINO). Class columns are the image's prompt rows,
so `labels` index into pred_logits' last dimension.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import generalized_box_iou

# box conversions live in the library (one implementation); imported here for losses/denoising
from unipose_model.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh  # noqa: F401


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25,
                     gamma: float = 2.0) -> torch.Tensor:
    """(Q, N) logits, (T,) labels -> (Q, T) cost: positive minus negative focal term."""
    prob = logits.float().sigmoid()[:, labels]
    eps = 1e-8
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + eps).log()
    pos = alpha * (1 - prob).pow(gamma) * -(prob + eps).log()
    return pos - neg


def keypoint_costs(pred_kpts: torch.Tensor, gt_kpts: torch.Tensor, gt_vis: torch.Tensor,
                   areas: torch.Tensor, sigmas: torch.Tensor, size_hw: Tuple[float, float]):
    """(Q, K, 2) predictions vs (T, K, 2) targets -> (L1 cost, OKS) both (Q, T).

    L1 is averaged over the target's visible keypoints; OKS is computed in pixels (`size_hw`)
    so that non-square images are scored as the OKS definition intends.
    """
    vis = gt_vis.float()                                                    # (T, K)
    diff = pred_kpts[:, None] - gt_kpts[None]                               # (Q, T, K, 2)
    n_vis = vis.sum(-1).clamp(min=1)
    l1 = (diff.abs().sum(-1) * vis[None]).sum(-1) / n_vis[None]
    scale = diff.new_tensor([size_hw[1], size_hw[0]])
    d2 = (diff * scale).pow(2).sum(-1)
    var = (2 * sigmas) ** 2                                                 # (K,)
    e = torch.exp(-d2 / (2 * areas[None, :, None] * var[None, None] + 1e-9))
    oks = (e * vis[None]).sum(-1) / n_vis[None]
    return l1, oks


@dataclass
class MatcherWeights:
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    cost_keypoint: float = 0.0   # ED-Pose also matches keypoint layers on keypoints (10.0)
    cost_oks: float = 0.0        # ... and OKS (4.0); off by default
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


class HungarianMatcher:
    """One-to-one assignment per image; returns [(query_idx, target_idx)] as int64 tensors."""

    def __init__(self, weights: MatcherWeights | None = None):
        self.w = weights or MatcherWeights()

    def cost_matrix(self, outputs: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor],
                    b: int) -> torch.Tensor:
        """(Q, T) cost for image b of the batch."""
        w = self.w
        logits = outputs["pred_logits"][b]
        boxes = outputs["pred_boxes"][b].float()
        labels = target["labels"]
        tgt_boxes = target["boxes"].float()
        # invalid prompt columns are -inf; they are never a target's column, so only guard NaNs
        logits = torch.nan_to_num(logits.float(), neginf=-1e4)
        cost = w.cost_class * focal_class_cost(logits, labels, w.focal_alpha, w.focal_gamma)
        cost = cost + w.cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
        cost = cost - w.cost_giou * giou
        if "pred_keypoints" in outputs and (w.cost_keypoint or w.cost_oks) and "keypoints" in target:
            kp = outputs["pred_keypoints"][b].float()
            l1, oks = keypoint_costs(kp, target["keypoints"].float(), target["visibility"],
                                     target["areas"].float(), target["sigmas"].float(),
                                     tuple(target["size"].tolist()))
            cost = cost + w.cost_keypoint * l1 - w.cost_oks * oks
        return cost

    @torch.no_grad()
    def __call__(self, outputs: Dict[str, torch.Tensor],
                 targets: Sequence[Dict[str, torch.Tensor]]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        result = []
        for b, target in enumerate(targets):
            if target["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                result.append((empty, empty))
                continue
            cost = self.cost_matrix(outputs, target, b).cpu().numpy()
            if not np.isfinite(cost).all():  # a NaN prediction must not crash scipy
                cost = np.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6)
            rows, cols = linear_sum_assignment(cost)
            result.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return result
