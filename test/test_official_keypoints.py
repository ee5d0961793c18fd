"""The predefined keypoint sets send the official UniPose demo's keypoint text, verbatim.

The strings come from shared/reference/official_keypoint_text.json (the official demo's 28
predefined sets); these tests read that file, never a copy of it.
"""
import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch

from unipose_model import Predictor
from unipose_model.prompt import PromptError, parse_prompt
from unipose_model.text_encoder import HashTextEncoder
from unipose_model.vocabulary import Vocabulary

from shared_paths import REFERENCE

OFFICIAL_PATH = REFERENCE / "official_keypoint_text.json"


def official_sets():
    if not OFFICIAL_PATH.exists():
        pytest.skip(f"{OFFICIAL_PATH} not available")
    return json.loads(OFFICIAL_PATH.read_text())["sets"]


OFFICIAL_NAMES = list(json.loads(OFFICIAL_PATH.read_text())["sets"]) if OFFICIAL_PATH.exists() else []


class RecordingEncoder(HashTextEncoder):
    """Remembers every text handed to the encoder, in order (cache hits included)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def encode_texts(self, texts):
        self.seen.append(list(texts))
        return super().encode_texts(texts)


@pytest.fixture(scope="module")
def predictor():
    return Predictor("unipose_tiny", "reference", device="cpu", text_encoder=RecordingEncoder(),
                     box_threshold=0.0, short_side=128, max_size=192)


def sent_keypoint_texts(predictor, prompt):
    predictor.text_encoder.seen.clear()
    predictor.prompt_cache.clear()
    prepared = predictor.prepare_prompt(prompt)
    # first call: instance texts; then one call per keypoint group
    return prepared, predictor.text_encoder.seen[1:]


def test_there_are_28_official_sets_and_each_is_a_set_here():
    sets = official_sets()
    assert len(sets) == 28 and sum(len(s["keypoints"]) for s in sets.values()) == 602
    vocab = Vocabulary.default()
    for name in sets:
        assert vocab.get(name).id == name and vocab.get(name).origin == "official"


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_official_set_name_sends_the_official_text(predictor, name):
    """Prompt = the official demo's set name: the keypoint text is the JSON's `prompts`."""
    official = official_sets()[name]
    prepared, calls = sent_keypoint_texts(predictor, name)
    assert calls == [official["prompts"]]
    assert predictor.text_encoder.seen[0] == ["a photo of " + name.lower().replace("_", " ")]
    group = prepared.groups[0]
    # what users see: every keypoint but the car's two "none", names without surrounding spaces
    shown = [k.strip() for k in official["keypoints"] if k != "none"]
    assert list(group.keypoint_names) == shown
    features = predictor.text_encoder.encode_texts(official["prompts"])
    assert torch.equal(group.features.cpu(), features)


@pytest.mark.parametrize("friendly, name", [
    ("swivel chair", "swivelchair"), ("Swivel-Chair", "swivelchair"), ("office chair", "swivelchair"),
    ("short sleeved shirt", "short_sleeved_shirt"), ("short sleeve top", "short_sleeved_shirt"),
    ("t-shirt", "short_sleeved_shirt"), ("long sleeve outwear", "long_sleeved_outwear"),
    ("animal face", "animal_face"), ("cat face", "animal_face"), ("animal in AP10K", "animal_in_AP10K"),
    ("cat", "animal"), ("bird", "animal_in_AnimalKindom"), ("animal kingdom", "animal_in_AnimalKindom"),
    ("people", "person"), ("faces", "face"), ("hands", "hand"), ("fruit fly", "fly"), ("sedan", "car"),
    ("dining table", "table"), ("couch", "sofa"), ("dresses", "short_sleeved_dress")])
def test_friendly_names_send_the_official_text(predictor, friendly, name):
    _, calls = sent_keypoint_texts(predictor, friendly)
    assert calls == [official_sets()[name]["prompts"]]


def test_all_28_sets_in_one_prompt_send_each_official_text_once(predictor):
    sets = official_sets()
    _, calls = sent_keypoint_texts(predictor, ", ".join(sets))
    # sets with the same official text share one keypoint pass: 'animal' and 'animal_in_AP10K',
    # 'sling' and 'vest', 'sling_dress' and 'vest_dress'
    expected = list(dict.fromkeys(tuple(s["prompts"]) for s in sets.values()))
    assert [tuple(c) for c in calls] == expected and len(calls) == 25


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_skeleton_is_the_official_one_zero_based(name):
    """Official links are 1-based in five sets and 0-based in two; both index the same points."""
    official = official_sets()[name]
    kset = Vocabulary.default().get(name)
    links = official["skeleton"]
    if not links:  # the official file links nothing: the dataset's own links are kept
        return
    one_based = min(min(p) for p in links) >= 1 and max(max(p) for p in links) == len(kset)
    expected = [(i - 1, j - 1) for i, j in links] if one_based else [tuple(p) for p in links]
    assert list(kset.skeleton) == expected
    assert name in {"person", "animal_in_AP10K", "animal", "fly", "locust"} if one_based \
        else name in {"animal_in_AnimalKindom", "car"}
    hidden = set(kset.hidden)
    assert not any(i in hidden or j in hidden for i, j in kset.skeleton)


def test_person_skeleton_links_the_named_points():
    person = Vocabulary.default().get("person")
    named = {(person.keypoints[i], person.keypoints[j]) for i, j in person.skeleton}
    assert ("left ankle", "left knee") in named and ("left eye", "right eye") in named
    fly = Vocabulary.default().get("fly")
    named = {(fly.keypoints[i], fly.keypoints[j]) for i, j in fly.skeleton}
    assert ("eye left", "head") in named and ("abdomen", "thorax") in named


def test_subset_grammar_uses_official_text(predictor):
    _, calls = sent_keypoint_texts(predictor, "hand: wrist, thumb root")
    assert calls == [["a photo of wrist", "a photo of thumb root"]]
    # the typographic apostrophe of the official text is matched by a plain one
    _, calls = sent_keypoint_texts(predictor, "hand: thumb's first knuckle, Thumb's Second Knuckle")
    assert calls == [["a photo of thumb\u2019s first knuckle", "a photo of thumb's second knuckle"]]
    # the trailing space of the official Animal Kingdom text reaches the model
    prepared, calls = sent_keypoint_texts(predictor, "bird: ankle left, eye left")
    assert calls == [["a photo of ankle left ", "a photo of eye left"]]
    assert prepared.groups[0].keypoint_names == ("ankle left", "eye left")


@pytest.mark.parametrize("prompt, sent, shown", [
    ("hand: thumb base, wrist", ["thumb root", "wrist"], ["thumb root", "wrist"]),
    ("face: chin, nose tip", ["chin center", "nasal bridge 4"], ["chin center", "nasal bridge 4"]),
    ("car: front right wheel", ["right front wheel center"], ["right front wheel center"]),
    ("swivel chair: caster wheel 1", ["rotatingbase 1"], ["rotatingbase 1"]),
    ("fly: left wing, right eye", ["wing left", "eye right"], ["wing left", "eye right"]),
    ("bird: left ankle", ["ankle left "], ["ankle left"]),
])
def test_earlier_keypoint_names_are_aliases(predictor, prompt, sent, shown):
    prepared, calls = sent_keypoint_texts(predictor, prompt)
    assert calls == [["a photo of " + s for s in sent]]
    assert list(prepared.groups[0].keypoint_names) == shown


def test_an_alias_and_its_keypoint_together_are_one_keypoint_twice():
    with pytest.raises(PromptError, match="listed twice"):
        parse_prompt("hand: thumb base, thumb root")


def test_car_sends_both_none_and_shows_twelve(predictor):
    prepared, calls = sent_keypoint_texts(predictor, "car")
    assert calls[0].count("a photo of none") == 2 and len(calls[0]) == 14
    group = prepared.groups[0]
    assert len(group.keypoint_names) == 12 and "none" not in group.keypoint_names
    assert group.slots == (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12)
    image = cv2.imread(str(REFERENCE.parent / "data" / "samples" / "coco" / "000000000785.jpg"))
    if image is None:
        pytest.skip("sample image not available")
    instances = predictor.predict(image[:, :, ::-1].copy(), "car")
    assert instances and all(inst.keypoints.shape == (12, 3) for inst in instances)
    assert all(inst.keypoint_names == group.keypoint_names for inst in instances)
    # the shown keypoints are the model's slots 0-7 and 9-12 of the same 14-slot run
    full_group = dataclasses.replace(group, keypoint_names=tuple(f"slot {i}" for i in range(14)),
                                     slots=None)
    predictor.prompt_cache["car"] = dataclasses.replace(prepared, groups=[full_group])
    full = predictor.predict(image[:, :, ::-1].copy(), "car")
    predictor.prompt_cache.clear()
    assert len(full) == len(instances)
    for a, b in zip(instances, full):
        assert b.keypoints.shape == (14, 3)
        np.testing.assert_array_equal(a.keypoints, b.keypoints[list(group.slots)])


def test_spelled_out_full_set_is_the_set():
    p = parse_prompt("car: " + ", ".join(Vocabulary.default().get("car").keypoints[i]
                                          for i in Vocabulary.default().get("car").shown))
    assert p.groups[0].set_id == "car" and p.groups[0].model_texts.count("none") == 2
    again = parse_prompt(json.dumps(p.to_json()))
    assert again == p and parse_prompt(p.canonical()) == p


def test_every_shown_name_of_every_set_reparses_to_its_own_text():
    vocab = Vocabulary.default()
    for kset in vocab.sets():
        category = kset.categories[0]
        for i in kset.shown:
            group = parse_prompt(f"{category}: {kset.keypoints[i]}", vocab).groups[0]
            assert group.model_texts == (kset.prompt_texts[i],), (kset.id, i)


def test_old_set_ids_still_resolve():
    vocab = Vocabulary.default()
    for old, new in vocab.renamed().items():
        assert vocab.get(old).id == new
        assert vocab.lookup(old).id == new


def test_model_carried_vocabulary_keeps_its_own_names():
    """A model file's own vocabulary (the bundled fly model: 'left wing') is not rewritten."""
    own = Vocabulary.from_data([{"id": "fly", "keypoints": ["head", "left wing", "right wing"],
                                 "skeleton": [[0, 1]], "categories": ["fly"]}])
    group = parse_prompt("fly", own).groups[0]
    assert group.model_texts == ("head", "left wing", "right wing") and group.texts == ()
    assert parse_prompt("fly: left wing", own).groups[0].model_texts == ("left wing",)


def test_unknown_categories_keep_free_keypoint_text():
    group = parse_prompt("robot arm: Base, Thumb Root").groups[0]
    assert group.model_texts == ("base", "thumb root") and group.set_id is None
    np.testing.assert_equal(len(group.keypoints), 2)


def test_car_spelled_out_with_both_none_keeps_all_14_slots(predictor):
    """A dataset's own list (CarFusion's 14, as UniKPT files and unipose-eval prompts give it)
    keeps the dataset's layout: all 14 results, so they line up with the ground truth."""
    texts = official_sets()["car"]["keypoints"]
    prepared, calls = sent_keypoint_texts(predictor, json.dumps({"instances": ["car"], "keypoints": texts}))
    assert calls == [official_sets()["car"]["prompts"]]
    assert len(prepared.groups[0].keypoint_names) == 14 and prepared.groups[0].slots is None
    with pytest.raises(PromptError, match="'none' is listed twice"):
        parse_prompt("robot: none, none")
