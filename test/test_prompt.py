"""The prompt grammar: parsing, grouping per keypoint list, canonical form and error messages."""
import json

import pytest

from unipose_model.prompt import (KeypointGroup, Prompt, PromptError, parse_prompt,
                                  prompt_from_parts)
from unipose_model.vocabulary import Vocabulary

COCO = Vocabulary.default().get("person")


def only_group(prompt):
    assert len(prompt.groups) == 1
    return prompt.groups[0]


# ------------------------------------------------------------------------------ text form
def test_single_known_category_uses_its_set():
    p = parse_prompt("person")
    assert p.classes == ("person",)
    g = only_group(p)
    assert g == KeypointGroup((0,), COCO.keypoints, COCO.skeleton, "person")
    assert len(g.keypoints) == 17 and g.keypoints[0] == "nose"
    assert len(g.skeleton) == 19


def test_classes_with_different_sets_get_separate_groups():
    # X-Pose issue #38: the face must not get the person keypoints.
    p = parse_prompt("person, face")
    assert p.classes == ("person", "face")
    assert [(g.class_indices, len(g.keypoints), g.set_id) for g in p.groups] == [
        ((0,), 17, "person"), ((1,), 68, "face")]
    assert p.group_of(1).keypoints[8] == "chin center"


def test_classes_with_the_same_set_share_a_group():
    p = parse_prompt("cat, dog")
    g = only_group(p)
    assert g.class_indices == (0, 1) and g.set_id == "animal" and len(g.keypoints) == 17
    assert p.classes_of(g) == ("cat", "dog")


def test_interleaved_classes_keep_prompt_order():
    p = parse_prompt("cat, face, dog")
    assert p.classes == ("cat", "face", "dog")
    assert [g.class_indices for g in p.groups] == [(0, 2), (1,)]
    assert p.group_of(2) is p.groups[0]


def test_explicit_keypoints_get_coco_links_among_them():
    p = parse_prompt("person: nose, left eye, right eye")
    g = only_group(p)
    assert g.keypoints == ("nose", "left eye", "right eye")
    # COCO links left eye-right eye, nose-left eye, nose-right eye (1-based [2,3], [1,2], [1,3]).
    assert g.skeleton == ((1, 2), (0, 1), (0, 2))
    assert g.set_id is None


def test_explicit_keypoints_keep_the_given_order():
    g = only_group(parse_prompt("person: right eye, nose"))
    assert g.keypoints == ("right eye", "nose")
    assert g.skeleton == ((1, 0),)


def test_free_keypoint_names_are_allowed_without_links():
    g = only_group(parse_prompt("person: nose, belly button, left eye"))
    assert g.keypoints == ("nose", "belly button", "left eye")
    assert g.skeleton == ((0, 2),)


def test_unknown_category_with_keypoints_is_fine():
    p = parse_prompt("robot arm: base, elbow, gripper")
    assert p.classes == ("robot arm",)
    assert only_group(p) == KeypointGroup((0,), ("base", "elbow", "gripper"), (), None)


def test_several_clauses():
    p = parse_prompt("person: nose, left eye; cat: nose, tail")
    assert p.classes == ("person", "cat")
    assert [(g.class_indices, g.keypoints, g.skeleton) for g in p.groups] == [
        ((0,), ("nose", "left eye"), ((0, 1),)),
        ((1,), ("nose", "tail"), ())]  # AP-10K has no "tail" point, so no link


def test_classes_sharing_explicit_keypoints():
    p = parse_prompt("cat, dog: nose")
    assert only_group(p) == KeypointGroup((0, 1), ("nose",), (), None)


def test_same_keypoint_list_in_two_clauses_is_one_group():
    p = parse_prompt("robot: nose, left eye; person: nose, left eye")
    g = only_group(p)
    assert g.class_indices == (0, 1)
    assert g.skeleton == ((0, 1),)  # from the first class of the group that has a set


