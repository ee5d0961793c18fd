"""The keypoint vocabulary: packaged data, lookups and validation of malformed files."""
import ast
import json
import re
from pathlib import Path

import pytest

from unipose_model.vocabulary import (DEFAULT_VOCABULARY_PATH, KeypointSet, Vocabulary,
                                      VocabularyError, category_key, normalize_name)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLES = SHARED / "samples"

# AP-10K's 54 species, as listed in the dataset's annotation categories.
AP10K_SPECIES = [
    "antelope", "argali sheep", "bison", "buffalo", "cow", "sheep", "arctic fox", "dog", "fox", "wolf",
    "beaver", "alouatta", "monkey", "noisy night monkey", "spider monkey", "uakari", "deer", "moose",
    "hamster", "elephant", "horse", "zebra", "bobcat", "cat", "cheetah", "jaguar", "king cheetah",
    "leopard", "lion", "panther", "snow leopard", "tiger", "giraffe", "hippo", "chimpanzee", "gorilla",
    "orangutan", "rabbit", "skunk", "mouse", "rat", "otter", "weasel", "raccoon", "rhino", "marmot",
    "squirrel", "pig", "mole", "black bear", "brown bear", "panda", "polar bear", "bat"]

CLOTHING = {"short_sleeved_shirt": 25, "long_sleeved_shirt": 33, "short_sleeved_outwear": 31,
            "long_sleeved_outwear": 39, "vest": 15, "sling": 15, "shorts": 10, "trousers": 14,
            "skirt": 8, "short_sleeved_dress": 29, "long_sleeved_dress": 37, "vest_dress": 19,
            "sling_dress": 19}


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.default()


def load_samples(relative):
    path = SAMPLES / relative
    if not path.exists():
        pytest.skip(f"shared sample data not found: {path}")
    return json.loads(path.read_text())


def undirected(links):
    return {frozenset(link) for link in links}


def mirrored(name):
    """left <-> right, also inside words: the official furniture text has "legs righttopcorner"."""
    return re.sub("left|right", lambda m: "right" if m.group(0) == "left" else "left", name)


# ------------------------------------------------------------------------------ packaged data
@pytest.mark.parametrize("set_id, count", [
    ("person", 17), ("face", 68), ("hand", 21), ("animal", 17), ("animal_in_AnimalKindom", 23),
    ("animal_in_AP10K", 17), ("animal_face", 9), ("fly", 32), ("locust", 35), ("car", 14),
    ("chair", 10), ("table", 8), ("bed", 10), ("sofa", 14), ("swivelchair", 13), *CLOTHING.items()])
def test_set_sizes(vocab, set_id, count):
    assert len(vocab.get(set_id).keypoints) == count


def test_all_thirteen_clothing_classes_resolve(vocab):
    for set_id in CLOTHING:
        assert vocab.lookup(set_id).id == set_id  # the official demo's name
        assert vocab.lookup(set_id.replace("_", " ")).id == set_id
        # the names of earlier releases ("short sleeve top") still reach the set
        assert vocab.lookup(set_id.replace("sleeved", "sleeve")).id == set_id
    assert vocab.lookup("short sleeve top").id == "short_sleeved_shirt"  # DeepFashion2's name
    assert vocab.lookup("T-Shirt").id == "short_sleeved_shirt"


def test_person_is_coco(vocab):
    person = vocab.get("person")
    assert person.keypoints[:6] == ("nose", "left eye", "right eye", "left ear", "right ear",
                                    "left shoulder")
    assert len(person.skeleton) == 19
    assert len(person.sigmas) == 17 and person.sigmas[0] == pytest.approx(0.026)
    coco = load_samples("coco/test_coco.json")["categories"][0]
    assert [normalize_name(k) for k in coco["keypoints"]] == list(person.keypoints)
    assert person.skeleton == tuple((i - 1, j - 1) for i, j in coco["skeleton"])  # COCO is 1-based


def test_all_ap10k_species_map_to_animal(vocab):
    assert len(AP10K_SPECIES) == 54 == len(set(AP10K_SPECIES))
    for species in AP10K_SPECIES + ["animal", "mammal", "quadruped"]:
        assert vocab.lookup(species).id == "animal", species


def test_ap10k_species_list_matches_dataset(vocab):
    categories = load_samples("ap10k/test_ap10k.json")["categories"]
    assert sorted(c["name"] for c in categories) == sorted(AP10K_SPECIES)
    animal = vocab.get("animal")
    assert [normalize_name(k) for k in categories[0]["keypoints"]] == list(animal.keypoints)
    assert animal.skeleton == tuple((i - 1, j - 1) for i, j in categories[0]["skeleton"])


