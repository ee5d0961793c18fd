"""Run the exported detector as a TensorRT engine (GPU), with an on-disk engine cache.

Engines are built from the exported ONNX graph with the TensorRT Python API, FP16 or FP32, one
engine per input size (the graph's image size is static) with an optimisation profile over the
prompt sizes (N classes, K keypoints). An engine is reused while its cache key is unchanged:
model weights hash, TensorRT version, GPU name, precision, profile, deformable-attention mode;
any change gives a new key and so a new build (or `force_rebuild=True`).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from . import BackendError

PRECISIONS = ("fp16", "fp32")
# What the engine builder expects of the ONNX file: name -> (element type, rank, dynamic axes).
EXPECTED_INPUTS = {"image": ("FLOAT", 4, ()), "mask": ("BOOL", 3, ()),
                   "instance_text": ("FLOAT", 2, (0,)), "keypoint_text": ("FLOAT", 2, (0,))}
EXPECTED_OUTPUTS = {"logits": ("FLOAT", 3), "boxes": ("FLOAT", 3), "keypoints": ("FLOAT", 4)}


@dataclass(frozen=True)
class PromptProfile:
    """Optimisation profile over the prompt sizes: (min, opt, max) classes and keypoints."""
    classes: Tuple[int, int, int] = (1, 1, 16)
    keypoints: Tuple[int, int, int] = (1, 17, 68)

    def validate(self, max_classes: int, max_keypoints: int) -> "PromptProfile":
        for name, (lo, opt, hi), limit in (("classes", self.classes, max_classes),
                                           ("keypoints", self.keypoints, max_keypoints)):
            if not 1 <= lo <= opt <= hi <= limit:
                raise BackendError(f"profile {name} must satisfy 1 <= min <= opt <= max <= {limit}, "
                                   f"got {(lo, opt, hi)}")
        return self


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; its digest names the cached engine file."""
    model: str
    weights_sha256: str
    tensorrt_version: str
    gpu_name: str
    precision: str
    image_size: Tuple[int, int]
    profile: PromptProfile
    deform_attn: str
    opset: int

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def file_name(self) -> str:
        H, W = self.image_size
        return f"{self.model}-{H}x{W}-{self.precision}-{self.digest()}.engine"


def require_tensorrt():
    """The tensorrt module, or a clear error saying how to get it."""
    try:
        import tensorrt
    except ImportError as e:
        raise BackendError(f"TensorRT is not installed ({e}); on a machine with an NVIDIA GPU: "
                           f"pip install tensorrt-cu12 (or tensorrt-cu13 for CUDA 13), or use "
                           f"backend 'onnxruntime' / 'pytorch'") from None
    return tensorrt


def require_gpu() -> torch.device:
    if not torch.cuda.is_available():
        raise BackendError("the TensorRT backend needs an NVIDIA GPU and none is visible "
                           "(torch.cuda.is_available() is False); use backend 'onnxruntime' or 'pytorch'")
    return torch.device("cuda")


def check_onnx_interface(path: str | Path) -> Dict[str, object]:
    """Check that an ONNX file has the inputs/outputs the engine builder expects; return describe()."""
    from ..export.onnx_export import describe

    d = describe(path)
    ins = {i["name"]: i for i in d["inputs"]}
    outs = {o["name"]: o for o in d["outputs"]}
    if list(ins) != list(EXPECTED_INPUTS) or list(outs) != list(EXPECTED_OUTPUTS):
        raise BackendError(f"{path}: inputs {list(ins)} / outputs {list(outs)}, expected "
                           f"{list(EXPECTED_INPUTS)} / {list(EXPECTED_OUTPUTS)}; re-export with `unipose export onnx`")
    for name, (dtype, rank, dynamic) in EXPECTED_INPUTS.items():
        shape = ins[name]["shape"]
        if ins[name]["dtype"] != dtype or len(shape) != rank:
            raise BackendError(f"{path}: input {name} is {ins[name]['dtype']}{shape}, expected {dtype} rank {rank}")
        for axis, dim in enumerate(shape):
            if (axis in dynamic) != isinstance(dim, str) and not (axis in dynamic and dim == 0):
                kind = "dynamic" if axis in dynamic else "static"
                raise BackendError(f"{path}: input {name} axis {axis} must be {kind}, got {dim!r}")
    for name, (dtype, rank) in EXPECTED_OUTPUTS.items():
        if outs[name]["dtype"] != dtype or len(outs[name]["shape"]) != rank:
            raise BackendError(f"{path}: output {name} is {outs[name]['dtype']}{outs[name]['shape']}")
    return d


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str, profile: PromptProfile,
                 workspace_gib: float = 4.0, verbose: bool = False) -> Path:
    """Parse the ONNX file and serialise an engine (atomic write)."""
    trt = require_tensorrt()
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    check_onnx_interface(onnx_path)
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # MultiscaleDeformableAttnPlugin_TRT lives there
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TensorRT >= 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    opt = builder.create_optimization_profile()
    for name, (lo, mid, hi) in (("instance_text", profile.classes), ("keypoint_text", profile.keypoints)):
        dim = network.get_input([network.get_input(i).name for i in range(network.num_inputs)].index(name)).shape[1]
        opt.set_shape(name, (lo, dim), (mid, dim), (hi, dim))
    config.add_optimization_profile(opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, engine_path)
    return engine_path


