"""UniPose / X-Pose in pure PyTorch: prompt-based detection of any keypoints.

Importable without ROS. Entry points: `build_model`, `load_official_checkpoint`, and (inference)
`unipose_model.predictor.Predictor`.
"""
from .checkpoint import CheckpointError, load_official_checkpoint
from .configs import CONFIGS, UniPoseConfig, get_config
from .model import EncodedImage, UniPose, build_model

__all__ = ["build_model", "load_official_checkpoint", "CheckpointError", "UniPose", "UniPoseConfig",
           "EncodedImage", "CONFIGS", "get_config"]
