"""High-level inference: numpy images + a text prompt -> detected instances with keypoints.

    from unipose_model.predictor import Predictor
    predictor = Predictor("unipose_swint", "~/.cache/unipose/unipose_swint.pth")
    for inst in predictor.predict(image_rgb, "person"):
        print(inst.label, inst.score, inst.box, inst.keypoints)

Preprocessing and post-processing follow the official inference exactly (see preprocess.py and
postprocess.py).  Prompts with several keypoint groups ("person, face") are encoded once with
all classes and decoded once per group, each group keeping the detections whose best class is
one of its own classes; the groups' detections then go through one class-agnostic NMS.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .postprocess import (DEFAULT_BOX_THRESHOLD, DEFAULT_IOU_THRESHOLD, merge_selections,
                          select_queries, to_pixels)
from .preprocess import (DEFAULT_MAX_SIZE, DEFAULT_SHORT_SIDE, ImageError, as_rgb_array, pad_batch,
                         preprocess_image)
from .text_encoder import (ClipTextEncoder, HashTextEncoder, TextEncoder, build_text_encoder,
                           parse_dtype)

DEFAULT_MODEL = "unipose_swint"
REFERENCE_CHECKPOINT = "reference"  # fill_reference_weights: deterministic, meaningless weights


class PredictorError(ValueError):
    """Bad arguments to the predictor (device, dtype, prompt size, ...)."""


class CheckpointNotFoundError(FileNotFoundError):
    """The checkpoint file is not where it was expected."""


def cache_dir() -> Path:
    """Where checkpoints are looked for by default: $UNIPOSE_CACHE or ~/.cache/unipose."""
    return Path(os.environ.get("UNIPOSE_CACHE", "~/.cache/unipose")).expanduser()


def default_checkpoint_path(model_name: str = DEFAULT_MODEL) -> Path:
    return cache_dir() / f"{model_name}.pth"


def download_hint(model_name: str = DEFAULT_MODEL) -> str:
    return (f"download the official 'unipose_swint.pth' from the links in the IDEA-Research/X-Pose "
            f"GitHub README and pass --checkpoint PATH, or put it at {default_checkpoint_path(model_name)}")


@dataclass
class Instance:
    """One detected object.

    ``box`` is (x0, y0, x1, y1) and ``keypoints`` is a (K, 3) array of x, y, score, all in pixels
    of the original image.  The official model has no per-keypoint confidence (its visibility
    output is the constant sigmoid(1)), so every keypoint's score is the instance score.
    """

    label: str
    class_index: int
    score: float
    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...] = ()  # 0-based index pairs into keypoint_names

    def to_coco(self, image_id: int, category_id: int | None = None) -> dict:
        """A COCO keypoint-results entry (bbox x, y, w, h; keypoints [x, y, score] * K)."""
        x0, y0, x1, y1 = self.box
        return {
            "image_id": int(image_id),
            "category_id": int(self.class_index + 1 if category_id is None else category_id),
            "bbox": [round(float(x0), 2), round(float(y0), 2),
                     round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            "score": round(float(self.score), 5),
            "keypoints": [round(float(v), 2) if i % 3 != 2 else round(float(v), 5)
                          for i, v in enumerate(self.keypoints.reshape(-1))],
        }


@dataclass
class _Group:
    class_indices: tuple[int, ...]
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    features: torch.Tensor  # (K, 512) on the model's device


@dataclass
class PreparedPrompt:
    """A parsed prompt with its text features, ready for the model (cached per prompt)."""

    text: str
    classes: tuple[str, ...]
    instance_features: torch.Tensor  # (N, 512) on the model's device
    groups: list[_Group] = field(default_factory=list)


class Predictor:
    """Load a UniPose model once, then run it on images with text prompts.

    Args:
        model: configuration name ("unipose_swint", "unipose_tiny", ...) or a built model.
        checkpoint: path of an official-format checkpoint; "reference" for the deterministic
            reference weights (meaningless detections); None = the default location for a model
            name (``~/.cache/unipose/<name>.pth``), or the model's current weights for a module.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        dtype: "float32", or "bfloat16" / "float16" (CUDA only; run under autocast).
        text_encoder: "clip" (OpenAI CLIP ViT-B/32), "hash" (meaningless, no weights needed), a
            precomputed feature file, or a :class:`TextEncoder`.
        clip_weights: CLIP weights file or directory for offline machines (``"clip"`` only).
        box_threshold, iou_threshold: official post-processing (0.1, 0.9).
        short_side, max_size: resize rule (800, 1333).
        max_instances: keep at most this many detections per image (best first); None = all.
        batch_size: most images per forward pass in :meth:`predict_batch` (bounds memory).
    """

    def __init__(self, model: str | nn.Module = DEFAULT_MODEL, checkpoint: str | os.PathLike | None = None,
                 *, device: str = "auto", dtype: str | torch.dtype = "float32",
                 text_encoder: str | TextEncoder = "clip", clip_weights: str | None = None,
                 box_threshold: float = DEFAULT_BOX_THRESHOLD,
                 iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                 short_side: int = DEFAULT_SHORT_SIDE, max_size: int | None = DEFAULT_MAX_SIZE,
                 max_instances: int | None = None, batch_size: int = 8, prompt_cache_size: int = 64):
        self.device = resolve_device(device)
        self.dtype = parse_dtype(dtype)
        if self.dtype != torch.float32 and self.device.type != "cuda":
            raise PredictorError(f"dtype {_dtype_name(self.dtype)} needs a CUDA device (got "
                                 f"{self.device}); use dtype float32 on the CPU")
        if not 0.0 <= box_threshold < 1.0:
            raise PredictorError(f"box_threshold must be in [0, 1), got {box_threshold}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise PredictorError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        if max_instances is not None and max_instances < 0:
            raise PredictorError(f"max_instances must be >= 0 or None, got {max_instances}")
        if batch_size < 1:
            raise PredictorError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.box_threshold = float(box_threshold)
        self.iou_threshold = float(iou_threshold)
        self.short_side = int(short_side)
        self.max_size = max_size
        self.max_instances = max_instances

        self.model = _load_model(model, checkpoint).to(self.device).eval()
        self.config = getattr(self.model, "config", None)
        self.checkpoint = checkpoint
        if isinstance(text_encoder, TextEncoder):
            self.text_encoder = text_encoder
        else:
            self.text_encoder = build_text_encoder(text_encoder, clip_weights=clip_weights,
                                                   device=self.device)
        self._prompts: OrderedDict[object, PreparedPrompt] = OrderedDict()
        self._prompt_cache_size = prompt_cache_size
        self._lock = threading.RLock()  # one inference at a time (e.g. several ROS callbacks)
        self.last_timing: dict[str, float] = {}

    # ------------------------------------------------------------------ prompts
    def prepare_prompt(self, prompt) -> PreparedPrompt:
        """Parse a prompt (string or ``unipose_model.prompt.Prompt``) and encode its text (cached)."""
        try:
            hash(prompt)
            key = prompt
        except TypeError:
            key = None  # unhashable prompt objects are simply not cached
        with self._lock:
            if key is not None and key in self._prompts:
                self._prompts.move_to_end(key)
                return self._prompts[key]
            prepared = self._prepare(prompt)
            if key is not None:
                self._prompts[key] = prepared
                while len(self._prompts) > self._prompt_cache_size:
                    self._prompts.popitem(last=False)
            return prepared

    def _prepare(self, prompt) -> PreparedPrompt:
        from .prompt import parse_prompt  # helper module; imported late to keep import light

        if prompt is None:
            raise PredictorError("prompt is None; give e.g. 'person' or 'cat: left eye, nose'")
        max_slots = getattr(self.config, "max_text_slots", 350)
        max_kpts = getattr(self.config, "max_keypoints", 68)
        if isinstance(prompt, str):
            parsed = parse_prompt(prompt, max_classes=max_slots, max_keypoints=max_kpts)
        elif hasattr(prompt, "classes") and hasattr(prompt, "groups"):
            parsed = prompt
        else:
            raise PredictorError(f"prompt must be a string or a unipose_model.prompt.Prompt, "
                                 f"got {type(prompt).__name__}")
        classes = tuple(parsed.classes)
        if not classes:
            raise PredictorError("the prompt names no object class")
        if len(classes) > max_slots:
            raise PredictorError(f"the prompt has {len(classes)} classes; "
                                 f"the model takes at most {max_slots}")
        inst = self.text_encoder.encode_instances(classes).to(self.device)
        groups = []
        for g in parsed.groups:
            names = tuple(g.keypoints)
            which = [classes[i] for i in g.class_indices]
            if not names:
                raise PredictorError(f"classes {which} have no keypoints")
            if len(names) > max_kpts:
                raise PredictorError(f"{len(names)} keypoints requested for {which}; "
                                     f"the model takes at most {max_kpts}")
            feats = self.text_encoder.encode_keypoints(names).to(self.device)
            groups.append(_Group(tuple(int(i) for i in g.class_indices), names,
                                 tuple((int(a), int(b)) for a, b in g.skeleton), feats))
        if not groups:
            raise PredictorError("the prompt defines no keypoints")
        text = prompt if isinstance(prompt, str) else str(getattr(parsed, "text", parsed))
        return PreparedPrompt(text, classes, inst, groups)

    # ------------------------------------------------------------------ inference
    def predict(self, image, prompt, *, color: str = "rgb") -> list[Instance]:
        """Detect the prompt's objects in one image (numpy HxWx3 / HxW uint8 or PIL)."""
        return self.predict_batch([image], prompt, color=color)[0]

    def predict_batch(self, images: Sequence, prompt, *, color: str = "rgb") -> list[list[Instance]]:
        """Detect in several images; one list of instances per image, in input order.

        Images of equal (resized) size run as one batch; each distinct size runs separately, so
        results equal those of :meth:`predict` on each image (up to float rounding).
        """
        with self._lock:
            return self._predict_batch(images, prompt, color)

    def _predict_batch(self, images, prompt, color) -> list[list[Instance]]:
        t0 = time.perf_counter()
        prepared = self.prepare_prompt(prompt)
        if images is None or isinstance(images, np.ndarray) and images.ndim < 4:
            raise PredictorError("predict_batch takes a list of images; use predict for one image")
        images = list(images)
        if not images:
            return []
        tensors, sizes = [], []
        for i, image in enumerate(images):
            try:
                rgb = as_rgb_array(image, color)
            except ImageError as e:
                raise ImageError(f"image {i}: {e}" if len(images) > 1 else str(e)) from None
            sizes.append(rgb.shape[:2])
            tensors.append(preprocess_image(rgb, short_side=self.short_side, max_size=self.max_size))
        # One forward per distinct input size: no padding, so an image's result does not depend
        # on what else is in the batch (Swin sees padded pixels, which would shift the outputs).
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            buckets.setdefault(tuple(t.shape[1:]), []).append(i)
        chunks = [same[k:k + self.batch_size] for same in buckets.values()
                  for k in range(0, len(same), self.batch_size)]
        t1 = time.perf_counter()
        model_s = 0.0
        results: list[list[Instance]] = [[] for _ in images]
        for indices in chunks:
            batch, masks = pad_batch([tensors[i] for i in indices])
            t_start = time.perf_counter()
            outputs = self._forward(batch.to(self.device), masks.to(self.device), prepared)
            _sync(self.device)
            model_s += time.perf_counter() - t_start
            for b, i in enumerate(indices):
                results[i] = self._postprocess(outputs, b, sizes[i], prepared)
        t2 = time.perf_counter()
        self.last_timing = {"preprocess_s": t1 - t0, "model_s": model_s,
                            "postprocess_s": t2 - t1 - model_s}
        return results

    @torch.inference_mode()
    def _forward(self, images, masks, prepared: PreparedPrompt) -> list[dict]:
        with self._autocast():
            if len(prepared.groups) == 1:
                return [self.model(images, masks, prepared.instance_features,
                                   prepared.groups[0].features)]
            state = self.model.encode(images, masks, prepared.instance_features)
            return [self.model.decode(state, g.features) for g in prepared.groups]

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _postprocess(self, outputs: list[dict], b: int, size: tuple[int, int],
                     prepared: PreparedPrompt) -> list[Instance]:
        height, width = size
        selections, pixels = [], []
        for out, group in zip(outputs, prepared.groups):
            allowed = None if len(group.class_indices) == len(prepared.classes) else group.class_indices
            sel = select_queries(out["pred_logits"][b], out["pred_boxes"][b], out["pred_keypoints"][b],
                                 box_threshold=self.box_threshold, iou_threshold=self.iou_threshold,
                                 allowed_classes=allowed)
            selections.append(sel)
            pixels.append(to_pixels(sel, height, width))
        owners, rows = merge_selections(selections, self.iou_threshold)
        if self.max_instances is not None:
            owners, rows = owners[:self.max_instances], rows[:self.max_instances]
        instances = []
        for g, r in zip(owners, rows):
            det, group = pixels[g], prepared.groups[g]
            score = float(det.scores[r])
            kpts = np.concatenate([det.keypoints[r], np.full((len(group.keypoint_names), 1), score)], 1)
            label = int(det.labels[r])
            instances.append(Instance(prepared.classes[label], label, score,
                                      tuple(float(v) for v in det.boxes[r]), kpts,
                                      group.keypoint_names, group.skeleton))
        return instances

    def __repr__(self) -> str:
        name = getattr(self.config, "name", type(self.model).__name__)
        return (f"Predictor(model={name}, checkpoint={self.checkpoint}, device={self.device}, "
                f"dtype={_dtype_name(self.dtype)}, text_encoder={self.text_encoder.name})")


