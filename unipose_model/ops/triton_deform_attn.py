"""Multi-scale deformable attention as Triton kernels (forward and backward).

Same contract as `ms_deform_attn_pytorch` (bilinear, zero padding, align_corners=False: the
centre of column i is at x = (i + 0.5) / W). One program handles BLOCK_Q queries of one
(batch, head) pair and all D channels of the head, walking the L levels and P points; the
backward pass recomputes the four corner values instead of storing the sampled tensor and
scatters the value gradient with atomics (several queries sample the same pixel).

Registered as "triton"; MSDeformAttn picks it for CUDA tensors automatically (see
ms_deform_attn.get_deform_attn_impl). Runs on the CPU only under TRITON_INTERPRET=1 (tests).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import triton
import triton.language as tl

from .ms_deform_attn import register_deform_attn_impl


@triton.jit
def _corner(value_ptr, base, start, yy, xx, h, w, offs_d, d_mask, M, D):
    """Rows of one bilinear corner for a block of queries; zeros outside the map. (BQ, BD)"""
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    row = start + tl.where(inside, yy * w + xx, 0)
    ptrs = value_ptr + base + (row * (M * D))[:, None] + offs_d[None, :]
    return tl.load(ptrs, mask=inside[:, None] & d_mask[None, :], other=0.0), inside, row


@triton.jit
def _point(loc_ptr, attn_ptr, idx, q_mask, h, w):
    """One sampling point per query of a block: its attention weight, the bilinear fractions
    (fx, fy) and the top-left corner (x0, y0) in pixels of its level (align_corners=False)."""
    lx = tl.load(loc_ptr + 2 * idx, mask=q_mask, other=0.0).to(tl.float32)
    ly = tl.load(loc_ptr + 2 * idx + 1, mask=q_mask, other=0.0).to(tl.float32)
    a = tl.load(attn_ptr + idx, mask=q_mask, other=0.0).to(tl.float32)
    x = lx * w - 0.5
    y = ly * h - 0.5
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    return a, x - x0f, y - y0f, x0f.to(tl.int32), y0f.to(tl.int32)


@triton.jit
def _blend(v00, v01, v10, v11, fx, fy):
    """Bilinear interpolation of four corner rows (BQ, BD) with per-query fractions (BQ,)."""
    return ((1 - fy) * (1 - fx))[:, None] * v00 + ((1 - fy) * fx)[:, None] * v01 \
        + (fy * (1 - fx))[:, None] * v10 + (fy * fx)[:, None] * v11


@triton.jit
def _fwd_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
                Q, S, M, D,
                L: tl.constexpr, P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_q = tl.program_id(0)
    bm = tl.program_id(1)
    b = bm // M
    m = bm % M
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    q_mask = offs_q < Q
    d_mask = offs_d < D
    base = b * S * M * D + m * D
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
    for lvl in range(L):
        h = tl.load(shapes_ptr + 2 * lvl)
        w = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(starts_ptr + lvl)
        for p in range(P):
            # (b, q, m, lvl, p) in the (B, Q, M, L, P) layout
            idx = (((b * Q + offs_q) * M + m) * L + lvl) * P + p
            a, fx, fy, x0, y0 = _point(loc_ptr, attn_ptr, idx, q_mask, h, w)
            v00, _, _ = _corner(value_ptr, base, start, y0, x0, h, w, offs_d, d_mask, M, D)
            v01, _, _ = _corner(value_ptr, base, start, y0, x0 + 1, h, w, offs_d, d_mask, M, D)
            v10, _, _ = _corner(value_ptr, base, start, y0 + 1, x0, h, w, offs_d, d_mask, M, D)
            v11, _, _ = _corner(value_ptr, base, start, y0 + 1, x0 + 1, h, w, offs_d, d_mask, M, D)
            acc += a[:, None] * _blend(v00.to(tl.float32), v01.to(tl.float32), v10.to(tl.float32),
                                       v11.to(tl.float32), fx, fy)
    out_ptrs = out_ptr + (((b * Q + offs_q) * M + m) * D)[:, None] + offs_d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & d_mask[None, :])


@triton.jit
def _scatter(grad_value_ptr, base, row, inside, coef, g, offs_d, d_mask, M, D):
    ptrs = grad_value_ptr + base + (row * (M * D))[:, None] + offs_d[None, :]
    tl.atomic_add(ptrs, coef[:, None] * g, mask=inside[:, None] & d_mask[None, :])


@triton.jit
def _bwd_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr,
                grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
                Q, S, M, D,
                L: tl.constexpr, P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_q = tl.program_id(0)
    bm = tl.program_id(1)
    b = bm // M
    m = bm % M
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    q_mask = offs_q < Q
    d_mask = offs_d < D
    base = b * S * M * D + m * D
    g_ptrs = grad_out_ptr + (((b * Q + offs_q) * M + m) * D)[:, None] + offs_d[None, :]
    g = tl.load(g_ptrs, mask=q_mask[:, None] & d_mask[None, :], other=0.0).to(tl.float32)
    for lvl in range(L):
        h = tl.load(shapes_ptr + 2 * lvl)
        w = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(starts_ptr + lvl)
        for p in range(P):
            idx = (((b * Q + offs_q) * M + m) * L + lvl) * P + p
            a, fx, fy, x0, y0 = _point(loc_ptr, attn_ptr, idx, q_mask, h, w)
            v00, in00, r00 = _corner(value_ptr, base, start, y0, x0, h, w, offs_d, d_mask, M, D)
            v01, in01, r01 = _corner(value_ptr, base, start, y0, x0 + 1, h, w, offs_d, d_mask, M, D)
            v10, in10, r10 = _corner(value_ptr, base, start, y0 + 1, x0, h, w, offs_d, d_mask, M, D)
            v11, in11, r11 = _corner(value_ptr, base, start, y0 + 1, x0 + 1, h, w, offs_d, d_mask, M, D)
            v00 = v00.to(tl.float32)
            v01 = v01.to(tl.float32)
            v10 = v10.to(tl.float32)
            v11 = v11.to(tl.float32)
            sampled = _blend(v00, v01, v10, v11, fx, fy)
            tl.store(grad_attn_ptr + idx, tl.sum(g * sampled, axis=1), mask=q_mask)
            # d sampled / d x and / d y (pixel units), then x = lx * w - 0.5 gives the factor w (h).
            dx = (1 - fy)[:, None] * (v01 - v00) + fy[:, None] * (v11 - v10)
            dy = (1 - fx)[:, None] * (v10 - v00) + fx[:, None] * (v11 - v01)
            tl.store(grad_loc_ptr + 2 * idx, a * w * tl.sum(g * dx, axis=1), mask=q_mask)
            tl.store(grad_loc_ptr + 2 * idx + 1, a * h * tl.sum(g * dy, axis=1), mask=q_mask)
            _scatter(grad_value_ptr, base, r00, in00 & q_mask, a * (1 - fy) * (1 - fx), g, offs_d, d_mask, M, D)
            _scatter(grad_value_ptr, base, r01, in01 & q_mask, a * (1 - fy) * fx, g, offs_d, d_mask, M, D)
            _scatter(grad_value_ptr, base, r10, in10 & q_mask, a * fy * (1 - fx), g, offs_d, d_mask, M, D)
            _scatter(grad_value_ptr, base, r11, in11 & q_mask, a * fy * fx, g, offs_d, d_mask, M, D)


BLOCK_Q = 16


def _shape_tensors(spatial_shapes: Sequence[Tuple[int, int]], device) -> Tuple[torch.Tensor, torch.Tensor]:
    shapes = torch.tensor([[int(h), int(w)] for h, w in spatial_shapes], dtype=torch.int32, device=device)
    sizes = [int(h) * int(w) for h, w in spatial_shapes]
    starts = torch.tensor([sum(sizes[:i]) for i in range(len(sizes))], dtype=torch.int32, device=device)
    return shapes, starts


class _MSDeformAttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, locations, weights):
        value, locations, weights = value.contiguous(), locations.contiguous(), weights.contiguous()
        B, S, M, D = value.shape
        _, Q, _, L, P, _ = locations.shape
        shapes, starts = _shape_tensors(spatial_shapes, value.device)
        out = torch.empty(B, Q, M, D, dtype=value.dtype, device=value.device)
        grid = (triton.cdiv(Q, BLOCK_Q), B * M)
        _fwd_kernel[grid](value, shapes, starts, locations, weights, out, Q, S, M, D,
                          L=L, P=P, BLOCK_Q=BLOCK_Q, BLOCK_D=triton.next_power_of_2(D))
        ctx.save_for_backward(value, shapes, starts, locations, weights)
        return out.view(B, Q, M * D)

    @staticmethod
    def backward(ctx, grad_out):
        value, shapes, starts, locations, weights = ctx.saved_tensors
        B, S, M, D = value.shape
        _, Q, _, L, P, _ = locations.shape
        grad_out = grad_out.contiguous()
        # float32 accumulation for the atomics, whatever the value dtype
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_loc = torch.empty(locations.shape, dtype=torch.float32, device=value.device)
        grad_attn = torch.empty(weights.shape, dtype=torch.float32, device=value.device)
        grid = (triton.cdiv(Q, BLOCK_Q), B * M)
        _bwd_kernel[grid](value, shapes, starts, locations, weights, grad_out,
                          grad_value, grad_loc, grad_attn, Q, S, M, D,
                          L=L, P=P, BLOCK_Q=BLOCK_Q, BLOCK_D=triton.next_power_of_2(D))
        return (grad_value.to(value.dtype), None, grad_loc.to(locations.dtype),
                grad_attn.to(weights.dtype))


def ms_deform_attn_triton(value: torch.Tensor, spatial_shapes, sampling_locations: torch.Tensor,
                          attention_weights: torch.Tensor) -> torch.Tensor:
    """Drop-in replacement for ms_deform_attn_pytorch: (B, S, M, D) ... -> (B, Q, M*D)."""
    return _MSDeformAttnFunction.apply(value, [tuple(s) for s in spatial_shapes],
                                       sampling_locations, attention_weights)


register_deform_attn_impl("triton", ms_deform_attn_triton)
