"""Export the whole detector to ONNX (torch.export + the dynamo ONNX exporter).

Graph inputs:  image (1, 3, H, W) float32 normalised, mask (1, H, W) bool (True on padding),
               instance_text (N, 512), keypoint_text (K, 512) -- CLIP features of the prompt.
Graph outputs: logits (1, S, N), boxes (1, S, 4) cxcywh, keypoints (1, S, K, 2) xy, all
               normalised as in the PyTorch model (S = num_select instances).

Dynamic: N (1..max_text_slots-1) and K (1..max_keypoints), so a new prompt needs no re-export.
Static:  the batch (1) and the image size H x W. The Swin backbone's per-block window padding,
         shifted-window masks and patch-merging parity turn symbolic image sizes into sympy
         expressions that torch.export could not finish reasoning about in 10 minutes, so one
         graph serves one input size; the backends export (and cache) one graph per size.
Deformable attention: "grid_sample" exports the reference core as standard GridSample nodes;
"trt_plugin" exports one TensorRT MultiscaleDeformableAttnPlugin_TRT node per attention.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .wrapper import INPUT_NAMES, OUTPUT_NAMES, ExportableUniPose

DEFORM_ATTN_MODES = ("grid_sample", "trt_plugin")
DEFAULT_OPSET = 18  # the exporter's native opset (GridSample exists since 16); the lowest that works


class ExportError(RuntimeError):
    """The model could not be exported (missing packages, unsupported options)."""


def weights_hash(model: nn.Module) -> str:
    """sha256 of the state dict (names, dtypes, shapes, bytes): keys caches of exported artefacts."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def example_inputs(model: nn.Module, image_size: Tuple[int, int], num_classes: int = 1,
                   num_keypoints: int = 17) -> Tuple[torch.Tensor, ...]:
    H, W = image_size
    g = torch.Generator().manual_seed(0)
    text_dim = model.config.text_dim
    return (torch.randn(1, 3, H, W, generator=g), torch.zeros(1, H, W, dtype=torch.bool),
            torch.randn(num_classes, text_dim, generator=g) * 0.4,
            torch.randn(num_keypoints, text_dim, generator=g) * 0.4)


def _dynamic_shapes(model: nn.Module, dynamic_prompt: bool) -> Optional[Dict]:
    if not dynamic_prompt:
        return None
    from torch.export import Dim

    cfg = model.config
    # N stops one short of max_text_slots: below it the model appends one padding row (see
    # UniPose.encode_instance_text), a branch the graph has to fix at export time.
    n = Dim("num_classes", min=1, max=cfg.max_text_slots - 1)
    k = Dim("num_keypoints", min=1, max=cfg.max_keypoints)
    return {"image": None, "mask": None, "instance_text": {0: n}, "keypoint_text": {0: k}}