# ---------------------------------------------------------------------------------------------


def _load_model(model, checkpoint) -> nn.Module:
    from . import build_model, load_official_checkpoint
    from .checkpoint import fill_reference_weights

    if isinstance(model, nn.Module):
        if checkpoint is None:
            return model
        name = getattr(getattr(model, "config", None), "name", DEFAULT_MODEL)
        resolve_checkpoint(name, checkpoint)
    elif isinstance(model, str):
        name = model
        checkpoint = resolve_checkpoint(name, checkpoint)  # before the (slow) model build
        try:
            model = build_model(name)
        except KeyError as e:
            raise PredictorError(f"unknown model {name!r}: {e}") from None
    else:
        raise PredictorError(f"model must be a configuration name or an nn.Module, "
                             f"got {type(model).__name__}")
    if str(checkpoint) == REFERENCE_CHECKPOINT:
        fill_reference_weights(model)
        return model
    load_official_checkpoint(model, str(resolve_checkpoint(name, checkpoint)))
    return model


def resolve_checkpoint(model_name: str, checkpoint=None) -> Path | str:
    """The checkpoint file to load ("reference" passes through), or a clear error if missing.

    None means the default location, ``default_checkpoint_path(model_name)``.
    """
    if str(checkpoint) == REFERENCE_CHECKPOINT:
        return REFERENCE_CHECKPOINT
    if checkpoint is None:
        path = default_checkpoint_path(model_name)
        if not path.is_file():
            raise CheckpointNotFoundError(f"no checkpoint given and none at the default location "
                                          f"{path}; {download_hint(model_name)}")
        return path
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}; {download_hint(model_name)}")
    return path


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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


__all__ = ["Predictor", "Instance", "PreparedPrompt", "PredictorError", "CheckpointNotFoundError",
           "REFERENCE_CHECKPOINT", "default_checkpoint_path", "resolve_checkpoint", "resolve_device",
           "cache_dir", "download_hint",
           "TextEncoder", "ClipTextEncoder", "HashTextEncoder"]  # re-exported for convenience
