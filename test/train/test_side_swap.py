"""Side swap: one side of an animal from another instance, aligned on the body midline; labels
follow the pixels, neighbours and the rest of the image are untouched; real fly frames."""
import cv2
import numpy as np
import pytest
import torch

from shared_paths import DATA
from unipose_train.augment import AugmentConfig, Augmenter
from unipose_train.dataset import KeypointDataset, SourceConfig, load_source, read_rgb
from unipose_train.prompts import PromptBuilder
from unipose_train.side_swap import keypoint_sides, similarity, swap_side

NAMES = ["head", "thorax", "abdomen", "left leg", "right leg"]
PAIRS = [(3, 4)]
FLY_LABELS = DATA / "lab" / "fly_clip" / "clip_keypoints_coco.json"


def _rotation(degrees, scale, shift):
    a = np.deg2rad(degrees)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), shift[0]],
                     [scale * np.sin(a), scale * np.cos(a), shift[1]]])


def _draw(shape, background, kpts, value):
    """A stick animal: a line from the thorax to each limb tip and the midline, value `value`."""
    img = np.full(shape, background, np.uint8)
    pts = [tuple(int(round(v)) for v in p[:2]) for p in kpts]
    for a, b in [(0, 1), (1, 2), (1, 3), (1, 4)]:
        cv2.line(img, pts[a], pts[b], value, 3)
    return img


def _target():
    # head on the left, facing -x; its left leg up (y smaller), right leg down
    kpts = np.array([[60, 100, 2], [80, 100, 2], [110, 100, 2], [80, 70, 2], [85, 135, 2]], float)
    ann = {"boxes": np.array([[60.0, 70.0, 110.0, 135.0]]), "keypoints": kpts[None], "class_names": ["animal"],
           "keypoint_names": list(NAMES), "flip_pairs": list(PAIRS)}
    return _draw((200, 200), 50, kpts, 200), ann


def _donor(right_leg=(100, 125), degrees=90.0, scale=1.0):
    """The target's midline moved by a similarity, with its right leg pointing back instead."""
    local = np.array([[60, 100], [80, 100], [110, 100], [80, 70], right_leg], float)
    M = _rotation(degrees, scale, (0, 0))
    moved = local @ M[:, :2].T
    moved += np.array([100, 100]) - moved[1]   # thorax at the centre of the donor image
    kpts = np.concatenate([moved, np.full((5, 1), 2.0)], 1)
    lo, hi = moved.min(0), moved.max(0)
    ann = {"boxes": np.array([[lo[0], lo[1], hi[0], hi[1]]]), "keypoints": kpts[None], "class_names": ["animal"],
           "keypoint_names": list(NAMES), "flip_pairs": list(PAIRS)}
    return _draw((200, 200), 90, kpts, 120), ann


def test_keypoint_sides_from_names_whatever_the_pair_order():
    assert keypoint_sides(NAMES, PAIRS) == ([0, 1, 2], [3], [4])
    assert keypoint_sides(NAMES, [(4, 3)]) == ([0, 1, 2], [3], [4])
    fly = ["head", "thorax", "abdomen", "wingL", "wingR", "forelegL4", "forelegR4", "eyeL", "eyeR"]
    assert keypoint_sides(fly, [(4, 3), (5, 6), (7, 8)]) == ([0, 1, 2], [3, 5, 7], [4, 6, 8])


def test_similarity_recovers_rotation_scale_shift():
    src = np.array([[0.0, 0.0], [10.0, 0.0], [4.0, 7.0]])
    M = _rotation(37.0, 1.2, (5.0, -3.0))
    est = similarity(src, src @ M[:, :2].T + M[:, 2])
    np.testing.assert_allclose(est, M, atol=1e-9)
    # a mirror is not a similarity: the best proper one leaves a residual
    mirrored = src * np.array([-1.0, 1.0])
    est = similarity(src, mirrored)
    assert np.linalg.det(est[:, :2]) > 0


