"""Multi-scale deformable attention (Deformable DETR), pure PyTorch.

The sampling core is a plain function with a fixed signature so that a faster kernel
(Triton on CUDA, a TensorRT plugin after export) can be registered under a name and
selected at run time without touching the modules that call it.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

SpatialShapes = Sequence[Tuple[int, int]]
DeformAttnImpl = Callable[[torch.Tensor, SpatialShapes, torch.Tensor, torch.Tensor], torch.Tensor]


def ms_deform_attn_pytorch(value: torch.Tensor, spatial_shapes: SpatialShapes,
                           sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Reference sampling core.

    value:              (B, S, M, D) with S = sum(H_l * W_l), levels flattened row-major
    spatial_shapes:     [(H_l, W_l)] * L, Python ints
    sampling_locations: (B, Q, M, L, P, 2) normalised (x, y) in [0, 1] of each level
    attention_weights:  (B, Q, M, L, P), softmax-normalised over L*P
    returns             (B, Q, M*D)

    Bilinear sampling with zero padding and align_corners=False, i.e. the pixel centre of
    column i sits at x = (i + 0.5) / W.
    """
    B, _, M, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    value_per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled: List[torch.Tensor] = []
    for level, (h, w) in enumerate(spatial_shapes):
        # (B, h*w, M, D) -> (B*M, D, h, w)
        v = value_per_level[level].flatten(2).transpose(1, 2).reshape(B * M, D, h, w)
        # (B, Q, M, P, 2) -> (B*M, Q, P, 2)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (B*M, D, Q, L*P) weighted by (B*M, 1, Q, L*P)
    weights = attention_weights.transpose(1, 2).reshape(B * M, 1, Q, L * P)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return out.view(B, M * D, Q).transpose(1, 2).contiguous()


_IMPLS: Dict[str, DeformAttnImpl] = {"pytorch": ms_deform_attn_pytorch}
# "auto": the Triton kernel for CUDA tensors when triton works; on the CPU the weighted gather
# (gather_deform_attn.py, same function, 3-4x faster forward) for inference, the reference when
# gradients are needed (its backward is about 2x faster than the gather's); else the reference.
_ACTIVE = {"name": "auto"}
_TRITON_STATE: Dict[str, bool] = {}


def register_deform_attn_impl(name: str, fn: DeformAttnImpl) -> None:
    """Make another sampling core selectable by name (same signature and result)."""
    _IMPLS[name] = fn


def _triton_available() -> bool:
    """Import (and so register) the Triton kernel once; False where triton cannot be used."""
    if "ok" not in _TRITON_STATE:
        try:
            from . import triton_deform_attn  # noqa: F401  (registers "triton")
            _TRITON_STATE["ok"] = True
        except Exception:  # noqa: BLE001 - no triton, or a triton without a usable backend
            _TRITON_STATE["ok"] = False
    return _TRITON_STATE["ok"]


def get_deform_attn_impl(name: str | None = None, device: torch.device | None = None,
                         needs_grad: bool = False) -> DeformAttnImpl:
    name = name or _ACTIVE["name"]
    if name == "auto":
        kind = torch.device(device).type if device is not None else "cpu"
        if kind == "cuda":
            name = "triton" if _triton_available() else "pytorch"
        else:
            name = "gather" if kind == "cpu" and not needs_grad else "pytorch"
    if name == "triton":
        _triton_available()
    if name == "gather":
        from . import gather_deform_attn  # noqa: F401  (registers "gather")
    if name not in _IMPLS:
        raise KeyError(f"unknown deformable-attention implementation {name!r}; "
                       f"available: {sorted(_IMPLS)}")
    return _IMPLS[name]


@contextlib.contextmanager
def use_deform_attn_impl(name: str):
    """Temporarily route every MSDeformAttn through the named implementation."""
    get_deform_attn_impl(name)
    previous = _ACTIVE["name"]
    _ACTIVE["name"] = name
    try:
        yield
    finally:
        _ACTIVE["name"] = previous


def _widen(t: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; other dtypes (float32, float64 in exactness tests) unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class MSDeformAttn(nn.Module):
    """Deformable attention over L feature levels, M heads and P points per level.

    Reference points are either points (x, y) or boxes (cx, cy, w, h), normalised to the
    valid image area of each level. Point offsets are in pixels of the level; box offsets
    are relative to the box size (offset / P * wh / 2), as in DINO / ED-Pose.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Offsets start on a ring of directions, one per head, growing with the point index.
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        ring = torch.stack([angles.cos(), angles.sin()], -1)
        ring = ring / ring.abs().max(-1, keepdim=True)[0]
        ring = ring.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        ring = ring * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def project_value(self, memory: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, S, C) -> (B, S, M, C/M); padded tokens contribute zeros."""
        value = self.value_proj(memory)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        B, S, _ = value.shape
        return value.view(B, S, self.n_heads, self.d_model // self.n_heads)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, memory: torch.Tensor,
                spatial_shapes: SpatialShapes, padding_mask: torch.Tensor | None = None,
                value: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Q, C); reference_points (B, Q, L, 2|4); memory (B, S, C) -> (B, Q, C).

        `value` may be passed pre-projected (see project_value) to share it between calls.
        """
        B, Q, _ = query.shape
        if value is None:
            value = self.project_value(memory, padding_mask)
        M, L, P = self.n_heads, self.n_levels, self.n_points
        # Sampling positions stay float32 under bf16/fp16 autocast: 8 mantissa bits would put a
        # point up to a pixel off on a 200-pixel level.
        offsets = _widen(self.sampling_offsets(query)).view(B, Q, M, L, P, 2)
        weights = _widen(self.attention_weights(query)).view(B, Q, M, L * P).softmax(-1).view(B, Q, M, L, P)
        reference_points = _widen(reference_points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], device=query.device)
            locations = (reference_points[:, :, None, :, None, :]
                         + offsets / normalizer[None, None, None, :, None, :])
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / P * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f"reference points must end in 2 or 4 values, got {reference_points.shape[-1]}")
        needs_grad = torch.is_grad_enabled() and (value.requires_grad or locations.requires_grad
                                                  or weights.requires_grad)
        impl = get_deform_attn_impl(device=value.device, needs_grad=needs_grad)
        out = impl(_widen(value), spatial_shapes, locations, weights)
        return self.output_proj(out)
