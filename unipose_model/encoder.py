"""The encoder: image-text fusion, text enhancer and deformable image self-attention, x N layers."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .ops import MSDeformAttn


class BiAttention(nn.Module):
    """Bi-directional cross-attention between image tokens and text tokens (GLIP-style)."""

    def __init__(self, v_dim: int, l_dim: int, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.v_proj = nn.Linear(v_dim, embed_dim)
        self.l_proj = nn.Linear(l_dim, embed_dim)
        self.values_v_proj = nn.Linear(v_dim, embed_dim)
        self.values_l_proj = nn.Linear(l_dim, embed_dim)
        self.out_v_proj = nn.Linear(embed_dim, v_dim)
        self.out_l_proj = nn.Linear(embed_dim, l_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2).reshape(B * self.num_heads, L, self.head_dim)

    def _merge(self, x: torch.Tensor, B: int) -> torch.Tensor:
        _, L, _ = x.shape
        return x.view(B, self.num_heads, L, self.head_dim).transpose(1, 2).reshape(B, L, -1)

    def forward(self, v: torch.Tensor, l: torch.Tensor, pad_v: torch.Tensor | None,
                pad_l: torch.Tensor | None) -> Tuple[torch.Tensor, torch.Tensor]:
        B = v.shape[0]
        q = self._heads(self.v_proj(v) * self.scale)
        k = self._heads(self.l_proj(l))
        value_v = self._heads(self.values_v_proj(v))
        value_l = self._heads(self.values_l_proj(l))
        logits = torch.bmm(q, k.transpose(1, 2))  # (B*h, n_img, n_text)
        # Shift by the global maximum and clamp (keeps half precision finite); softmax is invariant.
        logits = (logits - logits.max()).clamp(-50000, 50000)
        logits_l = logits.transpose(1, 2)
        logits_l = (logits_l - logits_l.max(-1, keepdim=True)[0]).clamp(-50000, 50000)
        if pad_v is not None:
            logits_l = logits_l.masked_fill(pad_v.repeat_interleave(self.num_heads, 0)[:, None, :], float("-inf"))
        if pad_l is not None:
            logits = logits.masked_fill(pad_l.repeat_interleave(self.num_heads, 0)[:, None, :], float("-inf"))
        out_v = torch.bmm(logits.softmax(-1), value_l)
        out_l = torch.bmm(logits_l.softmax(-1), value_v)
        return self.out_v_proj(self._merge(out_v, B)), self.out_l_proj(self._merge(out_l, B))


class FusionLayer(nn.Module):
    """Pre-norm bi-attention with layer-scale: v' = LN(v) + gamma_v * attn_v, same for text."""

    def __init__(self, d_model: int, embed_dim: int, num_heads: int, init_scale: float = 1e-4):
        super().__init__()
        self.layer_norm_v = nn.LayerNorm(d_model)
        self.layer_norm_l = nn.LayerNorm(d_model)
        self.attn = BiAttention(d_model, d_model, embed_dim, num_heads)
        self.gamma_v = nn.Parameter(init_scale * torch.ones(d_model))
        self.gamma_l = nn.Parameter(init_scale * torch.ones(d_model))

    def forward(self, v, l, pad_v, pad_l):
        v = self.layer_norm_v(v)
        l = self.layer_norm_l(l)
        dv, dl = self.attn(v, l, pad_v, pad_l)
        return v + self.gamma_v * dv, l + self.gamma_l * dl


class TextEnhancerLayer(nn.Module):
    """Post-norm transformer layer over the text tokens.

    UniPose lets each text token attend only to itself (one prompt class per token), so the
    attention reduces exactly to the value projection: softmax over one unmasked entry is 1.
    That makes the query/key half of `self_attn` and the text position embedding dead weight;
    they stay in the module for checkpoint compatibility.
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        d = text.shape[-1]
        attn = self.self_attn
        value = F.linear(text, attn.in_proj_weight[2 * d:], attn.in_proj_bias[2 * d:])
        text = self.norm1(text + attn.out_proj(value))
        return self.norm2(text + self.linear2(F.relu(self.linear1(text), inplace=True)))


class DeformableEncoderLayer(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, padding_mask):
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes, padding_mask))
        # in place: the wide (S x 2048) ReLU output is not a second fresh tensor (a pass and page faults)
        return self.norm2(src + self.linear2(F.relu(self.linear1(src), inplace=True)))


class Encoder(nn.Module):
    def __init__(self, num_layers: int, d_model: int, dim_feedforward: int, n_levels: int, n_heads: int,
                 n_points: int, text_heads: int, text_ffn: int, fusion_dim: int, fusion_heads: int):
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(d_model, dim_feedforward, n_levels, n_heads, n_points)
                                    for _ in range(num_layers))
        self.text_layers = nn.ModuleList(TextEnhancerLayer(d_model, text_heads, text_ffn) for _ in range(num_layers))
        self.fusion_layers = nn.ModuleList(FusionLayer(d_model, fusion_dim, fusion_heads) for _ in range(num_layers))

    @staticmethod
    def reference_points(spatial_shapes: Sequence[Tuple[int, int]], valid_ratios: torch.Tensor) -> torch.Tensor:
        """Centre of every token, normalised to the valid area: (B, S, L, 2). Float32, as official."""
        device = valid_ratios.device
        refs = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            ry, rx = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                                    torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                                    indexing="ij")
            ry = ry.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            rx = rx.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((rx, ry), -1))
        return torch.cat(refs, 1)[:, :, None] * valid_ratios[:, None]

    def forward(self, src, pos, spatial_shapes, valid_ratios, padding_mask, text, text_padding):
        refs = self.reference_points(spatial_shapes, valid_ratios)
        for fusion, text_layer, layer in zip(self.fusion_layers, self.text_layers, self.layers):
            src, text = fusion(src, text, padding_mask, text_padding)
            text = text_layer(text)
            src = layer(src, pos, refs, spatial_shapes, padding_mask)
        return src, text