def test_right_side_comes_from_the_donor_pixels_and_labels():
    image, ann = _target()
    donor_image, donor_ann = _donor()
    out = swap_side(image, ann, 0, donor_image, donor_ann, 0, "right")
    assert out is not None
    new_image, new_ann = out
    k, old = new_ann["keypoints"][0], ann["keypoints"][0]
    # midline and left side keep the target's labels; the right leg is the donor's, aligned:
    # pointing back from the thorax (as the donor's does in its own frame)
    np.testing.assert_allclose(k[[0, 1, 2, 3]], old[[0, 1, 2, 3]])
    np.testing.assert_allclose(k[4, :2], [100, 125], atol=1e-6)
    assert k[4, 2] == 2
    # pixels: the donor's right leg is drawn there now, the target's right leg is gone, the left
    # leg and everything away from the animal are untouched
    assert abs(int(new_image[118, 95]) - 120) <= 8            # on the donor's leg (thorax -> (100, 125))
    assert int(image[125, 83]) == 200 and int(new_image[125, 83]) < 120   # the target's old right leg
    assert new_image[72, 80] == image[72, 80] == 200          # left leg tip
    np.testing.assert_array_equal(new_image[:40], image[:40])
    np.testing.assert_array_equal(new_image[:, 160:], image[:, 160:])
    # the box follows the new keypoints (it hugged the old ones)
    np.testing.assert_allclose(new_ann["boxes"][0], [60, 70, 110, 125], atol=1e-6)
    # the caller's arrays are not modified
    assert ann["keypoints"][0, 4, 1] == 135 and image[125, 83] == 200


def test_left_side_swap_keeps_the_right():
    image, ann = _target()
    donor_image, donor_ann = _donor(degrees=-45.0)
    new_image, new_ann = swap_side(image, ann, 0, donor_image, donor_ann, 0, "left")
    np.testing.assert_allclose(new_ann["keypoints"][0][[0, 1, 2, 4]], ann["keypoints"][0][[0, 1, 2, 4]])
    np.testing.assert_allclose(new_ann["keypoints"][0][3, :2], [80, 70], atol=1e-6)  # same left leg, aligned
    assert new_image[133, 85] == 200   # the right leg is the target's


def test_neighbours_are_never_cut():
    image, ann = _target()
    donor_image, donor_ann = _donor()
    # a small second animal between the target's body and its right leg, under the splice but
    # clear of every swapped keypoint: its pixels stay, the rest of the side is replaced
    small = np.array([[70, 116, 2], [74, 116, 2], [78, 116, 2], [74, 112, 2], [74, 120, 2]], float)
    image2 = image.copy()
    image2[112:121, 70:79] = 255
    ann2 = dict(ann, boxes=np.concatenate([ann["boxes"], [[70.0, 112.0, 78.0, 120.0]]]),
                keypoints=np.concatenate([ann["keypoints"], small[None]]), class_names=["animal"] * 2)
    new_image, new_ann = swap_side(image2, ann2, 0, donor_image, donor_ann, 0, "right")
    np.testing.assert_array_equal(new_image[112:121, 70:79], image2[112:121, 70:79])
    np.testing.assert_array_equal(new_ann["keypoints"][1], small)
    assert int(image2[125, 83]) == 200 and int(new_image[125, 83]) < 120
    # one lying over the donor's new right leg: the splice is refused
    near = np.array([[95, 130, 2], [105, 130, 2], [120, 130, 2], [105, 122, 2], [105, 140, 2]], float)
    ann3 = dict(ann, boxes=np.concatenate([ann["boxes"], [[95.0, 122.0, 120.0, 140.0]]]),
                keypoints=np.concatenate([ann["keypoints"], near[None]]), class_names=["animal"] * 2)
    assert swap_side(image, ann3, 0, donor_image, donor_ann, 0, "right") is None


