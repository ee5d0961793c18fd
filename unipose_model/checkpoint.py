"""Loading the official UniPose checkpoint format, and the reference weight-fill rule.

The official file is `{"model": state_dict}` (keys possibly prefixed `module.`), saved from a
model that also carries a CLIP model under `clip_model.*` (ignored here: text features come
from `unipose_model.text_encoder`). Shared heads appear under several keys (e.g. one box MLP
as `bbox_embed.0..5` and `transformer.decoder.bbox_embed.0..5`).
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Tuple

import torch
from torch import nn

OFFICIAL_DOWNLOAD_HINT = (
    "Download the official UniPose Swin-T checkpoint 'unipose_swint.pth' from the links in the "
    "IDEA-Research/X-Pose README (GitHub) and pass its path, or put it at ~/.cache/unipose/unipose_swint.pth.")

# Keys of the official model that its forward never uses (they only appear multiplied by 0.0).
KNOWN_UNUSED_PREFIXES = ("pos_proj.", "padding.")
IGNORED_PREFIXES = ("clip_model.",)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used, with a message that says why and what to do."""


@dataclass
class LoadReport:
    path: str
    loaded: int
    ignored: List[str] = field(default_factory=list)        # clip_model.* and known-unused keys
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    copied: List[str] = field(default_factory=list)         # filled from a shallower layer (deepen)

    def __str__(self) -> str:
        text = (f"{self.path}: {self.loaded} tensors loaded, {len(self.ignored)} ignored "
                f"(CLIP / unused), {len(self.missing)} missing, {len(self.unexpected)} unexpected")
        return text + (f", {len(self.copied)} copied from shallower layers" if self.copied else "")


def _short_list(keys: Iterable[str], limit: int = 8) -> str:
    keys = list(keys)
    head = ", ".join(keys[:limit])
    return head + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def folder_message(path: Path) -> str:
    """What to say when a folder is given where a checkpoint file is expected."""
    found = sorted(p.name for p in path.glob("*.pth"))[:5]
    hint = f" (it holds: {', '.join(found)})" if found else " (it holds no .pth file)"
    return f"checkpoint {path} is a folder, not a model file: pass the .pth file inside it{hint}"


_read_once = threading.local()


@contextlib.contextmanager
def reading_each_file_once():
    """Within this block each checkpoint file is unpickled once: building a Predictor reads the
    weights, the metadata, the prompt features and the refiners from one file (unpickling is
    most of the cost of loading a small model). Callers must not modify what they get."""
    if getattr(_read_once, "cache", None) is not None:  # nested: the outer block's cache serves
        yield
        return
    _read_once.cache = {}
    try:
        yield
    finally:
        _read_once.cache = None


def load_checkpoint_file(path: str | os.PathLike, mmap: bool = False):
    """torch.load a checkpoint file safely (weights_only); any file that does not load is one
    CheckpointError naming the file (missing, a folder, empty, truncated, corrupt, not PyTorch).

    mmap: map the tensors instead of reading them (zip-format files only; torch's legacy
    pre-1.6 format is read in full)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}. {OFFICIAL_DOWNLOAD_HINT}")
    if path.is_dir():
        raise CheckpointError(folder_message(path))
    stat = path.stat()
    if stat.st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    cache = getattr(_read_once, "cache", None)
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if cache is not None and key in cache:
        return cache[key]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways (KeyError: 101 for a text file)
        first = (str(exc).splitlines() or [""])[0][:200]
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated, corrupt or not a "
                              f"PyTorch checkpoint ({type(exc).__name__}: {first}). "
                              f"Download it again.") from exc
    if cache is not None:
        cache[key] = obj
    return obj


def read_state_dict(path: str | os.PathLike, mmap: bool = False) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file safely (weights_only) and return its model state dict.

    mmap: map the tensors instead of reading them; a quick check that the file is a readable
    checkpoint (the CLI makes it before loading CLIP, so a corrupt file is named first). Files in
    torch's legacy (pre-1.6, non-zip) format cannot be mapped and are read in full.
    """
    path = Path(path)
    obj = load_checkpoint_file(path, mmap=mmap)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    check_state_dict(obj, str(path))
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def check_state_dict(obj, where: str) -> None:
    """A mapping of str keys to tensors, else CheckpointError naming `where`."""
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{where} holds no model state dict (expected {{'model': state_dict}} "
                              f"or a plain state dict of tensors)")