def test_face_has_the_official_68_names_and_the_300w_contours(vocab):
    face = vocab.get("face")
    assert len(set(face.keypoints)) == 68
    assert face.keypoints[:2] == ("right cheekbone 1", "right cheekbone 2")
    assert face.keypoints[8] == "chin center"
    assert face.keypoints[17] == "right eyebrow 1" and face.keypoints[26] == "left eyebrow 5"
    assert not any("kpt" in k for k in face.keypoints)
    # the official file links nothing; the 300-W contours are kept (same index layout)
    assert (0, 1) in face.skeleton and (41, 36) in face.skeleton  # jaw chained, eye contour closed
    # names of earlier releases resolve to the official ones
    assert face.keypoints[face.index("chin")] == "chin center"
    assert face.index("right cheek contour 1") == 0


def test_mp100_skeletons_match_the_dataset_entries(vocab):
    categories = {c["name"]: c for c in load_samples("mp100/mp100_split1_test_2per_cat.json")["categories"]}
    for mp_name, set_id in [("long_sleeved_outwear", "long_sleeved_outwear"),
                            ("short_sleeved_dress", "short_sleeved_dress"), ("bed", "bed"),
                            ("swivelchair", "swivelchair"), ("alpaca_face", "animal_face")]:
        kset = vocab.get(set_id)
        assert len(categories[mp_name]["keypoints"]) == len(kset.keypoints), set_id
        assert undirected(categories[mp_name]["skeleton"]) == undirected(kset.skeleton), set_id


# The official long-sleeved-outwear text names slots 1 and 3 "lower right center neckline" and
# "upper right neckline", against "upper left neckline" (5) and "lower left center neckline" (33):
# the words of 1 and 3 are swapped. The flip pairs are DeepFashion2's slots (1<->5, 3<->33).
OFFICIAL_TEXT_QUIRKS = {("long_sleeved_outwear", 1, 5), ("long_sleeved_outwear", 3, 33)}


def test_flip_pairs_swap_left_and_right_names(vocab):
    for kset in vocab.sets():
        for i, j in kset.flip_pairs:
            a, b = kset.keypoints[i], kset.keypoints[j]
            if kset.id == "table" or kset.id == "horse10":  # numbered or near/off: no side words
                assert a != b
                continue
            if (kset.id, i, j) in OFFICIAL_TEXT_QUIRKS:
                continue
            # numbers may run across the two sides (official face: right eyebrow 1 <-> left eyebrow 5)
            unnumbered = lambda name: re.sub(r" \d+$", "", name)
            assert mirrored(unnumbered(a)) == unnumbered(b), (kset.id, i, j)


def test_every_set_is_valid_and_round_trips(vocab):
    data = json.loads(DEFAULT_VOCABULARY_PATH.read_text())
    assert data["version"] == 2
    again = Vocabulary.from_data({"sets": [s.to_json() for s in vocab.sets()]})
    assert again.sets() == vocab.sets()
    assert len(vocab.categories()) == len(set(vocab.categories()))
    for kset in vocab.sets():
        assert kset.keypoints and kset.categories and kset.source, kset.id
        assert all(0 <= i < len(kset.keypoints) for link in kset.skeleton for i in link)


def test_default_is_cached():
    assert Vocabulary.default() is Vocabulary.default()


# ------------------------------------------------------------------------------ lookups
@pytest.mark.parametrize("text, set_id", [
    ("Cats", "animal"), ("swivel_chair", "swivelchair"), ("Swivel-Chair", "swivelchair"),
    ("swivelchair", "swivelchair"), ("animal_in_AP10K", "animal_in_AP10K"),
    ("animal_in_AnimalKindom", "animal_in_AnimalKindom"), ("animal kingdom", "animal_in_AnimalKindom"),
    ("  Polar   Bears ", "animal"), ("wolves", "animal"), ("mice", "animal"), ("puppies", "animal"),
    ("people", "person"), ("Women", "person"), ("buses", "car"), ("dresses", "short_sleeved_dress"),
    ("shorts", "shorts"), ("HANDS", "hand"), ("animal face", "animal_face"), ("cat face", "animal_face"),
    ("birds", "animal_in_AnimalKindom"), ("office chairs", "swivelchair"), ("macaque", "macaque")])
def test_lookup_is_forgiving(vocab, text, set_id):
    assert vocab.lookup(text).id == set_id


@pytest.mark.parametrize("text", ["spaceship", "", "   ", "robot arm"])
def test_lookup_unknown_is_none(vocab, text):
    assert vocab.lookup(text) is None


