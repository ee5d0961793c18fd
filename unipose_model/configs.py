"""Model configurations: the official Swin-T model, the paper's ResNet-50 variant, a tiny test model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Optional

# The official model's prompt slots, the limits of a prompt (prompt.py, the Predictor, exports).
MAX_TEXT_SLOTS = 350  # instance text slots: classes per prompt
MAX_KEYPOINTS = 68    # keypoint text slots per forward pass

@dataclass(frozen=True)
class UniPoseConfig:
    name: str
    backbone: str = "swin_T_224_1k"
    backbone_kwargs: Dict = field(default_factory=dict)
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    num_box_decoder_layers: int = 2       # box-only layers before the keypoint stage
    dim_feedforward: int = 2048
    num_feature_levels: int = 4
    enc_n_points: int = 4
    dec_n_points: int = 4
    num_queries: int = 900                # two-stage proposals kept after the encoder
    num_select: int = 50                  # instance queries that get keypoint groups
    pe_temperature: float = 20.0          # image position embedding temperature (H and W)
    two_stage_default_hw: float = 0.05    # proposal size at level 0, doubled per level
    text_dim: int = 512                   # CLIP ViT-B/32 text feature size
    max_text_slots: int = MAX_TEXT_SLOTS  # instance prompt slots (classes per prompt)
    max_keypoints: int = MAX_KEYPOINTS    # keypoint slots per prompt
    hw_base_rows: int = 17
    text_heads: int = 4                   # text enhancer: nheads // 2
    text_ffn: int = 1024                  # text enhancer: dim_feedforward // 2
    fusion_dim: int = 1024                # image-text fusion attention width
    fusion_heads: int = 4
    dn_labelbook_size: int = 2000         # label embedding table for denoising training
    input_short_side: int = 800           # preprocessing defaults of this model
    input_max_size: int = 1333
    visual_prompt: Optional[Dict] = None  # build_visual_prompt_encoder arguments; None = text prompts only

    def to_dict(self) -> Dict:
        return asdict(self)


CONFIGS: Dict[str, UniPoseConfig] = {
    # The released model (X-Pose config_model/UniPose_SwinT.py).
    "unipose_swint": UniPoseConfig(name="unipose_swint"),
    # The paper's MP-100 experiments use a ResNet-50 backbone; everything else is shared.
    "unipose_r50": UniPoseConfig(name="unipose_r50", backbone="resnet50"),
    # A few MB and a few hundred ms on a laptop CPU: for tests and quick experiments.
    "unipose_tiny": UniPoseConfig(
        name="unipose_tiny", backbone="swin_custom",
        backbone_kwargs=dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window=7),
        hidden_dim=64, nheads=4, enc_layers=2, dec_layers=3, num_box_decoder_layers=2,
        dim_feedforward=128, enc_n_points=2, dec_n_points=2, num_queries=100, num_select=10,
        text_heads=2, text_ffn=128, fusion_dim=128, fusion_heads=2, dn_labelbook_size=100,
        input_short_side=256, input_max_size=448),
}
# The tiny model plus a small visual prompt encoder (trained with it, no CLIP weights needed).
CONFIGS["unipose_tiny_visual"] = replace(
    CONFIGS["unipose_tiny"], name="unipose_tiny_visual",
    visual_prompt=dict(kind="tiny", width=64, layers=2, heads=4, tower=dict(width=64, layers=2, heads=4)))


def get_config(name: str, **overrides) -> UniPoseConfig:
    if name not in CONFIGS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(CONFIGS))}")
    return replace(CONFIGS[name], **overrides) if overrides else CONFIGS[name]
