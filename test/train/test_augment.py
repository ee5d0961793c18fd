"""Augmentation: flip with left/right swapping, resize rule, crop; prompts; sampler determinism."""
import numpy as np
import pytest

from unipose_train.augment import AugmentConfig, Augmenter, crop, hflip, infer_flip_pairs, resize, swap_left_right
from unipose_train.dataset import BalancedSampler
from unipose_train.prompts import PromptBuilder, PromptConfig, instance_text, keypoint_text


def _ann():
    # one object, 3 keypoints: nose (unpaired), left eye, right eye (a flip pair)
    return {"boxes": np.array([[10.0, 20.0, 50.0, 60.0]]),
            "keypoints": np.array([[[30.0, 40.0, 2], [20.0, 30.0, 2], [40.0, 30.0, 1]]]),
            "class_names": ["left hand"], "keypoint_names": ["nose", "left eye", "right eye"],
            "flip_pairs": [(1, 2)]}


def test_swap_left_right_words():
    assert swap_left_right("left eye") == "right eye"
    assert swap_left_right("right eye") == "left eye"
    assert swap_left_right("Left front paw of the right-most dog") == "Right front paw of the left-most dog"
    assert swap_left_right("upright leftover") == "upright leftover"   # whole words only


def test_infer_flip_pairs_from_names():
    assert infer_flip_pairs(["nose", "left eye", "right eye"]) == [(1, 2)]
    assert infer_flip_pairs(["head", "wingL", "wingR", "forelegL4", "forelegR4", "eyeL", "eyeR"]) == \
        [(1, 2), (3, 4), (5, 6)]
    assert infer_flip_pairs(["l_ankle", "r_ankle", "tail"]) == [(0, 1)]


def test_hflip_swaps_pair_coordinates_and_mirrors():
    img = np.zeros((100, 80, 3), np.uint8)
    img[:, :10] = 255
    out_img, ann = hflip(img, _ann())
    assert out_img[:, -10:].min() == 255 and out_img[:, :10].max() == 0
    assert ann["boxes"].tolist() == [[30.0, 20.0, 70.0, 60.0]]
    k = ann["keypoints"][0]
    assert k[0].tolist() == [50.0, 40.0, 2]          # nose mirrored
    # "left eye" (index 1) now holds the mirrored former right eye, and keeps its name
    assert k[1].tolist() == [40.0, 30.0, 1] and k[2].tolist() == [60.0, 30.0, 2]
    assert ann["keypoint_names"] == ["nose", "left eye", "right eye"]
    assert ann["class_names"] == ["right hand"]      # class names swap their side word
    # flipping twice restores everything
    back_img, back = hflip(out_img, ann)
    assert np.array_equal(back_img, img) and np.allclose(back["keypoints"], _ann()["keypoints"])


def test_hflip_renames_unpaired_left_right_keypoints():
    ann = _ann()
    ann["keypoints"] = ann["keypoints"][:, :2]
    ann["keypoint_names"] = ["nose", "left eye"]      # a prompt with the left eye alone
    ann["flip_pairs"] = []
    _, out = hflip(np.zeros((100, 80, 3), np.uint8), ann)
    assert out["keypoint_names"] == ["nose", "right eye"]
    assert out["keypoints"][0, 1].tolist() == [60.0, 30.0, 2]   # same point, mirrored, renamed


def test_unlabelled_keypoints_stay_at_zero_under_flip():
    ann = _ann()
    ann["keypoints"][0, 0] = [0, 0, 0]
    _, out = hflip(np.zeros((100, 80, 3), np.uint8), ann)
    assert out["keypoints"][0, 0].tolist() == [0, 0, 0]


def test_resize_short_side_and_max_size():
    img = np.zeros((100, 200, 3), np.uint8)
    out, ann = resize(img, _ann(), 50, 1333)
    assert out.shape[:2] == (50, 100)
    assert ann["boxes"].tolist() == [[5.0, 10.0, 25.0, 30.0]]
    assert ann["keypoints"][0, 1, :2].tolist() == [10.0, 15.0]
    out, _ = resize(np.zeros((100, 400, 3), np.uint8), _ann(), 800, 1333)
    assert out.shape[:2] == (333, 1332)               # long side capped (DETR rule truncates)


