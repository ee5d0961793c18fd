"""High-level inference: numpy images + a text prompt -> detected instances with keypoints.

    from unipose_model.predictor import Predictor
    predictor = Predictor("unipose_swint", "~/.cache/unipose/unipose_swint.pth")
    for inst in predictor.predict(image_rgb, "person"):
        print(inst.label, inst.score, inst.box, inst.keypoints)

The Predictor is an orchestrator over one module per job: loading.py (checkpoint, device, the
network), settings.py (what it does with each image, one "auto" rule), prompt_features.py (text
and visual prompts -> features, cached), inference.py (batching, forward, post-processing,
refinement) and instance.py (the result). Preprocessing and post-processing follow the official
inference exactly (see preprocess.py and postprocess.py). Prompts with several keypoint groups
("person, face") are encoded once with all classes and decoded once per group, each group
keeping the detections whose best class is one of its own classes; the groups' detections then go
through one class-agnostic NMS.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .compiled import call_entry
from .cpu_info import auto_dtype
from .errors import CheckpointNotFoundError, PredictorError, UnknownPromptError
from .inference import check_query_counts, query_counts, refine_crops, run_batches
from .instance import Instance
from .loading import (DEFAULT_MODEL, REFERENCE_CHECKPOINT, cache_dir, check_dtype, cpu_supports_bf16,
                      default_checkpoint, default_checkpoint_path, download_hint, load_model, native_bf16,
                      resolve_bundled_model, resolve_checkpoint, resolve_device)
from .preprocess import ImageError, as_rgb_array
from .prompt_features import GroupFeatures, PreparedPrompt, PromptEncoder
from .settings import AUTO, DEFAULT_IOU_THRESHOLD, LIBRARY_DEFAULTS, Settings, file_defaults
from .text_encoder import (ClipTextEncoder, HashTextEncoder, TextEncoder, build_text_encoder,
                           parse_dtype)


def _reading_each_file_once(init):
    """Construction unpickles the checkpoint once, however many of its entries it reads."""
    @functools.wraps(init)
    def wrapper(*args, **kwargs):
        from .checkpoint import reading_each_file_once
        with reading_each_file_once():
            return init(*args, **kwargs)
    return wrapper


def _auto(value, *also):
    """The constructor's spellings of "the model file's value" ("auto" and, for some, None)."""
    return AUTO if value == AUTO or any(value is a for a in also) else value