def test_normalisation_helpers():
    assert normalize_name("  Left_EYE  ") == "left eye"
    assert normalize_name("t-shirt") == "t-shirt"
    assert category_key("Swivel-Chair") == "swivel chair"


def test_suggest(vocab):
    assert "person" in vocab.suggest("persn")
    assert "chair" in vocab.suggest("chiar")
    assert vocab.suggest("qqqqqqqq") == []
    assert len(vocab.suggest("cat", n=2)) <= 2


def test_get_unknown_id_names_close_ids(vocab):
    with pytest.raises(KeyError, match="no keypoint set with id 'persn'.*person"):
        vocab.get("persn")


def test_subset_keeps_order_and_reindexes(vocab):
    sub = vocab.get("person").subset(["right eye", "nose", "Left_Eye"])
    assert sub.keypoints == ("right eye", "nose", "left eye")
    assert undirected(sub.skeleton) == undirected([(0, 2), (1, 2), (1, 0)])
    assert sub.skeleton == ((2, 0), (1, 2), (1, 0))  # COCO order and orientation, reindexed
    assert sub.flip_pairs == ((2, 0),)
    assert sub.sigmas == (0.025, 0.026, 0.025)
    with pytest.raises(ValueError, match="'belly'"):
        vocab.get("person").subset(["nose", "belly"])


def test_skeleton_for_ignores_unknown_names(vocab):
    person = vocab.get("person")
    assert person.skeleton_for(["nose", "belly button", "left eye"]) == ((0, 2),)
    assert person.skeleton_for(person.keypoints) == person.skeleton
    assert person.index("Left_Eye") == 1


# ------------------------------------------------------------------------------ validation
def entry(**overrides):
    base = {"id": "widget", "keypoints": ["top", "bottom", "left side"], "skeleton": [[0, 1]],
            "categories": ["widget"]}
    base.update(overrides)
    return base


@pytest.mark.parametrize("bad, message", [
    (entry(keypoints=["top", "top"]), "duplicate keypoint names"),
    (entry(skeleton=[[0, 3]]), r"skeleton link \[0, 3\] is out of range"),
    (entry(skeleton=[[1, 1]]), "joins a keypoint to itself"),
    (entry(flip_pairs=[[0, 9]]), r"flip_pairs link \[0, 9\] is out of range"),
    (entry(sigmas=[0.1, 0.1]), "2 sigmas for 3 keypoints"),
    (entry(keypoints=["Top", "bottom"]), "not in text form"),
    (entry(keypoints=["left_eye"]), "'left eye'"),
    (entry(categories=["Swivel-Chair"]), "'swivel chair'"),
    (entry(skeletton=[]), r"unknown key\(s\) \['skeletton'\]"),
    (entry(keypoints="top"), "'keypoints' must be a list of strings"),
    (entry(skeleton=[[0, "1"]]), "integer pairs"),
    ({"id": "widget", "keypoints": ["a"], "categories": []}, "missing required key 'skeleton'"),
])
def test_malformed_entries_are_named(bad, message):
    with pytest.raises(VocabularyError, match=message) as info:
        Vocabulary.from_data({"sets": [bad]}, source="mine.json")
    assert "mine.json" in str(info.value)


def test_category_in_two_sets_is_rejected():
    sets = [entry(), entry(id="gadget", categories=["gizmo", "widget"])]
    with pytest.raises(VocabularyError, match="'widget' is listed in both 'widget' and set 'gadget'"):
        Vocabulary.from_data(sets)


def test_duplicate_set_id_is_rejected():
    with pytest.raises(VocabularyError, match="set id 'widget' is used twice"):
        Vocabulary.from_data([entry(), entry(categories=["gizmo"])])


def test_from_file_reports_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"sets": [\n  {"id": "x",}\n]}')
    with pytest.raises(VocabularyError, match=r"broken.json: not valid JSON: .* line 2"):
        Vocabulary.from_file(path)
    with pytest.raises(VocabularyError, match="cannot read vocabulary file"):
        Vocabulary.from_file(tmp_path / "missing.json")


def test_from_file_custom_vocabulary(tmp_path):
    path = tmp_path / "custom.json"
    path.write_text(json.dumps([entry()]))
    custom = Vocabulary.from_file(path)
    assert custom.lookup("Widgets") == KeypointSet("widget", ("top", "bottom", "left side"),
                                                   ((0, 1),), categories=("widget",))


def test_modules_do_not_import_torch():
    package = Path(__file__).resolve().parents[1] / "unipose_model"
    for name in ("vocabulary.py", "prompt.py"):
        tree = ast.parse((package / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
        assert imported <= {"__future__", "difflib", "json", "re", "dataclasses", "functools",
                            "pathlib", "typing"}, (name, imported)