def test_crop_clips_boxes_and_drops_outside_keypoints():
    img = np.arange(100 * 80 * 3, dtype=np.uint8).reshape(100, 80, 3)
    out, ann = crop(img, _ann(), top=25, left=25, height=50, width=50)
    assert out.shape == (50, 50, 3) and np.array_equal(out, img[25:75, 25:75])
    assert ann["boxes"].tolist() == [[0.0, 0.0, 25.0, 35.0]]
    k = ann["keypoints"][0]
    assert k[0].tolist() == [5.0, 15.0, 2]
    assert k[1].tolist() == [0.0, 0.0, 0.0]            # (20, 30) is left of the crop
    _, empty = crop(img, _ann(), top=70, left=60, height=30, width=20)
    assert len(empty["boxes"]) == 0 and empty["keypoints"].shape[0] == 0


def test_random_augmenter_is_reproducible_and_bounded():
    cfg = AugmentConfig(scales=[64, 96], max_size=128, crop_resize_scales=[80], crop_min=40, crop_max=60)
    aug = Augmenter(cfg)
    img = np.random.default_rng(0).integers(0, 255, (100, 80, 3), dtype=np.uint8)
    shapes = set()
    for seed in range(20):
        a_img, a = aug(img, _ann(), np.random.default_rng(seed))
        b_img, b = aug(img, _ann(), np.random.default_rng(seed))
        assert np.array_equal(a_img, b_img) and np.array_equal(a["keypoints"], b["keypoints"])
        assert min(a_img.shape[:2]) in (64, 96) and max(a_img.shape[:2]) <= 128
        shapes.add(a_img.shape)
    assert len(shapes) > 1


def test_prompt_templates_and_dropout():
    assert instance_text("person", None) == "a photo of person"
    assert instance_text("Swivel_Chair", "sketch") == "a sketch photo of swivel chair"
    assert keypoint_text("left eye") == "a photo of left eye"
    assert keypoint_text("left eye", "oil painting", "cat", "head") == "a oil painting photo of cat's head's left eye"
    fixed = PromptBuilder(PromptConfig(fixed=True), negative_pool=["dog", "cat"])
    texts, names = fixed.instance_prompts(["person"], "sketch", np.random.default_rng(0))
    assert texts == ["a photo of person"] and names == ["person"]
    b = PromptBuilder(PromptConfig(num_negatives=2), negative_pool=["dog", "cat", "person", "horse"])
    texts, names = b.instance_prompts(["person"], "sketch", np.random.default_rng(1))
    assert len(names) == 3 and names.count("person") == 1
    seen = set()
    for seed in range(30):
        seen.update(b.keypoint_prompts(["left eye"], "cat", "sketch", np.random.default_rng(seed)))
    assert seen == {"a photo of left eye", "a sketch photo of left eye", "a photo of cat's left eye",
                    "a sketch photo of cat's left eye"}
    every = set(b.all_texts([("cat", ["left eye"], None, ["sketch"])]))
    assert seen <= every and "a photo of right eye" in every   # flipped names are enumerated too


def test_sampler_shards_equal_the_global_batch_and_resume():
    one = BalancedSampler([5, 3], batch_size=4, weights=[1, 1], samples_per_epoch=16, seed=3)
    r0 = BalancedSampler([5, 3], batch_size=2, weights=[1, 1], samples_per_epoch=16, seed=3, rank=0, world_size=2)
    r1 = BalancedSampler([5, 3], batch_size=2, weights=[1, 1], samples_per_epoch=16, seed=3, rank=1, world_size=2)
    full, a, b = list(one), list(r0), list(r1)
    assert len(full) == 16
    for i in range(4):
        assert full[4 * i:4 * i + 4] == a[2 * i:2 * i + 2] + b[2 * i:2 * i + 2]
    one.set_state(0, 2)
    assert list(one) == full[8:]
    one.set_state(1, 0)
    assert list(one) != full                         # a new epoch, a new order
    # balanced: both sources drawn although one is smaller
    assert {i >= 5 for i, _ in full} == {True, False}


