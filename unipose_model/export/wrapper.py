"""An export-friendly view of UniPose: tensors in, tensors out, one keypoint set per graph."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

INPUT_NAMES = ("image", "mask", "instance_text", "keypoint_text")
OUTPUT_NAMES = ("logits", "boxes", "keypoints")


class ExportableUniPose(nn.Module):
    """image (1, 3, H, W) float normalised, mask (1, H, W) bool (True on padding),
    instance_text (N, 512), keypoint_text (K, 512) -> logits (1, S, N) raw class logits,
    boxes (1, S, 4) normalised cxcywh, keypoints (1, S, K, 2) normalised xy.

    The prompt features are graph inputs, so a new prompt needs no re-export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, mask: torch.Tensor, instance_text: torch.Tensor,
                keypoint_text: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(image, mask, instance_text, keypoint_text)
        return out["pred_logits"], out["pred_boxes"], out["pred_keypoints"]
