"""Prompts -> the features the model takes: text and visual prompt preparation, cached.

A :class:`PromptEncoder` parses a text prompt (with the model file's own vocabulary when it has
one), checks it against the model's slots and, for a model that carries its own prompt
features, against what it was trained on; it encodes the classes and each keypoint group once and
keeps the result in a small LRU cache. Visual prompts (one annotated example) go through the
model's support encoder, optionally averaged with a text prompt's features.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .configs import MAX_KEYPOINTS, MAX_TEXT_SLOTS
from .errors import PredictorError, UnknownPromptError


@dataclass
class GroupFeatures:
    """One keypoint group of a prompt: the classes it serves, its keypoints and their features."""

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
    groups: list[GroupFeatures] = field(default_factory=list)
    # a visual prompt encoded by the crop-refinement network too (its own support encoder)
    for_refiner: "PreparedPrompt | None" = None


class PromptCache(OrderedDict):
    """Least-recently-used prepared prompts (key: the prompt, or a visual prompt's digest)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_fresh(self, key):
        if key is not None and key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, prepared: PreparedPrompt) -> PreparedPrompt:
        if key is not None:
            self[key] = prepared
            while len(self) > self.size:
                self.popitem(last=False)
        return prepared


class PromptEncoder:
    """Text and visual prompts of one model file -> PreparedPrompt (cached).

    text_encoder: a TextEncoder; file_info: the model file's ModelFileInfo (its vocabulary, if
    any, fixes the prompts it accepts); config: the model configuration (slot limits).
    """

    def __init__(self, text_encoder, file_info, config, device: torch.device, checkpoint,
                 cache_size: int = 64, lock: threading.RLock | None = None):
        self.text_encoder = text_encoder
        self.file_info = file_info
        self.device = device
        self.checkpoint = checkpoint
        self.max_slots = getattr(config, "max_text_slots", MAX_TEXT_SLOTS)
        self.max_keypoints = getattr(config, "max_keypoints", MAX_KEYPOINTS)
        self.cache = PromptCache(cache_size)
        self.lock = lock or threading.RLock()
        self.vocabulary = None  # a checkpoint that carries its prompt features defines its categories
        if file_info.vocabulary:
            from .vocabulary import Vocabulary
            self.vocabulary = Vocabulary.from_data(file_info.vocabulary, source=str(checkpoint))

    # ------------------------------------------------------------------ text prompts
    def prepare(self, prompt) -> PreparedPrompt:
        """Parse a prompt (string or ``unipose_model.prompt.Prompt``) and encode its text (cached)."""
        try:
            hash(prompt)
            key = prompt
        except TypeError:
            key = None  # unhashable prompt objects are simply not cached
        with self.lock:
            return self.cache.get_fresh(key) or self.cache.put(key, self._prepare(prompt))

    def parse(self, text: str):
        """Parse a prompt text with the checkpoint's own vocabulary (if any) and the model's limits."""
        from .prompt import PromptError, parse_prompt

        try:
            return parse_prompt(text, self.vocabulary, max_classes=self.max_slots, max_keypoints=self.max_keypoints)
        except PromptError as e:
            if self.vocabulary is None or not self.uses_own_features() or "unknown category" not in str(e):
                raise  # a malformed prompt: the parser's own message says how to fix it
            raise UnknownPromptError(self._unknown_message([text.strip()])) from None

    def uses_own_features(self) -> bool:
        return getattr(self.text_encoder, "known", None) is not None

    def _prepare(self, prompt) -> PreparedPrompt:
        parsed = self._parsed(prompt)
        classes = tuple(parsed.classes)
        if not classes:
            raise PredictorError("the prompt names no object class")
        if len(classes) > self.max_slots:
            raise PredictorError(f"the prompt has {len(classes)} classes; the model takes at most {self.max_slots}")
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
            if len(texts) > self.max_keypoints:
                raise PredictorError(f"{len(texts)} keypoints requested for {which}; "
                                     f"the model takes at most {self.max_keypoints}")
            feats = self.text_encoder.encode_keypoints(texts).to(self.device)
            slots = tuple(getattr(g, "shown", ())) or None
            groups.append(GroupFeatures(tuple(int(i) for i in g.class_indices), names,
                                        tuple((int(a), int(b)) for a, b in g.skeleton), feats, slots))
        if not groups:
            raise PredictorError("the prompt defines no keypoints")
        text = prompt if isinstance(prompt, str) else str(getattr(parsed, "text", parsed))
        return PreparedPrompt(text, classes, inst, groups)

    def _parsed(self, prompt):
        if prompt is None:
            raise PredictorError("prompt is None; give e.g. 'person' or 'cat: left eye, nose'")
        if self.vocabulary is not None and not isinstance(prompt, str) and hasattr(prompt, "canonical"):
            # parsed elsewhere with the default vocabulary: re-read it with this model's own
            prompt = getattr(prompt, "text", "") or prompt.canonical()
        if isinstance(prompt, str):
            return self.parse(prompt)
        if hasattr(prompt, "classes") and hasattr(prompt, "groups"):
            return prompt
        raise PredictorError(f"prompt must be a string or a unipose_model.prompt.Prompt, got {type(prompt).__name__}")

    def _check_known(self, classes, keypoints) -> None:
        """With the checkpoint's own prompt features, every name must be one it was trained on."""
        if not self.uses_own_features():
            return
        from .text_encoder import instance_prompt, keypoint_prompt

        table = self.text_encoder.table
        known_classes = {c for s in self.file_info.vocabulary or [] for c in s["categories"]}
        missing = [c for c in classes if c not in known_classes or instance_prompt(c) not in table]
        missing += [k for k in dict.fromkeys(keypoints) if keypoint_prompt(k) not in table]
        if missing:
            raise UnknownPromptError(self._unknown_message(missing))

    def _unknown_message(self, names: Sequence[str]) -> str:
        from .prompt import names_for_message

        first = (self.file_info.vocabulary or [{}])[0]
        example = f"{first['categories'][0]}: {', '.join(first['keypoints'][:2])}" if first else ""
        return (f"unknown prompt {names_for_message(names)}: this model ({self.checkpoint}) was trained on a "
                f"fixed vocabulary and carries the prompt features of that vocabulary only. Known prompts: "
                f"{self.file_info.known_prompts()}. Use a known category, optionally with some of its keypoints "
                f"(e.g. '{example}'); open-vocabulary prompts need the official checkpoint with CLIP.")

    # ------------------------------------------------------------------ visual prompts
    def prepare_visual(self, visual_prompt, text_prompt, model: nn.Module,
                       refine_model: nn.Module | None = None) -> PreparedPrompt:
        """Encode a VisualPrompt with `model`'s support encoder (and `refine_model`'s, if it has
        one), averaged with `text_prompt`'s features when given; cached by the prompt's content."""
        from .visual_prompt import VisualPrompt, VisualPromptError

        if not isinstance(visual_prompt, VisualPrompt):
            raise VisualPromptError(f"visual_prompt must be a unipose_model.visual_prompt.VisualPrompt, "
                                    f"got {type(visual_prompt).__name__}")
        if getattr(model, "visual_prompt_encoder", None) is None:
            name = getattr(getattr(model, "config", None), "name", type(model).__name__)
            raise VisualPromptError(f"this model ({name}, {self.checkpoint}) has no visual prompt encoder; "
                                    f"use a checkpoint trained with visual prompts (e.g. a unipose_tiny_visual "
                                    f"model) or a text prompt")
        key = ("visual", visual_prompt.digest(), text_prompt if isinstance(text_prompt, str) or text_prompt is None
               else id(text_prompt))
        with self.lock:
            cached = self.cache.get_fresh(key)
            if cached is not None:
                return cached
            names = tuple(visual_prompt.keypoint_names)
            text = None if text_prompt is None else self._text_for_visual(text_prompt, names)
            prepared = self._encode_visual(model, visual_prompt, text)
            if refine_model is not None and hasattr(refine_model, "visual_prompt_encoder"):
                prepared.for_refiner = self._encode_visual(refine_model, visual_prompt, text)
            return self.cache.put(key, prepared)

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
        group = GroupFeatures((0,), names, tuple(visual_prompt.skeleton), kpts)
        return PreparedPrompt(f"<visual prompt: {cls}, {len(names)} keypoints>", (cls,), inst, [group])

    def _text_for_visual(self, text_prompt, names) -> PreparedPrompt:
        text = text_prompt if isinstance(text_prompt, str) else str(getattr(text_prompt, "text", text_prompt))
        if ":" not in text and names:
            text = f"{text.strip()}: {', '.join(names)}"
        prepared = self.prepare(text)
        if len(prepared.classes) != 1 or len(prepared.groups) != 1:
            raise PredictorError(f"a text prompt given with a visual prompt must name one class; got {text!r}")
        if len(prepared.groups[0].keypoint_names) != len(names):
            raise PredictorError(f"the text prompt has {len(prepared.groups[0].keypoint_names)} keypoints, "
                                 f"the visual prompt {len(names)}; they must describe the same keypoints")
        return prepared


__all__ = ["GroupFeatures", "PreparedPrompt", "PromptCache", "PromptEncoder"]