def test_rotate_moves_pixels_keypoints_and_boxes_together():
    """90 degrees on a square image: a bright patch and its labelled corners land where the
    rotation puts them; a box made from keypoints is rebuilt from the rotated keypoints, a
    loose box becomes the box of its rotated corners; keypoints rotated off the canvas are
    unlabelled; left/right names stay (rotation keeps handedness)."""
    from unipose_train.augment import rotate
    img = np.zeros((200, 200, 3), np.uint8)
    img[20:40, 10:50] = 255
    kp = np.array([[[10, 20, 2], [50, 40, 2], [30, 30, 2]], [[190, 5, 2], [199, 1, 2], [0, 0, 0]]], float)
    ann = {"boxes": np.array([[10, 20, 50, 40.], [150, 0, 200, 60.]]), "keypoints": kp,
           "class_names": ["a", "b"], "keypoint_names": ["left eye", "right eye", "nose"], "flip_pairs": [(0, 1)]}
    out_img, out = rotate(img, ann, 90)
    ys, xs = np.nonzero(out_img[..., 0] > 128)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (20, 151, 39, 190)   # the patch, rotated
    assert np.allclose(out["keypoints"][0, :, :2], [[20, 190], [40, 150], [30, 170]])
    assert np.allclose(out["boxes"][0], [20, 150, 40, 190])                  # from its keypoints
    assert np.allclose(out["boxes"][1], [0, 0, 60, 50])                     # corners, clipped
    assert out["keypoint_names"] == ["left eye", "right eye", "nose"]
    assert ann["keypoints"][0, 0, 0] == 10                                  # input untouched
    _, out = rotate(img, ann, 45)
    assert (out["keypoints"][1, 2] == 0).all()                              # unlabelled stays so


def test_stretch_moves_pixels_and_keypoints_by_one_matrix_and_changes_limb_angles():
    """Stretch 1.5 along x (no rotation): x distances from the centre grow 1.5x, y ones shrink
    to 1/1.5 (area kept); a bright dot and its keypoint stay together; a 'wing' at 45 degrees
    off a horizontal 'body' comes out at atan(1/1.5^2) = 24 degrees; with a 90-degree axis the
    roles swap."""
    from unipose_train.augment import rotate
    img = np.zeros((201, 201, 3), np.uint8)
    img[139:142, 159:162] = 255                                    # dot at (160, 140)
    kp = np.array([[[100, 100, 2], [160, 100, 2], [140, 60, 2], [160, 140, 2]]], float)
    ann = {"boxes": np.array([[100, 60, 160, 140.]]), "keypoints": kp, "class_names": ["fly"],
           "keypoint_names": ["thorax", "abdomen", "wing", "dot"], "flip_pairs": []}
    out_img, out = rotate(img, ann, 0.0, stretch=1.5, stretch_axis=0.0)
    c = 100.5                                                     # the canvas centre
    expect = [[c + (x - c) * 1.5, c + (y - c) / 1.5] for x, y in kp[0, :, :2]]
    assert np.allclose(out["keypoints"][0, :, :2], expect)
    ys, xs = np.nonzero(out_img[..., 0] > 100)
    assert abs(xs.mean() - expect[3][0]) < 1.0 and abs(ys.mean() - expect[3][1]) < 1.0
    thorax, abdomen, wing = out["keypoints"][0, :3, :2]
    body, limb = thorax - abdomen, wing - thorax
    angle = np.degrees(np.arccos(body @ limb / np.linalg.norm(body) / np.linalg.norm(limb)))
    assert angle == pytest.approx(180 - np.degrees(np.arctan2(40 / 1.5, 40 * 1.5)), abs=0.01)
    assert np.allclose(out["boxes"][0], [out["keypoints"][0, :, 0].min(), out["keypoints"][0, :, 1].min(),
                                         out["keypoints"][0, :, 0].max(), out["keypoints"][0, :, 1].max()])
    _, swapped = rotate(img, ann, 0.0, stretch=1.5, stretch_axis=90.0)
    assert np.allclose(swapped["keypoints"][0, :, :2], [[c + (x - c) / 1.5, c + (y - c) * 1.5] for x, y in kp[0, :, :2]])


