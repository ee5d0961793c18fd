"""Deformable attention as TensorRT's built-in plugin node in the exported ONNX graph.

TensorRT ships `MultiscaleDeformableAttnPlugin_TRT` (version "1"): inputs value (B, S, M, D),
spatial_shapes (L, 2) int32 rows (H, W), level_start_index (L,) int32, sampling_locations
(B, Q, M, L, P, 2), attention_weights (B, Q, M, L, P); output (B, Q, M, D). Its ONNX parser
maps a node whose op_type is a plugin name onto that plugin (attributes plugin_version,
plugin_namespace). onnxruntime cannot run such a graph; TensorRT can.

In PyTorch the op is a custom op whose eager result is the reference implementation, so a
model routed through it ("trt_plugin" in the registry) still computes the same function.
"""
from __future__ import annotations

import torch

from ..ops.ms_deform_attn import ms_deform_attn_pytorch, register_deform_attn_impl

PLUGIN_NAME = "MultiscaleDeformableAttnPlugin_TRT"
PLUGIN_VERSION = "1"
PLUGIN_DOMAIN = "trt.plugins"


@torch.library.custom_op("unipose::ms_deform_attn", mutates_args=())
def ms_deform_attn_op(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                      sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    B, _, M, D = value.shape
    out = ms_deform_attn_pytorch(value, shapes, sampling_locations, attention_weights)
    return out.view(B, -1, M, D)


@ms_deform_attn_op.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    B, _, M, D = value.shape
    return value.new_empty(B, sampling_locations.shape[1], M, D)


def ms_deform_attn_trt(value, spatial_shapes, sampling_locations, attention_weights):
    """Registry entry: the same signature as ms_deform_attn_pytorch, through the custom op."""
    sizes = [int(h) * int(w) for h, w in spatial_shapes]
    shapes = torch.tensor([[int(h), int(w)] for h, w in spatial_shapes], dtype=torch.int32)
    starts = torch.tensor([sum(sizes[:i]) for i in range(len(sizes))], dtype=torch.int32)
    out = ms_deform_attn_op(value, shapes.to(value.device), starts.to(value.device),
                            sampling_locations, attention_weights)
    return out.flatten(2)


register_deform_attn_impl("trt_plugin", ms_deform_attn_trt)


def _plugin_schema():
    """An OpSchema for the plugin node, so the exporter knows its inputs, output and attributes."""
    from onnx.defs import OpSchema

    T = [("T", ["tensor(float)", "tensor(float16)"], "values and sampling"),
         ("I", ["tensor(int32)"], "shapes and starts")]
    inputs = [OpSchema.FormalParameter("value", "T"), OpSchema.FormalParameter("spatial_shapes", "I"),
              OpSchema.FormalParameter("level_start_index", "I"),
              OpSchema.FormalParameter("sampling_locations", "T"),
              OpSchema.FormalParameter("attention_weights", "T")]
    outputs = [OpSchema.FormalParameter("output", "T")]
    attributes = [OpSchema.Attribute("plugin_version", OpSchema.AttrType.STRING, "plugin version"),
                  OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "plugin namespace")]
    return OpSchema(PLUGIN_NAME, PLUGIN_DOMAIN, 1, inputs=inputs, outputs=outputs,
                    type_constraints=T, attributes=attributes)


def translation_table() -> dict:
    """custom_translation_table for torch.onnx.export: the custom op -> the plugin node."""
    import onnxscript

    trt = onnxscript.values.Opset(PLUGIN_DOMAIN, 1)
    op = onnxscript.values.Op(trt, PLUGIN_NAME, _plugin_schema())

    def plugin(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        return op(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                  plugin_version=PLUGIN_VERSION, plugin_namespace="")

    return {torch.ops.unipose.ms_deform_attn.default: plugin}
