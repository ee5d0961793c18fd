"""The prompt grammar: one parser for the CLI, the ROS node and Python users.

Text form (whitespace and case do not matter; '_' reads as a space)::

    prompt   := clause (';' clause)*
    clause   := classes [':' keypoints]
    classes  := name (',' name)*
    keypoints:= name (',' name)*

    person                              one class, the vocabulary's keypoints for "person"
    cat, dog                            two classes; both use the "animal" set -> one group
    person: nose, left eye, right eye   exactly these keypoints, in this order
    person: nose, left eye; cat: nose, tail
    robot arm: base, elbow, gripper     unknown categories are fine when keypoints are given

JSON form (text starting with '{' or '['): one group object or a list of them::

    {"instances": ["person"], "keypoints": ["nose", "left eye"], "skeleton": [[0, 1]]}

"classes" is accepted for "instances"; "keypoints" and "skeleton" are optional (without
keypoints, each class uses its vocabulary set). `Prompt.to_json()` output is accepted too.

UniPose takes a list of instance classes and ONE keypoint list per forward pass, so classes
that need different keypoint lists are split into groups (`Prompt.groups`): the predictor runs
one keypoint pass per group. Classes with the same keypoint list share a group.

Skeletons: a group's skeleton is given explicitly (JSON / prompt_from_parts) or derived: the
links among its keypoints in the vocabulary set of the group's first class that has one.
Keypoint names that are not in that set just have no links.

Keypoint names of a class with a vocabulary set are read through that set: case, ' and ’,
and earlier names (the set's aliases: "hand: thumb base" is "thumb root") all give the set's
own name, and the model gets the set's text for it (`KeypointGroup.texts`). A set's hidden
keypoints (the car's two "none") are sent with the full set and left out of `keypoints`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from .configs import MAX_KEYPOINTS
from .configs import MAX_TEXT_SLOTS as MAX_CLASSES
from .vocabulary import KeypointSet, Vocabulary, keypoint_key, normalize_name

__all__ = ["KeypointGroup", "Prompt", "PromptError", "parse_prompt", "prompt_from_parts",
           "quote_for_message", "MAX_CLASSES", "MAX_KEYPOINTS"]

_EXAMPLES = "person, cat, dog, hand, face"
_GROUP_KEYS = {"instances", "classes", "keypoints", "skeleton", "set_id"}
_RESERVED = (",", ";", ":")  # characters a name must not contain to be written in text form

Link = tuple[int, int]
ECHO_LIMIT = 80  # characters of user text an error message repeats


def quote_for_message(text: Any, limit: int = ECHO_LIMIT) -> str:
    """``repr(text)``, cut after ``limit`` characters with the full length said: error messages
    (the CLI's, the ROS node's latched ~/active_prompt) must not echo a 100 kB prompt whole."""
    if not isinstance(text, str):
        shown = repr(text)
        return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(shown):,} characters)"
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


class PromptError(ValueError):
    """An invalid prompt. The message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class KeypointGroup:
    class_indices: tuple[int, ...]      # indices into Prompt.classes, ascending
    keypoints: tuple[str, ...]          # names users see (results, drawing, messages)
    skeleton: tuple[Link, ...]          # links as indices into `keypoints`
    set_id: str | None                  # vocabulary set id when `keypoints` is that full set
    # The model's keypoint text when it differs from `keypoints` (a set's verbatim text, hidden
    # keypoints included), and which of its slots `keypoints` are; empty = the same as keypoints.
    texts: tuple[str, ...] = ()
    shown: tuple[int, ...] = ()

    @property
    def model_texts(self) -> tuple[str, ...]:
        """The keypoint names the text encoder gets, in model slot order."""
        return self.texts or self.keypoints

    @property
    def model_slots(self) -> tuple[int, ...]:
        """The model slot of each entry of `keypoints`."""
        return self.shown or tuple(range(len(self.keypoints)))