def test_augmenter_stretches_only_when_asked():
    img = np.random.default_rng(0).integers(0, 255, (120, 120, 3), np.uint8)
    ann = {"boxes": np.array([[40, 40, 80, 70.]]), "keypoints": np.array([[[40, 40, 2], [80, 70, 2]]], float),
           "class_names": ["fly"], "keypoint_names": ["head", "tail"], "flip_pairs": []}
    base = dict(scales=[120], max_size=120, flip_prob=0.0, crop_prob=0.0, rotate_prob=1.0, rotate_max=0.0)
    lengths = []
    for stretch_prob in (0.0, 1.0):
        aug = Augmenter(AugmentConfig(**base, stretch_prob=stretch_prob, stretch_max=1.4), train=True)
        for seed in range(10):
            _, out = aug(img, ann, np.random.default_rng(seed))
            lengths.append(np.linalg.norm(out["keypoints"][0, 1, :2] - out["keypoints"][0, 0, :2]))
    plain, stretched = np.array(lengths[:10]), np.array(lengths[10:])
    assert np.allclose(plain, 50.0)
    assert np.ptp(stretched) > 5.0 and stretched.max() <= 50.0 * 1.4 + 1e-6 and stretched.min() >= 50.0 / 1.4 - 1e-6
    with pytest.raises(ValueError, match="stretch_max must be >= 1"):
        AugmentConfig(stretch_max=0.0)


def test_object_centred_crops_contain_the_object_and_eval_has_its_own_cap():
    img = np.zeros((1000, 1000, 3), np.uint8)
    ann = {"boxes": np.array([[800, 820, 850, 880.]]), "keypoints": np.array([[[825, 850, 2]]], float),
           "class_names": ["fly"], "keypoint_names": ["head"], "flip_pairs": []}
    cfg = AugmentConfig(scales=[200], max_size=200, flip_prob=0.0, crop_prob=1.0, crop_around_objects=True,
                        crop_resize_scales=[1000], crop_min=200, crop_max=200, eval_size=500, eval_max_size=600)
    aug = Augmenter(cfg, train=True)
    for seed in range(20):
        out_img, out = aug(img, ann, np.random.default_rng(seed))
        assert out_img.shape[:2] == (200, 200) and len(out["boxes"]) == 1
        x0, y0, x1, y1 = out["boxes"][0]
        assert x1 - x0 == 50 and y1 - y0 == 60                               # whole, not clipped
    wide = np.zeros((500, 2000, 3), np.uint8)
    assert Augmenter(cfg, train=False)(wide, ann, np.random.default_rng(0))[0].shape[:2] == (150, 600)


def test_object_crops_are_squares_of_context_times_the_object_resized_to_the_crop_scale():
    """What a crop-refinement pass sees: a square of 2-3x one object's longer side, containing it
    whole (jitter <= a tenth of the side), resized to object_crop_scales."""
    from unipose_train.augment import object_window

    img = np.zeros((400, 600, 3), np.uint8)
    ann = _ann()
    ann["boxes"] = np.array([[300.0, 200.0, 340.0, 220.0]])          # 40 x 20, well inside
    ann["keypoints"] = np.array([[[320.0, 210.0, 2], [305.0, 205.0, 2], [335.0, 215.0, 2]]])
    for seed in range(20):
        window, out = object_window(img, ann, np.random.default_rng(seed), (2.0, 3.0))
        side = window.shape[0]
        assert window.shape[:2] == (side, side) and 80 <= side <= 120
        x0, y0, x1, y1 = out["boxes"][0]
        assert (x1 - x0, y1 - y0) == (40.0, 20.0) and x0 >= 0 and x1 <= side   # whole, not clipped
        assert (out["keypoints"][0, :, 2] == 2).all()
    cfg = AugmentConfig(object_crop_prob=1.0, object_crop_context=[2.0, 3.0], object_crop_scales=[64],
                        flip_prob=0.0)
    a_img, a = Augmenter(cfg)(img, ann, np.random.default_rng(0))
    assert a_img.shape[:2] == (64, 64)
    assert 64 / 3 - 1 <= a["boxes"][0, 2] - a["boxes"][0, 0] <= 64 / 2 + 1      # the object at 1/3-1/2 of the crop
    # a crop larger than the image is cut to the image's shorter side
    big, _ = object_window(img, ann, np.random.default_rng(0), (20.0, 20.0))
    assert big.shape[:2] == (400, 400)