class Predictor:
    """Load a UniPose model once, then run it on images with text prompts.

    Args:
        model: configuration name ("unipose_swint", "unipose_tiny", ...), a bundled model's name
            (``"fly"``: the fly model shipped in ``unipose_model/data``, no checkpoint needed) or a
            built model; None = the configuration the checkpoint names (``unipose_swint`` for
            official files).
        checkpoint: path of an official-format checkpoint; "reference" for the deterministic
            reference weights (meaningless detections); None = the default location for a model
            name (``~/.cache/unipose/<name>.pth``), or the model's current weights for a module;
            with neither model nor checkpoint: the official file if present, else the bundled
            fly model (``unipose_model/data/fly_demo.pth``).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        dtype: "float32", "auto" (cpu_info.auto_dtype: bfloat16 on a CPU with bf16 units, else
            float32), or "bfloat16" / "float16" (run under autocast; float16 needs CUDA,
            bfloat16 on the CPU needs native bf16 instructions, e.g. AVX512-BF16 or AMX).
        text_encoder: "auto" (the prompt features stored in the checkpoint when it has them,
            else CLIP), "clip" (OpenAI CLIP ViT-B/32), "hash" (meaningless, no weights needed),
            a precomputed feature file, or a :class:`TextEncoder`.
        clip_weights: CLIP weights file or directory for offline machines (``"clip"`` only).
        box_threshold, iou_threshold: official post-processing (0.1, 0.9); box_threshold "auto":
            the threshold the checkpoint file recommends, if it stores one, else 0.1.
        short_side, max_size: resize rule; None / "auto" = the checkpoint's training resolution
            if it records one, else the official 800 / 1333 (max_size None: no cap).
        max_instances: keep at most this many detections per image (best first); None = all.
        refine: crop refinement (see refine.py): a second pass over a square crop of ``refine``
            x each detection's longer box side, whose keypoints replace the first pass's; None
            or 0: off; "auto": the factor the checkpoint file recommends, if any, else off.
        refine_size: input size (pixels per side) of the crop pass; None / "auto": the size the
            checkpoint file recommends for it, if any, else ``short_side``.
        refine_model: the network of the crop pass: "auto" (the checkpoint file's "refiner", a
            network trained on crops around one object, if it has one; else this model), None
            (this model) or a built module. It always runs in PyTorch.
        heatmap_refiner: a heatmap network run on each detection of its category after UniPose
            (and after crop refinement), whose heatmap peaks replace the keypoints it knows (see
            heatmap_refiner.py): "auto" (the checkpoint file's, if it has one), None (off) or a
            built :class:`~unipose_model.heatmap_refiner.HeatmapRefiner`. It always runs in
            PyTorch; the speed profiles "fastest" and "realtime" switch it off.
        batch_size: most images per forward pass in :meth:`predict_batch` (bounds memory).
        compile: run the model through ``torch.compile`` (inductor, weights frozen as constants;
            see compiled.py): faster after a one-time compilation per input size (minutes on a
            small CPU). Falls back to the plain model, with a warning, where compiling fails. A
            string names another ``torch.compile`` backend.
        backend: "pytorch" (default), "onnxruntime" or "tensorrt": run an exported graph (one per
            input size, exported on first use and cached; see unipose_model/backends/);
            backend_options are passed to it (cache_dir, threads, precision, ...).
        settings: a :class:`~unipose_model.settings.Settings` instead of the separate arguments
            above (box_threshold ... refine_size, dtype); later changes: assign
            ``predictor.settings = predictor.settings.replace(...)``.
        exif_orientation: apply the EXIF orientation tag of PIL images given to predict (a phone
            photo is then read as displayed, and so are the coordinates); default False: the
            stored pixel grid, as the official demo (arrays carry no tag; for files see
            ``media.read_image(path, exif_orientation=True)``).
    """

    @_reading_each_file_once
    def __init__(self, model: str | nn.Module | None = None, checkpoint: str | os.PathLike | None = None,
                 *, device: str = "auto", dtype: str | torch.dtype = "float32",
                 text_encoder: str | TextEncoder = "auto", clip_weights: str | None = None,
                 box_threshold: float | str = AUTO, iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                 short_side: int | str | None = None, max_size: int | None | str = AUTO,
                 max_instances: int | None = None, refine: float | str | None = AUTO,
                 refine_size: int | str | None = AUTO, refine_model: str | nn.Module | None = "auto",
                 heatmap_refiner: str | nn.Module | None = "auto", batch_size: int = 8,
                 prompt_cache_size: int = 64, compile: bool | str = False,
                 backend: str = "pytorch", backend_options: dict | None = None,
                 exif_orientation: bool = False, settings: Settings | None = None):
        if batch_size < 1:
            raise PredictorError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.exif_orientation = bool(exif_orientation)
        self.device = resolve_device(device)
        if settings is None:
            settings = Settings(box_threshold=_auto(box_threshold), iou_threshold=iou_threshold,
                                short_side=_auto(short_side, None), max_size=_auto(max_size),
                                max_instances=max_instances, refine=_auto(refine),
                                refine_size=_auto(refine_size, None), heatmap_refiner=heatmap_refiner is not None,
                                dtype=str(dtype))
        check_dtype(parse_dtype(settings.resolved(LIBRARY_DEFAULTS).dtype), self.device)  # bad values: before the (slow) load

        model, checkpoint = resolve_bundled_model(model, checkpoint)
        if model is None and checkpoint is None:
            checkpoint = default_checkpoint()
        self.model, self.checkpoint, self.file_info = load_model(model, checkpoint)
        self.model = self.model.to(self.device).eval()
        self.config = getattr(self.model, "config", None)
        self._build_runner(backend, compile, backend_options, settings.dtype)
        self.refine_model = self._own_network(refine_model, "refine_model", "refiner_config", "load_refiner")
        self.heatmap_refiner_network = self._own_network(
            heatmap_refiner, "heatmap_refiner", "heatmap_refiner_spec", "load_heatmap_refiner")
        if isinstance(text_encoder, TextEncoder):
            self.text_encoder = text_encoder
        else:
            ckpt = self.checkpoint if isinstance(self.checkpoint, (str, Path)) else None
            self.text_encoder = build_text_encoder(text_encoder, clip_weights=clip_weights,
                                                   device=self.device, checkpoint=ckpt)
        self._lock = threading.RLock()  # one inference at a time (e.g. several ROS callbacks)
        self.prompts = PromptEncoder(self.text_encoder, self.file_info, self.config, self.device,
                                     self.checkpoint, prompt_cache_size, self._lock)
        self.last_timing: dict[str, float] = {}
        self._settings = None
        self.settings = settings
        self.initial_settings = self._settings  # as built: what speed profiles scale from

    def _build_runner(self, backend: str, compile, backend_options: dict | None, dtype: str) -> None:
        """The pytorch model as it is, through torch.compile, or an exported graph's backend."""
        if backend == "torch":
            warnings.warn("backend 'torch' is now spelled 'pytorch'", DeprecationWarning, stacklevel=3)
            backend = "pytorch"
        self.backend = backend
        if compile and backend != "pytorch":
            raise PredictorError(f"compile applies to the pytorch backend; backend {backend} runs its own graph")
        self.compiled = None
        if compile:
            from .compiled import CompiledModel
            self.compiled = CompiledModel(self.model, "inductor" if compile is True else str(compile))
        self._backend = None
        if backend != "pytorch":
            from .backends import build_backend
            if dtype != AUTO and parse_dtype(dtype) != torch.float32:
                raise PredictorError(f"backend {backend} runs its own precision; use dtype float32")
            self._backend = build_backend(backend, self.model, **(backend_options or {}))

    def _own_network(self, given, what: str, file_entry: str, loader: str):
        """A second network (crop refiner, heatmap refiner): "auto" = the model file's, if it has
        one; None = none; or a built module."""
        if given == "auto":
            given = None
            if getattr(self.file_info, file_entry) and isinstance(self.checkpoint, (str, Path)):
                from . import model_file
                given = getattr(model_file, loader)(self.checkpoint)
        elif given is not None and not isinstance(given, nn.Module):
            raise PredictorError(f"{what} must be 'auto', None or an nn.Module, got {given!r}")
        return None if given is None else given.to(self.device).eval()

    @property
    def device(self) -> torch.device:
        return self._device

    @device.setter
    def device(self, device: torch.device) -> None:
        """Where inputs and prompt features go (the caller moves the networks)."""
        self._device = device
        if getattr(self, "prompts", None) is not None:
            self.prompts.device = device

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> Settings:
        """What the predictor does with each image, AUTO resolved (see settings.py). Change it by
        assigning a new one: ``p.settings = p.settings.replace(box_threshold=0.3)``."""
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        resolved = settings.resolved(self.model_defaults())
        dtype = parse_dtype(resolved.dtype)
        check_dtype(dtype, self.device)
        if self.backend != "pytorch" and (dtype != torch.float32 or resolved.num_queries or resolved.num_select):
            raise PredictorError(f"backend {self.backend} runs an exported graph with its own precision and "
                                 f"query counts; use dtype float32 and the model's query counts")
        if self.config is not None and hasattr(self.config, "num_queries"):
            check_query_counts(self.config, resolved.num_queries, resolved.num_select)
        self._settings = resolved  # one assignment: a concurrent predict sees the old or the new

    def model_defaults(self) -> dict:
        """What the model file recommends (the library defaults where it says nothing):
        ``box_threshold``, the input size it was trained for (``short_side`` / ``max_size``) and
        its crop-refinement factor (``refine``, None: off); the values AUTO stands for."""
        defaults = file_defaults(self.file_info)
        # dtype AUTO: the device's rule (bf16 only on CPUs with bf16 units); exported graphs run float32
        defaults["dtype"] = auto_dtype(self.device.type) if self.backend == "pytorch" else "float32"
        return defaults

    def _replace_setting(self, name: str, value) -> None:
        self.settings = self._settings.replace(**{name: value})

    box_threshold = property(lambda self: self._settings.box_threshold,
                             lambda self, v: self._replace_setting("box_threshold", v))
    iou_threshold = property(lambda self: self._settings.iou_threshold,
                             lambda self, v: self._replace_setting("iou_threshold", v))
    short_side = property(lambda self: self._settings.short_side,
                          lambda self, v: self._replace_setting("short_side", v))
    max_size = property(lambda self: self._settings.max_size,
                        lambda self, v: self._replace_setting("max_size", v))
    max_instances = property(lambda self: self._settings.max_instances,
                             lambda self, v: self._replace_setting("max_instances", v))
    refine = property(lambda self: self._settings.refine, lambda self, v: self._replace_setting("refine", v))
    refine_size = property(lambda self: self._settings.refine_size,
                           lambda self, v: self._replace_setting("refine_size", v))

    @property
    def dtype(self) -> torch.dtype:
        return parse_dtype(self._settings.dtype)

    @dtype.setter
    def dtype(self, value) -> None:
        self._replace_setting("dtype", str(value))

    @property
    def heatmap_refiner(self):
        """The heatmap refiner network when the settings use it, else None."""
        return self.heatmap_refiner_network if self._settings.heatmap_refiner else None

    def set_query_counts(self, num_queries: int | None = None, num_select: int | None = None) -> None:
        """Proposals kept after the encoder and instances given keypoint queries (None: the
        model's configuration), for this predictor only. Fewer is faster and changes the outputs."""
        if self.backend != "pytorch":
            raise PredictorError("query counts are fixed in an exported graph; use the pytorch backend")
        self.settings = self._settings.replace(num_queries=num_queries, num_select=num_select)

    # ------------------------------------------------------------------ prompts
    @property
    def vocabulary(self):
        """The model file's own vocabulary (its categories and keypoints), or None for an open one."""
        return self.prompts.vocabulary

    @property
    def prompt_cache(self):
        return self.prompts.cache

    def default_prompt(self) -> str:
        """The prompt to start with when none is given: the categories a model file with its own
        vocabulary knows (the bundled fly model: "fly"), else "person"."""
        categories = [c for entry in (self.file_info.vocabulary or []) for c in entry.get("categories", ())]
        return ", ".join(dict.fromkeys(categories)) or "person"

    def prepare_prompt(self, prompt) -> PreparedPrompt:
        """Parse a prompt (string or ``unipose_model.prompt.Prompt``) and encode its text (cached)."""
        return self.prompts.prepare(prompt)

    def known_prompts(self) -> str:
        """The categories (with keypoints) of a fixed-vocabulary model; '' for an open one."""
        return self.file_info.known_prompts()

    def parse(self, text: str):
        """Parse a prompt text as this predictor does (with the checkpoint's own vocabulary)."""
        return self.prompts.parse(text)

    def prepare_visual_prompt(self, visual_prompt, text_prompt=None) -> PreparedPrompt:
        """Encode a :class:`~unipose_model.visual_prompt.VisualPrompt` (cached by its content).

        text_prompt: optionally a text prompt for the same object and keypoints ("fly" or
        "fly: head, thorax, ..."), whose features are averaged with the visual ones (both prompts
        together, as the model was trained). Without keypoint names in it, the visual prompt's
        keypoint names are used.
        """
        return self.prompts.prepare_visual(visual_prompt, text_prompt, self.model, self.refine_model)

    # ------------------------------------------------------------------ inference
    def predict(self, image, prompt=None, *, visual_prompt=None, color: str = "rgb",
                score_floor: float | None = None) -> list[Instance]:
        """Detect the prompt's objects in one image (numpy HxWx3 / HxW uint8 or PIL).

        prompt: a text prompt ("person", "cat: left eye, nose") or what prepare_prompt /
        prepare_visual_prompt returned; visual_prompt: a
        :class:`~unipose_model.visual_prompt.VisualPrompt` (one annotated example); with both,
        their features are averaged (the text prompt then names the same object).
        score_floor: also return detections down to this score, for this call only (a tracker's
        second pass, tracking.py); it never raises the settings' box_threshold.
        """
        return self.predict_batch([image], prompt, visual_prompt=visual_prompt, color=color,
                                  score_floor=score_floor)[0]

    def predict_batch(self, images: Sequence, prompt=None, *, visual_prompt=None, color: str = "rgb",
                      score_floor: float | None = None) -> list[list[Instance]]:
        """Detect in several images; one list of instances per image, in input order.

        Images of equal (resized) size run as one batch; each distinct size runs separately, so
        results equal those of :meth:`predict` on each image (up to float rounding).
        """
        with self._lock:
            settings = self._settings  # one snapshot for the whole call
            if visual_prompt is not None:
                prepared = self.prepare_visual_prompt(visual_prompt, prompt)
            elif isinstance(prompt, PreparedPrompt):  # prepared once by the caller (ROS node, CLI)
                prepared = prompt
            else:
                prepared = self.prepare_prompt(prompt)
            threshold = settings.box_threshold if score_floor is None else min(settings.box_threshold,
                                                                                float(score_floor))
            t0 = time.perf_counter()
            rgbs = _rgb_arrays(images, color, self.exif_orientation)
            results, self.last_timing = self._run(rgbs, prepared, settings, threshold, settings.short_side,
                                                  settings.max_size, convert_s=time.perf_counter() - t0)
            if settings.refine:
                self._refine(rgbs, results, prepared, settings, threshold)
            if self.heatmap_refiner_network is not None and settings.heatmap_refiner:
                self._refine_heatmaps(rgbs, results)
            return results

    def _run(self, rgbs, prepared, settings: Settings, threshold: float, short_side: int, max_size,
             model: nn.Module | None = None, convert_s: float = 0.0):
        forward = partial(self._forward, settings=settings)
        return run_batches(rgbs, prepared, forward, device=self.device, batch_size=self.batch_size,
                           short_side=short_side, max_size=max_size, threshold=threshold,
                           iou_threshold=settings.iou_threshold, max_instances=settings.max_instances,
                           model=model, convert_s=convert_s)

    def _refine(self, rgbs, results, prepared: PreparedPrompt, settings: Settings, threshold: float) -> None:
        """Replace each detection's keypoints by those of a zoomed-in second pass (refine.py)."""
        t0 = time.perf_counter()
        timing = dict(self.last_timing)
        size = settings.refine_size or settings.short_side
        # the refiner network reads the file's own text features, shared by both networks
        crop_prompt = (prepared.for_refiner or prepared) if self.refine_model is not None else prepared
        second_pass = lambda crops: self._run(crops, crop_prompt, settings, threshold, size, size,  # noqa: E731
                                              model=self.refine_model)[0]
        refine_crops(rgbs, results, settings.refine, second_pass)
        timing["refine_s"] = time.perf_counter() - t0
        self.last_timing = timing

    def _refine_heatmaps(self, rgbs: list[np.ndarray], results: list[list[Instance]]) -> None:
        """Replace the keypoints the heatmap refiner knows by its peaks (heatmap_refiner.py)."""
        from .heatmap_refiner import refine_instances

        t0 = time.perf_counter()
        timing = dict(self.last_timing)
        refine_instances(self.heatmap_refiner, rgbs, results, self.device)
        timing["heatmap_refine_s"] = time.perf_counter() - t0
        self.last_timing = timing

    @torch.inference_mode()
    def _forward(self, images, masks, prepared: PreparedPrompt, model: nn.Module | None = None, *,
                 settings: Settings) -> list[dict]:
        if model is not None:
            run, counts = partial(call_entry, model), contextlib.nullcontext()
        elif self.backend != "pytorch":  # exported graphs hold encoder + decoder: one run per group
            return [self._backend(images, masks, prepared.instance_features, g.features)
                    for g in prepared.groups]
        else:
            run = self.compiled or partial(call_entry, self.model)
            counts = query_counts(self.model, settings.num_queries, settings.num_select)
        dtype = parse_dtype(settings.dtype)
        autocast = (contextlib.nullcontext() if dtype == torch.float32
                    else torch.autocast(device_type=self.device.type, dtype=dtype))
        with counts, autocast:
            if len(prepared.groups) == 1:
                return [run("forward", images, masks, prepared.instance_features, prepared.groups[0].features)]
            state = run("encode", images, masks, prepared.instance_features)
            return [run("decode", state, g.features) for g in prepared.groups]

    def __repr__(self) -> str:
        name = getattr(self.config, "name", type(self.model).__name__)
        return (f"Predictor(model={name}, checkpoint={self.checkpoint}, device={self.device}, "
                f"dtype={self._settings.dtype}, text_encoder={self.text_encoder.name})")