def test_full_set_written_out_is_the_set():
    text = "person: " + ", ".join(COCO.keypoints)
    assert parse_prompt(text) == parse_prompt("person")


def test_whitespace_case_and_underscores_are_normalised():
    p = parse_prompt("  PERSON :  Nose ,LEFT_eye  ")
    assert p.classes == ("person",)
    assert only_group(p).keypoints == ("nose", "left eye")
    assert p.text == "  PERSON :  Nose ,LEFT_eye  "


def test_duplicate_classes_are_merged():
    assert parse_prompt("person, Person").classes == ("person",)
    assert parse_prompt("cat; cat").classes == ("cat",)
    assert parse_prompt("cat: nose; cat: nose").classes == ("cat",)


def test_plural_and_spelling_variants_resolve():
    p = parse_prompt("Cats; Swivel-Chair")
    assert p.classes == ("cats", "swivel-chair")  # the model sees the text as written
    assert [g.set_id for g in p.groups] == ["animal", "swivelchair"]


def test_custom_vocabulary():
    vocab = Vocabulary.from_data([{"id": "widget", "keypoints": ["top", "bottom"],
                                   "skeleton": [[0, 1]], "categories": ["widget"]}])
    p = parse_prompt("widget", vocab)
    assert only_group(p) == KeypointGroup((0,), ("top", "bottom"), ((0, 1),), "widget")
    assert parse_prompt(p.canonical(), vocab) == p
    with pytest.raises(PromptError, match="unknown category 'person'"):
        parse_prompt("person", vocab)


# ------------------------------------------------------------------------------ JSON form
def test_json_object():
    p = parse_prompt('{"instances": ["Person"], "keypoints": ["nose", "left eye"], '
                     '"skeleton": [[1, 0]]}')
    assert p.classes == ("person",)
    assert only_group(p) == KeypointGroup((0,), ("nose", "left eye"), ((1, 0),), None)


def test_json_list_classes_synonym_and_derived_parts():
    p = parse_prompt('[{"classes": ["person"]}, {"instances": ["cat"], "keypoints": ["nose", "left eye"]}]')
    assert p.classes == ("person", "cat")
    assert p.groups[0].set_id == "person"
    assert p.groups[1].skeleton == ((1, 0),)  # AP-10K link [0, 2] = left eye - nose


def test_json_equals_text_form():
    assert parse_prompt('{"instances": ["person", "face"]}') == parse_prompt("person, face")


def test_to_json_from_json_round_trip():
    p = parse_prompt("cat; face; dog, robot: nose, tail; person")
    data = p.to_json()
    assert data["classes"] == ["cat", "face", "dog", "robot", "person"]
    assert [g["set_id"] for g in data["groups"]] == ["animal", "face", None, "person"]
    assert data["groups"][2] == {"instances": ["dog", "robot"], "keypoints": ["nose", "tail"],
                                 "skeleton": [], "set_id": None}
    again = Prompt.from_json(json.loads(json.dumps(data)))
    assert again == p and again.text == p.text
    assert Prompt.from_json(json.dumps(data)) == p
    assert parse_prompt(json.dumps(data)) == p


@pytest.mark.parametrize("text", [
    "person",
    "person, face",
    "cat, dog",
    "  Cat ,DOG ",
    "cat, face, dog",
    "person: nose, left eye, right eye",
    "person: nose, left eye; cat: nose, tail",
    "cat, dog: nose",
    "robot arm: base, elbow, gripper",
    "robot: nose, left eye; person: nose, left eye",
    "Swivel_Chair; T-Shirt; hand",
    "person; robot: " + ", ".join(COCO.keypoints),
    '{"instances": ["person"], "keypoints": ["nose", "left eye"], "skeleton": [[1, 0]]}',
    '{"instances": ["person"], "keypoints": ["nose", "left eye"], "skeleton": []}',
    '[{"instances": ["a, b"], "keypoints": ["x: y"]}, {"instances": ["face"]}]',
    '{"instances": ["{weird}"], "keypoints": ["p"]}',
])
def test_canonical_round_trip(text):
    p = parse_prompt(text)
    canonical = p.canonical()
    assert "\n" not in canonical
    assert parse_prompt(canonical) == p
    assert parse_prompt(canonical).canonical() == canonical


