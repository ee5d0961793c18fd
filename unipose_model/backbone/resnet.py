"""ResNet backbone with frozen batch norm (the paper's ResNet-50 experiments)."""
from __future__ import annotations

from typing import List

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


class ResNetBackbone(nn.Module):
    """Outputs of layer2..layer4 (strides 8, 16, 32). Weights come from a checkpoint, never a download."""

    def __init__(self, depth: int = 50):
        super().__init__()
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None, norm_layer=FrozenBatchNorm2d)
        self.body = torchvision.models._utils.IntermediateLayerGetter(
            net, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"})
        self.num_channels: List[int] = [512, 1024, 2048]

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        return list(self.body(images).values())