class TensorRTBackend:
    """backend(images, masks, instance_text, keypoint_text) on CUDA through cached engines.

    precision: "fp16" (default) or "fp32". deform_attn: "trt_plugin" (TensorRT's built-in
    deformable-attention plugin, default) or "grid_sample". profile: prompt-size ranges.
    force_rebuild: build every engine again even when a cached one matches its key.
    """

    name = "tensorrt"

    def __init__(self, model: nn.Module, *, cache_dir: str | Path | None = None, precision: str = "fp16",
                 deform_attn: str = "trt_plugin", profile: Optional[PromptProfile] = None,
                 force_rebuild: bool = False, opset: Optional[int] = None, workspace_gib: float = 4.0):
        from ..export.onnx_export import DEFAULT_OPSET, weights_hash

        self.trt = require_tensorrt()
        self.device = require_gpu()
        if precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        cfg = model.config
        self.model, self.precision, self.deform_attn = model, precision, deform_attn
        self.profile = (profile or PromptProfile()).validate(cfg.max_text_slots - 1, cfg.max_keypoints)
        self.force_rebuild, self.workspace_gib = force_rebuild, workspace_gib
        self.opset = opset or DEFAULT_OPSET
        base = Path(os.environ.get("UNIPOSE_CACHE", "~/.cache/unipose")).expanduser()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else base / "tensorrt"
        self.weights_sha256 = weights_hash(model)
        self.gpu_name = torch.cuda.get_device_name(self.device)
        self._engines: Dict[Tuple[int, int], Tuple[object, object]] = {}
        self._lock = threading.Lock()

    def key(self, image_size: Tuple[int, int]) -> EngineKey:
        return EngineKey(self.model.config.name, self.weights_sha256, self.trt.__version__, self.gpu_name,
                         self.precision, (int(image_size[0]), int(image_size[1])), self.profile,
                         self.deform_attn, self.opset)

    def engine_path(self, image_size: Tuple[int, int]) -> Path:
        return self.cache_dir / self.key(image_size).file_name()

    def _context(self, image_size):
        key = (int(image_size[0]), int(image_size[1]))
        with self._lock:
            if key in self._engines:
                return self._engines[key][1]
            path = self.engine_path(key)
            if self.force_rebuild or not path.is_file():
                from ..export.onnx_export import export_onnx

                onnx_path = path.with_suffix(".onnx")
                export_onnx(self.model, onnx_path, key, deform_attn=self.deform_attn, opset=self.opset)
                build_engine(onnx_path, path, self.precision, self.profile, self.workspace_gib)
                path.with_suffix(".json").write_text(json.dumps(asdict(self.key(key)), indent=1))
            logger = self.trt.Logger(self.trt.Logger.WARNING)
            self.trt.init_libnvinfer_plugins(logger, "")
            engine = self.trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise BackendError(f"TensorRT could not load {path}; rebuild with force_rebuild=True")
            context = engine.create_execution_context()
            self._engines[key] = (engine, context)
            return context

    def __call__(self, images, masks, instance_text, keypoint_text) -> Dict[str, torch.Tensor]:
        (lo_n, _, hi_n), (lo_k, _, hi_k) = self.profile.classes, self.profile.keypoints
        N, K = instance_text.shape[-2], keypoint_text.shape[-2]
        if not (lo_n <= N <= hi_n and lo_k <= K <= hi_k):
            raise BackendError(f"prompt of {N} classes / {K} keypoints is outside the engine profile "
                               f"(classes {lo_n}..{hi_n}, keypoints {lo_k}..{hi_k}); pass a wider profile")
        context = self._context(tuple(images.shape[-2:]))
        dev = self.device
        inst = instance_text.to(dev, torch.float32).contiguous()
        kpt = keypoint_text.to(dev, torch.float32).contiguous()
        S = self.model.config.num_select
        results = []
        stream = torch.cuda.current_stream(dev)
        for b in range(images.shape[0]):  # the graph's batch is 1
            feed = {"image": images[b:b + 1].to(dev, torch.float32).contiguous(),
                    "mask": masks[b:b + 1].to(dev, torch.bool).contiguous(),
                    "instance_text": inst, "keypoint_text": kpt}
            out = {"logits": torch.empty(1, S, N, device=dev), "boxes": torch.empty(1, S, 4, device=dev),
                   "keypoints": torch.empty(1, S, K, 2, device=dev)}
            for name, t in feed.items():
                context.set_input_shape(name, tuple(t.shape))
                context.set_tensor_address(name, t.data_ptr())
            for name, t in out.items():
                context.set_tensor_address(name, t.data_ptr())
            if not context.execute_async_v3(stream.cuda_stream):
                raise BackendError("TensorRT execution failed")
            results.append(out)
        stream.synchronize()
        cat = {k: torch.cat([r[k] for r in results], 0).to(images.device) for k in ("logits", "boxes", "keypoints")}
        return {"pred_logits": cat["logits"], "pred_boxes": cat["boxes"], "pred_keypoints": cat["keypoints"]}
