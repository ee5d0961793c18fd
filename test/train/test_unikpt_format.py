"""The unified format (save/load/validate) and the unified vocabulary shared with the model."""
import json

import numpy as np
import pytest

from unipose_train.unikpt.format import Category, Image, Instance, UniKPT, UniKPTError, load, save
from unipose_train.unikpt.vocabulary import (DEFAULT_UNIKPT_VOCABULARY, UniKPTVocabulary,
                                        canonical_keypoint_name)
from unipose_model.vocabulary import DEFAULT_VOCABULARY_PATH, Vocabulary


@pytest.fixture(scope="module")
def vocab():
    return UniKPTVocabulary.load()


def small_dataset():
    cat = Category(id=1, name="cat", keypoints=["left eye", "right eye", "nose"], skeleton=[(0, 2), (1, 2)],
                   flip_pairs=[(0, 1)], sigmas=[0.025, 0.025, 0.026], supercategory="animal",
                   keypoint_set=None, taxonomy={"family": "felidae"}, style="photo")
    inst = Instance(id=5, image_id=3, category_id=1, bbox=(10, 20, 30, 40), area=1200.0, track_id=2,
                    keypoints=np.array([[12.5, 22, 2], [30, 25, 1], [0, 0, 0]], float))
    return UniKPT(dataset="toy", images=[Image(3, "a.jpg", 100, 80, style="oil painting")],
                  instances=[inst], categories=[cat], images_root="imgs", info={"source": "test"})


def test_round_trip(tmp_path):
    data = small_dataset()
    path = save(data, tmp_path / "toy.json")
    back = load(path)
    assert back.to_json() == data.to_json()
    raw = json.loads(path.read_text())
    assert raw["format"] == "unikpt" and raw["annotations"][0]["num_keypoints"] == 2
    assert raw["annotations"][0]["keypoints"][2] == 2 and isinstance(raw["annotations"][0]["keypoints"][2], int)
    assert back.root() == tmp_path / "imgs"
    assert back.validate() == []


def test_file_is_valid_coco_ground_truth(tmp_path):
    """pycocotools loads a UniKPT file as it is."""
    coco = pytest.importorskip("pycocotools.coco")
    path = save(small_dataset(), tmp_path / "toy.json")
    gt = coco.COCO(str(path))
    assert gt.getAnnIds() == [5] and gt.loadCats(1)[0]["keypoints"][0] == "left eye"


def test_validate_reports_each_problem():
    data = small_dataset()
    good = data.instances[0]
    bad = [Instance(6, 3, 1, np.array([[500, 10, 2], [1, 1, 2], [0, 0, 0]], float), (0, 0, 5, 5), 25),
           Instance(7, 3, 1, np.array([[np.nan, 10, 2], [1, 1, 2], [0, 0, 0]], float), (0, 0, 5, 5), 25),
           Instance(8, 3, 1, np.zeros((2, 3)), (0, 0, 5, 5), 25),
           Instance(9, 3, 99, good.keypoints, good.bbox, 1),
           Instance(10, 42, 1, good.keypoints, good.bbox, 1),
           Instance(11, 3, 1, good.keypoints, (0, 0, 0, 5), 1)]
    data.instances += bad
    kinds = {i.ann_id: i.kind for i in data.validate()}
    assert kinds == {6: "out_of_range", 7: "nan", 8: "keypoint_count", 9: "unknown_category",
                     10: "missing_image", 11: "bad_bbox"}


def test_load_rejects_other_files(tmp_path):
    p = tmp_path / "coco.json"
    p.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(UniKPTError, match="not a UniKPT file"):
        load(p)


# ----------------------------------------------------------------------------- vocabulary
def test_model_loader_reads_unified_vocabulary():
    """The same file is a prompt vocabulary for unipose_model (shared names)."""
    model_vocab = Vocabulary.from_file(DEFAULT_UNIKPT_VOCABULARY)
    assert model_vocab.lookup("cat").id == "animal"
    assert model_vocab.lookup("woodpecker").id == "bird"


def test_unified_vocabulary_contains_every_model_set_unchanged(vocab):
    model = json.loads(DEFAULT_VOCABULARY_PATH.read_text())["sets"]
    unified = {s["id"]: s for s in json.loads(DEFAULT_UNIKPT_VOCABULARY.read_text())["sets"]}
    for s in model:
        assert unified[s["id"]] == s, s["id"]


def test_same_keypoint_same_name_across_objects(vocab):
    for set_id in ("person", "animal", "animal_in_AP10K", "macaque", "bird"):
        assert "left eye" in vocab.get_set(set_id).keypoints, set_id
    # the official text of these three sets says "eye left": the official model learned that
    for set_id in ("animal_in_AnimalKindom", "fly", "locust"):
        assert "eye left" in vocab.get_set(set_id).keypoints, set_id


