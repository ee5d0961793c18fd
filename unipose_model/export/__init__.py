"""Deployment exports: ONNX (standard ops or the TensorRT deformable-attention plugin).

Names resolve lazily so that `unipose --help` (which reads export/cli.py) never imports torch.
"""
from importlib import import_module

_EXPORTS = {name: "onnx_export" for name in (
    "DEFAULT_OPSET", "DEFORM_ATTN_MODES", "ExportError", "describe", "export_onnx", "read_metadata",
    "weights_hash")}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unipose_model.export' has no attribute {name!r}")
