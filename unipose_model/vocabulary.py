"""The keypoint vocabulary: predefined keypoint sets and the object categories that use them.

Pure Python (json + stdlib), so the prompt parser, CLI and ROS node can use it without torch.

Data file format (``data/keypoint_sets.json``)
----------------------------------------------
A JSON object ``{"format": "unipose keypoint sets", "version": 2, "sets": [SET, ...],
"renamed_sets": {old id: id}}`` (a bare list of SETs is accepted too; ``renamed_sets`` lets
`Vocabulary.get` find a set by an id it had before). Each SET is an object with these keys:

``id``           str, required. Unique, ``[A-Za-z0-9_]+`` (the official demo's set names, e.g.
                 ``"person"``, ``"swivelchair"``, ``"animal_in_AP10K"``).
``keypoints``    list of str, required, non-empty. The text fed to the text encoder, verbatim
                 (after the template "a photo of "): lower case, no underscores, words separated
                 by single spaces; surrounding spaces are kept for the model (the official
                 Animal Kingdom text has "ankle left "). What users see and type is the name
                 without them. Names of shown keypoints are unique in the set.
``hidden``       optional list of indices: keypoints sent to the model (they are part of the
                 text it was trained with) but left out of results (the car's two "none").
``keypoint_aliases`` optional object: other name -> keypoint name, for names users typed before
                 (earlier releases of this file) or spell differently; lookups accept them.
``skeleton``     list of ``[i, j]`` links, 0-based indices into ``keypoints``; may be empty.
``flip_pairs``   optional list of ``[i, j]``: keypoints that swap under a horizontal flip.
``sigmas``       optional list of float (COCO OKS sigmas), one per keypoint.
``categories``   list of str: category names that use this set (normalised like the keypoints,
                 and additionally without ``-``). A category may belong to one set only.
``description``  optional str: what the set covers, index layout notes.
``source``       optional str: dataset, paper and URL the index layout comes from.
``origin``       optional str: "official" (the official UniPose demo's predefined set, text
                 verbatim) or "project" (a set this project adds).

Unknown keys are rejected, so a typo (``"skeletton"``) is an error, not a silently empty field.

Lookup is forgiving: case-insensitive, ``_``/``-`` read as spaces, extra spaces ignored, and a
simple English plural of the last word is tolerated ("Cats", "swivel_chairs", "wolves").
Keypoint names match case-insensitively, with ' and ’ read alike, and through the aliases.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["KeypointSet", "Vocabulary", "VocabularyError", "normalize_name", "category_key",
           "keypoint_key", "DEFAULT_VOCABULARY_PATH"]

DEFAULT_VOCABULARY_PATH = Path(__file__).resolve().parent / "data" / "keypoint_sets.json"

_SET_KEYS = {"id", "keypoints", "skeleton", "flip_pairs", "sigmas", "categories", "description",
             "source", "hidden", "keypoint_aliases", "origin"}
_ID_RE = re.compile(r"^[A-Za-z0-9_]+$")
_IRREGULAR_PLURALS = {"mice": "mouse", "geese": "goose", "oxen": "ox", "people": "person",
                      "men": "man", "women": "woman", "children": "child", "teeth": "tooth",
                      "feet": "foot"}


class VocabularyError(ValueError):
    """Malformed vocabulary data; the message names the file and the offending entry."""


def normalize_name(text: str) -> str:
    """Text form of a class or keypoint name: lower case, '_' as space, single spaces, stripped."""
    return " ".join(text.replace("_", " ").lower().split())


def keypoint_key(name: str) -> str:
    """Matching key of a keypoint name: its text form with the typographic apostrophe (used by
    one official hand name, "thumb’s first knuckle") read as a plain one."""
    return normalize_name(name).replace("\u2019", "'")


def canonical_keypoint_name(raw: str) -> str:
    """A descriptive text form of a raw keypoint name: 'eyeL' -> 'left eye', 'L_F_Paw' -> 'left f paw',
    'forelegR4' -> 'right foreleg 4', 'leftear' -> 'left ear'. Side words move to the front."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", raw.strip())
    text = re.sub(r"([A-Za-z])(\d)", r"\1 \2", text)
    side, words = None, []
    for token in re.split(r"[\s_\-.]+", text.lower()):
        if not token:
            continue
        if token in ("l", "left"):
            side = "left"
        elif token in ("r", "right"):
            side = "right"
        elif token.startswith("left") and len(token) > 4:
            side, token = "left", token[4:]
            words.append(token)
        elif token.startswith("right") and len(token) > 5:
            side, token = "right", token[5:]
            words.append(token)
        else:
            words.append(token)
    name = " ".join(words)
    return f"{side} {name}".strip() if side else name