def test_refused_when_bodies_do_not_match():
    image, ann = _target()
    big_image, big_ann = _donor(scale=1.8)
    assert swap_side(image, ann, 0, big_image, big_ann, 0, "right") is None   # 1.8x larger
    donor_image, donor_ann = _donor()
    donor_ann["keypoints"][0, [0, 2], 2] = 0   # only the thorax left on the midline: no alignment
    assert swap_side(image, ann, 0, donor_image, donor_ann, 0, "right") is None
    donor_image, donor_ann = _donor()
    donor_ann["keypoints"][0, 4] = 0           # the donor's right side is unlabelled
    assert swap_side(image, ann, 0, donor_image, donor_ann, 0, "right") is None


@pytest.fixture(scope="module")
def walking_flies():
    if not FLY_LABELS.exists():
        pytest.skip(f"shared data missing: {FLY_LABELS}")
    src = SourceConfig(ann=str(FLY_LABELS), images=str(FLY_LABELS.parent), name="fly", id_range=[1000, 1060])
    cfg = AugmentConfig(side_swap_prob=1.0)
    return KeypointDataset([load_source(src)], Augmenter(cfg, train=True), PromptBuilder())


def test_real_fly_frames_get_spliced_with_consistent_labels(walking_flies):
    ds = walking_flies
    cat = ds.categories[0][ds.records[0].instances[0].category_id]
    midline, left, right = keypoint_sides(cat.keypoints, cat.flip_pairs)
    assert [cat.keypoints[k] for k in midline] == ["head", "thorax", "abdomen"]
    spliced = total = 0
    for index in range(0, len(ds.records), 3):
        rec = ds.records[index]
        image, ann = read_rgb(rec.path), ds._annotation(rec, cat)
        new_image, new_ann = ds._swap_sides(index, rec, cat, image, ann, np.random.default_rng(index))
        for m in range(len(ann["boxes"])):
            total += 1
            old, new = ann["keypoints"][m], new_ann["keypoints"][m]
            if np.array_equal(old, new):
                continue
            spliced += 1
            np.testing.assert_array_equal(new[midline], old[midline])
            changed = [k for k in left + right if not np.array_equal(old[k], new[k])]
            assert set(changed) <= set(left) or set(changed) <= set(right)   # one side only
            labelled = new[new[:, 2] > 0, :2]
            box = new_ann["boxes"][m]
            assert (labelled >= box[:2] - 1e-6).all() and (labelled <= box[2:] + 1e-6).all()
    assert total == 40
    assert spliced >= 30    # measured: all 40 with these seeds (walking flies rarely touch)


def test_real_fly_splice_leaves_the_other_fly_alone(walking_flies):
    ds = walking_flies
    cat = ds.categories[0][ds.records[0].instances[0].category_id]
    done = 0
    for index, donor in [(0, 30), (6, 45), (12, 59), (20, 3), (33, 50), (40, 10)]:
        rec, drec = ds.records[index], ds.records[donor]
        image, ann = read_rgb(rec.path), ds._annotation(rec, cat)
        for side in ("left", "right"):
            out = swap_side(image, ann, 0, read_rgb(drec.path), ds._annotation(drec, cat), 1, side)
            if out is None:
                continue
            done += 1
            new_image, new_ann = out
            np.testing.assert_array_equal(new_ann["keypoints"][1], ann["keypoints"][1])
            np.testing.assert_array_equal(new_ann["boxes"][1], ann["boxes"][1])
            x0, y0, x1, y1 = ann["boxes"][1].astype(int)   # the other fly's box: its pixels stay
            inner = (slice(y0 + 3, y1 - 2), slice(x0 + 3, x1 - 2))
            changed = np.abs(new_image.astype(int) - image.astype(int)).max(-1) > 0
            assert changed.any() and changed[inner].mean() < 0.05
    assert done >= 6        # measured: all 12


def test_samples_stay_reproducible_from_their_seed(walking_flies):
    # resumable training draws everything from the per-sample seed, the donor included
    a, b = walking_flies[(4, 123)], walking_flies[(4, 123)]
    assert torch.equal(a["image"], b["image"])
    assert torch.equal(a["target"]["keypoints"], b["target"]["keypoints"])
