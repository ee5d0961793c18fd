"""Hierarchical text prompts for training (paper section 3.1 / appendix).

    instance:  "a [STYLE] photo of [OBJECT]"
    keypoint:  "a [STYLE] photo of [OBJECT]'s [PART]'s [KEYPOINT]"

STYLE, OBJECT and PART are each dropped at random (probabilities in PromptConfig), so the model
learns coarse and fine prompts. With everything dropped the text is exactly the inference
template of `unipose_model.text_encoder` ("a photo of person", "a photo of left eye"), which is
what `fixed=True` always produces (for overfitting and evaluation).

Each image gets its positive classes plus negatives sampled from a pool of category names, in a
random order; targets index into that list. Everything random comes from the per-sample rng.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from unipose_model.text_encoder import PROMPT_PREFIX, instance_prompt, keypoint_prompt

from .augment import swap_left_right


@dataclass
class PromptConfig:
    style_drop: float = 0.5     # probability of leaving out the image style
    object_drop: float = 0.5    # keypoint prompts: leave out "[OBJECT]'s"
    part_drop: float = 0.5      # keypoint prompts: leave out "[PART]'s" (where parts are known)
    num_negatives: int = 10     # negative classes sampled per image (fewer if the pool is small)
    max_classes: int = 64       # cap on positives + negatives (the model takes up to 350)
    shuffle: bool = True        # random order of the class list
    fixed: bool = False         # no dropout decisions, no negatives, no shuffling: inference prompts


def _instance_name(name: str) -> str:
    # the same normalisation as the inference template (text_encoder.instance_prompt)
    return instance_prompt(name)[len(PROMPT_PREFIX):]


def _keypoint_name(name: str) -> str:
    return keypoint_prompt(name)[len(PROMPT_PREFIX):]


def instance_text(name: str, style: Optional[str]) -> str:
    if not style:
        return instance_prompt(name)
    return f"a {style.lower()} photo of {_instance_name(name)}"


def keypoint_text(keypoint: str, style: Optional[str] = None, obj: Optional[str] = None,
                  part: Optional[str] = None) -> str:
    head = f"a {style.lower()} photo of " if style else PROMPT_PREFIX  # a style variant of the template
    chain = [(_instance_name(obj) + "'s") if obj else None, (_keypoint_name(part) + "'s") if part else None,
             _keypoint_name(keypoint)]
    return head + " ".join(c for c in chain if c)


class PromptBuilder:
    def __init__(self, cfg: PromptConfig | None = None, negative_pool: Sequence[str] = ()):
        self.cfg = cfg or PromptConfig()
        self.negative_pool = list(dict.fromkeys(negative_pool))

    def instance_prompts(self, positives: Sequence[str], style: Optional[str], rng: np.random.Generator
                         ) -> Tuple[List[str], List[str]]:
        """(texts, class names) for one image; positives first unless shuffled."""
        c = self.cfg
        names = list(dict.fromkeys(positives))[:c.max_classes]
        if not c.fixed and c.num_negatives > 0:
            taken = {_instance_name(n) for n in names}
            pool = [n for n in self.negative_pool if _instance_name(n) not in taken]
            k = min(c.num_negatives, len(pool), c.max_classes - len(names))
            if k > 0:
                names += [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))]
        if c.shuffle and not c.fixed:
            names = [names[i] for i in rng.permutation(len(names))]
        texts = [instance_text(n, None if c.fixed or rng.random() < c.style_drop else style) for n in names]
        return texts, names

    def keypoint_prompts(self, keypoints: Sequence[str], obj: Optional[str], style: Optional[str],
                         rng: np.random.Generator, parts: Optional[Dict[str, str]] = None) -> List[str]:
        """Texts of one image's keypoint list; one dropout decision per image keeps the list uniform."""
        c = self.cfg
        if c.fixed:
            return [keypoint_text(k) for k in keypoints]
        use_style = style if rng.random() >= c.style_drop else None
        use_obj = obj if rng.random() >= c.object_drop else None
        use_part = parts is not None and rng.random() >= c.part_drop
        return [keypoint_text(k, use_style, use_obj, (parts or {}).get(k) if use_part else None)
                for k in keypoints]

    # ------------------------------------------------------------------ enumeration
    def all_texts(self, categories: Iterable[Tuple[str, Sequence[str], Optional[Dict[str, str]], Sequence[str]]],
                  styles: Iterable[Optional[str]] = ()) -> List[str]:
        """Every text this builder can produce for these (category, keypoints, parts, its styles)
        and, for the negative pool, `styles`; including the left/right-swapped names a flip
        produces (for precomputing text features)."""
        pool_styles = list(dict.fromkeys([None, *styles]))
        out: Dict[str, None] = {}
        cats = list(categories)
        for name in self.negative_pool:
            for n in {name, swap_left_right(name)}:
                for s in pool_styles:
                    out[instance_text(n, s)] = None
        for name, keypoints, parts, cat_styles in cats:
            cat_styles = list(dict.fromkeys([None, *cat_styles]))
            for n in {name, swap_left_right(name)}:
                for s in cat_styles:
                    out[instance_text(n, s)] = None
            for obj in {None, name, swap_left_right(name)}:
                for k in keypoints:
                    for kk in {k, swap_left_right(k)}:
                        for p in {None, (parts or {}).get(kk), (parts or {}).get(k)}:
                            for s in cat_styles:
                                out[keypoint_text(kk, s, obj, p)] = None
        return list(out)


def negative_pool(mode: str, sources) -> List[str]:
    """Class names negatives are drawn from (config data.negative_pool): "vocabulary": every
    UniKPT category; "data": the categories of the training sources."""
    if mode == "vocabulary":
        from .unikpt.vocabulary import UniKPTVocabulary
        return UniKPTVocabulary.load().category_names()
    return [c.name for ds in sources for c in ds.categories]


def mix_visual_prompts(model, supports, inst, kpt, device, dtype):
    """Samples with a support get the visual prompt encoder's features for their keypoint
    category (its class column and the keypoint slots), alone or averaged with the text ones.
    inst (B, C, D) and kpt (B, K, D): the batch's text prompt features."""
    import torch

    rows = [b for b, s in enumerate(supports or ()) if s is not None]
    if not rows:
        return inst, kpt
    sup = [supports[b] for b in rows]
    K = max(len(s["visible"]) for s in sup)
    images = torch.stack([s["image"] for s in sup]).to(device, dtype)
    xy = torch.zeros(len(sup), K, 2)
    visible = torch.zeros(len(sup), K, dtype=torch.bool)
    valid = torch.zeros(len(sup), K, dtype=torch.bool)
    for i, s in enumerate(sup):
        k = len(s["visible"])
        xy[i, :k], visible[i, :k], valid[i, :k] = s["keypoints"], s["visible"], True
    # Outside the DDP forward, but DDP still reduces these gradients: the encoder's outputs
    # feed the wrapped forward, so its parameters are reached from the loss (the DDP test
    # with visual prompts checks it).
    v_inst, v_kpt = model.encode_visual_prompt(images, xy.to(device, dtype), visible.to(device), valid.to(device))
    inst, kpt = inst.to(device, dtype).clone(), kpt.to(device, dtype).clone()
    for i, (b, s) in enumerate(zip(rows, sup)):
        k, c = len(s["visible"]), s["class_index"]
        vi, vk = v_inst[i], v_kpt[i, :k]
        if s["with_text"]:
            vi, vk = (vi + inst[b, c]) / 2, (vk + kpt[b, :k]) / 2
        inst[b, c] = vi
        kpt[b, :k] = vk
    return inst, kpt