def _rgb_arrays(images, color: str, exif_orientation: bool = False) -> list[np.ndarray]:
    """Validate a batch of images once, as RGB uint8 arrays; errors name the image's index."""
    if images is None or isinstance(images, np.ndarray) and images.ndim < 4:
        raise PredictorError("predict_batch takes a list of images; use predict for one image")
    images = list(images)
    rgbs = []
    for i, image in enumerate(images):
        try:
            rgbs.append(as_rgb_array(image, color, exif_orientation))
        except ImageError as e:
            raise ImageError(f"image {i}: {e}" if len(images) > 1 else str(e)) from None
    return rgbs


# Re-exported: the names code imported from here before the split (and still may).
__all__ = ["Predictor", "Instance", "PreparedPrompt", "GroupFeatures", "Settings", "AUTO", "PredictorError",
           "CheckpointNotFoundError", "UnknownPromptError", "DEFAULT_MODEL", "REFERENCE_CHECKPOINT",
           "default_checkpoint", "default_checkpoint_path", "resolve_checkpoint", "resolve_device",
           "resolve_bundled_model", "load_model", "cache_dir", "download_hint", "check_dtype", "native_bf16",
           "cpu_supports_bf16", "TextEncoder", "ClipTextEncoder", "HashTextEncoder"]
