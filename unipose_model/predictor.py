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
import functools
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .compiled import call_entry
from .cpu_info import auto_dtype
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


class UnknownPromptError(PredictorError):
    """A prompt outside the fixed vocabulary of a model that carries its own prompt features."""


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
    track_id: int | None = None  # identity across frames (tracking.py); None: not tracked, -1: not yet

    def to_coco(self, image_id: int, category_id: int | None = None) -> dict:
        """A COCO keypoint-results entry (bbox x, y, w, h; keypoints [x, y, score] * K), with
        ``track_id`` when the instance was tracked."""
        x0, y0, x1, y1 = self.box
        entry = {
            "image_id": int(image_id),
            "category_id": int(self.class_index + 1 if category_id is None else category_id),
            "bbox": [round(float(x0), 2), round(float(y0), 2),
                     round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            "score": round(float(self.score), 5),
            "keypoints": [round(float(v), 2) if i % 3 != 2 else round(float(v), 5)
                          for i, v in enumerate(self.keypoints.reshape(-1))],
        }
        if self.track_id is not None:
            entry["track_id"] = int(self.track_id)
        return entry


@dataclass
class _Group:
    class_indices: tuple[int, ...]
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    features: torch.Tensor  # (K, 512) on the model's device
    # model keypoint slot of each name; None: one slot per name. A set's hidden keypoints (the
    # car's official "none" text) have features and slots but no name, and are dropped from results.
    slots: tuple[int, ...] | None = None


@dataclass
class PreparedPrompt:
    """A parsed prompt with its text features, ready for the model (cached per prompt)."""

    text: str
    classes: tuple[str, ...]
    instance_features: torch.Tensor  # (N, 512) on the model's device
    groups: list[_Group] = field(default_factory=list)
    # a visual prompt encoded by the crop-refinement network too (its own support encoder)
    for_refiner: "PreparedPrompt | None" = None


def _reading_each_file_once(init):
    """Construction unpickles the checkpoint once, however many of its entries it reads."""
    @functools.wraps(init)
    def wrapper(*args, **kwargs):
        from .checkpoint import reading_each_file_once
        with reading_each_file_once():
            return init(*args, **kwargs)
    return wrapper


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
        dtype: "auto" (cpu_info.auto_dtype: bfloat16 on a CPU with native bf16, else float32),
            "float32", or "bfloat16" / "float16" (run under autocast; float16 needs CUDA,
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
        exif_orientation: apply the EXIF orientation tag of PIL images given to predict (a phone
            photo is then read as displayed, and so are the coordinates); default False: the
            stored pixel grid, as the official demo (arrays carry no tag; for files see
            ``media.read_image(path, exif_orientation=True)``).
    """

    @_reading_each_file_once
    def __init__(self, model: str | nn.Module | None = None, checkpoint: str | os.PathLike | None = None,
                 *, device: str = "auto", dtype: str | torch.dtype = "float32",
                 text_encoder: str | TextEncoder = "auto", clip_weights: str | None = None,
                 box_threshold: float | str = "auto",
                 iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                 short_side: int | None = None, max_size: int | None | str = "auto",
                 max_instances: int | None = None, refine: float | str | None = "auto",
                 refine_size: int | str | None = "auto", refine_model: str | nn.Module | None = "auto",
                 heatmap_refiner: str | nn.Module | None = "auto", batch_size: int = 8,
                 prompt_cache_size: int = 64, compile: bool | str = False,
                 backend: str = "pytorch", backend_options: dict | None = None,
                 exif_orientation: bool = False):
        self.device = resolve_device(device)
        if dtype == "auto":  # the per-device rule (cpu_info.auto_dtype); exported backends run float32
            dtype = auto_dtype(self.device.type) if backend == "pytorch" else "float32"
        self.dtype = parse_dtype(dtype)
        check_dtype(self.dtype, self.device)
        self.base_dtype = self.dtype  # as built; speed profiles switch self.dtype and come back to it
        if box_threshold != "auto" and not 0.0 <= box_threshold < 1.0:
            raise PredictorError(f"box_threshold must be in [0, 1), got {box_threshold}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise PredictorError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        if max_instances is not None and max_instances < 0:
            raise PredictorError(f"max_instances must be >= 0 or None, got {max_instances}")
        if batch_size < 1:
            raise PredictorError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.exif_orientation = bool(exif_orientation)
        self.box_threshold = DEFAULT_BOX_THRESHOLD if box_threshold == "auto" else float(box_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_instances = max_instances

        model, checkpoint = resolve_bundled_model(model, checkpoint)
        if model is None and checkpoint is None:
            checkpoint = default_checkpoint()
        self.model, self.checkpoint, self.file_info = _load_model(model, checkpoint)
        self.model = self.model.to(self.device).eval()
        self.config = getattr(self.model, "config", None)
        self.backend = backend
        if compile and backend != "pytorch":
            raise PredictorError(f"compile applies to the pytorch backend; backend {backend} runs its own graph")
        self._compiled = None
        if compile:
            from .compiled import CompiledModel
            self._compiled = CompiledModel(self.model, "inductor" if compile is True else str(compile))
        if backend != "pytorch":
            from .backends import build_backend
            if self.dtype != torch.float32:
                raise PredictorError(f"backend {backend} runs its own precision; use dtype float32")
            self._backend = build_backend(backend, self.model, **(backend_options or {}))
        defaults = self.model_defaults()
        if box_threshold == "auto":
            self.box_threshold = defaults["box_threshold"]
        self.short_side = defaults["short_side"] if short_side is None else int(short_side)
        self.max_size = defaults["max_size"] if max_size == "auto" else max_size
        refine = defaults["refine"] if refine == "auto" else refine
        if refine is not None and refine != 0 and not 1.0 <= float(refine) <= 20.0:
            raise PredictorError(f"refine must be 0/None (off) or a crop factor in [1, 20], got {refine}")
        # as built; speed profiles other than "accurate" switch self.refine off and back to it
        self.base_refine = float(refine) if refine else None
        self.refine = self.base_refine
        refine_size = defaults["refine_size"] if refine_size in (None, "auto") else refine_size
        if refine_size is not None and not 32 <= int(refine_size) <= 4096:
            raise PredictorError(f"refine_size must be an input size in [32, 4096] pixels, got {refine_size}")
        self.refine_size = int(refine_size) if refine_size else None
        if refine_model == "auto":
            refine_model = None
            if self.file_info.refiner_config and isinstance(self.checkpoint, (str, Path)):
                from .model_file import load_refiner
                refine_model = load_refiner(self.checkpoint)
        elif refine_model is not None and not isinstance(refine_model, nn.Module):
            raise PredictorError(f"refine_model must be 'auto', None or an nn.Module, got {refine_model!r}")
        self.refine_model = None if refine_model is None else refine_model.to(self.device).eval()
        if heatmap_refiner == "auto":
            heatmap_refiner = None
            if self.file_info.heatmap_refiner_spec and isinstance(self.checkpoint, (str, Path)):
                from .model_file import load_heatmap_refiner
                heatmap_refiner = load_heatmap_refiner(self.checkpoint)
        elif heatmap_refiner is not None and not isinstance(heatmap_refiner, nn.Module):
            raise PredictorError(f"heatmap_refiner must be 'auto', None or a HeatmapRefiner, got {heatmap_refiner!r}")
        # as built; speed profiles other than "accurate" switch self.heatmap_refiner off and back
        self.base_heatmap_refiner = None if heatmap_refiner is None else heatmap_refiner.to(self.device).eval()
        self.heatmap_refiner = self.base_heatmap_refiner
        # A checkpoint that carries its prompt features also defines what its categories mean.
        self.vocabulary = None
        if self.file_info.vocabulary:
            from .vocabulary import Vocabulary
            self.vocabulary = Vocabulary.from_data(self.file_info.vocabulary, source=str(self.checkpoint))
        if isinstance(text_encoder, TextEncoder):
            self.text_encoder = text_encoder
        else:
            ckpt = self.checkpoint if isinstance(self.checkpoint, (str, Path)) else None
            self.text_encoder = build_text_encoder(text_encoder, clip_weights=clip_weights,
                                                   device=self.device, checkpoint=ckpt)
        self._prompts: OrderedDict[object, PreparedPrompt] = OrderedDict()
        self._prompt_cache_size = prompt_cache_size
        self._lock = threading.RLock()  # one inference at a time (e.g. several ROS callbacks)
        self.last_timing: dict[str, float] = {}

    def default_prompt(self) -> str:
        """The prompt to start with when none is given: the categories a model file with its own
        vocabulary knows (the bundled fly model: "fly"), else "person"."""
        categories = [c for entry in (self.file_info.vocabulary or []) for c in entry.get("categories", ())]
        return ", ".join(dict.fromkeys(categories)) or "person"

    def model_defaults(self) -> dict:
        """What the model file recommends (the library defaults where it says nothing):
        ``box_threshold``, the input size it was trained for (``short_side`` / ``max_size``) and
        its crop-refinement factor (``refine``, None: off)."""
        trained = self.file_info.input_size or {}
        return {"box_threshold": float(self.file_info.postprocess.get("box_threshold", DEFAULT_BOX_THRESHOLD)),
                "short_side": int(trained.get("short_side", DEFAULT_SHORT_SIDE)),
                "max_size": trained.get("max_size", DEFAULT_MAX_SIZE),
                "refine": self.file_info.postprocess.get("refine") or None,
                "refine_size": int(self.file_info.postprocess.get("refine_size", 0)) or None}

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
        if self.vocabulary is not None and not isinstance(prompt, str) and hasattr(prompt, "canonical"):
            # parsed elsewhere with the default vocabulary: re-read it with this model's own
            prompt = getattr(prompt, "text", "") or prompt.canonical()
        if isinstance(prompt, str):
            parsed = self._parse(prompt, max_slots, max_kpts)
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
        texts_of = lambda g: tuple(getattr(g, "model_texts", g.keypoints))  # noqa: E731
        self._check_known(classes, [k for g in parsed.groups for k in texts_of(g)])
        inst = self.text_encoder.encode_instances(classes).to(self.device)
        groups = []
        for g in parsed.groups:
            names = tuple(g.keypoints)
            which = [classes[i] for i in g.class_indices]
            if not names:
                raise PredictorError(f"classes {which} have no keypoints")
            texts = texts_of(g)  # the set's own text where it has one (the official demo's)
            if len(texts) > max_kpts:
                raise PredictorError(f"{len(texts)} keypoints requested for {which}; "
                                     f"the model takes at most {max_kpts}")
            feats = self.text_encoder.encode_keypoints(texts).to(self.device)
            slots = tuple(getattr(g, "shown", ())) or None
            groups.append(_Group(tuple(int(i) for i in g.class_indices), names,
                                 tuple((int(a), int(b)) for a, b in g.skeleton), feats, slots))
        if not groups:
            raise PredictorError("the prompt defines no keypoints")
        text = prompt if isinstance(prompt, str) else str(getattr(parsed, "text", parsed))
        return PreparedPrompt(text, classes, inst, groups)

    def known_prompts(self) -> str:
        """The categories (with keypoints) of a fixed-vocabulary model; '' for an open one."""
        return self.file_info.known_prompts()

    def parse(self, text: str):
        """Parse a prompt text as this predictor does (with the checkpoint's own vocabulary)."""
        return self._parse(text, getattr(self.config, "max_text_slots", 350),
                           getattr(self.config, "max_keypoints", 68))

    def _parse(self, text: str, max_slots: int, max_kpts: int):
        from .prompt import PromptError, parse_prompt

        try:
            return parse_prompt(text, self.vocabulary, max_classes=max_slots, max_keypoints=max_kpts)
        except PromptError as e:
            if self.vocabulary is None or not self._uses_own_features() or "unknown category" not in str(e):
                raise  # a malformed prompt: the parser's own message says how to fix it
            raise UnknownPromptError(self._unknown_message([text.strip()])) from None

    def _uses_own_features(self) -> bool:
        return getattr(self.text_encoder, "known", None) is not None

    def _check_known(self, classes, keypoints) -> None:
        """With the checkpoint's own prompt features, every name must be one it was trained on."""
        if not self._uses_own_features():
            return
        from .text_encoder import instance_prompt, keypoint_prompt

        table = self.text_encoder.table
        known_classes = {c for s in self.file_info.vocabulary or [] for c in s["categories"]}
        missing = [c for c in classes if c not in known_classes or instance_prompt(c) not in table]
        missing += [k for k in dict.fromkeys(keypoints) if keypoint_prompt(k) not in table]
        if missing:
            raise UnknownPromptError(self._unknown_message(missing))

    def _unknown_message(self, names: Sequence[str]) -> str:
        first = (self.file_info.vocabulary or [{}])[0]
        example = f"{first['categories'][0]}: {', '.join(first['keypoints'][:2])}" if first else ""
        from .prompt import _names_for_message
        what = _names_for_message(names)
        return (f"unknown prompt {what}: this model ({self.checkpoint}) was trained on a fixed "
                f"vocabulary and carries the prompt features of that vocabulary only. Known prompts: "
                f"{self.known_prompts()}. Use a known category, optionally with some of its keypoints "
                f"(e.g. '{example}'); open-vocabulary prompts need the official checkpoint with CLIP.")

    def prepare_visual_prompt(self, visual_prompt, text_prompt=None) -> PreparedPrompt:
        """Encode a :class:`~unipose_model.visual_prompt.VisualPrompt` (cached by its content).

        text_prompt: optionally a text prompt for the same object and keypoints ("fly" or
        "fly: head, thorax, ..."), whose features are averaged with the visual ones (both prompts
        together, as the model was trained). Without keypoint names in it, the visual prompt's
        keypoint names are used.
        """
        from .visual_prompt import VisualPrompt, VisualPromptError

        if not isinstance(visual_prompt, VisualPrompt):
            raise VisualPromptError(f"visual_prompt must be a unipose_model.visual_prompt.VisualPrompt, "
                                    f"got {type(visual_prompt).__name__}")
        encoder = getattr(self.model, "visual_prompt_encoder", None)
        if encoder is None:
            name = getattr(self.config, "name", type(self.model).__name__)
            raise VisualPromptError(f"this model ({name}, {self.checkpoint}) has no visual prompt encoder; "
                                    f"use a checkpoint trained with visual prompts (e.g. a unipose_tiny_visual "
                                    f"model) or a text prompt")
        key = ("visual", visual_prompt.digest(), text_prompt if isinstance(text_prompt, str) or text_prompt is None
               else id(text_prompt))
        with self._lock:
            if key in self._prompts:
                self._prompts.move_to_end(key)
                return self._prompts[key]
            names = tuple(visual_prompt.keypoint_names)
            text = None if text_prompt is None else self._text_for_visual(text_prompt, names)
            prepared = self._encode_visual(self.model, visual_prompt, text)
            if self.refine_model is not None and hasattr(self.refine_model, "visual_prompt_encoder"):
                prepared.for_refiner = self._encode_visual(self.refine_model, visual_prompt, text)
            self._prompts[key] = prepared
            while len(self._prompts) > self._prompt_cache_size:
                self._prompts.popitem(last=False)
            return prepared

    def _encode_visual(self, model: nn.Module, visual_prompt, text: PreparedPrompt | None) -> PreparedPrompt:
        """One model's support-encoder features of a visual prompt (averaged with ``text``'s)."""
        from .visual_prompt import prepare_support

        image, xy, visible = prepare_support(visual_prompt, int(model.visual_prompt_encoder.image_size))
        param = next(model.parameters())
        with torch.inference_mode():
            inst, kpts = model.encode_visual_prompt(image[None].to(param), xy[None].to(param),
                                                    visible[None].to(self.device))
        inst, kpts = inst.float(), kpts[0].float()
        names = tuple(visual_prompt.keypoint_names)
        cls = visual_prompt.class_name
        if text is not None:
            cls = text.classes[0]
            inst = (inst + text.instance_features[:1].to(inst)) / 2
            words = text.groups[0]  # per-keypoint text features; a set's hidden ones are not shown
            feats = words.features if words.slots is None else words.features[list(words.slots)]
            kpts = (kpts + feats.to(kpts)) / 2
        group = _Group((0,), names, tuple(visual_prompt.skeleton), kpts)
        return PreparedPrompt(f"<visual prompt: {cls}, {len(names)} keypoints>", (cls,), inst, [group])

    def _text_for_visual(self, text_prompt, names) -> PreparedPrompt:
        text = text_prompt if isinstance(text_prompt, str) else str(getattr(text_prompt, "text", text_prompt))
        if ":" not in text and names:
            text = f"{text.strip()}: {', '.join(names)}"
        prepared = self.prepare_prompt(text)
        if len(prepared.classes) != 1 or len(prepared.groups) != 1:
            raise PredictorError(f"a text prompt given with a visual prompt must name one class; got {text!r}")
        if len(prepared.groups[0].keypoint_names) != len(names):
            raise PredictorError(f"the text prompt has {len(prepared.groups[0].keypoint_names)} keypoints, "
                                 f"the visual prompt {len(names)}; they must describe the same keypoints")
        return prepared

    # ------------------------------------------------------------------ inference
    def predict(self, image, prompt=None, *, visual_prompt=None, color: str = "rgb") -> list[Instance]:
        """Detect the prompt's objects in one image (numpy HxWx3 / HxW uint8 or PIL).

        prompt: a text prompt ("person", "cat: left eye, nose") or what prepare_prompt /
        prepare_visual_prompt returned; visual_prompt: a
        :class:`~unipose_model.visual_prompt.VisualPrompt` (one annotated example); with both,
        their features are averaged (the text prompt then names the same object).
        """
        return self.predict_batch([image], prompt, visual_prompt=visual_prompt, color=color)[0]

    def predict_batch(self, images: Sequence, prompt=None, *, visual_prompt=None,
                      color: str = "rgb") -> list[list[Instance]]:
        """Detect in several images; one list of instances per image, in input order.

        Images of equal (resized) size run as one batch; each distinct size runs separately, so
        results equal those of :meth:`predict` on each image (up to float rounding).
        """
        with self._lock:
            if visual_prompt is not None:
                prepared = self.prepare_visual_prompt(visual_prompt, prompt)
            elif isinstance(prompt, PreparedPrompt):  # prepared once by the caller (ROS node, CLI)
                prepared = prompt
            else:
                prepared = self.prepare_prompt(prompt)
            t0 = time.perf_counter()
            rgbs = _rgb_arrays(images, color, self.exif_orientation)
            results = self._predict_rgb(rgbs, prepared, time.perf_counter() - t0)
            if self.refine:
                self._refine(rgbs, results, prepared)
            if self.heatmap_refiner is not None:
                self._refine_heatmaps(rgbs, results)
            return results

    def _refine_heatmaps(self, rgbs: list[np.ndarray], results: list[list[Instance]]) -> None:
        """Replace the keypoints the heatmap refiner knows by its peaks (heatmap_refiner.py)."""
        from .heatmap_refiner import refine_instances

        t0 = time.perf_counter()
        timing = dict(self.last_timing)
        refine_instances(self.heatmap_refiner, rgbs, results, self.device)
        timing["heatmap_refine_s"] = time.perf_counter() - t0
        self.last_timing = timing

    def _refine(self, rgbs: list[np.ndarray], results: list[list[Instance]], prepared: PreparedPrompt) -> None:
        """Replace each detection's keypoints by those of a zoomed-in second pass (refine.py)."""
        from . import refine

        t0 = time.perf_counter()
        timing = dict(self.last_timing)
        crops, owners = [], []
        for i, (rgb, instances) in enumerate(zip(rgbs, results)):
            for j, inst in enumerate(instances[:refine.MAX_REFINED_PER_IMAGE]):  # best score first
                crop = refine.crop_around(inst.box, self.refine, *rgb.shape[:2])
                if crop is not None:
                    crops.append(crop.cut(rgb))
                    owners.append((i, j, crop))
        if crops:
            size = self.refine_size or self.short_side
            if self.refine_model is not None:  # text features are the file's own: shared by both networks
                second = self._predict_rgb(crops, prepared.for_refiner or prepared, short_side=size,
                                           max_size=size, model=self.refine_model)
            else:
                second = self._predict_rgb(crops, prepared, short_side=size, max_size=size)
            for (i, j, crop), candidates in zip(owners, second):
                inst = results[i][j]
                match = refine.best_match(inst.box, inst.class_index, candidates, crop)
                if match is not None:
                    inst.keypoints = refine.refined_keypoints(inst.keypoints, match, crop)
        timing["refine_s"] = time.perf_counter() - t0
        self.last_timing = timing

    def _predict_rgb(self, rgbs: list[np.ndarray], prepared: PreparedPrompt, convert_s: float = 0.0,
                     short_side: int | None = None, max_size: int | None | str = "auto",
                     model: nn.Module | None = None) -> list[list[Instance]]:
        """The model on validated RGB arrays (see _rgb_arrays); convert_s: time already spent
        converting them, counted in the preprocess timing; short_side / max_size: the resize rule
        when not the predictor's, model: another network than the predictor's (the crop pass)."""
        short_side = self.short_side if short_side is None else short_side
        max_size = self.max_size if max_size == "auto" else max_size
        t0 = time.perf_counter() - convert_s
        if not rgbs:
            return []
        tensors, sizes = [], []
        for rgb in rgbs:
            sizes.append(rgb.shape[:2])
            tensors.append(preprocess_image(rgb, short_side=short_side, max_size=max_size))
        # One forward per distinct input size: no padding, so an image's result does not depend
        # on what else is in the batch (Swin sees padded pixels, which would shift the outputs).
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            buckets.setdefault(tuple(t.shape[1:]), []).append(i)
        chunks = [same[k:k + self.batch_size] for same in buckets.values()
                  for k in range(0, len(same), self.batch_size)]
        t1 = time.perf_counter()
        model_s = 0.0
        results: list[list[Instance]] = [[] for _ in rgbs]
        for indices in chunks:
            batch, masks = pad_batch([tensors[i] for i in indices])
            t_start = time.perf_counter()
            outputs = self._forward(batch.to(self.device), masks.to(self.device), prepared, model)
            _sync(self.device)
            model_s += time.perf_counter() - t_start
            for b, i in enumerate(indices):
                results[i] = self._postprocess(outputs, b, sizes[i], prepared)
        t2 = time.perf_counter()
        self.last_timing = {"preprocess_s": t1 - t0, "model_s": model_s,
                            "postprocess_s": t2 - t1 - model_s}
        return results

    @torch.inference_mode()
    def _forward(self, images, masks, prepared: PreparedPrompt, model: nn.Module | None = None) -> list[dict]:
        if model is not None:
            run = partial(call_entry, model)
        elif self.backend != "pytorch":  # exported graphs hold encoder + decoder: one run per group
            return [self._backend(images, masks, prepared.instance_features, g.features)
                    for g in prepared.groups]
        else:
            run = self._compiled or partial(call_entry, self.model)
        with self._autocast():
            if len(prepared.groups) == 1:
                return [run("forward", images, masks, prepared.instance_features, prepared.groups[0].features)]
            state = run("encode", images, masks, prepared.instance_features)
            return [run("decode", state, g.features) for g in prepared.groups]

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
            xy = det.keypoints[r] if group.slots is None else det.keypoints[r][list(group.slots)]
            kpts = np.concatenate([xy, np.full((len(group.keypoint_names), 1), score)], 1)
            label = int(det.labels[r])
            instances.append(Instance(prepared.classes[label], label, score,
                                      tuple(float(v) for v in det.boxes[r]), kpts,
                                      group.keypoint_names, group.skeleton))
        return instances

    def set_query_counts(self, num_queries: int | None = None, num_select: int | None = None) -> None:
        """Proposals kept after the encoder and instances given keypoint queries (None: the
        model's configuration). Fewer is faster and changes the outputs (see speed.py)."""
        if self.backend != "pytorch":
            raise PredictorError("query counts are fixed in an exported graph; use the pytorch backend")
        model, cfg = self.model, self.config
        nq = cfg.num_queries if num_queries is None else int(num_queries)
        ns = cfg.num_select if num_select is None else int(num_select)
        if not 1 <= nq <= cfg.num_queries or not 1 <= ns <= nq:
            raise PredictorError(f"need 1 <= num_select <= num_queries <= {cfg.num_queries}; got {ns}, {nq}")
        with self._lock:
            model.transformer.num_queries = nq
            model.transformer.decoder.num_select = ns

    def __repr__(self) -> str:
        name = getattr(self.config, "name", type(self.model).__name__)
        return (f"Predictor(model={name}, checkpoint={self.checkpoint}, device={self.device}, "
                f"dtype={_dtype_name(self.dtype)}, text_encoder={self.text_encoder.name})")


# ---------------------------------------------------------------------------------------------


def cpu_supports_bf16() -> bool:
    """True where oneDNN runs bfloat16 matrix products natively (AVX512-BF16 / AMX); elsewhere
    bf16 on the CPU is emulated and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 matrix products natively (CUDA, or a CPU with bf16 units)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_supports_bf16())


def check_dtype(dtype: torch.dtype, device: torch.device) -> None:
    if dtype == torch.float32 or device.type == "cuda" or (dtype == torch.bfloat16 and native_bf16(device)):
        return
    if dtype == torch.bfloat16 and device.type == "cpu":
        raise PredictorError("dtype bfloat16 on the CPU needs native bf16 instructions (AVX512-BF16 "
                             "or AMX), which this CPU lacks; use dtype float32")
    raise PredictorError(f"dtype {_dtype_name(dtype)} needs a CUDA device (got {device}); use dtype "
                         f"float32{' or bfloat16' if native_bf16(device) else ''} on the CPU")


def _load_model(model, checkpoint):
    """(model with weights, resolved checkpoint, ModelFileInfo of the checkpoint)."""
    from . import build_model, load_official_checkpoint
    from .checkpoint import fill_reference_weights
    from .model_file import ModelFileInfo, read_model_file_info

    info = ModelFileInfo()
    if isinstance(model, nn.Module):
        if checkpoint is None:
            return model, checkpoint, info
        name = getattr(getattr(model, "config", None), "name", DEFAULT_MODEL)
        checkpoint = resolve_checkpoint(name, checkpoint)
    elif model is None or isinstance(model, str):
        checkpoint = resolve_checkpoint(model or DEFAULT_MODEL, checkpoint)  # before the (slow) build
        if str(checkpoint) != REFERENCE_CHECKPOINT:
            info = read_model_file_info(checkpoint)
        if model is not None and info.model_name and model != info.model_name:
            raise PredictorError(f"checkpoint {checkpoint} holds a {info.model_name!r} model, not "
                                 f"{model!r}; leave the model out (it is read from the checkpoint) "
                                 f"or pass model={info.model_name!r}")
        name = model or info.model_name or DEFAULT_MODEL
        overrides = info.model_overrides if info.model_name == name else {}
        try:
            model = build_model(name, **overrides)
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
    else:
        raise PredictorError(f"model must be a configuration name or an nn.Module, "
                             f"got {type(model).__name__}")
    if str(checkpoint) == REFERENCE_CHECKPOINT:
        fill_reference_weights(model)
        return model, checkpoint, info
    if isinstance(model, nn.Module) and not info.model_name:
        info = read_model_file_info(checkpoint)
    load_official_checkpoint(model, str(checkpoint))
    return model, checkpoint, info


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
           "UnknownPromptError", "REFERENCE_CHECKPOINT", "default_checkpoint", "default_checkpoint_path",
           "resolve_checkpoint", "resolve_device", "resolve_bundled_model",
           "cache_dir", "download_hint",
           "TextEncoder", "ClipTextEncoder", "HashTextEncoder"]  # re-exported for convenience