@dataclass(frozen=True)
class Prompt:
    text: str = field(compare=False)    # the original text (not part of equality)
    classes: tuple[str, ...]            # all instance classes in prompt order (instance text slots)
    groups: tuple[KeypointGroup, ...]   # ordered by their first class
    # The vocabulary it was parsed with; canonical() needs it to know which skeletons re-derive.
    vocabulary: Vocabulary | None = field(default=None, compare=False, repr=False)

    def group_of(self, class_index: int) -> KeypointGroup:
        for group in self.groups:
            if class_index in group.class_indices:
                return group
        raise IndexError(f"class index {class_index} out of range (prompt has "
                         f"{len(self.classes)} classes)")

    def classes_of(self, group: KeypointGroup) -> tuple[str, ...]:
        return tuple(self.classes[i] for i in group.class_indices)

    def canonical(self) -> str:
        """One-line normalised text that re-parses to an equal Prompt (same vocabulary).

        Text form where it can express the prompt; compact JSON otherwise (names containing
        ',', ';' or ':', or explicit skeletons that differ from the vocabulary's).
        """
        text = self._text_form()
        if text is None:
            body = self.to_json()
            del body["text"]
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        return text

    def to_json(self) -> dict[str, Any]:
        """{"text", "classes", "groups": [{"instances", "keypoints", "skeleton", "set_id"}]}."""
        return {"text": self.text, "classes": list(self.classes),
                "groups": [{"instances": list(self.classes_of(g)), "keypoints": list(g.keypoints),
                            "skeleton": [list(link) for link in g.skeleton], "set_id": g.set_id}
                           for g in self.groups]}

    @classmethod
    def from_json(cls, data: Any, vocabulary: Vocabulary | None = None, *,
                  max_classes: int = MAX_CLASSES, max_keypoints: int = MAX_KEYPOINTS) -> "Prompt":
        """From `to_json()` output or any JSON prompt form (parsed, or as a JSON string)."""
        if isinstance(data, str):
            return parse_prompt(data, vocabulary, max_classes=max_classes,
                                max_keypoints=max_keypoints)
        vocab = vocabulary or Vocabulary.default()
        entries, order = _entries_from_json(data, vocab)
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str):
            text = json.dumps(data, ensure_ascii=False)
        return _build(text, entries, vocab, max_classes, max_keypoints, order)

    def _text_form(self) -> str | None:
        vocab = self.vocabulary or Vocabulary.default()
        names = self.classes + tuple(k for g in self.groups for k in g.keypoints)
        if any(c in name for name in names for c in _RESERVED):
            return None
        for g in self.groups:
            if g.skeleton != _derive_skeleton(self.classes_of(g), g.keypoints, vocab):
                return None
        clauses, i = [], 0
        while i < len(self.classes):  # one clause per run of consecutive classes in one group
            group = self.group_of(i)
            run = [self.classes[i]]
            while i + len(run) < len(self.classes) and (i + len(run)) in group.class_indices:
                run.append(self.classes[i + len(run)])
            clause = ", ".join(run)
            if group.set_id is None:  # set_id => every class of the group re-derives this list
                clause += ": " + ", ".join(group.keypoints)
            clauses.append(clause)
            i += len(run)
        text = "; ".join(clauses)
        return None if text[:1] in ("{", "[") else text


# ------------------------------------------------------------------------------- entry points
def parse_prompt(text: str, vocabulary: Vocabulary | None = None, *,
                 max_classes: int = MAX_CLASSES, max_keypoints: int = MAX_KEYPOINTS) -> Prompt:
    """Parse a text or JSON prompt (see the module docstring). Raises PromptError."""
    _check_limits(max_classes, max_keypoints)
    if not isinstance(text, str):
        raise PromptError(f"the prompt must be a string, got {type(text).__name__}. Pass text such "
                          "as 'person' or 'person: nose, left eye'")
    vocab = vocabulary or Vocabulary.default()
    stripped = text.strip()
    if not stripped:
        raise PromptError("the prompt is empty. Give at least one category, e.g. 'person', "
                          "'person, face' or 'person: nose, left eye'")
    if stripped[0] in "{[":
        try:
            data = json.loads(stripped)
        except ValueError as e:  # JSONDecodeError, or an integer too long to convert
            if not isinstance(e, json.JSONDecodeError):
                raise PromptError(f"the prompt starts with {stripped[0]!r}, so it is read as JSON, but "
                                  f"it is not usable JSON: {str(e)[:120]}") from None
            raise PromptError(
                f"the prompt starts with {stripped[0]!r}, so it is read as JSON, but it is not "
                f"valid JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos}). Fix the "
                "JSON, e.g. '{\"instances\": [\"person\"], \"keypoints\": [\"nose\"]}', or write "
                "the prompt as text, e.g. 'person: nose, left eye'") from None
        entries, order = _entries_from_json(data, vocab)
    else:
        entries, order = _entries_from_text(stripped, vocab), None
    return _build(text, entries, vocab, max_classes, max_keypoints, order)


