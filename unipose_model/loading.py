"""Where the weights come from and where they run: checkpoint and device resolution, loading.

    model, checkpoint, info = load_model("fly", None)        # a bundled model's name
    model, checkpoint, info = load_model(None, "my.pth")     # the configuration the file names
    device = resolve_device("auto")

Used by the Predictor and by ``unipose export`` (which needs the network without a Predictor).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointNotFoundError, PredictorError

DEFAULT_MODEL = "unipose_swint"
REFERENCE_CHECKPOINT = "reference"  # fill_reference_weights: deterministic, meaningless weights
OFFICIAL_MODELS = ("unipose_swint",)  # configurations with a released checkpoint to download


def cache_dir() -> Path:
    """Where checkpoints are looked for by default: $UNIPOSE_CACHE or ~/.cache/unipose."""
    return Path(os.environ.get("UNIPOSE_CACHE", "~/.cache/unipose")).expanduser()


def default_checkpoint_path(model_name: str = DEFAULT_MODEL) -> Path:
    return cache_dir() / f"{model_name}.pth"


def default_checkpoint() -> Path:
    """No model and no checkpoint named: the official file where it is expected, else the
    model bundled with the package (trained on the fly clip; docs/MODEL_CARD_fly.md)."""
    from .model_file import BUNDLED_CHECKPOINT

    official = default_checkpoint_path(DEFAULT_MODEL)
    return official if official.is_file() or not BUNDLED_CHECKPOINT.is_file() else BUNDLED_CHECKPOINT


def resolve_bundled_model(model, checkpoint):
    """A bundled model's name (``"fly"``) -> (None, its file): the file names its configuration.
    Anything else passes through. A bundled name with another checkpoint is a contradiction."""
    from .model_file import BUNDLED_MODELS

    if not isinstance(model, str) or model not in BUNDLED_MODELS:
        return model, checkpoint
    bundled = BUNDLED_MODELS[model]
    if checkpoint not in (None, "") and str(checkpoint) != str(bundled) and (
            str(checkpoint) == REFERENCE_CHECKPOINT or Path(checkpoint).expanduser().resolve() != bundled.resolve()):
        raise PredictorError(f"model {model!r} is the bundled model file {bundled}, but checkpoint {checkpoint} "
                             f"was given too; leave the checkpoint out, or leave the model out to run {checkpoint}")
    return None, bundled


def download_hint(model_name: str = DEFAULT_MODEL) -> str:
    """How to get a checkpoint for `model_name`: the official download for the released
    configuration, training or exporting one (docs/TRAINING.md) for the others."""
    where = default_checkpoint_path(model_name)
    if model_name in OFFICIAL_MODELS:
        return (f"download the official '{model_name}.pth' from the links in the IDEA-Research/X-Pose "
                f"GitHub README and pass --checkpoint PATH, or put it at {where}")
    return (f"no checkpoint of '{model_name}' is released: train one (unipose-train, docs/TRAINING.md) "
            f"and pass --checkpoint PATH, or put it at {where}; or use --model fly (bundled)")


def resolve_checkpoint(model_name: str, checkpoint=None) -> Path | str:
    """The checkpoint file to load ("reference" passes through), or a clear error if missing.

    None means the default location, ``default_checkpoint_path(model_name)``, or the file of a
    bundled model (``"fly"``).
    """
    if str(checkpoint) == REFERENCE_CHECKPOINT:
        return REFERENCE_CHECKPOINT
    from .model_file import BUNDLED_MODELS
    if checkpoint is None and model_name in BUNDLED_MODELS:
        return BUNDLED_MODELS[model_name]
    if checkpoint is None:
        path = default_checkpoint_path(model_name)
        if not path.is_file():
            raise CheckpointNotFoundError(f"no checkpoint given and none at the default location "
                                          f"{path}; {download_hint(model_name)}")
        return path
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        from .checkpoint import CheckpointError, folder_message
        raise CheckpointError(folder_message(path))
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}; {download_hint(model_name)}")
    return path


def load_model(model, checkpoint):
    """(model with weights, resolved checkpoint, ModelFileInfo of the checkpoint).

    model: a configuration name, None (the one the checkpoint names, else unipose_swint) or a
    built module (its current weights when checkpoint is None); checkpoint: a file,
    "reference" or None (the default location of the model name).
    """
    from .model_file import ModelFileInfo, read_model_file_info

    info = ModelFileInfo()
    built_here = False
    if isinstance(model, nn.Module):
        if checkpoint is None:
            return model, checkpoint, info
        name = getattr(getattr(model, "config", None), "name", DEFAULT_MODEL)
        checkpoint = resolve_checkpoint(name, checkpoint)
    elif model is None or isinstance(model, str):
        checkpoint = resolve_checkpoint(model or DEFAULT_MODEL, checkpoint)  # before the (slow) build
        if str(checkpoint) != REFERENCE_CHECKPOINT:
            info = read_model_file_info(checkpoint)
        model, built_here = _build_named(model, checkpoint, info), True
    else:
        raise PredictorError(f"model must be a configuration name or an nn.Module, "
                             f"got {type(model).__name__}")
    if str(checkpoint) == REFERENCE_CHECKPOINT:
        from .checkpoint import fill_reference_weights
        fill_reference_weights(model)
        return model, checkpoint, info
    if isinstance(model, nn.Module) and not info.model_name and not built_here:
        info = read_model_file_info(checkpoint)
    from .checkpoint import load_official_checkpoint
    load_official_checkpoint(model, str(checkpoint))
    return model, checkpoint, info


def _build_named(model: str | None, checkpoint, info) -> nn.Module:
    """The network for a configuration name (or the file's), with the file's overrides."""
    from .model import build_model

    if model is not None and info.model_name and model != info.model_name:
        raise PredictorError(f"checkpoint {checkpoint} holds a {info.model_name!r} model, not "
                             f"{model!r}; leave the model out (it is read from the checkpoint) "
                             f"or pass model={info.model_name!r}")
    name = model or info.model_name or DEFAULT_MODEL
    overrides = info.model_overrides if info.model_name == name else {}
    try:
        return build_model(name, **overrides)
    except KeyError as e:
        from .model_file import BUNDLED_MODELS
        raise PredictorError(f"unknown model {name!r}: {e.args[0] if e.args else e}; bundled models "
                             f"(no checkpoint needed): {', '.join(BUNDLED_MODELS)}") from None
    except Exception as e:  # noqa: BLE001 - only the file's overrides can make a known model fail to build
        if not overrides:
            raise
        from .checkpoint import CheckpointError
        raise CheckpointError(f"model file {checkpoint}: its 'model_config' overrides do not build a "
                              f"{name} model ({type(e).__name__}: {str(e)[:200]})") from None


# ------------------------------------------------------------------------------------ devices
def resolve_device(device) -> torch.device:
    """Device name -> torch.device ("auto": CUDA when available); clear error if unusable."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise PredictorError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PredictorError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def cpu_supports_bf16() -> bool:
    """True where oneDNN runs bfloat16 matrix products natively (AVX512-BF16 / AMX); elsewhere
    bf16 on the CPU is emulated and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 matrix products natively (CUDA, or a CPU with bf16 units)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_supports_bf16())


def check_dtype(dtype: torch.dtype, device: torch.device) -> None:
    """A PredictorError when `device` cannot run `dtype` (float16 needs CUDA, bfloat16 native units)."""
    if dtype == torch.float32 or device.type == "cuda" or (dtype == torch.bfloat16 and native_bf16(device)):
        return
    if dtype == torch.bfloat16 and device.type == "cpu":
        raise PredictorError("dtype bfloat16 on the CPU needs native bf16 instructions (AVX512-BF16 "
                             "or AMX), which this CPU lacks; use dtype float32")
    raise PredictorError(f"dtype {str(dtype).replace('torch.', '')} needs a CUDA device (got {device}); use "
                         f"dtype float32{' or bfloat16' if native_bf16(device) else ''} on the CPU")


__all__ = ["DEFAULT_MODEL", "REFERENCE_CHECKPOINT", "cache_dir", "default_checkpoint_path", "default_checkpoint",
           "resolve_bundled_model", "download_hint", "resolve_checkpoint", "load_model", "resolve_device",
           "cpu_supports_bf16", "native_bf16", "check_dtype"]