def category_key(text: str) -> str:
    """Lookup key of a category: like normalize_name, and '-' also reads as a space."""
    return normalize_name(text.replace("-", " "))


def _singular_candidates(key: str) -> list[str]:
    """Possible singular forms of a (normalised) category; only the last word is inflected."""
    head, _, word = key.rpartition(" ")
    forms = []
    if word in _IRREGULAR_PLURALS:
        forms.append(_IRREGULAR_PLURALS[word])
    if word.endswith("ies") and len(word) > 4:
        forms.append(word[:-3] + "y")            # puppies -> puppy
    if word.endswith("ves") and len(word) > 4:
        forms += [word[:-3] + "f", word[:-3] + "fe"]  # wolves -> wolf, knives -> knife
    if word.endswith("es") and len(word) > 3:
        forms.append(word[:-2])                  # foxes -> fox, buses -> bus
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        forms.append(word[:-1])                  # cats -> cat
    return [f"{head} {f}" if head else f for f in forms]


@dataclass(frozen=True)
class KeypointSet:
    """One predefined keypoint layout (names, skeleton links, flip pairs, OKS sigmas).

    ``keypoints`` are the names users see and type (text form); ``texts`` the model-facing text
    of each, when it differs anywhere (empty: the names are the text); ``hidden`` the indices
    sent to the model but left out of results. Skeleton, flips and sigmas index the full layout.
    """

    id: str
    keypoints: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    sigmas: tuple[float, ...] | None = None
    categories: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    texts: tuple[str, ...] = ()
    hidden: tuple[int, ...] = ()
    keypoint_aliases: tuple[tuple[str, str], ...] = ()
    origin: str = ""

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def prompt_texts(self) -> tuple[str, ...]:
        """The keypoint text the model gets for the full layout (hidden keypoints included)."""
        return self.texts or self.keypoints

    @property
    def shown(self) -> tuple[int, ...]:
        """Indices of the keypoints users see (all but the hidden ones)."""
        return tuple(i for i in range(len(self.keypoints)) if i not in self.hidden)

    def find(self, name: str) -> int | None:
        """Index of a shown keypoint called `name` (case, apostrophes and aliases tolerated)."""
        key = keypoint_key(name)
        table = _name_table(self)
        return table.get(key)

    def index(self, name: str) -> int:
        """Index of a keypoint name (normalised first); ValueError if it is not in the set."""
        found = self.find(name)
        if found is None:
            raise ValueError(f"keypoint {name!r} is not in set {self.id!r}; its keypoints are: "
                             f"{', '.join(self.keypoints[i] for i in self.shown)}")
        return found

    def skeleton_for(self, names: Sequence[str]) -> tuple[tuple[int, int], ...]:
        """This set's links among `names`, as indices into `names`; unknown names have no links.

        Links keep this set's order and orientation, so for the full keypoint list the result
        equals `skeleton`.
        """
        where: dict[int, int] = {}
        for i, name in enumerate(names):
            k = self.find(name)
            if k is not None:
                where.setdefault(k, i)
        return tuple((where[i], where[j]) for i, j in self.skeleton if i in where and j in where)

    def subset(self, names: Sequence[str]) -> "KeypointSet":
        """A set with only `names`, in the order given; skeleton, flips, sigmas follow along."""
        found = [self.find(n) for n in names]
        unknown = [n for n, k in zip(names, found) if k is None]
        if unknown:
            raise ValueError(f"not in keypoint set {self.id!r}: {', '.join(map(repr, unknown))}; "
                             f"its keypoints are: {', '.join(self.keypoints[i] for i in self.shown)}")
        old = [int(k) for k in found if k is not None]
        if len(set(old)) != len(old):
            raise ValueError(f"duplicate keypoint names in subset of {self.id!r}: {list(names)}")
        new_of = {o: n for n, o in enumerate(old)}
        flips = tuple((new_of[i], new_of[j]) for i, j in self.flip_pairs
                      if i in new_of and j in new_of)
        links = tuple((new_of[i], new_of[j]) for i, j in self.skeleton if i in new_of and j in new_of)
        sigmas = None if self.sigmas is None else tuple(self.sigmas[o] for o in old)
        texts = tuple(self.texts[o] for o in old) if self.texts else ()
        return KeypointSet(id=self.id, keypoints=tuple(self.keypoints[o] for o in old),
                           skeleton=links, flip_pairs=flips, sigmas=sigmas,
                           categories=self.categories, description=self.description,
                           source=self.source, texts=texts, origin=self.origin)

    def to_json(self) -> dict[str, Any]:
        """The set as one entry of the data file (see the module docstring)."""
        out: dict[str, Any] = {"id": self.id}
        if self.origin:
            out["origin"] = self.origin
        out.update({"description": self.description, "source": self.source,
                    "keypoints": list(self.prompt_texts)})
        if self.hidden:
            out["hidden"] = list(self.hidden)
        out.update({"skeleton": [list(p) for p in self.skeleton],
                    "flip_pairs": [list(p) for p in self.flip_pairs]})
        if self.sigmas is not None:
            out["sigmas"] = list(self.sigmas)
        out["categories"] = list(self.categories)
        if self.keypoint_aliases:
            out["keypoint_aliases"] = dict(self.keypoint_aliases)
        return out


