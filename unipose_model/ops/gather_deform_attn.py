"""Multi-scale deformable attention as one weighted gather: the fast CPU sampling core.

The reference core (`ms_deform_attn_pytorch`) runs `grid_sample` per level on a channels-first
copy of the value map, stacks the samples, then weights and sums them: several passes over
(queries x heads x levels x points x channels). Here each output row is a weighted sum of value
rows, so the bilinear corner weights and the attention weights are folded into one weight per
(query, head, level, point, corner) and the whole operation is a single
`F.embedding_bag(mode="sum", per_sample_weights=...)` over the value in its (B, S, M, D) layout.

Zero padding without bounds checks: each level gets a border of zero pixels (one before, two
after) and sampling positions are clamped to [-1, size]; a clamped position only reaches zero
pixels, as the reference's out-of-range corners do. Same function (align_corners=False),
differentiable in value, locations and weights; "auto" uses it for CPU inference only, because
its backward (embedding_bag's) is slower than grid_sample's.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from .ms_deform_attn import register_deform_attn_impl

FLOAT32_EXACT_ROWS = 2 ** 24  # row indices below this are exact in float32; beyond, float64 / int64


def ms_deform_attn_gather(value: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                          sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Same signature and result as `ms_deform_attn_pytorch`: (B, S, M, D) ... -> (B, Q, M*D)."""
    B, S, M, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    device, dtype = value.device, sampling_locations.dtype
    levels = value.split([h * w for h, w in spatial_shapes], dim=1)
    table = torch.cat([F.pad(v.reshape(B, h, w, M * D), (0, 0, 1, 2, 1, 2)).view(B, (h + 3) * (w + 3), M, D)
                       for v, (h, w) in zip(levels, spatial_shapes)], 1)
    rows_total = table.shape[0] * table.shape[1] * M
    # Row indices are built in floating point (fewer conversions), exact below 2**24 in float32.
    index_dtype = torch.float32 if rows_total < FLOAT32_EXACT_ROWS else torch.float64
    starts, start = [], 0
    for h, w in spatial_shapes:
        starts.append(start)
        start += (h + 3) * (w + 3)

    size = torch.tensor([[w, h] for h, w in spatial_shapes], device=device, dtype=dtype).view(1, 1, 1, L, 1, 2)
    xy = sampling_locations * size - 0.5                       # pixel centre of column i at i
    xy = torch.maximum(torch.minimum(xy, size), torch.full((), -1.0, device=device, dtype=dtype))
    xy0 = xy.floor()
    fx, fy = (xy - xy0).unbind(-1)
    # Row of value pixel (x0, y0) in table.view(B * S' * M, D): ((b*S' + start_l + y*W'_l + x) * M + m,
    # with the border shifting x and y by one.
    step = torch.tensor([[M, (w + 3) * M] for _, w in spatial_shapes], device=device, dtype=index_dtype)
    row = ((xy0 + 1).to(index_dtype) * step.view(1, 1, 1, L, 1, 2)).sum(-1)
    row = row + (torch.tensor(starts, device=device, dtype=index_dtype).view(1, 1, 1, L, 1) * M
                 + torch.arange(M, device=device, dtype=index_dtype).view(1, 1, M, 1, 1)
                 + torch.arange(B, device=device, dtype=index_dtype).view(B, 1, 1, 1, 1) * (table.shape[1] * M))
    corners = torch.tensor([[0, M, (w + 3) * M, (w + 4) * M] for _, w in spatial_shapes],
                           device=device, dtype=index_dtype)
    rows = (row.unsqueeze(-1) + corners.view(1, 1, 1, L, 1, 4)).to(torch.int64 if index_dtype == torch.float64
                                                                    else torch.int32)
    wy = torch.stack((1 - fy, fy), -1) * attention_weights.unsqueeze(-1)
    wx = torch.stack((1 - fx, fx), -1)
    weights = (wy.unsqueeze(-1) * wx.unsqueeze(-2)).reshape(B * Q * M, L * P * 4)  # corners (y, x) as rows
    out = F.embedding_bag(rows.view(B * Q * M, L * P * 4), table.reshape(rows_total, D),
                          per_sample_weights=weights.to(value.dtype), mode="sum")
    return out.view(B, Q, M * D)


register_deform_attn_impl("gather", ms_deform_attn_gather)
