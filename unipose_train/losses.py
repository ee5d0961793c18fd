"""UniPose training losses (paper equation (1)), computed on matched query/target pairs.

    L = L_cls(prompt-to-object) + L_kpt_cls(prompt-to-keypoint)     contrastive sigmoid focal
      + L1(box) + GIoU(box) + L1(keypoints) + OKS(keypoints)

for the final decoder layer, every earlier layer (`aux_outputs`; box-only layers have no
keypoint terms) and the two-stage proposals (`enc_outputs`). Each layer is matched on its own.

Normalisation: every term is a sum divided by `num_boxes`, the number of target objects in the
*global* batch averaged over processes (DETR). With DDP averaging gradients, one process with
the global batch then computes exactly the same update as N processes with N shards.

Target dict per image (see dataset.collate): labels (M,) prompt column, boxes (M, 4) cxcywh
normalised, keypoints (M, K, 2) xy normalised, visibility (M, K) (>0 = labelled), areas (M,)
object area in pixels^2, sigmas (K,) OKS sigmas, size (2,) (h, w) of the unpadded image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou

from .matcher import HungarianMatcher, MatcherWeights, box_cxcywh_to_xyxy


@dataclass
class LossWeights:
    cls: float = 2.0          # prompt-to-object contrastive focal loss
    kpt_cls: float = 2.0      # prompt-to-keypoint contrastive focal loss
    bbox: float = 5.0         # box L1
    giou: float = 2.0
    keypoint: float = 10.0    # keypoint L1 (visible keypoints)
    oks: float = 4.0
    enc: float = 1.0          # multiplier of the two-stage proposal losses
    aux: float = 1.0          # multiplier of the earlier decoder layers' losses
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (autocast outputs may be half precision); float64 stays float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                       alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sum of the element-wise sigmoid focal loss over `valid` elements (invalid ones may be -inf)."""
    valid = valid.expand_as(logits)
    x = full_precision(logits)
    x = torch.where(valid, x, torch.zeros_like(x))
    t = targets.to(x.dtype)
    p = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return (loss * valid).sum()


def oks_per_instance(pred: torch.Tensor, gt: torch.Tensor, vis: torch.Tensor, areas: torch.Tensor,
                     sigmas: torch.Tensor, size_hw: torch.Tensor) -> torch.Tensor:
    """OKS of matched pairs: pred/gt (M, K, 2) normalised, vis (M, K), areas (M,) px^2 -> (M,)."""
    scale = torch.stack((size_hw[1], size_hw[0])).to(pred)
    d2 = ((pred - gt) * scale).pow(2).sum(-1)
    var = (2 * sigmas.to(pred)) ** 2
    e = torch.exp(-d2 / (2 * areas[:, None].to(pred) * var[None] + 1e-9))
    vis = vis.to(pred)
    return (e * vis).sum(-1) / vis.sum(-1).clamp(min=1e-6)


def global_num_boxes(targets: Sequence[Dict[str, torch.Tensor]], device) -> float:
    """Targets in this process's batch, averaged over processes (>= 1)."""
    n = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n)
        n = n / dist.get_world_size()
    return max(float(n.item()), 1.0)


