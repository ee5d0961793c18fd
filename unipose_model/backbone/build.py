"""Backbone + per-level padding masks + sine position embeddings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import image_sine_embedding
from .resnet import ResNetBackbone
from .swin import SWIN_VARIANTS, SwinTransformer


@dataclass
class FeatureLevel:
    features: torch.Tensor  # (B, C, h, w)
    mask: torch.Tensor      # (B, h, w) True on padding
    pos: torch.Tensor       # (B, d_model, h, w)


class ImageBackbone(nn.Module):
    """Wraps the feature extractor as child "0" (the official checkpoint's `backbone.0.*` keys)."""

    def __init__(self, body: nn.Module, pos_feats: int, pos_temperature: float):
        super().__init__()
        self.add_module("0", body)
        self.num_channels = list(body.num_channels)
        self.pos_feats, self.pos_temperature = pos_feats, pos_temperature

    @property
    def body(self) -> nn.Module:
        return getattr(self, "0")

    def level_mask(self, mask: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(mask[None].float(), size=size).to(torch.bool)[0]

    def position(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return image_sine_embedding(mask, self.pos_feats, self.pos_temperature, dtype)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> List[FeatureLevel]:
        levels = []
        for feat in self.body(images):
            m = self.level_mask(mask, feat.shape[-2:])
            levels.append(FeatureLevel(feat, m, self.position(m, feat.dtype)))
        return levels


def build_backbone(name: str, hidden_dim: int, pos_temperature: float, **kwargs) -> ImageBackbone:
    if name in SWIN_VARIANTS:
        body = SwinTransformer(**{**SWIN_VARIANTS[name], **kwargs})
    elif name == "swin_custom":
        body = SwinTransformer(**kwargs)
    elif name in ("resnet50", "resnet101"):
        body = ResNetBackbone(int(name[len("resnet"):]))
    else:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(SWIN_VARIANTS)} + resnet50, resnet101, swin_custom")
    return ImageBackbone(body, hidden_dim // 2, pos_temperature)
