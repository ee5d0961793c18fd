"""Self-describing checkpoints: weights plus what is needed to run them without other files.

The official format is ``{"model": state_dict}``. A file written by :func:`save_model_file` keeps
that key (so any official-format loader still reads it) and adds:

    "model_config":  {"name": "unipose_tiny", "overrides": {...}}   -> build the right model
    "text_features": {"encoder": ..., "texts": [...], "features": (M, 512)}
                     the prompt features the model was trained with, keyed by prompt text
                     (the layout of training/text_features.py's cache), so prompts need no
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
    ModelFileInfo. Memory-mapped, so probing a large official file reads almost nothing."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the weight loader
        return ModelFileInfo()
    if not isinstance(obj, Mapping):
        return ModelFileInfo()
    out = ModelFileInfo(info=dict(obj.get("info") or {}))
    cfg = obj.get("model_config")
    if isinstance(cfg, Mapping):
        out.model_name = cfg.get("name")
        out.model_overrides = dict(cfg.get("overrides") or {})
    text = obj.get("text_features")
    if isinstance(text, Mapping) and "texts" in text and "features" in text:
        feats = text["features"].to(torch.float32)
        out.text_table = {t: feats[i].clone() for i, t in enumerate(text["texts"])}
        out.text_encoder = text.get("encoder")
    if obj.get("vocabulary"):
        out.vocabulary = [dict(s) for s in obj["vocabulary"]]
    if isinstance(obj.get("input_size"), Mapping):
        out.input_size = {k: int(v) for k, v in obj["input_size"].items()}
    if isinstance(obj.get("postprocess"), Mapping):
        out.postprocess = {k: float(v) for k, v in obj["postprocess"].items()}
    refiner = obj.get("refiner")
    if isinstance(refiner, Mapping) and isinstance(refiner.get("model_config"), Mapping):
        cfg = refiner["model_config"]
        out.refiner_config = {"name": cfg.get("name"), "overrides": dict(cfg.get("overrides") or {})}
    heatmap = obj.get("heatmap_refiner")
    if isinstance(heatmap, Mapping) and isinstance(heatmap.get("spec"), Mapping):
        out.heatmap_refiner_spec = dict(heatmap["spec"])
    return out


def load_refiner(path: str | os.PathLike):
    """The crop-pass network stored in a model file ("refiner"), built and loaded (float32)."""
    from . import build_model
    from .checkpoint import CheckpointError, load_state_dict_checked

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    entry = obj.get("refiner") if isinstance(obj, Mapping) else None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("model"), Mapping):
        raise CheckpointError(f"{path} holds no crop-refinement network ('refiner' entry)")
    cfg = entry.get("model_config") or {}
    model = build_model(cfg.get("name"), **dict(cfg.get("overrides") or {}))
    load_state_dict_checked(model, {k: v.float() if v.is_floating_point() else v for k, v in entry["model"].items()},
                            f"{path} (refiner)")
    return model


def load_heatmap_refiner(path: str | os.PathLike):
    """The heatmap network stored in a model file ("heatmap_refiner"), built and loaded (float32)."""
    from .checkpoint import CheckpointError

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    entry = obj.get("heatmap_refiner") if isinstance(obj, Mapping) else None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("model"), Mapping):
        raise CheckpointError(f"{path} holds no heatmap refiner ('heatmap_refiner' entry)")
    return heatmap_refiner_from_entry(entry, f"{path} (heatmap refiner)")


def heatmap_refiner_from_entry(entry: Mapping, where: str):
    """A HeatmapRefiner from {"model": state dict, "spec": {...}} (a model file's entry, or the
    checkpoint unipose-train-refiner writes)."""
    from .checkpoint import CheckpointError, load_state_dict_checked
    from .heatmap_refiner import HeatmapRefiner, HeatmapRefinerSpec

    try:
        spec = HeatmapRefinerSpec.from_dict(dict(entry.get("spec") or {}))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: bad heatmap refiner spec: {e}") from e
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
