"""Optimisation of a training run: frozen parameters, parameter groups (backbone and sampling
offsets at their own learning rates, as Deformable DETR), AdamW, and the learning-rate schedule."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch

from .config import OptimConfig


FREEZE_ALIASES = {"backbone": ["backbone."], "input_proj": ["input_proj."],
                  "encoder": ["transformer.encoder.", "transformer.level_embed"],
                  "decoder": ["transformer.decoder.", "bbox_embed.", "pose_embed.", "pose_hw_embed."],
                  "text_projection": ["projection.", "projection_kpt."],
                  "two_stage": ["transformer.enc_output", "transformer.enc_out_bbox_embed", "transformer.tgt_embed"]}


def freeze(model: torch.nn.Module, names: Sequence[str]) -> List[str]:
    prefixes = [p for n in names for p in FREEZE_ALIASES.get(n, [n])]
    frozen = []
    for name, p in model.named_parameters():
        if any(name.startswith(x) for x in prefixes):
            p.requires_grad_(False)
            frozen.append(name)
    if names and not frozen:
        raise ValueError(f"freeze {list(names)} matched no parameter; aliases: {sorted(FREEZE_ALIASES)}")
    return frozen


def param_groups(model: torch.nn.Module, cfg: OptimConfig) -> List[Dict]:
    groups: Dict[str, List] = {"base": [], "backbone": [], "linear_proj": []}
    for name, p in model.named_parameters():   # named_parameters de-duplicates shared heads
        if not p.requires_grad:
            continue
        if name.startswith("backbone."):
            groups["backbone"].append(p)
        elif "sampling_offsets" in name or "reference_points" in name:
            groups["linear_proj"].append(p)
        else:
            groups["base"].append(p)
    mult = {"base": 1.0, "backbone": cfg.backbone_lr_mult, "linear_proj": cfg.linear_proj_lr_mult}
    return [{"params": ps, "lr": cfg.lr * mult[k], "name": k} for k, ps in groups.items() if ps]


def lr_lambda(cfg: OptimConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            a = step / max(1, cfg.warmup_steps)
            return cfg.warmup_factor * (1 - a) + a
        if cfg.schedule == "step":
            return cfg.gamma ** sum(step >= m for m in cfg.milestones)
        if cfg.schedule == "cosine":
            t = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if cfg.schedule == "constant":
            return 1.0
        raise ValueError(f"unknown schedule {cfg.schedule!r} (step, cosine, constant)")
    return f


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters and its per-step schedule."""
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
