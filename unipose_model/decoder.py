"""The coarse-to-fine decoder: box-only layers, then instance + keypoint query groups."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP, box_sine_embedding, inverse_sigmoid
from .ops import MSDeformAttn


class DecoderLayer(nn.Module):
    """Post-norm: self-attention, text cross-attention, deformable image cross-attention, FFN."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, n_levels: int, n_points: int):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.ca_text = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.catext_norm = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
                memory: torch.Tensor, memory_padding: torch.Tensor, spatial_shapes,
                text: torch.Tensor, text_padding: torch.Tensor,
                group_size: Optional[int] = None, group_mask: Optional[torch.Tensor] = None,
                self_attn_mask: Optional[torch.Tensor] = None, prefix: int = 0,
                prefix_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tgt, query_pos: (B, Q, C); reference_points: (B, Q, L, 4).

        With `group_size`, self-attention runs inside consecutive groups of that many queries
        (one instance and its keypoints); `group_mask` (B, group, group) bool, True = blocked,
        further restricts it inside every group. Without it, `self_attn_mask` (Q, Q) may block
        pairs. The first `prefix` queries (denoising queries in training) then attend only among
        themselves, under `prefix_mask` (prefix, prefix).
        """
        B, Q, C = tgt.shape
        q = tgt + query_pos
        if group_size is None:
            attended = self.self_attn(q, q, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        else:
            parts = []
            if prefix:
                parts.append(self.self_attn(q[:, :prefix], q[:, :prefix], tgt[:, :prefix], attn_mask=prefix_mask,
                                            need_weights=False)[0])
            rest = Q - prefix
            G = rest // group_size
            qg = q[:, prefix:].reshape(B * G, group_size, C)
            mask = None
            if group_mask is not None:
                heads = self.self_attn.num_heads
                mask = group_mask.repeat_interleave(G * heads, dim=0)
            parts.append(self.self_attn(qg, qg, tgt[:, prefix:].reshape(B * G, group_size, C), attn_mask=mask,
                                        need_weights=False)[0].reshape(B, rest, C))
            attended = torch.cat(parts, 1) if prefix else parts[0]
        tgt = self.norm2(tgt + attended)
        attended = self.ca_text(tgt + query_pos, text, text, key_padding_mask=text_padding, need_weights=False)[0]
        tgt = self.catext_norm(tgt + attended)
        tgt = self.norm1(tgt + self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes,
                                               memory_padding))
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt), inplace=True)))


@dataclass
class DecoderLayerOutput:
    """What the heads need from one layer.

    hidden: layer output after the final LayerNorm; reference: the reference boxes that entered
    the layer (normalised cxcywh). Box layers: (B, Q, C) / (B, Q, 4). Keypoint layers:
    (B, G, 1+K, C) / (B, G, 1+K, 4), row 0 of each group being the instance.
    """
    hidden: torch.Tensor
    reference: torch.Tensor
    grouped: bool
    dn_hidden: Optional[torch.Tensor] = None     # (B, D, C) denoising queries (training only)
    dn_reference: Optional[torch.Tensor] = None  # (B, D, 4)


def contrastive_logits(queries: torch.Tensor, text: torch.Tensor, text_padding: torch.Tensor) -> torch.Tensor:
    """Similarity of every query with every prompt token; padded prompt slots get -inf."""
    logits = queries @ text.transpose(-1, -2)
    pad = text_padding.view(text_padding.shape[0], *([1] * (logits.dim() - 2)), text_padding.shape[-1])
    return logits.masked_fill(pad, float("-inf"))


class Decoder(nn.Module):
    def __init__(self, num_layers: int, num_box_layers: int, d_model: int, n_heads: int, dim_feedforward: int,
                 n_levels: int, n_points: int, num_select: int, max_keypoints: int, hw_base_rows: int = 17):
        super().__init__()
        if not 0 < num_box_layers < num_layers:
            raise ValueError("need at least one box-only layer and one keypoint layer")
        self.num_box_layers, self.num_select, self.max_keypoints = num_box_layers, num_select, max_keypoints
        self.d_model = d_model
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, dim_feedforward, n_levels, n_points)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        # Learned keypoint reference sizes (relative to the instance box), one row per keypoint slot;
        # stored as two tables because the released model grew the first one (COCO's 17) later.
        self.hw = nn.Embedding(hw_base_rows, 2)
        self.hw_append = nn.Embedding(max_keypoints - hw_base_rows, 2)
        # One box head, one keypoint-offset head and one keypoint-size head, shared by all layers
        # (stored under one key per layer, as in the official checkpoint).
        box_head = MLP(d_model, d_model, 4, 3)
        kpt_head = MLP(d_model, d_model, 2, 3)
        kpt_size_head = MLP(d_model, d_model, 2, 3)
        for head in (box_head, kpt_head):
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        num_kpt_layers = num_layers - num_box_layers
        self.bbox_embed = nn.ModuleList([box_head] * num_layers)
        self.pose_embed = nn.ModuleList([kpt_head] * (num_kpt_layers + 1))
        self.pose_hw_embed = nn.ModuleList([kpt_size_head] * num_kpt_layers)

    def keypoint_size_table(self, num_slots: int) -> torch.Tensor:
        return torch.cat((self.hw.weight, self.hw_append.weight), 0)[:num_slots]

    def _query_pos(self, reference: torch.Tensor, valid_ratios: torch.Tensor):
        # reference (B, Q, 4) -> per-level references scaled to each level's valid area
        ref_input = reference[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None]
        return self.ref_point_head(box_sine_embedding(ref_input[:, :, 0, :], self.d_model // 2)), ref_input

    def select_groups(self, output: torch.Tensor, reference: torch.Tensor, text: torch.Tensor,
                      text_padding: torch.Tensor, keypoint_content: torch.Tensor):
        """Keep the best `num_select` instance queries; give each a group of keypoint queries.

        output (B, Q, C) un-normalised layer output; reference (B, Q, 4) boxes after the layer.
        Returns content (B, G, 1+K, C), reference (B, G, 1+K, 4), selected indices (B, G).
        """
        B, _, C = output.shape
        scores = contrastive_logits(output, text, text_padding).max(-1)[0]
        index = torch.topk(scores, min(self.num_select, scores.shape[1]), dim=1)[1]
        box_ref = torch.gather(reference, 1, index[..., None].expand(-1, -1, 4))
        box_out = torch.gather(output, 1, index[..., None].expand(-1, -1, C))
        K = keypoint_content.shape[1]
        # Keypoint references: learned offset from the box centre, learned size relative to the box.
        offset = self.pose_embed[-1](keypoint_content)[..., :2]                     # (B, K, 2)
        kpt_xy = (inverse_sigmoid(box_ref[..., :2])[:, :, None] + offset[:, None]).sigmoid()
        kpt_wh = self.keypoint_size_table(K).sigmoid()[None, None] * box_ref[:, :, None, 2:]
        kpt_ref = torch.cat((kpt_xy, kpt_wh), -1)                                    # (B, G, K, 4)
        G = index.shape[1]
        kpt_out = keypoint_content[:, None].expand(B, G, K, C)
        content = torch.cat((box_out[:, :, None], kpt_out), 2)
        ref = torch.cat((box_ref[:, :, None], kpt_ref), 2)
        return content, ref, index

    def refine_groups(self, layer_id: int, output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """New references of a keypoint layer: box rows by the box head, keypoint rows by the
        offset (x, y) and size (w, h) heads. output (B, G, P, C), reference (B, G, P, 4)."""
        ref_unsig = inverse_sigmoid(reference)
        box = (self.bbox_embed[layer_id](output[:, :, :1]) + ref_unsig[:, :, :1]).sigmoid()
        kpt_out = output[:, :, 1:]
        k = layer_id - self.num_box_layers
        delta = torch.cat((self.pose_embed[k](kpt_out), self.pose_hw_embed[k](kpt_out)), -1)
        kpts = (ref_unsig[:, :, 1:] + delta).sigmoid()
        return torch.cat((box, kpts), 2)

    @staticmethod
    def denoising_masks(num_dn: int, group_size: int, num_queries: int, device):
        """Self-attention masks (True = blocked) with D denoising queries in front of Q queries.

        Box layers (D+Q, D+Q): the matching queries never see the denoising ones (they hold
        ground truth), and denoising groups do not see each other. Keypoint layers (D, D): the
        denoising queries attend only within their own group.
        """
        groups = torch.arange(num_dn, device=device) // group_size
        dn_mask = groups[:, None] != groups[None, :]
        full = torch.zeros(num_dn + num_queries, num_dn + num_queries, dtype=torch.bool, device=device)
        full[:num_dn, :num_dn] = dn_mask
        full[num_dn:, :num_dn] = True
        return full, dn_mask

    def forward(self, tgt: torch.Tensor, reference: torch.Tensor, memory: torch.Tensor,
                memory_padding: torch.Tensor, spatial_shapes, valid_ratios: torch.Tensor,
                text: torch.Tensor, text_padding: torch.Tensor, keypoint_content: torch.Tensor,
                keypoint_valid: Optional[torch.Tensor] = None,
                keep_layers: Optional[Sequence[int]] = None,
                dn_content: Optional[torch.Tensor] = None, dn_reference: Optional[torch.Tensor] = None,
                dn_group_size: int = 0) -> Tuple[List[DecoderLayerOutput], torch.Tensor]:
        """tgt (B, Q, C) initial content; reference (B, Q, 4) initial boxes (sigmoid space).

        keypoint_valid (B, K) bool marks real keypoint slots: inside a group, queries attend only
        to queries of the same kind (instance + real keypoints, or padded slots among themselves).
        dn_content / dn_reference (B, D, C) / (B, D, 4): denoising queries for training (noised
        ground-truth boxes, DINO-style), in groups of `dn_group_size`; they run as box queries
        through every layer and never enter the instance selection.
        Returns the outputs of the layers in `keep_layers` (default: all) and the (B, G) indices
        of the instance queries selected for the keypoint stage.
        """
        num_layers = len(self.layers)
        keep = set(range(num_layers) if keep_layers is None else keep_layers)
        outputs: List[DecoderLayerOutput] = []
        output, selected, group_mask = tgt, None, None
        B, K = keypoint_content.shape[:2]
        if keypoint_valid is not None and not bool(keypoint_valid.all()):
            kind = torch.cat((keypoint_valid.new_ones(B, 1), keypoint_valid), 1)
            group_mask = kind[:, :, None] != kind[:, None, :]
        D = 0 if dn_content is None else dn_content.shape[1]
        box_mask = prefix_mask = None
        if D:
            box_mask, prefix_mask = self.denoising_masks(D, dn_group_size, tgt.shape[1], tgt.device)
            dn_out, dn_ref = dn_content, dn_reference
            dn_head_ref = dn_ref
        # Layers see detached references; the heads see the undetached ones, so the box and keypoint
        # losses of a layer also train the previous layer's refinement (and the size table).
        head_reference = reference
        for layer_id, layer in enumerate(self.layers):
            grouped = layer_id >= self.num_box_layers
            if grouped:
                G, P = reference.shape[1:3]
                flat_out, flat_ref = output.reshape(B, G * P, -1), reference.reshape(B, G * P, 4)
                if D:
                    flat_out, flat_ref = torch.cat((dn_out, flat_out), 1), torch.cat((dn_ref, flat_ref), 1)
                query_pos, ref_input = self._query_pos(flat_ref, valid_ratios)
                flat_out = layer(flat_out, query_pos, ref_input, memory, memory_padding, spatial_shapes, text,
                                 text_padding, group_size=P, group_mask=group_mask, prefix=D, prefix_mask=prefix_mask)
                output = flat_out[:, D:].reshape(B, G, P, -1)
            else:
                flat_out, flat_ref = (torch.cat((dn_out, output), 1), torch.cat((dn_ref, reference), 1)) if D \
                    else (output, reference)
                query_pos, ref_input = self._query_pos(flat_ref, valid_ratios)
                flat_out = layer(flat_out, query_pos, ref_input, memory, memory_padding, spatial_shapes,
                                 text, text_padding, self_attn_mask=box_mask)
                output = flat_out[:, D:]
            if D:
                dn_out = flat_out[:, :D]
            if layer_id in keep:
                outputs.append(DecoderLayerOutput(self.norm(output), head_reference, grouped,
                                                  self.norm(dn_out) if D else None, dn_head_ref if D else None))
            if layer_id == num_layers - 1:
                break
            if D:  # denoising queries: refined as boxes by every layer
                new_dn = (self.bbox_embed[layer_id](dn_out) + inverse_sigmoid(dn_ref)).sigmoid()
                dn_head_ref, dn_ref = new_dn, new_dn.detach()
            if not grouped:
                new_ref = (self.bbox_embed[layer_id](output) + inverse_sigmoid(reference)).sigmoid()
                if layer_id == self.num_box_layers - 1:
                    output, new_ref, selected = self.select_groups(output, new_ref, text, text_padding,
                                                                   keypoint_content)
            else:
                new_ref = self.refine_groups(layer_id, output, reference)
            head_reference, reference = new_ref, new_ref.detach()
        return outputs, selected
