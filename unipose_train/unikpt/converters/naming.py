"""Naming helpers for lab skeletons (SLEAP, DeepLabCut) whose node names are the lab's own."""
from __future__ import annotations

from typing import Sequence

from ..vocabulary import UniKPTVocabulary

__all__ = ["flip_pairs_from_names", "category_for_skeleton"]


def flip_pairs_from_names(names: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs (i, j) whose names differ only by 'left' <-> 'right'."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        words = n.split(" ")
        if "left" in words:
            mirror = " ".join("right" if w == "left" else w for w in words)
            if mirror in index:
                pairs.append((i, index[mirror]))
    return pairs


def category_for_skeleton(vocab: UniKPTVocabulary, raw: Sequence[str], names: Sequence[str],
                          category: str | None) -> tuple[str, str | None, str]:
    """(category name, vocabulary set or None, supercategory) for a lab skeleton.

    A skeleton whose raw names all belong to one known dataset (the SLEAP fly skeleton uses
    Vinegar Fly's names) takes that dataset's set and category."""
    for spec in vocab.datasets.values():
        if spec.source_keypoints and spec.set and set(raw) <= set(spec.source_keypoints):
            default = vocab.get_set(spec.set).categories[0]
            return category or default, spec.set, spec.supercategory or ""
    for s in vocab.sets():
        if set(names) <= set(s.keypoints) and category and vocab.model.lookup(category) is s:
            return category, s.id, vocab.category_meta(category).get("supercategory", "")
    name = category or "animal"
    return name, None, vocab.category_meta(name).get("supercategory", "animal")