@lru_cache(maxsize=256)
def _name_table(kset: KeypointSet) -> dict[str, int]:
    """Matching key -> index of the shown keypoints, their model text and their aliases."""
    table: dict[str, int] = {}
    for i in kset.shown:
        table.setdefault(keypoint_key(kset.keypoints[i]), i)
    for i in kset.shown:
        table.setdefault(keypoint_key(kset.prompt_texts[i]), i)
    for alias, name in kset.keypoint_aliases:
        target = table.get(keypoint_key(name))
        if target is not None:
            table.setdefault(keypoint_key(alias), target)
    return table


class Vocabulary:
    """Keypoint sets with a category -> set index. Build with `default()`, `from_file()` or
    `from_data()`; the constructor validates."""

    def __init__(self, sets: Iterable[KeypointSet], source: str = "<memory>",
                 renamed: dict[str, str] | None = None):
        self._source = source
        self._renamed = dict(renamed or {})
        self._sets: dict[str, KeypointSet] = {}
        self._by_category: dict[str, KeypointSet] = {}
        for s in sets:
            _validate_set(s, source)
            if s.id in self._sets:
                raise VocabularyError(f"{source}: set id {s.id!r} is used twice; set ids must be unique")
            for c in s.categories:
                other = self._by_category.get(c)
                if other is not None:
                    where = "twice in" if other.id == s.id else f"in both {other.id!r} and"
                    raise VocabularyError(f"{source}: category {c!r} is listed {where} set {s.id!r}; "
                                          "a category may map to one keypoint set only")
                self._by_category[c] = s
            self._sets[s.id] = s

    # ---------------------------------------------------------------- construction
    @classmethod
    def default(cls) -> "Vocabulary":
        """The packaged vocabulary (data/keypoint_sets.json), loaded once per process."""
        return _default_vocabulary()

    @classmethod
    def from_file(cls, path: str | Path) -> "Vocabulary":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise VocabularyError(f"cannot read vocabulary file {str(path)!r}: {e}") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise VocabularyError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column "
                                  f"{e.colno}") from e
        return cls.from_data(data, source=str(path))

    @classmethod
    def from_data(cls, data: Any, source: str = "<data>") -> "Vocabulary":
        """From parsed JSON: ``{"sets": [...]}`` or a bare list of set entries."""
        renamed = {}
        if isinstance(data, dict):
            if "sets" not in data:
                raise VocabularyError(f"{source}: top-level object has no 'sets' list")
            entries = data["sets"]
            renamed = data.get("renamed_sets") or {}
            if not isinstance(renamed, dict):
                raise VocabularyError(f"{source}: 'renamed_sets' must map old ids to set ids")
        else:
            entries = data
        if not isinstance(entries, list):
            raise VocabularyError(f"{source}: 'sets' must be a list of keypoint-set objects, "
                                  f"got {type(entries).__name__}")
        return cls([_set_from_json(e, i, source) for i, e in enumerate(entries)], source=source,
                   renamed=renamed)

    # ---------------------------------------------------------------- queries
    def lookup(self, category: str) -> KeypointSet | None:
        """The set used by `category` (case, '_'/'-', spacing and simple plurals tolerated)."""
        key = category_key(category)
        found = self._by_category.get(key)
        if found is None:
            for singular in _singular_candidates(key):
                found = self._by_category.get(singular)
                if found is not None:
                    break
        return found

    def renamed(self) -> dict[str, str]:
        """Earlier set ids -> current ones."""
        return dict(self._renamed)

    def get(self, set_id: str) -> KeypointSet:
        """The set with this id (exact, else case-insensitive: "animal_in_ap10k" works too, else
        an earlier id of a renamed set: "swivel_chair")."""
        try:
            return self._sets[set_id]
        except KeyError:
            folded = [s for k, s in self._sets.items() if k.lower() == str(set_id).lower()]
            if len(folded) == 1:
                return folded[0]
            if self._renamed.get(set_id) in self._sets:  # an id this set had before
                return self._sets[self._renamed[set_id]]
            close = difflib.get_close_matches(str(set_id), list(self._sets), n=3)
            hint = f" (close matches: {', '.join(close)})" if close else ""
            raise KeyError(f"no keypoint set with id {set_id!r}{hint}; known ids: "
                           f"{', '.join(self._sets)}") from None

    def categories(self) -> list[str]:
        """All category names, in file order (grouped by set)."""
        return list(self._by_category)

    def sets(self) -> list[KeypointSet]:
        return list(self._sets.values())

    def suggest(self, category: str, n: int = 5) -> list[str]:
        """Known categories that look like `category` (for error messages)."""
        key = category_key(category)
        found = difflib.get_close_matches(key, list(self._by_category), n=n, cutoff=0.6)
        for singular in _singular_candidates(key):
            for c in difflib.get_close_matches(singular, list(self._by_category), n=n, cutoff=0.6):
                if c not in found:
                    found.append(c)
        return found[:n]

    def __contains__(self, category: object) -> bool:
        return isinstance(category, str) and self.lookup(category) is not None

    def __len__(self) -> int:
        return len(self._sets)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self._sets)} sets, {len(self._by_category)} categories, {self._source})"


