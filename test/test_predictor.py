"""Predictor on real images with the tiny model and the reference weights (meaningless but fixed)."""

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from unipose_model.predictor import (CheckpointNotFoundError, Instance, Predictor, PredictorError)
from unipose_model.preprocess import ImageError
from unipose_model.prompt import PromptError, parse_prompt
from unipose_model.text_encoder import HashTextEncoder

from shared_paths import DATA

SAMPLES = DATA / "samples"
COCO_IMAGES = sorted((SAMPLES / "coco").glob("*.jpg"))
FLY_IMAGES = sorted((SAMPLES / "fly").glob("*.jpg"))
FLY_PROMPT = "fly: head, thorax, abdomen, left wing, right wing"


class CountingHash(HashTextEncoder):
    calls = 0

    def _encode(self, texts):
        CountingHash.calls += len(texts)
        return super()._encode(texts)


@pytest.fixture(scope="module")
def predictor():
    # box_threshold 0: random weights give low scores; we want detections to inspect
    return Predictor("unipose_tiny", "reference", device="cpu", text_encoder=CountingHash(),
                     box_threshold=0.0, short_side=256, max_size=384)


def rgb(path):
    return cv2.imread(str(path))[:, :, ::-1].copy()


def check_well_formed(instances, image, prompt):
    parsed = parse_prompt(prompt)
    h, w = image.shape[:2]
    assert instances, "box_threshold 0 should keep some detections"
    scores = [inst.score for inst in instances]
    assert scores == sorted(scores, reverse=True)
    for inst in instances:
        assert isinstance(inst, Instance)
        assert inst.label == parsed.classes[inst.class_index]
        group = parsed.group_of(inst.class_index)
        assert inst.keypoint_names == group.keypoints
        assert inst.skeleton == group.skeleton
        assert 0.0 <= inst.score <= 1.0
        x0, y0, x1, y1 = inst.box
        assert np.isfinite(inst.box).all()
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
        k = inst.keypoints
        assert k.shape == (len(group.keypoints), 3) and np.isfinite(k).all()
        assert (k[:, 0] >= 0).all() and (k[:, 0] <= w).all()
        assert (k[:, 1] >= 0).all() and (k[:, 1] <= h).all()
        assert (k[:, 2] == inst.score).all()


@pytest.mark.parametrize("path,prompt", [(p, "person") for p in COCO_IMAGES[:2]]
                         + [(p, FLY_PROMPT) for p in FLY_IMAGES[:1]])
def test_outputs_well_formed_and_deterministic(predictor, path, prompt):
    image = rgb(path)
    first = predictor.predict(image, prompt)
    check_well_formed(first, image, prompt)
    again = predictor.predict(image, prompt)
    assert_same(first, again, atol=0)


def assert_same(a, b, atol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.label, x.class_index, x.keypoint_names) == (y.label, y.class_index, y.keypoint_names)
        assert abs(x.score - y.score) <= atol
        assert np.allclose(x.box, y.box, atol=atol * 1000 + 1e-9)
        assert np.allclose(x.keypoints, y.keypoints, atol=atol * 1000 + 1e-9)


def test_bgr_and_rgb_give_the_same_result(predictor):
    bgr = cv2.imread(str(COCO_IMAGES[0]))
    from_bgr = predictor.predict(bgr, "person", color="bgr")
    from_rgb = predictor.predict(bgr[:, :, ::-1].copy(), "person")
    assert_same(from_bgr, from_rgb, atol=0)
    swapped = predictor.predict(bgr, "person")  # wrong order: a different input
    assert [i.box for i in swapped] != [i.box for i in from_rgb]


def test_batch_equals_single(predictor):
    a = rgb(COCO_IMAGES[0])
    images = [a, rgb(COCO_IMAGES[1])[:300, :400], a[:, ::-1].copy()]  # two sizes, one pair alike
    batch = predictor.predict_batch(images, "person")
    assert len(batch) == 3
    for image, result in zip(images, batch):
        # batched matmuls may round differently from single ones: equal up to float noise
        assert_same(predictor.predict(image, "person"), result, atol=1e-4)
    assert predictor.predict_batch([], "person") == []
    predictor.batch_size = 1  # chunking does not change anything either
    try:
        again = predictor.predict_batch(images, "person")
    finally:
        predictor.batch_size = 8
    for x, y in zip(batch, again):
        assert_same(x, y, atol=1e-4)


def test_person_face_groups_keep_their_keypoints(predictor, monkeypatch):
    """X-Pose issue #38: with 'person, face' every instance must carry its own class's keypoints."""
    model = predictor.model
    calls = {"encode": 0, "decode": 0}
    encode, decode = model.encode, model.decode

    def counting_encode(*a, **k):
        calls["encode"] += 1
        return encode(*a, **k)

    def counting_decode(*a, **k):
        calls["decode"] += 1
        return decode(*a, **k)

    monkeypatch.setattr(model, "encode", counting_encode)
    monkeypatch.setattr(model, "decode", counting_decode)
    image = rgb(COCO_IMAGES[0])
    instances = predictor.predict(image, "person, face")
    assert calls == {"encode": 1, "decode": 2}
    check_well_formed(instances, image, "person, face")  # each label has its own keypoints