def load_state_dict_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "<state dict>",
                            strict: bool = True) -> LoadReport:
    """Copy `state` into `model`, accounting for every key; raise CheckpointError on any mismatch."""
    own = model.state_dict()
    report = LoadReport(path=source, loaded=0)
    usable = {}
    shape_errors: Dict[str, str] = {}  # key -> "checkpoint (..) vs model (..)"
    for key, value in state.items():
        if key.startswith(IGNORED_PREFIXES) or key.startswith(KNOWN_UNUSED_PREFIXES):
            report.ignored.append(key)
        elif key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            shape_errors[key] = f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        else:
            usable[key] = value
    report.missing = [k for k in own if k not in usable and k not in shape_errors]
    problems = []
    if shape_errors:
        problems.append(f"{len(shape_errors)} mis-shaped: {_short_list(shape_errors.values(), 5)}")
    if report.missing:
        problems.append(f"{len(report.missing)} missing: {_short_list(report.missing)}")
    if report.unexpected:
        problems.append(f"{len(report.unexpected)} unexpected: {_short_list(report.unexpected)}")
    if problems and (strict or shape_errors):
        cfg = getattr(model, "config", None)
        name = getattr(cfg, "name", type(model).__name__)
        raise CheckpointError(f"checkpoint {source} does not fit model '{name}': " + "; ".join(problems)
                              + ". Is it a checkpoint of this model configuration?")
    for key, value in usable.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"checkpoint {source}: tensor {key} contains NaN or Inf; "
                                  f"the file is damaged or came from a diverged training run")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in usable.items()}, strict=False)
    report.loaded = len(usable)
    return report


def deepen_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Fill the layers a shallower checkpoint lacks with copies of its deepest layer of the same list.

    Growing a trained model (e.g. more decoder layers) starts it from a function close to the old
    one, instead of random layers: `decoder.layers.4.*` is copied from `decoder.layers.2.*` when the
    checkpoint stops at 2, and likewise for the per-layer heads (`pose_embed.3.*` from `pose_embed.1.*`).
    Returns the extended state and the keys that were copied.
    """
    out = dict(state)
    copied: List[str] = []
    for key, tensor in model.state_dict().items():
        if key in out:
            continue
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not part.isdigit():
                continue
            for j in range(int(part) - 1, -1, -1):
                source = ".".join(parts[:i] + [str(j)] + parts[i + 1:])
                if source in state and tuple(state[source].shape) == tuple(tensor.shape):
                    out[key] = state[source].clone()
                    copied.append(key)
                    break
            if key in out:
                break
    return out, copied


def load_official_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True,
                             deepen: bool = False) -> LoadReport:
    """Load an official-format UniPose checkpoint (or one saved by this project) into `model`.

    deepen: layers the checkpoint lacks start as copies of its deepest layer (`deepen_state_dict`).
    """
    state = read_state_dict(path)
    copied: List[str] = []
    if deepen:
        state, copied = deepen_state_dict(state, model)
    report = load_state_dict_checked(model, state, str(path), strict=strict)
    report.copied = copied
    return report


# ---------------------------------------------------------------------- reference weights
def alias_groups(model: nn.Module) -> Dict[str, str]:
    """key -> canonical key (the first key in state-dict order that shares its tensor)."""
    canonical: Dict[str, str] = {}
    first_by_storage: Dict[Tuple[int, int], str] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        ident = (tensor.data_ptr(), tensor.numel())
        canonical[key] = first_by_storage.setdefault(ident, key)
    return canonical


def reference_fill(key: str, shape: Tuple[int, ...]) -> torch.Tensor:
    """The fixture weight-fill rule (shared/reference/README.md, section 2) for one tensor."""
    g = torch.Generator(device="cpu")
    g.manual_seed(zlib.crc32(key.encode("utf-8")))
    z = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    if len(shape) >= 2:
        scale, offset = 0.5 / math.sqrt(math.prod(shape[1:])), 0.0
    elif len(shape) == 1 and (leaf == "bias" or leaf.endswith("_bias")):
        scale, offset = 0.02, 0.0
    elif len(shape) == 1 and leaf.startswith("gamma"):
        scale, offset = 0.01, 0.1
    elif len(shape) == 1:
        scale, offset = 0.1, 1.0
    else:
        scale, offset = 1.0, 0.0
    return (z.to(torch.float64) * scale + offset).to(torch.float32)


@torch.no_grad()
def fill_reference_weights(model: nn.Module) -> nn.Module:
    """Deterministic, well-conditioned random weights: meaningless detections, real compute.

    Used by the parity fixtures, the tests and demos without the official file. Integer buffers
    (Swin's relative position index) keep their values.
    """
    canonical = alias_groups(model)
    for key, tensor in model.state_dict(keep_vars=True).items():
        if canonical[key] != key or not tensor.is_floating_point():
            continue
        tensor.data.copy_(reference_fill(key, tuple(tensor.shape)).to(tensor.dtype))
    return model