class SetCriterion:
    """Matches every output layer to the targets and returns weighted loss terms."""

    def __init__(self, weights: LossWeights | None = None, matcher: HungarianMatcher | None = None):
        self.w = weights or LossWeights()
        self.matcher = matcher or HungarianMatcher(MatcherWeights(focal_alpha=self.w.focal_alpha,
                                                                  focal_gamma=self.w.focal_gamma))

    # ------------------------------------------------------------------ single layer
    def layer_losses(self, out: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]],
                     num_boxes: float, instance_valid: Optional[torch.Tensor] = None,
                     keypoint_valid: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        w = self.w
        indices = self.matcher(out, targets)
        logits = out["pred_logits"]
        B, Q, N = logits.shape
        dev = logits.device
        # --- prompt-to-object: each query vs every prompt row; matched queries target their class
        cls_target = torch.zeros(B, Q, N, device=dev, dtype=full_precision(logits).dtype)
        for b, (qi, ti) in enumerate(indices):
            cls_target[b, qi.to(dev), targets[b]["labels"][ti].to(dev)] = 1.0
        col_valid = torch.isfinite(logits) if instance_valid is None else instance_valid[:, None, :N].to(dev)
        col_valid = col_valid & torch.isfinite(logits)
        losses = {"cls": sigmoid_focal_loss(logits, cls_target, col_valid, w.focal_alpha, w.focal_gamma) / num_boxes}

        # --- boxes of matched pairs
        pred_boxes = torch.cat([out["pred_boxes"][b, qi.to(dev)] for b, (qi, _) in enumerate(indices)])
        tgt_boxes = torch.cat([targets[b]["boxes"][ti].to(dev) for b, (_, ti) in enumerate(indices)])
        pred_boxes = full_precision(pred_boxes)
        tgt_boxes = tgt_boxes.to(pred_boxes.dtype)
        losses["bbox"] = F.l1_loss(pred_boxes, tgt_boxes, reduction="sum") / num_boxes
        if len(pred_boxes):
            giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes)))
            losses["giou"] = (1 - giou).sum() / num_boxes
        else:
            losses["giou"] = pred_boxes.sum() * 0

        if "pred_keypoints" in out:
            losses.update(self.keypoint_losses(out, targets, indices, num_boxes, keypoint_valid))
        return losses

    def keypoint_losses(self, out, targets, indices, num_boxes, keypoint_valid):
        w = self.w
        dev = out["pred_keypoints"].device
        zero = out["pred_keypoints"].sum() * 0
        l1, oks, kcls = zero, zero, zero
        kpt_logits = out.get("pred_keypoint_logits")
        for b, (qi, ti) in enumerate(indices):
            t = targets[b]
            if "keypoints" not in t or len(ti) == 0:
                continue
            K = t["keypoints"].shape[1]
            qi = qi.to(dev)
            pred = full_precision(out["pred_keypoints"][b, qi, :K])
            gt = t["keypoints"][ti].to(dev, pred.dtype)
            vis = (t["visibility"][ti].to(dev) > 0).to(pred.dtype)
            l1 = l1 + ((pred - gt).abs().sum(-1) * vis).sum() / num_boxes
            has = vis.sum(-1) > 0
            if has.any():
                o = oks_per_instance(pred[has], gt[has], vis[has], t["areas"][ti].to(dev)[has],
                                     t["sigmas"].to(dev), t["size"].to(dev))
                oks = oks + (1 - o).sum() / num_boxes
            if kpt_logits is not None:
                # prompt-to-keypoint: keypoint query j of a matched object should pick prompt j
                lg = full_precision(kpt_logits[b, qi, :K, :K])
                if keypoint_valid is not None:
                    cols = keypoint_valid[b, :K].to(dev)[None, None, :]
                else:
                    cols = torch.ones(1, 1, K, dtype=torch.bool, device=dev)
                rows = vis.bool()[:, :, None]
                eye = torch.eye(K, device=dev, dtype=lg.dtype).expand_as(lg)
                kcls = kcls + sigmoid_focal_loss(lg, eye, rows & cols, w.focal_alpha, w.focal_gamma) / num_boxes
        result = {"keypoint": l1, "oks": oks}
        if kpt_logits is not None:
            result["kpt_cls"] = kcls
        return result

    # ------------------------------------------------------------------ all layers
    def __call__(self, outputs: Dict, targets: Sequence[Dict[str, torch.Tensor]],
                 instance_valid: Optional[torch.Tensor] = None,
                 keypoint_valid: Optional[torch.Tensor] = None,
                 num_boxes: Optional[float] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Total weighted loss and a flat dict of its (weighted) terms for logging."""
        dev = outputs["pred_logits"].device
        if num_boxes is None:
            num_boxes = global_num_boxes(targets, dev)
        layers: List[Tuple[str, Dict, float]] = [("", outputs, 1.0)]
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            layers.append((f"_{i}", aux, self.w.aux))
        if "enc_outputs" in outputs:
            layers.append(("_enc", outputs["enc_outputs"], self.w.enc))
        total = full_precision(outputs["pred_logits"]).new_zeros(())
        terms: Dict[str, float] = {}
        for suffix, out, mult in layers:
            for name, value in self.layer_losses(out, targets, num_boxes, instance_valid, keypoint_valid).items():
                weighted = value * getattr(self.w, name) * mult
                total = total + weighted
                terms[name + suffix] = float(weighted.detach())
        return total, terms