@lru_cache(maxsize=1)
def _default_vocabulary() -> Vocabulary:
    return Vocabulary.from_file(DEFAULT_VOCABULARY_PATH)


# -------------------------------------------------------------------- parsing and validation
def _set_from_json(entry: Any, position: int, source: str) -> KeypointSet:
    where = f"{source}: set #{position}"
    if not isinstance(entry, dict):
        raise VocabularyError(f"{where} must be an object, got {type(entry).__name__}")
    if isinstance(entry.get("id"), str):
        where = f"{source}: set {entry['id']!r}"
    unknown = sorted(set(entry) - _SET_KEYS)
    if unknown:
        raise VocabularyError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_SET_KEYS)}")
    for required in ("id", "keypoints", "skeleton", "categories"):
        if required not in entry:
            raise VocabularyError(f"{where}: missing required key {required!r}")

    def strings(key: str) -> tuple[str, ...]:
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise VocabularyError(f"{where}: {key!r} must be a list of strings")
        return tuple(value)

    def pairs(key: str) -> tuple[tuple[int, int], ...]:
        value = entry.get(key, [])
        ok = isinstance(value, list) and all(
            isinstance(p, list) and len(p) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) for i in p) for p in value)
        if not ok:
            raise VocabularyError(f"{where}: {key!r} must be a list of [i, j] integer pairs")
        return tuple((p[0], p[1]) for p in value)

    sigmas = entry.get("sigmas")
    if sigmas is not None:
        if not isinstance(sigmas, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in sigmas):
            raise VocabularyError(f"{where}: 'sigmas' must be a list of numbers")
        sigmas = tuple(float(v) for v in sigmas)
    for key in ("id", "description", "source", "origin"):
        if key in entry and not isinstance(entry[key], str):
            raise VocabularyError(f"{where}: {key!r} must be a string")
    hidden = entry.get("hidden", [])
    if not isinstance(hidden, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                               for i in hidden):
        raise VocabularyError(f"{where}: 'hidden' must be a list of keypoint indices")
    aliases = entry.get("keypoint_aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in aliases.items()):
        raise VocabularyError(f"{where}: 'keypoint_aliases' must map names to keypoint names")
    texts = strings("keypoints")
    names = tuple(normalize_name(t) for t in texts)  # what users see: no surrounding spaces
    return KeypointSet(id=entry["id"], keypoints=names, skeleton=pairs("skeleton"),
                       flip_pairs=pairs("flip_pairs"), sigmas=sigmas,
                       categories=strings("categories"), description=entry.get("description", ""),
                       source=entry.get("source", ""), texts=texts if texts != names else (),
                       hidden=tuple(hidden), keypoint_aliases=tuple(aliases.items()),
                       origin=entry.get("origin", ""))


def _validate_set(s: KeypointSet, source: str) -> None:
    where = f"{source}: set {s.id!r}"
    if not isinstance(s.id, str) or not _ID_RE.match(s.id):
        raise VocabularyError(f"{where}: id must match [a-z0-9_]+")
    n = len(s.keypoints)
    if n == 0:
        raise VocabularyError(f"{where}: 'keypoints' is empty")
    for name in s.prompt_texts:
        if not isinstance(name, str) or not name.strip() or name.strip() != normalize_name(name):
            raise VocabularyError(f"{where}: keypoint name {name!r} is not in text form; write "
                                  f"{normalize_name(str(name))!r} (lower case, spaces, no '_')")
    if s.texts and (len(s.texts) != n or tuple(map(normalize_name, s.texts)) != s.keypoints):
        raise VocabularyError(f"{where}: 'texts' must give one model text per keypoint name")
    if any(not (0 <= i < n) for i in s.hidden) or len(set(s.hidden)) != len(s.hidden):
        raise VocabularyError(f"{where}: 'hidden' indices must be distinct and go from 0 to {n - 1}")
    shown = [keypoint_key(s.keypoints[i]) for i in s.shown]
    dupes = sorted({k for k in shown if shown.count(k) > 1})
    if dupes:
        raise VocabularyError(f"{where}: duplicate keypoint names {dupes}")
    for alias, name in s.keypoint_aliases:
        if keypoint_key(name) not in shown:
            raise VocabularyError(f"{where}: keypoint alias {alias!r} names {name!r}, which is not "
                                  "a shown keypoint of the set")
        if keypoint_key(alias) in shown and keypoint_key(alias) != keypoint_key(name):
            raise VocabularyError(f"{where}: keypoint alias {alias!r} is itself another keypoint "
                                  "of the set")
    for field in ("skeleton", "flip_pairs"):
        seen: set[frozenset[int]] = set()
        for i, j in getattr(s, field):
            if not (0 <= i < n and 0 <= j < n):
                raise VocabularyError(f"{where}: {field} link [{i}, {j}] is out of range; indices "
                                      f"go from 0 to {n - 1} ({n} keypoints)")
            if i == j:
                raise VocabularyError(f"{where}: {field} link [{i}, {j}] joins a keypoint to itself")
            if frozenset((i, j)) in seen:
                raise VocabularyError(f"{where}: {field} link [{i}, {j}] is listed twice")
            seen.add(frozenset((i, j)))
    flipped = [i for p in s.flip_pairs for i in p]
    if len(set(flipped)) != len(flipped):
        raise VocabularyError(f"{where}: a keypoint appears in more than one flip pair")
    if s.sigmas is not None:
        if len(s.sigmas) != n:
            raise VocabularyError(f"{where}: {len(s.sigmas)} sigmas for {n} keypoints; give one "
                                  "sigma per keypoint")
        if not all(v > 0 for v in s.sigmas):
            raise VocabularyError(f"{where}: sigmas must be positive")
    for c in s.categories:
        if not isinstance(c, str) or not c or c != category_key(c):
            raise VocabularyError(f"{where}: category {c!r} is not normalised; write "
                                  f"{category_key(str(c))!r} (lower case, spaces, no '_' or '-')")
