"""Self-describing checkpoints: weights plus what is needed to run them without other files.

The official format is ``{"model": state_dict}``. A file written by :func:`save_model_file` keeps
that key (so any official-format loader still reads it) and adds:

    "model_config":  {"name": "unipose_tiny", "overrides": {...}}   -> build the right model
    "text_features": {"encoder": ..., "texts": [...], "features": (M, 512)}
                     the prompt features the model was trained with, keyed by prompt text
                     (the layout of unipose_train/text_features.py's cache), so prompts need no
                     text encoder and no CLIP weights
    "vocabulary":    keypoint-set entries (the keypoint_sets.json layout) of the categories the
                     model knows: "fly" means *its* 13 keypoints, not the default 32
    "input_size":    {"short_side": S, "max_size": M} the resolution it was trained for
    "postprocess":   {"box_threshold": T} the score threshold chosen for this model (on data
                     it was not trained on); "refine": F, "refine_size": S, its crop-refinement
                     factor and the crop pass's input size; the Predictor's defaults when given
    "refiner":       {"model": state dict, "model_config": {...}} an optional second network for
                     the crop-refinement pass (refine.py), trained on crops around one object:
                     the top-down second stage of SLEAP-style pipelines, in the same file
    "heatmap_refiner": {"model": state dict, "spec": {...}} an optional heatmap network run on
                     each detection of one category after UniPose (heatmap_refiner.py)
    "info":          free-form provenance (data, split, command, metrics)

Weights may be stored as float16 (half the file); loading casts them to the model's dtype.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

DATA_DIR = Path(__file__).resolve().parent / "data"
BUNDLED_CHECKPOINT = DATA_DIR / "fly_demo.pth"   # trained here on the fly clip (docs/MODEL_CARD_fly.md)
BUNDLED_VIDEO = DATA_DIR / "sample_fly.mp4"       # its data: SLEAP's two-fly clip (BSD, SAMPLE_LICENSE.txt)
# a 1-shot visual prompt for it: fly 0 of training frame 1000, chosen by unipose-rank-supports
BUNDLED_SUPPORT_KEYPOINTS = DATA_DIR / "fly_support.json"
BUNDLED_SUPPORT_IMAGE = f"{BUNDLED_VIDEO}#frame=1000"
# Models shipped with the package, by the one word a user types: Predictor(model="fly"),
# `unipose predict --model fly`, `ros2 launch ... model:=fly`. The file names its configuration.
BUNDLED_MODELS = {"fly": BUNDLED_CHECKPOINT}


@dataclass
class ModelFileInfo:
    """Everything in a checkpoint file besides the weights (all optional)."""

    model_name: Optional[str] = None
    model_overrides: Dict[str, Any] = field(default_factory=dict)
    text_encoder: Optional[str] = None
    text_table: Optional[Dict[str, torch.Tensor]] = None     # prompt text -> (512,) float32
    vocabulary: Optional[List[Dict[str, Any]]] = None
    input_size: Optional[Dict[str, int]] = None
    postprocess: Dict[str, float] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)
    refiner_config: Optional[Dict[str, Any]] = None           # {"name", "overrides"} when the file has one
    heatmap_refiner_spec: Optional[Dict[str, Any]] = None     # HeatmapRefinerSpec.to_dict() when it has one

    def known_prompts(self) -> str:
        """'fly (head, thorax, ...)' for each category of the vocabulary: for error messages."""
        if not self.vocabulary:
            return ""
        parts = [f"{', '.join(s['categories'])} (keypoints: {', '.join(s['keypoints'])})"
                 for s in self.vocabulary]
        return "; ".join(parts)


def read_model_file_info(path: str | os.PathLike) -> ModelFileInfo:
    """The extra entries of a checkpoint; an official file (or a plain state dict) gives an empty
    ModelFileInfo. Memory-mapped, so probing a large official file reads almost nothing.

    A file that does not load, or whose entries are not what save_model_file writes (a damaged
    or hand-edited file), raises one CheckpointError naming the file and the entry."""
    from .checkpoint import load_checkpoint_file

    obj = load_checkpoint_file(path, mmap=True)
    if not isinstance(obj, Mapping):
        return ModelFileInfo()  # not a model file; the weight loader says what it is
    try:
        return _info_from_entries(obj)
    except _BadEntry as e:
        from .checkpoint import CheckpointError
        raise CheckpointError(f"model file {path}: bad '{e.entry}' entry: {e.problem}. The file is damaged or "
                              f"was not written by this project's exporter; export or download it again") from None


class _BadEntry(Exception):
    def __init__(self, entry: str, problem: str):
        super().__init__(f"{entry}: {problem}")
        self.entry, self.problem = entry, problem


def _mapping(obj: Mapping, key: str) -> Optional[Mapping]:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _BadEntry(key, f"expected a mapping, found {type(value).__name__}")
    return value


def _names(value, entry: str, what: str) -> List[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _BadEntry(entry, f"'{what}' must be a list of non-empty names")
    return list(value)


def _info_from_entries(obj: Mapping) -> ModelFileInfo:
    info = obj.get("info")
    out = ModelFileInfo(info=dict(info) if isinstance(info, Mapping) else {})
    cfg = _mapping(obj, "model_config")
    if cfg is not None:
        out.model_name, out.model_overrides = _model_config(cfg, "model_config")
    text = _mapping(obj, "text_features")
    if text is not None:
        out.text_table, out.text_encoder = _text_features(text, out.model_name, out.model_overrides)
    if obj.get("vocabulary") is not None:
        out.vocabulary = _vocabulary(obj["vocabulary"])
    size = _mapping(obj, "input_size")
    if size is not None:
        out.input_size = _input_size(size)
    post = _mapping(obj, "postprocess")
    if post is not None:
        out.postprocess = _postprocess(post)
    refiner = _mapping(obj, "refiner")
    if refiner is not None:
        cfg = refiner.get("model_config")
        if not isinstance(cfg, Mapping) or not isinstance(refiner.get("model"), Mapping):
            raise _BadEntry("refiner", "expected {'model': state dict, 'model_config': {...}}")
        name, overrides = _model_config(cfg, "refiner")
        out.refiner_config = {"name": name, "overrides": overrides}
    heatmap = _mapping(obj, "heatmap_refiner")
    if heatmap is not None:
        if not isinstance(heatmap.get("spec"), Mapping) or not isinstance(heatmap.get("model"), Mapping):
            raise _BadEntry("heatmap_refiner", "expected {'model': state dict, 'spec': {...}}")
        from .heatmap_refiner import HeatmapRefinerSpec
        try:
            HeatmapRefinerSpec.from_dict(dict(heatmap["spec"]))
        except Exception as e:  # noqa: BLE001 - any malformed spec value
            raise _BadEntry("heatmap_refiner", f"bad spec: {type(e).__name__}: {str(e)[:200]}") from None
        out.heatmap_refiner_spec = dict(heatmap["spec"])
    return out


def _model_config(cfg: Mapping, entry: str):
    """(name, overrides) after checking them against the configurations this package builds."""
    import dataclasses

    from .configs import CONFIGS, UniPoseConfig, get_config

    name = cfg.get("name")
    if not isinstance(name, str) or name not in CONFIGS:
        raise _BadEntry(entry, f"unknown model configuration {str(name)[:80]!r} (known: {', '.join(sorted(CONFIGS))})")
    overrides = cfg.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise _BadEntry(entry, f"'overrides' must be a mapping, found {type(overrides).__name__}")
    fields = {f.name: f for f in dataclasses.fields(UniPoseConfig)}
    base = CONFIGS[name]
    for key, value in overrides.items():
        if key not in fields or key == "name":
            raise _BadEntry(entry, f"unknown configuration field {str(key)[:80]!r} in 'overrides'")
        default = getattr(base, key)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        elif default is None or isinstance(default, dict):
            ok = value is None or isinstance(value, Mapping)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100_000
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = True
        if not ok:
            raise _BadEntry(entry, f"override {key}={str(value)[:80]} does not fit the field (default {default!r})")
    try:
        get_config(name, **dict(overrides))
    except Exception as e:  # noqa: BLE001
        raise _BadEntry(entry, f"overrides do not make a configuration: {str(e)[:200]}") from None
    return name, dict(overrides)


def _text_features(text: Mapping, model_name, overrides):
    from .configs import CONFIGS

    texts, feats = text.get("texts"), text.get("features")
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise _BadEntry("text_features", "'texts' must be a list of prompt texts")
    dim = int(overrides.get("text_dim", CONFIGS[model_name].text_dim)) if model_name else None
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or len(feats) != len(texts) \
            or not feats.is_floating_point() or (dim is not None and feats.shape[1] != dim):
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise _BadEntry("text_features", f"'features' must be a float tensor of {len(texts)} rows (one per text) x "
                                         f"{dim or 'the text size'} columns, found {shape}")
    feats = feats.to(torch.float32)
    if not torch.isfinite(feats).all():
        raise _BadEntry("text_features", "'features' contains NaN or Inf")
    encoder = text.get("encoder")
    return {t: feats[i].clone() for i, t in enumerate(texts)}, encoder if isinstance(encoder, str) else None


def _vocabulary(entries) -> List[Dict[str, Any]]:
    from .vocabulary import Vocabulary, VocabularyError

    if not isinstance(entries, (list, tuple)) or not entries or not all(isinstance(e, Mapping) for e in entries):
        raise _BadEntry("vocabulary", "expected a non-empty list of keypoint-set mappings")
    out = [dict(e) for e in entries]
    for e in out:
        _names(e.get("categories"), "vocabulary", "categories")
        _names(e.get("keypoints"), "vocabulary", "keypoints")
    try:
        Vocabulary.from_data(out, source="vocabulary")
    except (VocabularyError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise _BadEntry("vocabulary", str(e)[:200]) from None
    return out


def _input_size(size: Mapping) -> Dict[str, int]:
    out = {}
    for key, value in size.items():
        if key not in ("short_side", "max_size") or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value != int(value) or not 16 <= value <= 8192:
            raise _BadEntry("input_size", f"{str(key)[:40]}={str(value)[:40]}: expected short_side / max_size in "
                                          f"[16, 8192] pixels")
        out[key] = int(value)
    if out.get("max_size", 8192) < out.get("short_side", 0):
        raise _BadEntry("input_size", f"max_size {out['max_size']} is below short_side {out['short_side']}")
    return out


# what each postprocess entry may hold (the Predictor's own argument checks)
_POSTPROCESS_RANGES = {"box_threshold": (0.0, 1.0), "refine": (0.0, 20.0), "refine_size": (0.0, 4096.0)}


def _postprocess(post: Mapping) -> Dict[str, float]:
    out = {}
    for key, value in post.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
            raise _BadEntry("postprocess", f"{str(key)[:40]} must be a number, found {type(value).__name__}")
        try:
            value = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise _BadEntry("postprocess", f"{str(key)[:40]} must be one number") from None
        low, high = _POSTPROCESS_RANGES.get(key, (-math.inf, math.inf))
        if not math.isfinite(value) or not low <= value <= high or (key == "box_threshold" and value >= 1.0):
            raise _BadEntry("postprocess", f"{key} = {value} is not a usable value"
                                           + (f" (expected {low:g} to {high:g})" if math.isfinite(high) else ""))
        out[str(key)] = value
    refine = out.get("refine", 0.0)
    if refine and refine < 1.0:
        raise _BadEntry("postprocess", f"refine = {refine}: expected 0 (off) or a crop factor in [1, 20]")
    return out


def load_refiner(path: str | os.PathLike):
    """The crop-pass network stored in a model file ("refiner"), built and loaded (float32)."""
    from . import build_model
    from .checkpoint import CheckpointError, check_state_dict, load_checkpoint_file, load_state_dict_checked

    obj = load_checkpoint_file(path)
    entry = obj.get("refiner") if isinstance(obj, Mapping) else None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("model"), Mapping):
        raise CheckpointError(f"{path} holds no crop-refinement network ('refiner' entry)")
    check_state_dict(entry["model"], f"{path} (refiner)")
    try:
        name, overrides = _model_config(entry.get("model_config") or {}, "refiner")
    except _BadEntry as e:
        raise CheckpointError(f"model file {path}: bad 'refiner' entry: {e.problem}") from None
    model = build_model(name, **overrides)
    load_state_dict_checked(model, {k: v.float() if v.is_floating_point() else v for k, v in entry["model"].items()},
                            f"{path} (refiner)")
    return model


def load_heatmap_refiner(path: str | os.PathLike):
    """The heatmap network stored in a model file ("heatmap_refiner"), built and loaded (float32)."""
    from .checkpoint import CheckpointError, load_checkpoint_file

    obj = load_checkpoint_file(path)
    entry = obj.get("heatmap_refiner") if isinstance(obj, Mapping) else None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("model"), Mapping):
        raise CheckpointError(f"{path} holds no heatmap refiner ('heatmap_refiner' entry)")
    return heatmap_refiner_from_entry(entry, f"{path} (heatmap refiner)")


def heatmap_refiner_from_entry(entry: Mapping, where: str):
    """A HeatmapRefiner from {"model": state dict, "spec": {...}} (a model file's entry, or the
    checkpoint unipose-train-refiner writes)."""
    from .checkpoint import CheckpointError, check_state_dict, load_state_dict_checked
    from .heatmap_refiner import HeatmapRefiner, HeatmapRefinerSpec

    try:
        spec = HeatmapRefinerSpec.from_dict(dict(entry.get("spec") or {}))
    except Exception as e:  # noqa: BLE001 - any malformed spec value (wrong types, sizes)
        raise CheckpointError(f"{where}: bad heatmap refiner spec: {type(e).__name__}: {str(e)[:200]}") from e
    check_state_dict(entry.get("model"), where)
    model = HeatmapRefiner(spec)
    load_state_dict_checked(model, {k: v.float() if v.is_floating_point() else v for k, v in entry["model"].items()},
                            where)
    return model.eval()


def save_model_file(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], *,
                    model_name: str, overrides: Optional[Mapping[str, Any]] = None,
                    texts: Sequence[str] = (), features: Optional[torch.Tensor] = None,
                    text_encoder: str = "", vocabulary: Optional[Sequence[Mapping]] = None,
                    input_size: Optional[Mapping[str, int]] = None, info: Optional[Mapping] = None,
                    half: bool = False, postprocess: Optional[Mapping[str, float]] = None,
                    refiner: Optional[Mapping[str, torch.Tensor]] = None,
                    refiner_config: Optional[Mapping[str, Any]] = None,
                    heatmap_refiner: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a self-describing checkpoint (official layout plus the entries above)."""
    def small(t: torch.Tensor) -> torch.Tensor:
        return t.detach().cpu().half() if half and t.is_floating_point() else t.detach().cpu()

    obj: Dict[str, Any] = {"model": {k: small(v) for k, v in state_dict.items()},
                           "model_config": {"name": model_name, "overrides": dict(overrides or {})}}
    if features is not None:
        if len(texts) != len(features):
            raise ValueError(f"{len(texts)} texts but {len(features)} feature rows")
        # features stay float32: they are tiny, and float16 would move the model's inputs
        obj["text_features"] = {"encoder": text_encoder, "texts": list(texts),
                                "features": features.detach().cpu().float()}
    if vocabulary:
        obj["vocabulary"] = [dict(s) for s in vocabulary]
    if input_size:
        obj["input_size"] = dict(input_size)
    if postprocess:
        obj["postprocess"] = {k: float(v) for k, v in postprocess.items()}
    if info:
        obj["info"] = dict(info)
    if refiner is not None:
        cfg = dict(refiner_config or {"name": model_name, "overrides": dict(overrides or {})})
        obj["refiner"] = {"model": {k: small(v) for k, v in refiner.items()},
                          "model_config": {"name": cfg["name"], "overrides": dict(cfg.get("overrides") or {})}}
    if heatmap_refiner is not None:
        obj["heatmap_refiner"] = {"model": {k: small(v) for k, v in heatmap_refiner["model"].items()},
                                  "spec": dict(heatmap_refiner["spec"])}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path
