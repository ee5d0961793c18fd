"""Visual prompt encoder: masking, permutation, sizes, support preparation, validation."""
import numpy as np
import pytest
import torch

from unipose_model.visual_prompt import (VisualPrompt, VisualPromptError, build_visual_prompt_encoder,
                                         prepare_support, support_crop)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_visual_prompt_encoder("tiny", width=64, layers=2, heads=4, tower=dict(width=32, layers=1)).eval()


def inputs(k, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 224, 224, generator=g)
    kpts = torch.rand(batch, k, 2, generator=g)
    visible = torch.rand(batch, k, generator=g) > 0.3
    visible[:, 0] = True
    return images, kpts, visible


def test_invisible_keypoint_coordinates_change_nothing(encoder):
    images, kpts, visible = inputs(8, seed=1)
    visible[0, 3] = False
    inst_a, kpt_a = encoder(images, kpts, visible)
    moved = kpts.clone()
    moved[0, 3] = torch.tensor([0.9, 0.05])
    inst_b, kpt_b = encoder(images, moved, visible)
    assert torch.equal(inst_a, inst_b) and torch.equal(kpt_a, kpt_b)
    # a visible keypoint's coordinates do matter
    visible[0, 3] = True
    _, kpt_c = encoder(images, kpts, visible)
    _, kpt_d = encoder(images, moved, visible)
    assert (kpt_c - kpt_d).abs().max() > 1e-3


def test_permuting_keypoints_permutes_outputs(encoder):
    images, kpts, visible = inputs(10, seed=2)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    inst, kpt = encoder(images, kpts, visible)
    inst_p, kpt_p = encoder(images, kpts[:, perm], visible[:, perm])
    assert torch.allclose(kpt[:, perm], kpt_p, atol=1e-5)
    assert torch.allclose(inst, inst_p, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 17, 68, 100])
def test_shapes_for_1_to_100_keypoints(encoder, k):
    images, kpts, visible = inputs(k, seed=k, batch=2)
    inst, kpt = encoder(images, kpts, visible)
    assert inst.shape == (2, 512) and kpt.shape == (2, k, 512)
    assert torch.isfinite(inst).all() and torch.isfinite(kpt).all()


def test_padded_batch_equals_single(encoder):
    images, kpts, visible = inputs(6, seed=4, batch=2)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    inst, kpt = encoder(images, kpts, visible, keypoint_valid=valid)
    inst1, kpt1 = encoder(images[1:], kpts[1:, :4], visible[1:, :4])
    assert torch.allclose(inst[1], inst1[0], atol=1e-5) and torch.allclose(kpt[1, :4], kpt1[0], atol=1e-5)


def support(**kw):
    img = np.zeros((120, 200, 3), np.uint8)
    img[40:80, 50:110] = 255
    kpts = np.array([[50, 40, 2], [110, 40, 2], [110, 80, 1], [0, 0, 0]], np.float32)
    return VisualPrompt(img, kpts, class_name="box", **kw)


def test_prepare_support_maps_keypoints_into_the_crop():
    prompt = support()
    x0, y0, x1, y1 = support_crop(prompt)
    assert np.isclose(x1 - x0, y1 - y0) and np.isclose((x0 + x1) / 2, 80) and np.isclose((y0 + y1) / 2, 60)
    image, kpts, visible = prepare_support(prompt, size=64)
    assert image.shape == (3, 64, 64) and visible.tolist() == [True, True, True, False]
    # the white rectangle's corner lands where its keypoint says
    px, py = (kpts[0] * 64).round().long().tolist()
    assert image[0, py + 2, px + 2] > 1.0 and image[0, py - 3, px - 3] < 0
    with_box = prepare_support(support(box=(40, 30, 120, 90)), size=64)[1]
    # box 80x60 centred at (80, 60) -> square side 80 * 1.5 (25 % margin each side), left edge at 20
    assert with_box[0, 0] == pytest.approx((50 - 20) / 120)


@pytest.mark.parametrize("change, message", [
    (dict(keypoints=np.array([[1, 1, 0], [2, 2, 0]], np.float32)), "no visible keypoint"),
    (dict(keypoints=np.array([[1, 1, 2], [500, 2, 2]], np.float32)), "outside the 200x120"),
    (dict(keypoints=np.array([[1, 1, 2], [5, 2, 2]], np.float32), keypoint_names=["a"]), "1 keypoint names for 2"),
    (dict(keypoints=np.array([[1, 1, 2], [5, 2, 2]], np.float32), skeleton=[(0, 2)]), "does not exist"),
    (dict(keypoints=np.array([[1, 1, 2]], np.float32), box=(5, 5, 5, 9)), "is empty"),
    (dict(keypoints=np.zeros((0, 3), np.float32)), "K x 3"),
])
def test_invalid_visual_prompts_are_rejected_with_a_reason(change, message):
    args = dict(image=np.zeros((120, 200, 3), np.uint8), keypoints=None)
    args.update(change)
    with pytest.raises(VisualPromptError, match=message):
        VisualPrompt(**args)


def test_detector_runs_on_visual_prompt_features():
    """Support image -> prompt features -> the unchanged detector (instance + keypoint queries)."""
    from unipose_model import build_model
    from unipose_model.checkpoint import fill_reference_weights
    model = fill_reference_weights(build_model("unipose_tiny_visual"))
    image, kpts, visible = prepare_support(support(), size=224)
    inst, kpt_feats = model.encode_visual_prompt(image[None], kpts[None], visible[None])
    out = model(torch.randn(1, 3, 96, 128), None, inst, kpt_feats)
    assert out["pred_keypoints"].shape[-2:] == (4, 2) and torch.isfinite(out["pred_boxes"]).all()
    with pytest.raises(ValueError, match="no visual prompt encoder"):
        build_model("unipose_tiny").encode_visual_prompt(image[None], kpts[None], visible[None])