def prompt_from_parts(classes: str | Sequence[str], keypoints: Sequence[str] | None = None,
                      skeleton: Sequence[Sequence[int]] | None = None,
                      vocabulary: Vocabulary | None = None, *, max_classes: int = MAX_CLASSES,
                      max_keypoints: int = MAX_KEYPOINTS) -> Prompt:
    """A prompt from Python values: classes, and optionally one keypoint list (+ skeleton) that
    all of them share. Without keypoints each class uses its vocabulary set."""
    _check_limits(max_classes, max_keypoints)
    vocab = vocabulary or Vocabulary.default()
    for label, value in (("classes", classes), ("keypoints", keypoints)):
        if isinstance(value, str) and any(c in value for c in _RESERVED):
            raise PromptError(f"prompt_from_parts: {label} {value!r} is one string with separators "
                              "in it. Pass a list of names, e.g. ['nose', 'left eye'], or parse "
                              "the text with parse_prompt()")
    group: dict[str, Any] = {"instances": [classes] if isinstance(classes, str) else _as_list(classes)}
    if keypoints is not None:
        group["keypoints"] = [keypoints] if isinstance(keypoints, str) else _as_list(keypoints)
    if skeleton is not None:
        links = _as_list(skeleton)
        group["skeleton"] = [_as_list(link) for link in links] if isinstance(links, list) else links
    entries = _entries_from_group(group, "prompt_from_parts", vocab, label="classes")
    prompt = _build("", entries, vocab, max_classes, max_keypoints, None)
    return Prompt(prompt.canonical(), prompt.classes, prompt.groups, vocab)


# ------------------------------------------------------------------------------- internals
@dataclass
class _Entry:
    """One class with its keypoint list, before grouping."""
    name: str
    keypoints: tuple[str, ...]
    skeleton: tuple[Link, ...] | None   # None: derive from the vocabulary
    where: str                          # for error messages
    texts: tuple[str, ...] = ()         # see KeypointGroup
    shown: tuple[int, ...] = ()

    @property
    def key(self) -> tuple:
        return self.keypoints, self.texts, self.shown


def _set_entry(name: str, kset: KeypointSet, where: str) -> _Entry:
    """A class with its set's full keypoint list (hidden keypoints sent, not shown)."""
    shown = kset.shown
    names = tuple(kset.keypoints[i] for i in shown)
    texts = kset.prompt_texts if kset.texts or kset.hidden else ()
    return _Entry(name, names, None, where, texts, shown if kset.hidden else ())


def _named_entry(name: str, keypoints: list[str], skeleton, where: str, vocab: Vocabulary) -> _Entry:
    """A class with the keypoints a user listed, read through the class's set when it has one."""
    kset = vocab.lookup(name)
    if kset is not None and kset.hidden and \
            [keypoint_key(k) for k in keypoints] == [keypoint_key(t) for t in kset.prompt_texts]:
        # every slot spelled out, hidden ones included (a dataset's own list, e.g. CarFusion's
        # 14 with both "none"): all are shown, so results keep the dataset's layout
        names = tuple(normalize_name(t) for t in kset.prompt_texts)
        return _Entry(name, names, skeleton, where, kset.prompt_texts if kset.texts else ())
    _check_unique_keypoints(keypoints, where)
    if kset is None:
        return _Entry(name, tuple(keypoints), skeleton, where)
    found = [kset.find(k) for k in keypoints]
    names = tuple(k if i is None else kset.keypoints[i] for k, i in zip(keypoints, found))
    if tuple(found) == kset.shown and skeleton in (None, kset.skeleton_for(names)):
        return _set_entry(name, kset, where)  # the whole set, spelled out
    texts = tuple(k if i is None else kset.prompt_texts[i] for k, i in zip(keypoints, found))
    _check_unique_keypoints(list(names), where)
    return _Entry(name, names, skeleton, where, texts if texts != names else ())


