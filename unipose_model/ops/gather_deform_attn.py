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


def padded_table(value: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """(B, S, M, D) -> (B, sum (h+3)(w+3), M, D): each level with its zero border, in one pass
    (only the border strips are zeroed; F.pad per level and a cat would write it all three times)."""
    B, S, M, D = value.shape
    sizes = [(h + 3) * (w + 3) for h, w in spatial_shapes]
    table = value.new_empty(B, sum(sizes), M * D)
    start = 0
    for v, (h, w), n in zip(value.split([h * w for h, w in spatial_shapes], dim=1), spatial_shapes, sizes):
        level = table[:, start:start + n].view(B, h + 3, w + 3, M * D)
        level[:, :1].zero_()
        level[:, h + 1:].zero_()
        level[:, 1:h + 1, :1].zero_()
        level[:, 1:h + 1, w + 1:].zero_()
        level[:, 1:h + 1, 1:w + 1].copy_(v.reshape(B, h, w, M * D))
        start += n
    return table.view(B, -1, M, D)


def corner_weights(fx: torch.Tensor, fy: torch.Tensor, attention: torch.Tensor, inplace: bool) -> torch.Tensor:
    """(..., 2, 2) bilinear corner weights times the attention weight, corners (y, x) as rows:
    a * (1 - fy) * (1 - fx), a * (1 - fy) * fx, a * fy * (1 - fx), a * fy * fx."""
    if not inplace:  # differentiable
        ay1 = fy * attention
        ay0 = attention - ay1
        return torch.stack((torch.stack((ay0 - ay0 * fx, ay0 * fx), -1), torch.stack((ay1 - ay1 * fx, ay1 * fx), -1)), -2)
    weights = attention.new_empty(*attention.shape, 2, 2)  # each product written into its place
    ay1 = torch.mul(fy, attention, out=weights[..., 1, 0])
    ay0 = torch.sub(attention, ay1, out=weights[..., 0, 0])
    ay0.sub_(torch.mul(ay0, fx, out=weights[..., 0, 1]))
    ay1.sub_(torch.mul(ay1, fx, out=weights[..., 1, 1]))
    return weights


def ms_deform_attn_gather(value: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                          sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Same signature and result as `ms_deform_attn_pytorch`: (B, S, M, D) ... -> (B, Q, M*D)."""
    B, S, M, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    device, dtype = value.device, sampling_locations.dtype
    table = padded_table(value, spatial_shapes)
    rows_total = table.shape[0] * table.shape[1] * M
    # Row indices are built in floating point (fewer conversions), exact below 2**24 in float32.
    index_dtype = torch.float32 if rows_total < FLOAT32_EXACT_ROWS else torch.float64
    int_dtype = torch.int64 if index_dtype == torch.float64 else torch.int32
    # Few passes over the (B, Q, M, L, P) arrays, in place where a result is not needed again: this
    # arithmetic, not the gather, was most of the core's time (docs/BENCHMARKS.md, issue 22).
    # In place only where autograd records nothing (inference); else the same steps out of place.
    inplace = not (torch.is_grad_enabled() and any(t.requires_grad for t in (value, sampling_locations,
                                                                               attention_weights)))
    size = torch.tensor([[w, h] for h, w in spatial_shapes], device=device, dtype=dtype).view(1, 1, 1, L, 1, 2)
    xy = torch.addcmul(torch.tensor(-0.5, device=device, dtype=dtype), sampling_locations, size)  # pixel centre of column i at i
    xy = torch.minimum(xy.clamp_(min=-1.0), size, out=xy) if inplace else torch.minimum(xy.clamp(min=-1.0), size)
    xy0 = xy.floor()
    fx, fy = (xy.sub_(xy0) if inplace else xy - xy0).unbind(-1)
    x0, y0 = xy0.to(index_dtype).unbind(-1)
    # Row of corner (x0, y0) in table.view(B * S' * M, D): base + x0 * M + y0 * W'_l * M, the base
    # holding the level's start, the head, the batch and the border's shift of x and y by one.
    starts = [0]
    for h, w in spatial_shapes[:-1]:
        starts.append(starts[-1] + (h + 3) * (w + 3))
    stride_y = torch.tensor([(w + 3) * M for _, w in spatial_shapes], device=device, dtype=index_dtype)
    base = (torch.tensor([s * M + M + (w + 3) * M for s, (_, w) in zip(starts, spatial_shapes)], device=device,
                         dtype=index_dtype).view(1, 1, 1, L, 1)
            + torch.arange(M, device=device, dtype=index_dtype).view(1, 1, M, 1, 1)
            + torch.arange(B, device=device, dtype=index_dtype).view(B, 1, 1, 1, 1) * (table.shape[1] * M))
    row = torch.addcmul(base, y0, stride_y.view(1, 1, 1, L, 1)).add_(x0, alpha=M)
    corners = torch.tensor([[0, M, (w + 3) * M, (w + 4) * M] for _, w in spatial_shapes],
                           device=device, dtype=int_dtype)
    rows = row.to(int_dtype).unsqueeze(-1) + corners.view(1, 1, 1, L, 1, 4)
    weights = corner_weights(fx, fy, attention_weights, inplace).view(B * Q * M, L * P * 4)
    out = F.embedding_bag(rows.view(B * Q * M, L * P * 4), table.view(rows_total, D),
                          per_sample_weights=weights.to(value.dtype), mode="sum")
    return out.view(B, Q, M * D)


register_deform_attn_impl("gather", ms_deform_attn_gather)