def export_onnx(model: nn.Module, out: str | Path, image_size: Tuple[int, int], *,
                num_classes: int = 2, num_keypoints: int = 17, opset: int = DEFAULT_OPSET,
                deform_attn: str = "grid_sample", dynamic_prompt: bool = True, optimize: bool = False,
                metadata: Optional[Dict[str, str]] = None, verbose: bool = False) -> Path:
    """Write `model` (a UniPose in eval mode, on the CPU, float32) as one ONNX file.

    num_classes / num_keypoints size the example prompt (and are the fixed sizes when
    dynamic_prompt is False). The model's metadata (config name, image size, weights hash,
    deform_attn, opset) goes into the file's metadata_props for the backends' caches.
    """
    if deform_attn not in DEFORM_ATTN_MODES:
        raise ExportError(f"deform_attn must be one of {DEFORM_ATTN_MODES}, got {deform_attn!r}")
    if opset < DEFAULT_OPSET:
        # The exporter writes opset 18 and converts down; its converter has no Pad adapter to 17.
        raise ExportError(f"opset {opset} is not supported: the exporter writes opset {DEFAULT_OPSET} "
                          f"(GridSample since 16) and cannot convert this graph lower")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs the 'onnx' and 'onnxscript' packages ({e}); "
                          f"pip install 'unipose_ros[export]'") from None
    from ..ops import use_deform_attn_impl

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    first = next(model.parameters())
    if first.device.type != "cpu" or first.dtype != torch.float32:
        model = copy.deepcopy(model).float().cpu()  # never move the caller's model
    model = model.eval()
    wrapper = ExportableUniPose(model).eval()
    if dynamic_prompt:  # an example size of 1 would be specialised to a constant by torch.export
        num_classes, num_keypoints = max(num_classes, 2), max(num_keypoints, 2)
    args = example_inputs(model, image_size, num_classes, num_keypoints)
    table = None
    impl = "pytorch"
    if deform_attn == "trt_plugin":
        from . import trt_plugin

        table, impl = trt_plugin.translation_table(), "trt_plugin"
    with torch.no_grad(), use_deform_attn_impl(impl):
        program = torch.export.export(wrapper, args, dynamic_shapes=_dynamic_shapes(model, dynamic_prompt),
                                      strict=False)
        onnx_program = torch.onnx.export(program, f=None, input_names=list(INPUT_NAMES),
                                         output_names=list(OUTPUT_NAMES), opset_version=opset,
                                         dynamo=True, external_data=False, verbose=verbose,
                                         custom_translation_table=table,
                                         optimize=optimize)
    proto = onnx_program.model_proto
    meta = {"unipose.model": model.config.name, "unipose.image_size": f"{image_size[0]}x{image_size[1]}",
            "unipose.weights_sha256": weights_hash(model), "unipose.deform_attn": deform_attn,
            "unipose.opset": str(opset), "unipose.dynamic_prompt": str(bool(dynamic_prompt)),
            "unipose.max_classes": str(model.config.max_text_slots - 1 if dynamic_prompt else num_classes),
            "unipose.max_keypoints": str(model.config.max_keypoints if dynamic_prompt else num_keypoints),
            **(metadata or {})}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    _rename_io(proto)
    if dynamic_prompt:
        _name_dims(proto, {("instance_text", 0): "num_classes", ("keypoint_text", 0): "num_keypoints"})
    import onnx

    onnx.save(proto, str(out))
    return out


def _rename_io(proto) -> None:
    """Give the graph's outputs their public names (the exporter names them after the last node)."""
    renames = {o.name: new for o, new in zip(proto.graph.output, OUTPUT_NAMES) if o.name != new}
    if not renames:
        return
    for node in proto.graph.node:
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for o in proto.graph.output:
        o.name = renames.get(o.name, o.name)


def _name_dims(proto, names: Dict[Tuple[str, int], str]) -> None:
    """Replace the exporter's symbolic dimension names (s26, ...) by readable ones everywhere."""
    inputs = {i.name: i for i in proto.graph.input}
    mapping = {}
    for (name, axis), new in names.items():
        old = inputs[name].type.tensor_type.shape.dim[axis].dim_param
        if old:
            mapping[old] = new
    for v in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param in mapping:
                d.dim_param = mapping[d.dim_param]


def read_metadata(path: str | Path) -> Dict[str, str]:
    """The unipose.* metadata of an exported file (without loading the weights)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def describe(path: str | Path) -> Dict[str, object]:
    """Inputs, outputs (name, element type, shape with symbolic dims as names) and metadata."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def info(values):
        rows = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            rows.append({"name": v.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type), "shape": dims})
        return rows

    ops = sorted({(n.domain or "ai.onnx", n.op_type) for n in proto.graph.node})
    return {"inputs": info(proto.graph.input), "outputs": info(proto.graph.output),
            "metadata": {p.key: p.value for p in proto.metadata_props},
            "opsets": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
            "ops": [f"{d}::{t}" for d, t in ops]}