def names_for_message(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(quote_for_message(n) for n in list(names)[:most])
    return shown + (f", ... ({len(names) - most} more)" if len(names) > most else "")


def _check_limits(max_classes: int, max_keypoints: int) -> None:
    for name, value in (("max_classes", max_classes), ("max_keypoints", max_keypoints)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _as_list(value: Any) -> Any:
    # Tuples, numpy/array.array values (ROS message fields) become plain lists so JSON and Python
    # input share one validator; anything else is passed on for the validator to report.
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Sequence):
        return value
    return list(value)


def _unknown_category(name: str, vocab: Vocabulary, where: str) -> PromptError:
    close = vocab.suggest(name)
    hint = f" (close matches: {', '.join(close)})" if close else ""
    place = "" if where == quote_for_message(name) else f" (in {where})"  # a one-word prompt needs no place
    # examples from the vocabulary in use: a model with its own names only knows those
    examples = _EXAMPLES if vocab is Vocabulary.default() else ", ".join(vocab.categories()[:5])
    shown = name if len(name) <= ECHO_LIMIT else "cat"
    return PromptError(f"unknown category {quote_for_message(name)} and no keypoints given{place}. Give its "
                       f"keypoints ('{shown}: nose, tail') or use a known category, e.g. "
                       f"{examples}{hint}")


def _vocabulary_entries(names: list[str], vocab: Vocabulary, where: str) -> list[_Entry]:
    entries = []
    for name in names:
        kset = vocab.lookup(name)
        if kset is None:
            raise _unknown_category(name, vocab, where)
        entries.append(_set_entry(name, kset, where))
    return entries


def _entries_from_text(text: str, vocab: Vocabulary) -> list[_Entry]:
    entries: list[_Entry] = []
    clauses = text.split(";")
    for number, raw in enumerate(clauses, 1):
        where = (f"clause {number} ({quote_for_message(raw.strip())})" if len(clauses) > 1
                 else quote_for_message(raw.strip()))
        if not raw.strip():
            raise PromptError(f"clause {number} is empty (nothing between ';' separators). Remove "
                              "the extra ';'; clauses look like 'person; cat: nose, tail'")
        if raw.count(":") > 1:
            raise PromptError(f"{where} has more than one ':'. Write one 'classes: keypoints' "
                              "pair per clause and separate clauses with ';', e.g. "
                              "'person: nose; cat: tail'")
        head, colon, tail = raw.partition(":")
        if not head.strip():
            raise PromptError(f"{where} has no category before ':'. Put the category first, "
                              "e.g. 'person: nose, left eye'")
        names = [normalize_name(n) for n in head.split(",")]
        if "" in names:
            raise PromptError(f"empty category name in {where}. Remove the extra ','; categories "
                              "are separated by single commas, e.g. 'person, dog'")
        names = list(dict.fromkeys(names))  # the same class twice in a clause is one class
        if not colon:
            entries += _vocabulary_entries(names, vocab, where)
            continue
        if not tail.strip():
            raise PromptError(f"no keypoints after ':' in {where}. List them, e.g. "
                              f"'{names[0][:ECHO_LIMIT]}: nose, left eye', or drop the ':' to use the "
                              f"predefined keypoints of {quote_for_message(names[0])}")
        keypoints = [normalize_name(k) for k in tail.split(",")]
        if "" in keypoints:
            raise PromptError(f"empty keypoint name in {where}. Remove the extra ','; keypoints "
                              "are separated by single commas, e.g. 'person: nose, left eye'")
        entries += [_named_entry(n, keypoints, None, where, vocab) for n in names]
    return entries


def _check_unique_keypoints(keypoints: list[str], where: str) -> None:
    seen = set()
    for k in keypoints:
        if keypoint_key(k) in seen:
            raise PromptError(f"keypoint {quote_for_message(k)} is listed twice in {where} (an earlier "
                              "name of a keypoint counts as that keypoint). List each keypoint once")
        seen.add(keypoint_key(k))


def _entries_from_json(data: Any, vocab: Vocabulary) -> tuple[list[_Entry], list[str] | None]:
    """Entries of a JSON prompt, and the class order when the data gives one (to_json form)."""
    order = None
    if isinstance(data, dict) and "groups" in data:
        unknown = sorted(set(data) - {"groups", "classes", "text"})
        if unknown:
            raise PromptError(f"JSON prompt has unknown key(s) {unknown}. Allowed at the top "
                              "level next to 'groups': 'classes', 'text'")
        groups = data["groups"]
        if "classes" in data:
            order = _string_list(data["classes"], "JSON 'classes'", "classes")
    elif isinstance(data, dict):
        groups = [data]
    elif isinstance(data, list):
        groups = data
    else:
        raise PromptError(f"a JSON prompt must be an object or a list of objects, got "
                          f"{type(data).__name__}. Write e.g. '{{\"instances\": [\"person\"]}}'")
    if not isinstance(groups, list) or not groups:
        raise PromptError("the JSON prompt has no groups. Give at least one, e.g. "
                          "'[{\"instances\": [\"person\"], \"keypoints\": [\"nose\"]}]'")
    entries: list[_Entry] = []
    for number, group in enumerate(groups, 1):
        where = f"JSON group {number}" if len(groups) > 1 else "the JSON prompt"
        entries += _entries_from_group(group, where, vocab)
    return entries, order


def _string_list(value: Any, where: str, label: str) -> list[str]:
    if not isinstance(value, list):
        example = '["nose", "left eye"]' if label == "keypoints" else '["person", "dog"]'
        raise PromptError(f"{where}: {label!r} must be a list of strings, got "
                          f"{type(value).__name__} {quote_for_message(value)}. Write e.g. {label}: {example}")
    if not value:
        raise PromptError(f"{where}: {label!r} is empty. Give at least one name")
    names = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            example = '"nose"' if label == "keypoints" else '"person"'
            raise PromptError(f"{where}: {label}[{i}] must be a string, got "
                              f"{type(item).__name__} {quote_for_message(item)}. Quote the name, e.g. {example}")
        name = normalize_name(item)
        if not name:
            raise PromptError(f"{where}: {label}[{i}] is an empty name. Remove it or give a name")
        names.append(name)
    return names


def _entries_from_group(group: Any, where: str, vocab: Vocabulary,
                        label: str = "instances") -> list[_Entry]:
    if not isinstance(group, dict):
        raise PromptError(f"{where} must be an object like {{\"instances\": [\"person\"], "
                          f"\"keypoints\": [\"nose\"]}}, got {type(group).__name__}")
    unknown = sorted(set(group) - _GROUP_KEYS)
    if unknown:
        raise PromptError(f"{where} has unknown key(s) {unknown}. Allowed: instances (or classes), "
                          "keypoints, skeleton")
    if "instances" in group and "classes" in group:
        raise PromptError(f"{where} has both 'instances' and 'classes'. Use one of them")
    key = "instances" if "instances" in group else "classes"
    if key not in group:
        raise PromptError(f"{where} has no 'instances' (or 'classes') list. Add one, e.g. "
                          "{\"instances\": [\"person\"], \"keypoints\": [\"nose\"]}")
    names = list(dict.fromkeys(_string_list(group[key], where, label if key == "instances" else key)))
    if group.get("keypoints") is None:
        if group.get("skeleton") is not None:
            raise PromptError(f"{where} has a skeleton but no keypoints. Give the keypoints the "
                              "skeleton indexes, or drop the skeleton")
        return _vocabulary_entries(names, vocab, where)
    keypoints = _string_list(group["keypoints"], where, "keypoints")
    skeleton = None
    if group.get("skeleton") is not None:
        skeleton = _parse_skeleton(group["skeleton"], len(keypoints), where)
    return [_named_entry(n, keypoints, skeleton, where, vocab) for n in names]


def _parse_skeleton(value: Any, n: int, where: str) -> tuple[Link, ...]:
    if not isinstance(value, list):
        raise PromptError(f"{where}: 'skeleton' must be a list of [i, j] index pairs, got "
                          f"{type(value).__name__}. Write e.g. \"skeleton\": [[0, 1], [1, 2]]")
    links = []
    for k, link in enumerate(value):
        if not (isinstance(link, list) and len(link) == 2
                and all(isinstance(i, int) and not isinstance(i, bool) for i in link)):
            raise PromptError(f"{where}: skeleton link {k} ({link!r}) must be a pair of integer "
                              "indices into the keypoint list, e.g. [0, 1]")
        i, j = link
        for index in (i, j):
            if not 0 <= index < n:
                raise PromptError(f"{where}: skeleton link {k} {link} has index {index} out of "
                                  f"range; indices go from 0 to {n - 1} ({n} keypoints)")
        if i == j:
            raise PromptError(f"{where}: skeleton link {k} {link} joins keypoint {i} to itself. "
                              "Link two different keypoints")
        links.append((i, j))
    return tuple(links)


def _derive_skeleton(classes: Sequence[str], keypoints: Sequence[str],
                     vocab: Vocabulary) -> tuple[Link, ...]:
    for name in classes:
        kset = vocab.lookup(name)
        if kset is not None:
            return kset.skeleton_for(keypoints)
    return ()


def _group_set(classes: Sequence[str], entry: _Entry, vocab: Vocabulary) -> str | None:
    sets: set[KeypointSet | None] = {vocab.lookup(c) for c in classes}
    if len(sets) == 1:
        (kset,) = sets
        if kset is not None and entry.key == _set_entry("", kset, "").key:
            return kset.id
    return None


def _build(text: str, entries: list[_Entry], vocab: Vocabulary, max_classes: int,
           max_keypoints: int, order: list[str] | None) -> Prompt:
    # One entry per class: a repeated class must ask for the same keypoints.
    by_name: dict[str, _Entry] = {}
    for e in entries:
        first = by_name.get(e.name)
        if first is None:
            by_name[e.name] = e
            continue
        if first.key != e.key:
            raise PromptError(f"category {quote_for_message(e.name)} appears twice with different keypoints "
                              f"({first.where} and {e.where}). Give each category one keypoint "
                              "list, or use two different category names")
        if first.skeleton is not None and e.skeleton is not None and first.skeleton != e.skeleton:
            raise PromptError(f"category {quote_for_message(e.name)} appears twice with different skeletons "
                              f"({first.where} and {e.where}). Give it one skeleton")
        if first.skeleton is None and e.skeleton is not None:
            by_name[e.name] = e
    classes = list(by_name)
    if order is not None:
        if sorted(order) != sorted(classes):
            raise PromptError(f"the JSON 'classes' list [{names_for_message(order)}] does not match the "
                              f"classes of its groups [{names_for_message(classes)}]. List each class of "
                              "the groups exactly once")
        classes = order
    if len(classes) > max_classes:
        raise PromptError(f"too many categories: {len(classes)}, the limit is {max_classes}. "
                          "Split them over several prompts (or raise max_classes if your model "
                          "has more instance slots)")

    # Classes with the same keypoint list share a group (one keypoint pass of the model).
    members: dict[tuple, list[int]] = {}
    for index, name in enumerate(classes):
        members.setdefault(by_name[name].key, []).append(index)
    groups = []
    for key, indices in members.items():
        keypoints, texts, shown = key
        names = [classes[i] for i in indices]
        if len(texts or keypoints) > max_keypoints:
            raise PromptError(f"{len(texts or keypoints)} keypoints for {names_for_message(names)}, but "
                              f"the model takes at most {max_keypoints} keypoints per prompt. "
                              f"List at most {max_keypoints} keypoints for it")
        explicit = [by_name[n].skeleton for n in names if by_name[n].skeleton is not None]
        if len(set(explicit)) > 1:
            raise PromptError(f"categories {names_for_message(names)} share one keypoint list "
                              "but were given different skeletons. Give them one skeleton")
        skeleton = explicit[0] if explicit else _derive_skeleton(names, keypoints, vocab)
        groups.append(KeypointGroup(tuple(indices), keypoints, skeleton,
                                    _group_set(names, by_name[names[0]], vocab), texts, shown))
    groups.sort(key=lambda g: g.class_indices[0])
    return Prompt(text, tuple(classes), tuple(groups), vocab)
