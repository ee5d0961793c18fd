"""Inference backends for exported graphs: onnxruntime (CPU/GPU) and TensorRT (GPU).

A backend is called like the model's forward for one keypoint set:
backend(images, masks, instance_text, keypoint_text) -> {"pred_logits", "pred_boxes", "pred_keypoints"}.
"""
from __future__ import annotations

BACKENDS = ("pytorch", "onnxruntime", "tensorrt")


class BackendError(RuntimeError):
    """The backend cannot run here (missing package or GPU, unsupported input)."""


def build_backend(name: str, model, **kwargs):
    """The named backend around `model` (a UniPose on the CPU, float32); "pytorch" -> None."""
    if name == "pytorch":
        return None
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(model, **kwargs)
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(model, **kwargs)
    raise ValueError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
