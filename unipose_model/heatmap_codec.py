"""The heatmap codec of the heatmap refiner: keypoints -> target heatmaps (training) and heatmaps
-> keypoints (inference), in one place so the two cannot drift apart (their round trip is tested:
test/test_heatmap_codec.py).

Coordinates: crop pixels, pixel centres at integers. A heatmap of H cells covers a crop of S
pixels (stride S / H); cell c's centre is crop pixel (c + 0.5) * stride - 0.5.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def to_cells(xy: np.ndarray, input_size: int, heatmap_size: int) -> np.ndarray:
    """Crop pixels -> heatmap cells."""
    return (np.asarray(xy, np.float64) + 0.5) * heatmap_size / input_size - 0.5


def encode_heatmaps(xy: np.ndarray, visible: np.ndarray, input_size: int, heatmap_size: int,
                    sigma: float) -> np.ndarray:
    """(K, H, H) float32 Gaussians (peak 1, `sigma` in cells) at the crop keypoints `xy` (K, 2);
    all zero for keypoints that are not `visible` (K,)."""
    grid = np.arange(heatmap_size, dtype=np.float32)
    cells = to_cells(xy, input_size, heatmap_size)
    gx = np.exp(-(grid[None] - cells[:, :1]) ** 2 / (2 * sigma ** 2))
    gy = np.exp(-(grid[None] - cells[:, 1:]) ** 2 / (2 * sigma ** 2))
    return (gy[:, :, None] * gx[:, None, :] * np.asarray(visible)[:, None, None]).astype(np.float32)


def decode_heatmaps(heatmaps: torch.Tensor, input_size: int, blur_sigma: float = 1.5
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(B, K, H, W) -> keypoints (B, K, 2) in crop pixels and peak values (B, K).

    DARK decoding (Zhang et al., CVPR 2020): the heatmap is smoothed with a Gaussian, and the
    peak cell is refined by the vertex of the parabola through the log-values of its two
    neighbours along each axis, which is exact for a Gaussian peak (a plain centroid over a window
    is pulled toward the peak cell). At the border, or where the log is not concave, the peak
    cell stays as it is."""
    b, k, h, w = heatmaps.shape
    maps = heatmaps.float().clamp(min=0).reshape(b * k, 1, h, w)
    radius = max(1, int(math.ceil(2 * blur_sigma)))
    g = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * blur_sigma ** 2))
    g = g / g.sum()
    maps = F.pad(maps, (radius, radius, radius, radius), mode="replicate")  # zeros would pull edge peaks in
    maps = F.conv2d(F.conv2d(maps, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1)).reshape(b, k, h, w)
    logs = maps.clamp(min=1e-10).log()
    flat = maps.reshape(b, k, -1)
    index = flat.argmax(-1)
    py, px = index // w, index % w
    peak = heatmaps.float().reshape(b, k, -1).gather(-1, index[..., None])[..., 0]

    def vertex(line: torch.Tensor, pos: torch.Tensor, n: int) -> torch.Tensor:
        inside = (pos > 0) & (pos < n - 1)
        c = pos.clamp(1, n - 2)
        left = line.gather(-1, (c - 1)[..., None])[..., 0]
        mid = line.gather(-1, c[..., None])[..., 0]
        right = line.gather(-1, (c + 1)[..., None])[..., 0]
        curve = left - 2 * mid + right
        offset = torch.where(curve < -1e-6, 0.5 * (left - right) / curve.clamp(max=-1e-6), torch.zeros_like(mid))
        return torch.where(inside, offset.clamp(-1.0, 1.0), torch.zeros_like(mid))

    rows = logs.gather(2, py.view(b, k, 1, 1).expand(b, k, 1, w))[:, :, 0]   # (B, K, W) through the peak
    cols = logs.gather(3, px.view(b, k, 1, 1).expand(b, k, h, 1))[..., 0]    # (B, K, H)
    cx = px.float() + vertex(rows, px, w)
    cy = py.float() + vertex(cols, py, h)
    stride = input_size / w
    xy = torch.stack([(cx + 0.5) * stride - 0.5, (cy + 0.5) * stride - 0.5], -1)
    return xy.numpy(), peak.numpy()
