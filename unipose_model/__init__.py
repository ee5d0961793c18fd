"""UniPose / X-Pose in pure PyTorch: prompt-based detection of any keypoints.

Importable without ROS. Entry points: `build_model`, `load_official_checkpoint`, the prompt
parser `parse_prompt`, and for inference `Predictor`. Names are resolved lazily so that the
prompt and vocabulary modules (pure Python) can be used without importing torch.
"""
from importlib import import_module

_EXPORTS = {
    "build_model": "model", "UniPose": "model", "EncodedImage": "model",
    "UniPoseConfig": "configs", "CONFIGS": "configs", "get_config": "configs",
    "load_official_checkpoint": "checkpoint", "CheckpointError": "checkpoint",
    "fill_reference_weights": "checkpoint",
    "KeypointSet": "vocabulary", "Vocabulary": "vocabulary", "VocabularyError": "vocabulary",
    "KeypointGroup": "prompt", "Prompt": "prompt", "PromptError": "prompt", "parse_prompt": "prompt",
    "prompt_from_parts": "prompt",
    "Predictor": "predictor", "Instance": "instance", "Settings": "settings", "AUTO": "settings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unipose_model' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