class AlternatingClasses(nn.Module):
    """The real tiny model with its logits replaced: even queries are class 0, odd ones class 1."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config = model, model.config

    def encode(self, *args):
        return self.inner.encode(*args)

    def decode(self, state, keypoint_text):
        out = dict(self.inner.decode(state, keypoint_text))
        logits = torch.full_like(out["pred_logits"], -3.0)
        s = logits.shape[1]
        logits[:, 0::2, 0] = 2.0 - torch.arange(0, s, 2) * 0.01
        logits[:, 1::2, 1] = 2.0 - torch.arange(1, s, 2) * 0.01
        out["pred_logits"] = logits
        return out

    def forward(self, images, masks, instance_text, keypoint_text):
        return self.decode(self.encode(images, masks, instance_text), keypoint_text)


def test_person_face_both_classes_present(predictor):
    """Both groups detect: person instances carry 17 keypoints, face instances 68."""
    forced = Predictor(AlternatingClasses(predictor.model), device="cpu", text_encoder=HashTextEncoder(),
                       short_side=256, max_size=384, iou_threshold=1.0)
    image = rgb(COCO_IMAGES[0])
    instances = forced.predict(image, "person, face")
    check_well_formed(instances, image, "person, face")
    s = predictor.config.num_select
    labels = [inst.label for inst in instances]
    assert labels.count("person") == (s + 1) // 2 and labels.count("face") == s // 2
    assert {inst.label: len(inst.keypoints) for inst in instances} == {"person": 17, "face": 68}
    assert labels[:2] == ["person", "face"]  # merged by decreasing score across the groups


def test_prompt_features_are_cached(predictor):
    image = rgb(FLY_IMAGES[0])
    predictor.predict(image, "person: nose, tail tip")
    before = CountingHash.calls
    predictor.predict(image, "person: nose, tail tip")
    predictor.predict(image, parse_prompt("person: nose, tail tip"))
    assert CountingHash.calls == before
    prompt = "person: nose, tail tip"
    assert predictor.prepare_prompt(prompt) is predictor.prepare_prompt(prompt)


def test_max_instances_and_coco_export(predictor):
    image = rgb(COCO_IMAGES[0])
    everything = predictor.predict(image, "person")
    limited = Predictor(predictor.model, device="cpu", text_encoder=HashTextEncoder(), box_threshold=0.0,
                        short_side=256, max_size=384, max_instances=2).predict(image, "person")
    assert len(limited) == min(2, len(everything))
    assert_same(limited, everything[:2], atol=0)
    entry = everything[0].to_coco(image_id=785)
    x0, y0, x1, y1 = everything[0].box
    assert entry["image_id"] == 785 and entry["category_id"] == 1
    assert np.allclose(entry["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=0.01)
    assert len(entry["keypoints"]) == 17 * 3
    assert entry["keypoints"][2] == pytest.approx(everything[0].score, abs=1e-5)


@pytest.mark.parametrize("image,message", [
    (None, "None"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((20, 20, 3), np.float64), "uint8"),
    (np.zeros((20, 20, 2), np.uint8), "channels"),
    (np.broadcast_to(np.zeros(3, np.uint8), (12000, 9000, 3)), "100 MP"),
])
def test_bad_images(predictor, image, message):
    with pytest.raises(ImageError, match=message):
        predictor.predict(image, "person")


def test_bad_prompts(predictor):
    image = rgb(FLY_IMAGES[0])
    with pytest.raises(PromptError, match="empty"):
        predictor.predict(image, "  ")
    with pytest.raises(PromptError, match="68"):
        predictor.predict(image, "thing: " + ", ".join(f"point {i}" for i in range(69)))
    with pytest.raises(PredictorError, match="list of images"):
        predictor.predict_batch(image, "person")


def test_bad_construction(tmp_path, monkeypatch):
    with pytest.raises(PredictorError, match="needs a CUDA device"):
        Predictor("unipose_tiny", "reference", device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="unknown dtype"):
        Predictor("unipose_tiny", "reference", device="cpu", dtype="int8")
    with pytest.raises(CheckpointNotFoundError, match=r"checkpoint not found.*X-Pose.*unipose_swint\.pth"):
        Predictor("unipose_swint", tmp_path / "missing.pth", device="cpu", text_encoder="hash")
    # no released file for the other configurations: the hint says to train one, not to download
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint of 'unipose_tiny' is released") as err:
        Predictor("unipose_tiny", tmp_path / "missing.pth", device="cpu", text_encoder="hash")
    assert "unipose_swint.pth" not in str(err.value)
    monkeypatch.setenv("UNIPOSE_CACHE", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError, match="default location"):
        Predictor("unipose_swint", device="cpu", text_encoder="hash")
    with pytest.raises(PredictorError, match="box_threshold"):
        Predictor("unipose_tiny", "reference", device="cpu", box_threshold=1.5)


def test_overlay_drawing(predictor):
    from unipose_model.visualize import draw_instances

    bgr = cv2.imread(str(COCO_IMAGES[0]))
    instances = predictor.predict(bgr, "person", color="bgr")
    before = bgr.copy()
    drawn = draw_instances(bgr, instances)
    assert np.array_equal(bgr, before)  # drew on a copy
    assert drawn.shape == bgr.shape and drawn.dtype == np.uint8
    assert (drawn != bgr).any(axis=2).mean() > 0.001
    gray = draw_instances(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), instances, color="rgb")
    assert gray.shape == bgr.shape
    assert np.array_equal(draw_instances(bgr, []), bgr)
