"""Small building blocks shared by the encoder, the decoder and the heads."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x, inplace=True)  # x is the fresh output of the layer before
        return x


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """logit(x) with x clamped to [0, 1] and both x and 1-x floored at eps (at most +-6.9)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _frequencies(num_feats: int, temperature: float, device) -> torch.Tensor:
    # Always float32: the official model computes these tables in float32 even in a float64 run,
    # and the float64 reference outputs depend on that rounding.
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


def box_sine_embedding(boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """Sine embedding of normalised (x, y[, w, h]) -> (..., 2|4 * num_feats), ordered (y, x, w, h)."""
    dim_t = _frequencies(num_feats, temperature, boxes.device)
    scale = 2 * math.pi
    parts = [_interleave_sin_cos(boxes[..., i, None] * scale / dim_t) for i in range(boxes.shape[-1])]
    parts[0], parts[1] = parts[1], parts[0]
    return torch.cat(parts, dim=-1)


def image_sine_embedding(mask: torch.Tensor, num_feats: int, temperature: float, dtype: torch.dtype) -> torch.Tensor:
    """DETR's normalised sine position embedding of a padded feature map.

    mask: (B, H, W) True on padding. Returns (B, 2*num_feats, H, W) ordered (y, x), computed in
    float32 (as the official model does) and cast to `dtype`.
    """
    not_mask = ~mask
    y = not_mask.cumsum(1, dtype=torch.float32)
    x = not_mask.cumsum(2, dtype=torch.float32)
    eps, scale = 1e-6, 2 * math.pi
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = _frequencies(num_feats, temperature, mask.device)
    pos_x = _interleave_sin_cos(x[..., None] / dim_t)
    pos_y = _interleave_sin_cos(y[..., None] / dim_t)
    return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2).to(dtype)
