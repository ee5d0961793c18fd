"""Image backbones: multi-scale feature maps plus their padding masks and position embeddings."""
from .build import FeatureLevel, ImageBackbone, build_backbone

__all__ = ["FeatureLevel", "ImageBackbone", "build_backbone"]