@pytest.mark.parametrize("text, canonical", [
    ("  Cat ,DOG ", "cat, dog"),
    ("person, face", "person; face"),
    ("cat, face, dog", "cat; face; dog"),
    ("Person: Nose , Left_Eye", "person: nose, left eye"),
    ("cat: nose; dog: nose", "cat, dog: nose"),
    ("person: " + ", ".join(COCO.keypoints), "person"),
])
def test_canonical_text(text, canonical):
    assert parse_prompt(text).canonical() == canonical


def test_canonical_falls_back_to_json_for_custom_skeletons():
    p = parse_prompt('{"instances": ["person"], "keypoints": ["nose", "left eye"], "skeleton": []}')
    assert p.canonical().startswith("{")
    assert json.loads(p.canonical())["groups"][0]["skeleton"] == []


# ------------------------------------------------------------------------------ programmatic
def test_prompt_from_parts():
    assert prompt_from_parts("person") == parse_prompt("person")
    assert prompt_from_parts(["cat", "dog"]) == parse_prompt("cat, dog")
    p = prompt_from_parts(("robot",), ("base", "tip"), [(0, 1)])
    assert only_group(p) == KeypointGroup((0,), ("base", "tip"), ((0, 1),), None)
    assert p.text == p.canonical()
    assert prompt_from_parts(["person"], ["nose", "left eye"]) == parse_prompt("person: nose, left eye")


@pytest.mark.parametrize("args, message", [
    (("person, dog",), "one string with separators"),
    (([],), "'classes' is empty"),
    ((["person", 3],), "classes\\[1\\] must be a string, got int 3"),
    ((["robot"], ["a", "b"], [(0, 2)]), "index 2 out of range"),
    ((["robot"], None, [(0, 1)]), "skeleton but no keypoints"),
])
def test_prompt_from_parts_errors(args, message):
    with pytest.raises(PromptError, match=message):
        prompt_from_parts(*args)


