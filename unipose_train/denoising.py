"""Contrastive denoising queries (DN-DETR / DINO, as in the official UniPose config).

Noised copies of the ground-truth boxes enter the decoder next to the matching queries, with the
label embedding of their (possibly flipped) class as content. Each ground truth gets a positive
copy (box noise inside half its size: should reconstruct the box and the class) and a negative
copy (noise between one and two half-sizes: should predict "no object"). The queries are
assigned to their ground truth by construction, so their losses need no matching; they stabilise
and speed up training. Inference never builds them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou

from .losses import full_precision, sigmoid_focal_loss
from .matcher import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh


@dataclass
class DenoisingConfig:
    number: int = 100            # denoising queries per image (split into groups), 0 = off
    label_noise_ratio: float = 0.5
    box_noise_scale: float = 1.0
    weight: float = 1.0          # multiplier of the denoising losses


@dataclass
class DenoisingQueries:
    labels: torch.Tensor     # (B, D) prompt-class index used for the content embedding
    boxes: torch.Tensor      # (B, D, 4) noised boxes, normalised cxcywh
    group_size: int
    target: torch.Tensor     # (B, D) index of the ground truth each query copies
    positive: torch.Tensor   # (B, D) bool: positive copy (else negative)
    valid: torch.Tensor      # (B, D) bool: real (images with fewer objects leave slots unused)

    def model_input(self) -> Dict:
        return {"labels": self.labels, "boxes": self.boxes, "group_size": self.group_size}


def build_denoising_queries(targets: Sequence[Dict[str, torch.Tensor]], num_classes: Sequence[int],
                            cfg: DenoisingConfig, generator: Optional[torch.Generator] = None
                            ) -> Optional[DenoisingQueries]:
    """targets[b]: "labels" (n,) prompt-class indices, "boxes" (n, 4) normalised cxcywh."""
    max_gt = max((len(t["labels"]) for t in targets), default=0)
    if cfg.number <= 0 or max_gt == 0:
        return None
    device = targets[0]["boxes"].device
    group_size = 2 * max_gt
    groups = max(cfg.number // group_size, 1)
    B, D = len(targets), groups * group_size
    labels = torch.zeros(B, D, dtype=torch.long)
    boxes = torch.full((B, D, 4), 0.5)
    target = torch.zeros(B, D, dtype=torch.long)
    positive = torch.zeros(B, D, dtype=torch.bool)
    valid = torch.zeros(B, D, dtype=torch.bool)
    for b, t in enumerate(targets):
        n = len(t["labels"])
        if n == 0:
            continue
        gt_labels = t["labels"].cpu().long().repeat(2 * groups)
        gt_boxes = t["boxes"].cpu().float().repeat(2 * groups, 1)
        # label noise: a random share of the copies carries a random class of the prompt
        flip = torch.rand(len(gt_labels), generator=generator) < cfg.label_noise_ratio * 0.5
        random_labels = torch.randint(0, max(int(num_classes[b]), 1), (len(gt_labels),), generator=generator)
        noisy_labels = torch.where(flip, random_labels, gt_labels)
        # box noise on the corners, scaled by the half size: positives < 1, negatives in [1, 2)
        xyxy = box_cxcywh_to_xyxy(gt_boxes)
        half = torch.cat((gt_boxes[:, 2:] / 2, gt_boxes[:, 2:] / 2), 1)
        sign = torch.randint(0, 2, xyxy.shape, generator=generator).float() * 2 - 1
        part = torch.rand(xyxy.shape, generator=generator)
        is_neg = torch.arange(2 * groups).repeat_interleave(n) % 2 == 1
        part = part + is_neg[:, None].float()
        noisy = (xyxy + sign * part * half * cfg.box_noise_scale).clamp(0.0, 1.0)
        noisy = box_xyxy_to_cxcywh(noisy)
        noisy[:, 2:] = noisy[:, 2:].clamp(min=1e-4)
        for k in range(2 * groups):  # copy k: group k // 2, positives (k even) then negatives
            g, neg = divmod(k, 2)
            slots = g * group_size + neg * max_gt + torch.arange(n)
            rows = slice(k * n, (k + 1) * n)
            labels[b, slots] = noisy_labels[rows]
            boxes[b, slots] = noisy[rows]
            target[b, slots] = torch.arange(n)
            positive[b, slots] = not neg
            valid[b, slots] = True
    return DenoisingQueries(labels.to(device), boxes.to(device), group_size, target.to(device),
                            positive.to(device), valid.to(device))


def _matched_targets(targets: Sequence[Dict[str, torch.Tensor]], target_index: torch.Tensor,
                     b_idx: torch.Tensor, q_idx: torch.Tensor, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class and box of the ground-truth object behind each positive query (b_idx[i], q_idx[i]).

    One gather over the batch's objects laid end to end: indexing `targets[b]` per query with
    device scalars would read each index back to the host (thousands of GPU syncs per step)."""
    sizes = torch.tensor([len(t["labels"]) for t in targets], device=device)
    offsets = torch.cumsum(sizes, 0) - sizes
    rows = offsets[b_idx] + target_index.to(device)[b_idx, q_idx]
    labels = torch.cat([t["labels"].to(device) for t in targets]).long()
    boxes = torch.cat([t["boxes"].to(device).float() for t in targets])
    return labels[rows], boxes[rows]


