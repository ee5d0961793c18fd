"""UniPose: prompt-conditioned, end-to-end multi-object keypoint detection.

image -> backbone (multi-scale) -> encoder fused with the prompt's instance text
      -> two-stage proposals -> decoder: box-only layers, top-`num_select` instances,
         then instance + keypoint query groups -> contrastive class logits, boxes, keypoints.

Module names follow the official checkpoint so its state dict loads as is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .backbone import build_backbone
from .configs import UniPoseConfig
from .decoder import Decoder, DecoderLayerOutput, contrastive_logits
from .encoder import Encoder
from .layers import MLP, inverse_sigmoid


@dataclass
class EncodedImage:
    """Everything the decoder needs; independent of the keypoint prompt (reuse it per keypoint group)."""
    memory: torch.Tensor            # (B, S, C) image tokens, all levels
    memory_padding: torch.Tensor    # (B, S) True on padding
    spatial_shapes: List[Tuple[int, int]]
    valid_ratios: torch.Tensor      # (B, L, 2) valid fraction (w, h) of each level
    text: torch.Tensor              # (B, T, C) fused instance-prompt tokens
    text_padding: torch.Tensor      # (B, T) True on padding
    num_classes: int                # real instance prompts (first columns of text)
    query_content: torch.Tensor     # (B, Q, C) initial decoder content
    query_reference: torch.Tensor   # (B, Q, 4) initial boxes, sigmoid space
    proposal_scores: torch.Tensor   # (B, Q) two-stage scores of the selected proposals
    proposal_index: torch.Tensor    # (B, Q) token index of each selected proposal
    proposal_logits: torch.Tensor   # (B, Q, N) two-stage class logits of the selected proposals (for training)
    proposal_boxes: torch.Tensor    # (B, Q, 4) their boxes, not detached (for training)


class Transformer(nn.Module):
    def __init__(self, cfg: UniPoseConfig):
        super().__init__()
        d = cfg.hidden_dim
        self.level_embed = nn.Parameter(torch.empty(cfg.num_feature_levels, d))
        self.encoder = Encoder(cfg.enc_layers, d, cfg.dim_feedforward, cfg.num_feature_levels, cfg.nheads,
                               cfg.enc_n_points, cfg.text_heads, cfg.text_ffn, cfg.fusion_dim, cfg.fusion_heads)
        self.decoder = Decoder(cfg.dec_layers, cfg.num_box_decoder_layers, d, cfg.nheads, cfg.dim_feedforward,
                               cfg.num_feature_levels, cfg.dec_n_points, cfg.num_select, cfg.max_keypoints,
                               cfg.hw_base_rows)
        self.tgt_embed = nn.Embedding(cfg.num_queries, d)
        self.enc_output = nn.Linear(d, d)
        self.enc_output_norm = nn.LayerNorm(d)
        self.enc_out_bbox_embed = MLP(d, d, 4, 3)
        self.num_queries = cfg.num_queries
        self.default_hw = cfg.two_stage_default_hw

    def proposals(self, memory: torch.Tensor, padding: torch.Tensor, spatial_shapes):
        """One proposal per token: its cell centre with size default_hw * 2^level, in logit space.

        Proposals touching the border (any coordinate outside (0.01, 0.99)) and padded tokens are
        invalid: +inf coordinates and zeroed memory. Float32 throughout, as the official model.
        """
        B = memory.shape[0]
        out, start = [], 0
        for lvl, (h, w) in enumerate(spatial_shapes):
            m = padding[:, start:start + h * w].view(B, h, w)
            valid_h = (~m[:, :, 0]).sum(1)
            valid_w = (~m[:, 0, :]).sum(1)
            gy, gx = torch.meshgrid(torch.linspace(0, h - 1, h, dtype=torch.float32, device=memory.device),
                                    torch.linspace(0, w - 1, w, dtype=torch.float32, device=memory.device),
                                    indexing="ij")
            grid = torch.stack((gx, gy), -1)
            scale = torch.stack((valid_w, valid_h), -1).view(B, 1, 1, 2)
            grid = (grid[None].expand(B, -1, -1, -1) + 0.5) / scale
            wh = torch.ones_like(grid) * self.default_hw * (2.0 ** lvl)
            out.append(torch.cat((grid, wh), -1).view(B, -1, 4))
            start += h * w
        props = torch.cat(out, 1)
        valid = ((props > 0.01) & (props < 0.99)).all(-1, keepdim=True)
        props = torch.log(props / (1 - props))
        props = props.masked_fill(padding[..., None], float("inf")).masked_fill(~valid, float("inf"))
        memory = memory.masked_fill(padding[..., None], 0.0).masked_fill(~valid, 0.0)
        return memory, props


class UniPose(nn.Module):
    def __init__(self, cfg: UniPoseConfig):
        super().__init__()
        self.config = cfg
        d = cfg.hidden_dim
        # Registration order matters only for reproducing the official state-dict order.
        self.transformer = Transformer(cfg)
        self.label_enc = nn.Embedding(cfg.dn_labelbook_size + 1, d)  # denoising-training label queries
        self.projection = MLP(cfg.text_dim, d, d, 3)        # instance text -> model space
        self.projection_kpt = MLP(cfg.text_dim, d, d, 3)    # keypoint text -> keypoint query content
        backbone = build_backbone(cfg.backbone, d, cfg.pe_temperature, **cfg.backbone_kwargs)
        self.input_proj = self._input_projections(backbone.num_channels, cfg.num_feature_levels, d)
        self.backbone = backbone
        decoder = self.transformer.decoder
        self.bbox_embed = decoder.bbox_embed
        self.pose_embed = decoder.pose_embed
        self.pose_hw_embed = decoder.pose_hw_embed
        self.reset_parameters()
        # Optional: encodes an annotated support image into prompt features (see visual_prompt.py).
        self.visual_prompt_encoder = None
        if cfg.visual_prompt:
            from .visual_prompt import build_visual_prompt_encoder
            self.visual_prompt_encoder = build_visual_prompt_encoder(**cfg.visual_prompt, out_dim=cfg.text_dim)

    @staticmethod
    def _input_projections(channels: Sequence[int], num_levels: int, d: int) -> nn.ModuleList:
        projs = [nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(32, d)) for c in channels]
        in_ch = channels[-1]
        for _ in range(num_levels - len(channels)):  # extra coarser levels: 3x3 stride-2 convs
            projs.append(nn.Sequential(nn.Conv2d(in_ch, d, kernel_size=3, stride=2, padding=1), nn.GroupNorm(32, d)))
            in_ch = d
        return nn.ModuleList(projs)

    def reset_parameters(self) -> None:
        """Training-from-scratch initialisation (checkpoints overwrite all of it)."""
        t = self.transformer
        for name, p in t.named_parameters():
            if p.dim() > 1 and "backbone" not in name:
                nn.init.xavier_uniform_(p)
        for m in t.modules():
            if hasattr(m, "reset_parameters") and m.__class__.__name__ == "MSDeformAttn":
                m.reset_parameters()
        nn.init.normal_(t.level_embed)
        nn.init.normal_(t.tgt_embed.weight)
        # Box and keypoint-offset heads start at zero: first predictions are the reference points.
        for head in (t.decoder.bbox_embed[0], t.decoder.pose_embed[0], t.enc_out_bbox_embed):
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)

    # ------------------------------------------------------------------ text
    def _batch_text(self, text: torch.Tensor, batch: int) -> torch.Tensor:
        if text.dim() == 2:
            text = text[None].expand(batch, -1, -1)
        if text.dim() != 3 or text.shape[0] != batch or text.shape[-1] != self.config.text_dim:
            raise ValueError(f"text features must be (N, {self.config.text_dim}) or (B, N, {self.config.text_dim}); "
                             f"got {tuple(text.shape)} for a batch of {batch}")
        return text

    def encode_instance_text(self, instance_text: torch.Tensor, batch: int, dtype: torch.dtype,
                             instance_valid: Optional[torch.Tensor] = None):
        """Project the N instance prompts; append one padding token when N < max_text_slots.

        The official model pads to max_text_slots zero rows. Padded rows never influence real
        outputs (masked everywhere) and stay identical to each other through every layer, but
        they do take part in the fusion layer's global logit maximum; one representative row
        reproduces that exactly at a fraction of the cost.
        """
        text = self._batch_text(instance_text, batch).to(dtype)
        n = text.shape[1]
        if not 0 < n <= self.config.max_text_slots:
            raise ValueError(f"the model takes 1..{self.config.max_text_slots} instance prompts, got {n}")
        if n < self.config.max_text_slots:
            text = torch.cat((text, text.new_zeros(batch, 1, text.shape[-1])), 1)
        padding = torch.zeros(batch, text.shape[1], dtype=torch.bool, device=text.device)
        padding[:, n:] = True
        if instance_valid is not None:  # per-image prompt lists of different lengths (training batches)
            padding[:, :n] = ~instance_valid.to(torch.bool).expand(batch, n)
        return self.projection(text), padding, n

    def encode_visual_prompt(self, support_images: torch.Tensor, keypoints: torch.Tensor, visible: torch.Tensor,
                             keypoint_valid: Optional[torch.Tensor] = None):
        """Support crops (B,3,S,S) + keypoints (B,K,2) in [0,1] + visibility (B,K) -> prompt features
        in the text-feature space: instance (B, text_dim) and keypoints (B, K, text_dim), to be fed
        as `instance_text` / `keypoint_text` (alone or averaged with text features)."""
        if self.visual_prompt_encoder is None:
            raise ValueError(f"model '{self.config.name}' has no visual prompt encoder; use a configuration "
                             f"with `visual_prompt` set (e.g. unipose_tiny_visual) or a text prompt")
        return self.visual_prompt_encoder(support_images, keypoints, visible, keypoint_valid)

    # ------------------------------------------------------------------ image
    def _feature_levels(self, images: torch.Tensor, mask: torch.Tensor):
        levels = self.backbone(images, mask)
        srcs = [proj(level.features) for proj, level in zip(self.input_proj, levels)]
        masks = [level.mask for level in levels]
        poss = [level.pos for level in levels]
        last = levels[-1].features
        for proj in self.input_proj[len(levels):]:
            src = proj(last)
            m = self.backbone.level_mask(mask, src.shape[-2:])
            srcs.append(src)
            masks.append(m)
            poss.append(self.backbone.position(m, src.dtype))
            last = src
        return srcs, masks, poss

    @staticmethod
    def _valid_ratio(mask: torch.Tensor) -> torch.Tensor:
        _, H, W = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1).float() / H
        valid_w = (~mask[:, 0, :]).sum(1).float() / W
        return torch.stack((valid_w, valid_h), -1)

    def encode(self, images: torch.Tensor, masks: Optional[torch.Tensor], instance_text: torch.Tensor,
               instance_valid: Optional[torch.Tensor] = None) -> EncodedImage:
        """Backbone, encoder and two-stage query selection for a padded batch and its instance prompts.

        instance_valid (B, N) bool marks real prompt rows when images of a batch have different
        numbers of classes (their logits come out as -inf on the invalid columns)."""
        B = images.shape[0]
        if masks is None:
            masks = torch.zeros((B,) + images.shape[-2:], dtype=torch.bool, device=images.device)
        text, text_padding, n = self.encode_instance_text(instance_text, B, images.dtype, instance_valid)
        srcs, level_masks, poss = self._feature_levels(images, masks)
        t = self.transformer
        spatial_shapes = [tuple(s.shape[-2:]) for s in srcs]
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        mask_flat = torch.cat([m.flatten(1) for m in level_masks], 1)
        pos_flat = torch.cat([p.flatten(2).transpose(1, 2) + t.level_embed[i].view(1, 1, -1)
                              for i, p in enumerate(poss)], 1)
        valid_ratios = torch.stack([self._valid_ratio(m) for m in level_masks], 1)
        memory, text = t.encoder(src_flat, pos_flat, spatial_shapes, valid_ratios, mask_flat, text, text_padding)

        out_memory, proposals = t.proposals(memory, mask_flat, spatial_shapes)
        out_memory = t.enc_output_norm(t.enc_output(out_memory))
        scores = contrastive_logits(out_memory, text, text_padding).max(-1)[0]
        # Tiny images can have fewer tokens than proposals: keep them all then.
        top_scores, top_index = torch.topk(scores, min(t.num_queries, scores.shape[1]), dim=1)
        coords = t.enc_out_bbox_embed(out_memory) + proposals
        ref_unsig = torch.gather(coords, 1, top_index[..., None].expand(-1, -1, 4))
        top_memory = torch.gather(out_memory, 1, top_index[..., None].expand(-1, -1, out_memory.shape[-1]))
        proposal_logits = contrastive_logits(top_memory, text, text_padding)[..., :n]
        content = t.tgt_embed.weight[None, :top_index.shape[1]].expand(B, -1, -1).to(images.dtype)
        return EncodedImage(memory, mask_flat, spatial_shapes, valid_ratios, text, text_padding, n,
                            content, ref_unsig.detach().sigmoid(), top_scores, top_index,
                            proposal_logits, ref_unsig.sigmoid())

    # ------------------------------------------------------------------ heads
    def _heads(self, state: EncodedImage, out: DecoderLayerOutput, layer_id: int,
               keypoint_content: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        n = state.num_classes
        if not out.grouped:
            boxes = (self.bbox_embed[layer_id](out.hidden) + inverse_sigmoid(out.reference)).sigmoid()
            logits = contrastive_logits(out.hidden, state.text, state.text_padding)[..., :n]
            return {"pred_logits": logits, "pred_boxes": boxes}
        box_hidden, box_ref = out.hidden[:, :, 0], out.reference[:, :, 0]
        boxes = (self.bbox_embed[layer_id](box_hidden) + inverse_sigmoid(box_ref)).sigmoid()
        logits = contrastive_logits(box_hidden, state.text, state.text_padding)[..., :n]
        k = layer_id - self.config.num_box_decoder_layers
        kpt_hidden = out.hidden[:, :, 1:]
        kpt_xy = (self.pose_embed[k](kpt_hidden) + inverse_sigmoid(out.reference[:, :, 1:, :2])).sigmoid()
        result = {"pred_logits": logits, "pred_boxes": boxes, "pred_keypoints": kpt_xy}
        if keypoint_content is not None:
            # prompt-to-keypoint contrast: each keypoint query against every keypoint prompt token
            result["pred_keypoint_logits"] = kpt_hidden @ keypoint_content[:, None].transpose(-1, -2)
        return result

    def decode(self, state: EncodedImage, keypoint_text: torch.Tensor,
               keypoint_valid: Optional[torch.Tensor] = None, aux: bool = False,
               denoising: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Decoder + heads for one keypoint prompt (K rows of keypoint text features).

        Returns pred_logits (B, S, N) raw logits, pred_boxes (B, S, 4) normalised cxcywh,
        pred_keypoints (B, S, K, 2) normalised xy; with aux=True (training) also
        pred_keypoint_logits (B, S, K, K) keypoint-query x keypoint-prompt similarities,
        `aux_outputs` (one dict per earlier decoder layer) and the two-stage `enc_outputs`.
        denoising (training): {"labels" (B, D) prompt-class index, "boxes" (B, D, 4) noised
        normalised cxcywh, "group_size" int} adds `dn_outputs`, one {pred_logits, pred_boxes}
        per decoder layer for those queries (see unipose_train/denoising.py).
        """
        B = state.memory.shape[0]
        kpt_text = self._batch_text(keypoint_text, B).to(state.memory.dtype)
        K = kpt_text.shape[1]
        if not 0 < K <= self.config.max_keypoints:
            raise ValueError(f"the model takes 1..{self.config.max_keypoints} keypoints per prompt, got {K}")
        if keypoint_valid is not None:
            keypoint_valid = keypoint_valid.to(torch.bool)
            if keypoint_valid.dim() == 1:
                keypoint_valid = keypoint_valid[None].expand(B, -1)
        dec = self.transformer.decoder
        last = len(dec.layers) - 1
        kpt_content = self.projection_kpt(kpt_text)
        dn = {}
        if denoising is not None:
            dn = dict(dn_content=self.label_enc(denoising["labels"]).to(state.memory.dtype),
                      dn_reference=denoising["boxes"].to(state.memory.dtype),
                      dn_group_size=int(denoising["group_size"]))
        outs, selected = dec(state.query_content, state.query_reference, state.memory, state.memory_padding,
                             state.spatial_shapes, state.valid_ratios, state.text, state.text_padding,
                             kpt_content, keypoint_valid, keep_layers=None if aux or dn else [last], **dn)
        result = self._heads(state, outs[-1], last, kpt_content if aux else None)
        result["selected_queries"] = selected  # (B, S) decoder query slots kept for the keypoint stage
        if aux:
            result["aux_outputs"] = [self._heads(state, o, i, kpt_content) for i, o in enumerate(outs[:-1])]
            result["enc_outputs"] = {"pred_logits": state.proposal_logits, "pred_boxes": state.proposal_boxes}
        if dn:
            result["dn_outputs"] = [self._denoising_heads(state, o, i) for i, o in enumerate(outs)]
        return result

    def _denoising_heads(self, state: EncodedImage, out: DecoderLayerOutput, layer_id: int) -> Dict[str, torch.Tensor]:
        boxes = (self.bbox_embed[layer_id](out.dn_hidden) + inverse_sigmoid(out.dn_reference)).sigmoid()
        logits = contrastive_logits(out.dn_hidden, state.text, state.text_padding)[..., :state.num_classes]
        return {"pred_logits": logits, "pred_boxes": boxes}

    def forward(self, images: torch.Tensor, masks: Optional[torch.Tensor], instance_text: torch.Tensor,
                keypoint_text: torch.Tensor, keypoint_valid: Optional[torch.Tensor] = None,
                aux: bool = False, instance_valid: Optional[torch.Tensor] = None,
                denoising: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        return self.decode(self.encode(images, masks, instance_text, instance_valid), keypoint_text,
                           keypoint_valid, aux=aux, denoising=denoising)

    # ------------------------------------------------------------------ official layout
    @torch.no_grad()
    def forward_raw(self, image: torch.Tensor, mask: torch.Tensor, instance_text: torch.Tensor,
                    keypoint_text: torch.Tensor, keypoint_valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The official model's inputs and output layouts (see shared/reference/README.md, section 4).

        image (B,3,H,W), mask (B,H,W); instance_text (N,512); keypoint_text (100,512) of which the
        first max_keypoints rows are used; keypoint_valid (100,) 1 for real keypoints.
        Returns pred_logits (B, S, max_text_slots) with -inf beyond N, pred_boxes (B, S, 4),
        pred_keypoints (B, S, 3*max_keypoints) = [x0, y0, ..., x67, y67, v0..v67], and the two
        selections: enc_topk_indices (B, num_queries) tokens kept as proposals (best first),
        dec_topk_indices (B, S) query slots kept for the keypoint stage (best first).
        """
        cfg = self.config
        kpt_text = keypoint_text[..., :cfg.max_keypoints, :]
        kpt_valid = keypoint_valid[..., :cfg.max_keypoints] > 0
        state = self.encode(image, mask, instance_text)
        out = self.decode(state, kpt_text, kpt_valid)
        B, S, n = out["pred_logits"].shape
        logits = out["pred_logits"].new_full((B, S, cfg.max_text_slots), float("-inf"))
        logits[..., :n] = out["pred_logits"]
        xy = out["pred_keypoints"]
        # The official head outputs a constant visibility of sigmoid(1) for every slot.
        vis = torch.full(xy.shape[:-1], 1.0, dtype=xy.dtype, device=xy.device).sigmoid()
        keypoints = torch.cat((xy.flatten(2), vis), -1)
        return {"pred_logits": logits, "pred_boxes": out["pred_boxes"], "pred_keypoints": keypoints,
                "enc_topk_indices": state.proposal_index, "dec_topk_indices": out["selected_queries"]}


def build_model(name: str = "unipose_swint", **overrides) -> UniPose:
    """Build a model by configuration name ("unipose_swint", "unipose_r50", "unipose_tiny")."""
    from .configs import get_config
    return UniPose(get_config(name, **overrides)).eval()