def test_flip_pairs_swap_left_and_right_words(vocab):
    for s in vocab.sets():
        for i, j in s.flip_pairs:
            a, b = s.keypoints[i], s.keypoints[j]
            if (s.id, i, j) in {("long_sleeved_outwear", 1, 5), ("long_sleeved_outwear", 3, 33)}:
                continue  # the official text swaps the words of slots 1 and 3 (test_vocabulary.py)
            if "left" in a.split() or "right" in a.split():
                mirrored = " ".join({"left": "right", "right": "left"}.get(w, w) for w in a.split())
                # numbers may run across the sides (official face: right eyebrow 1 <-> left eyebrow 5)
                assert mirrored.rstrip(" 0123456789") == b.rstrip(" 0123456789"), (s.id, a, b)


def test_dataset_layouts_cover_the_thirteen_datasets(vocab):
    thirteen = {"coco", "300w", "onehand10k", "humanart", "ap10k", "apt36k", "macaque", "animal_kingdom",
                "animalweb", "vinegar_fly", "desert_locust", "keypoint5", "mp100"}
    assert thirteen <= set(vocab.datasets)
    ap10k = vocab.dataset("ap10k")
    names = dict(zip(ap10k.source_keypoints, vocab.get_set("animal").keypoints))
    assert names["L_Eye"] == "left eye" and names["R_B_Paw"] == "right back paw"
    fly = vocab.dataset("vinegar_fly")
    names = dict(zip(fly.source_keypoints, vocab.get_set("fly").keypoints))
    assert names["forelegL4"] == "foreleg left tip" and names["wingR"] == "wing right"  # official text


def test_size_is_reported(vocab):
    # The paper's UniKPT has 338 keypoint names and 1237 categories; see docs/UNIKPT.md.
    assert len(vocab.keypoint_names()) >= 300
    assert len(vocab.category_names()) >= 300
    assert vocab.category_meta("antelope")["taxonomy"]["family"] == "bovidae"


@pytest.mark.parametrize("raw, name", [("eyeL", "left eye"), ("L_Eye", "left eye"), ("Eye_Left", "left eye"),
                                       ("leftear", "left ear"), ("forelegR4", "right foreleg 4"),
                                       ("Root of tail", "root of tail")])
def test_canonical_names(raw, name):
    assert canonical_keypoint_name(raw) == name


def test_resolve_lab_names(vocab):
    # Vinegar Fly's own names: the official fly text
    assert vocab.resolve_keypoints(["head", "wingL", "eyeR"]) == ["head", "wing left", "eye right"]
    assert vocab.resolve_keypoints(["snout", "leftear", "rightear", "tailbase"]) == \
        ["snout", "left ear", "right ear", "root of tail"]


def test_extend_adds_a_lab_set(vocab):
    ext = vocab.extend([{"id": "mouse_top", "keypoints": ["snout", "left ear", "right ear", "root of tail"],
                         "skeleton": [[0, 1], [0, 2], [0, 3]], "flip_pairs": [[1, 2]],
                         "categories": ["lab mouse"]}], {"lab mouse": {"supercategory": "animal"}})
    assert ext.model.lookup("lab mice").id == "mouse_top"
    assert ext.category_meta("lab mouse")["supercategory"] == "animal"
    with pytest.raises(ValueError, match="already exists"):
        ext.extend([{"id": "mouse_top", "keypoints": ["a"], "skeleton": [], "categories": []}])


def test_exported_vocabulary_keeps_the_official_training_text(vocab):
    """A model trained on official-text data exports a vocabulary that sends the same text: the
    Animal Kingdom trailing space survives and the car's two 'none' are hidden, not duplicates."""
    from types import SimpleNamespace

    from unipose_train.model_export import inference_texts, vocabulary_entries
    from unipose_model.prompt import parse_prompt
    from unipose_model.vocabulary import Vocabulary

    def category(name, set_id):
        ks = vocab.get_set(set_id)
        return SimpleNamespace(name=name, keypoints=list(ks.prompt_texts), skeleton=ks.skeleton,
                               flip_pairs=ks.flip_pairs, sigmas=ks.sigmas)

    ds = SimpleNamespace(dataset="mixed", categories=[category("car", "car"), category("bird", "animal_kingdom")])
    entries = vocabulary_entries([ds])
    own = Vocabulary.from_data(entries)
    car = parse_prompt("car", own).groups[0]
    assert car.model_texts == vocab.get_set("car").prompt_texts and len(car.keypoints) == 12
    bird = parse_prompt("bird", own).groups[0]
    assert "ankle left " in bird.model_texts
    assert {"a photo of ankle left ", "a photo of none"} <= set(inference_texts(entries, []))