def denoising_losses(dn_outputs: List[Dict[str, torch.Tensor]], queries: DenoisingQueries,
                     targets: Sequence[Dict[str, torch.Tensor]], num_boxes: float, weights,
                     instance_valid: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Class focal (positives -> their class, negatives -> nothing), box L1 and GIoU on positives,
    summed over the decoder layers; keys `dn_cls`, `dn_bbox`, `dn_giou` (weighted).

    Normalised by num_boxes x the number of groups (as DINO): each group then weighs as much as
    the matching queries, however many groups fit in `number`."""
    totals: Dict[str, torch.Tensor] = {}
    pos = queries.positive & queries.valid
    num_boxes = num_boxes * max(queries.labels.shape[1] // queries.group_size, 1)
    b_idx, q_idx = pos.nonzero(as_tuple=True)
    gt_labels, gt_boxes = _matched_targets(targets, queries.target, b_idx, q_idx, pos.device)
    for out in dn_outputs:
        logits = out["pred_logits"]
        B, D, N = logits.shape
        cls_target = torch.zeros_like(full_precision(logits))
        cls_target[b_idx, q_idx, gt_labels] = 1.0
        cols = torch.isfinite(logits)
        if instance_valid is not None:
            cols = cols & instance_valid[:, None, :N].to(logits.device)
        rows = queries.valid[:, :, None]
        cls = sigmoid_focal_loss(logits, cls_target, cols & rows, weights.focal_alpha, weights.focal_gamma) / num_boxes
        pred = full_precision(out["pred_boxes"])[b_idx, q_idx]
        gt = gt_boxes.to(pred) if len(b_idx) else pred
        l1 = F.l1_loss(pred, gt, reduction="sum") / num_boxes
        giou = (1 - torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt)))).sum() / num_boxes
        for name, value, w in (("dn_cls", cls, weights.cls), ("dn_bbox", l1, weights.bbox), ("dn_giou", giou, weights.giou)):
            totals[name] = totals.get(name, 0) + value * w
    return totals


def step_denoising_queries(cfg: DenoisingConfig, targets, inst_valid: torch.Tensor, labelbook: int, run_seed: int,
                           step: int, rank: int) -> Optional[DenoisingQueries]:
    """DN queries for one training step's batch. Their noise comes from a generator seeded by
    (run seed, step, rank), not from the global RNG (which DataLoader iterators also draw from):
    a resumed run draws exactly the noise the uninterrupted run drew at that step."""
    if cfg.number <= 0:
        return None
    num_classes = inst_valid.sum(1).tolist()
    if max(num_classes, default=0) > labelbook:
        raise ValueError(f"a batch has {max(num_classes)} prompt classes; the model's denoising label "
                         f"table has {labelbook}")
    seed = (int(run_seed) * 1_000_003 + int(step)) * 131 + int(rank)
    return build_denoising_queries(targets, num_classes, cfg, torch.Generator().manual_seed(seed % 2 ** 63))
