"""The unified UniKPT keypoint vocabulary (data file: unipose_train/data/unikpt_vocabulary.json).

The file uses the schema of `unipose_model.vocabulary` (so `Vocabulary.from_file` loads it as a
prompt vocabulary) and holds every set of the model's keypoint_sets.json unchanged, plus the sets
only UniKPT needs. Three more top-level keys, ignored by the model's loader, carry what the
converters need:

``datasets``          name -> {title, set, source_keypoints, supercategory, style, url, paper,
                      parts?}: the dataset's own keypoint names in its index order; index i maps
                      to keypoint i of ``set``. ``parts`` maps a source category (or id) to a set
                      where one dataset uses several layouts (DeepFashion2, Keypoint-5).
``keypoint_aliases``  raw name -> unified name, for names found in lab skeletons (SLEAP, DLC).
``category_info``     category -> {supercategory, taxonomy?, style?}.

Same keypoint, same name: "left eye" is the left eye of a person, a cat and a fly; left/right
are always the object's own.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from unipose_model.vocabulary import (KeypointSet, Vocabulary, VocabularyError, canonical_keypoint_name,
                                      category_key, normalize_name)

__all__ = ["UniKPTVocabulary", "DatasetSpec", "DEFAULT_UNIKPT_VOCABULARY", "canonical_keypoint_name",
           "VocabularyError"]

DEFAULT_UNIKPT_VOCABULARY = Path(__file__).resolve().parents[1] / "data" / "unikpt_vocabulary.json"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    set: str | None
    source_keypoints: tuple[str, ...] | None
    supercategory: str | None
    style: str | None
    url: str = ""
    paper: str = ""
    parts: dict[str, str] | None = None


class UniKPTVocabulary:
    """Keypoint sets (shared with the model) plus dataset layouts, aliases and category metadata."""

    def __init__(self, data: dict[str, Any], source: str = "<data>"):
        self.source = source
        self._data = data
        self.model = Vocabulary.from_data(data, source=source)  # validates the sets
        self.datasets: dict[str, DatasetSpec] = {}
        for name, d in data.get("datasets", {}).items():
            src = d.get("source_keypoints")
            spec = DatasetSpec(name=name, title=d.get("title", name), set=d.get("set"),
                               source_keypoints=tuple(src) if src else None,
                               supercategory=d.get("supercategory"), style=d.get("style"),
                               url=d.get("url", ""), paper=d.get("paper", ""), parts=d.get("parts"))
            if spec.set is not None:
                ks = self.get_set(spec.set)
                if spec.source_keypoints and len(spec.source_keypoints) != len(ks):
                    raise VocabularyError(f"{source}: dataset {name!r} lists {len(spec.source_keypoints)} "
                                          f"source keypoints but set {spec.set!r} has {len(ks)}")
            for part_set in (spec.parts or {}).values():
                self.get_set(part_set)
            self.datasets[name] = spec
        self.aliases = {normalize_name(k): normalize_name(v)
                        for k, v in data.get("keypoint_aliases", {}).items()}
        self.category_info: dict[str, dict[str, Any]] = {
            category_key(k): v for k, v in data.get("category_info", {}).items()}

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path | None = None) -> "UniKPTVocabulary":
        if path is None:
            return _default()
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise VocabularyError(f"cannot read vocabulary {path}: {e}") from e
        return cls(data, source=str(path))

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self._data, indent=1) + "\n", encoding="utf-8")

    def extend(self, sets: Iterable[dict[str, Any]] = (),
               category_info: dict[str, dict[str, Any]] | None = None) -> "UniKPTVocabulary":
        """A new vocabulary with extra sets (model schema) and category metadata, e.g. for a lab's
        own animals; existing sets and categories cannot be redefined."""
        data = self.to_json()
        known = {s["id"] for s in data["sets"]}
        for s in sets:
            if s["id"] in known:
                raise VocabularyError(f"set {s['id']!r} already exists in {self.source}")
            data["sets"].append(dict(s))
        data.setdefault("category_info", {}).update(category_info or {})
        return UniKPTVocabulary(data, source=f"{self.source}+extension")

    # ------------------------------------------------------------------ queries
    def get_set(self, set_id: str) -> KeypointSet:
        try:
            return self.model.get(set_id)
        except KeyError as e:
            raise VocabularyError(str(e.args[0])) from None

    def sets(self) -> list[KeypointSet]:
        return self.model.sets()

    def dataset(self, name: str) -> DatasetSpec:
        try:
            return self.datasets[name]
        except KeyError:
            raise VocabularyError(f"dataset {name!r} is not in the vocabulary; known: "
                                  f"{', '.join(sorted(self.datasets))}") from None

    def keypoint_names(self) -> list[str]:
        """All distinct unified keypoint names."""
        return sorted({k for s in self.sets() for k in s.keypoints})

    def category_names(self) -> list[str]:
        return sorted(set(self.model.categories()) | set(self.category_info))

    def category_meta(self, name: str) -> dict[str, Any]:
        """supercategory / taxonomy / style of a category ({} when unknown)."""
        key = category_key(name)
        if key in self.category_info:
            return dict(self.category_info[key])
        found = self.model.lookup(key)
        if found is not None and found.categories:
            return dict(self.category_info.get(found.categories[0], {}))
        return {}

    def resolve_keypoints(self, raw_names: Sequence[str]) -> list[str]:
        """Unified names for a skeleton's raw node names (lab tools: SLEAP, DeepLabCut).

        If every raw name is a source keypoint of one known dataset, that dataset's mapping is
        used (the SLEAP fly skeleton uses Vinegar Fly's names); otherwise each name goes through
        the alias table or `canonical_keypoint_name`."""
        raw = list(raw_names)
        for spec in self.datasets.values():
            if spec.source_keypoints and spec.set and set(raw) <= set(spec.source_keypoints):
                unified = self.get_set(spec.set).keypoints
                return [unified[spec.source_keypoints.index(n)] for n in raw]
        out = []
        for name in raw:
            key = normalize_name(name)
            if key in self.aliases:
                out.append(self.aliases[key])
                continue
            canon = canonical_keypoint_name(name)
            out.append(self.aliases.get(canon, canon))
        return out


@lru_cache(maxsize=1)
def _default() -> UniKPTVocabulary:
    return UniKPTVocabulary.load(DEFAULT_UNIKPT_VOCABULARY)