def test_group_of_out_of_range():
    with pytest.raises(IndexError):
        parse_prompt("person").group_of(1)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("text, problem, fix", [
    ("", "the prompt is empty", "Give at least one category, e.g. 'person'"),
    ("   \n ", "the prompt is empty", "Give at least one category"),
    ("person,,dog", "empty category name", "Remove the extra ','"),
    ("person, dog,", "empty category name", "Remove the extra ','"),
    (": nose", "no category before ':'", "Put the category first, e.g. 'person: nose, left eye'"),
    ("person:", "no keypoints after ':'", "drop the ':' to use the predefined keypoints of 'person'"),
    ("person: nose,, left eye", "empty keypoint name", "Remove the extra ','"),
    ("person;;cat", "clause 2 is empty", "Remove the extra ';'"),
    ("person: nose: eye", "more than one ':'", "separate clauses with ';'"),
    ("person: nose, Nose", "keypoint 'nose' is listed twice", "List each keypoint once"),
    ("person; person: nose", "'person' appears twice with different keypoints",
     "Give each category one keypoint list"),
    ("spaceship", "unknown category 'spaceship' and no keypoints given",
     "Give its keypoints ('spaceship: nose, tail') or use a known category, e.g. person, cat, dog, hand, face"),
    ("persn", "unknown category 'persn'", "(close matches: person"),
    ("cat, spaceship", "unknown category 'spaceship'", "(in 'cat, spaceship')"),
    ('{"instances": ["person"', "not valid JSON: Expecting ',' delimiter at line 1 column 24",
     "Fix the JSON"),
    ('[1, 2', "not valid JSON", "write the prompt as text"),
    ('{"instances": ["person", 3]}', "instances[1] must be a string, got int 3", 'Quote the name'),
    ('{"instances": ["x"], "keypoints": ["a", 7]}', "keypoints[1] must be a string, got int 7",
     'e.g. "nose"'),
    ('{"instances": "person"}', "'instances' must be a list of strings, got str",
     'e.g. instances: ["person", "dog"]'),
    ('{"instances": ["x"], "keypoints": ["a", "b", "c"], "skeleton": [[0, 5]]}',
     "skeleton link 0 [0, 5] has index 5 out of range", "indices go from 0 to 2 (3 keypoints)"),
    ('{"instances": ["x"], "keypoints": ["a", "b"], "skeleton": [[0, -1]]}',
     "index -1 out of range", "indices go from 0 to 1"),
    ('{"instances": ["x"], "keypoints": ["a", "b"], "skeleton": [[0, 1, 1]]}',
     "skeleton link 0 ([0, 1, 1]) must be a pair", "e.g. [0, 1]"),
    ('{"instances": ["x"], "keypoints": ["a", "b"], "skeleton": [[1, 1]]}',
     "joins keypoint 1 to itself", "Link two different keypoints"),
    ('{"instances": ["x"], "keypoints": ["a"], "skeleton": {"0": 1}}',
     "'skeleton' must be a list of [i, j] index pairs", 'e.g. "skeleton": [[0, 1], [1, 2]]'),
    ('{"instance": ["person"]}', "unknown key(s) ['instance']", "Allowed: instances (or classes)"),
    ('{"keypoints": ["nose"]}', "has no 'instances' (or 'classes') list", "Add one"),
    ('{"instances": ["a"], "classes": ["b"]}', "both 'instances' and 'classes'", "Use one of them"),
    ("[]", "the JSON prompt has no groups", "Give at least one"),
    ("[1]", "must be an object", '{"instances": ["person"]'),
    ('[{"instances": ["cat"]}, {"instances": ["spaceship"]}]',
     "unknown category 'spaceship' and no keypoints given (in JSON group 2)", "Give its keypoints"),
])
def test_error_messages_name_problem_and_fix(text, problem, fix):
    with pytest.raises(PromptError) as info:
        parse_prompt(text)
    message = str(info.value)
    assert problem in message and fix in message, message


def test_too_many_classes():
    with pytest.raises(PromptError) as info:
        parse_prompt("a, b, c, d: x", max_classes=3)
    assert "too many categories: 4, the limit is 3" in str(info.value)
    assert "Split them over several prompts" in str(info.value)
    assert len(parse_prompt(", ".join(f"c{i}" for i in range(350)) + ": x").classes) == 350
    with pytest.raises(PromptError, match="too many categories: 351, the limit is 350"):
        parse_prompt(", ".join(f"c{i}" for i in range(351)) + ": x")


def test_too_many_keypoints():
    with pytest.raises(PromptError) as info:
        parse_prompt("robot: " + ", ".join(f"joint {i}" for i in range(70)))
    message = str(info.value)
    assert "70 keypoints for 'robot'" in message
    assert "at most 68 keypoints per prompt" in message and "List at most 68 keypoints" in message
    assert len(only_group(parse_prompt("face")).keypoints) == 68  # the limit itself is fine
    with pytest.raises(PromptError, match="3 keypoints for 'a'.*at most 2"):
        parse_prompt("a: x, y, z", max_keypoints=2)


def test_non_string_prompt():
    with pytest.raises(PromptError, match="must be a string, got int"):
        parse_prompt(5)


def test_bad_limits_are_programming_errors():
    with pytest.raises(ValueError, match="max_keypoints must be a positive integer"):
        parse_prompt("person", max_keypoints=0)


def test_prompt_error_is_a_value_error():
    assert issubclass(PromptError, ValueError)
