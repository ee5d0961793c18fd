"""Image file -> public Predictor -> pixels: the official answer for both parity fixtures.

The fixtures (shared/reference/fixtures) record what the official code computes for an original
COCO image, with the reference weights and text features by the fixtures' rule (HashTextEncoder
with the fixture's salt). Here the original image file goes through everything a user runs:
file reading, resize and normalisation, prompt parsing with the predefined sets, the model,
thresholding, NMS and the pixel conversion. The official boxes are clipped to the image, as this
project clips them (the official demo draws them unclipped).
"""
import json

import cv2
import numpy as np
import pytest

from unipose_model import Predictor
from unipose_model.text_encoder import HashTextEncoder

from shared_paths import DATA, REFERENCE

# float32 parity limits of test_parity.py (normalised units), in pixels of the original image
BOX_LIMIT, KEYPOINT_LIMIT, SCORE_LIMIT = 1e-5, 1e-5, 1e-4


def fixture(name):
    path = REFERENCE / "fixtures" / f"{name}.npz"
    image = DATA / "samples" / "coco" / json.loads((REFERENCE / "fixtures" / f"{name}.json").read_text())["image"].rsplit("/", 1)[-1]
    if not path.exists() or not image.exists():
        pytest.skip(f"fixture {path} or image {image} not available")
    meta = json.loads((REFERENCE / "fixtures" / f"{name}.json").read_text())
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k.startswith("post_")}
    return meta, arrays, image


def prompt_of(meta):
    """What a user types: the predefined set by name where the fixture uses one for all classes
    (coco_person: 'person'), else the classes with the keypoint names spelled out."""
    if meta["instances"] == [meta["keypoint_set"]]:
        return meta["keypoint_set"]
    return f"{', '.join(meta['instances'])}: {', '.join(meta['keypoints'])}"


def expected_pixels(meta, post):
    w, h = meta["image_original_wh"]
    cx, cy, bw, bh = post["post_boxes_cxcywh"].astype(np.float64).T
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * [w, h, w, h]
    boxes = np.clip(boxes, 0, [w, h, w, h])  # the project clips boxes to the image
    k = len(meta["keypoints"])
    keypoints = post["post_keypoints_xy"].reshape(-1, k, 2).astype(np.float64) * [w, h]
    return boxes, keypoints, post["post_nms_scores"][post["post_nms_keep"]]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["coco_person", "multi_class"])
def test_image_file_through_predictor_gives_the_official_pixels(name):
    meta, post, image_path = fixture(name)
    predictor = Predictor("unipose_swint", "reference", device="cpu",
                          text_encoder=HashTextEncoder(salt=meta["text_salt"], scale=meta["text_scale"]),
                          box_threshold=meta["box_threshold"], iou_threshold=meta["iou_threshold"],
                          short_side=meta["short_side"], max_size=meta["max_size"],
                          refine=None, heatmap_refiner=None)
    bgr = cv2.imread(str(image_path))
    instances = predictor.predict(bgr, prompt_of(meta), color="bgr")

    boxes, keypoints, scores = expected_pixels(meta, post)
    w, h = meta["image_original_wh"]
    assert len(instances) == len(boxes)
    assert all(inst.keypoint_names == tuple(meta["keypoints"]) for inst in instances)
    assert [inst.label for inst in instances if inst.label not in meta["instances"]] == []
    # match each official detection to ours (the order of exactly tied scores is free)
    ours = np.array([inst.box for inst in instances])
    used = set()
    for row in range(len(boxes)):
        distance = np.abs(ours - boxes[row]).max(1)
        best = int(np.argmin(distance))
        assert best not in used, f"two official detections match our detection {best}"
        used.add(best)
        inst = instances[best]
        assert distance[best] <= BOX_LIMIT * max(w, h), (row, distance[best])
        assert np.abs(inst.keypoints[:, :2] - keypoints[row]).max() <= KEYPOINT_LIMIT * max(w, h)
        assert abs(inst.score - float(scores[row])) <= SCORE_LIMIT
    assert (ours[:, [0, 2]] >= 0).all() and (ours[:, [0, 2]] <= w).all()
    assert (ours[:, [1, 3]] >= 0).all() and (ours[:, [1, 3]] <= h).all()
