"""Crop refinement: crop geometry, matching the crop's detection to the first pass, and the
Predictor's second pass (boxes and scores kept, keypoints from the zoomed-in pass)."""
import numpy as np
import pytest

from unipose_model.predictor import Instance, Predictor, PredictorError
from unipose_model.refine import Crop, best_match, crop_around, refined_keypoints


def _inst(box, class_index=0, kpts=None):
    kpts = np.zeros((2, 3)) if kpts is None else np.asarray(kpts, float)
    return Instance("fly", class_index, 0.9, tuple(float(v) for v in box), kpts, ("a", "b"))


def test_crop_is_a_square_of_context_times_the_longer_side_centred_on_the_box():
    crop = crop_around((400, 450, 500, 470), 4.0, 1024, 1024)   # 100 x 20 box, centre (450, 460)
    assert (crop.x1 - crop.x0, crop.y1 - crop.y0) == (400, 400)
    assert ((crop.x0 + crop.x1) / 2, (crop.y0 + crop.y1) / 2) == (450, 460)


def test_crop_is_shifted_inside_the_image_at_borders_then_clipped():
    crop = crop_around((0, 990, 50, 1020), 4.0, 1024, 1280)      # bottom-left corner
    assert (crop.x0, crop.y1, crop.x1 - crop.x0, crop.y1 - crop.y0) == (0, 1024, 200, 200)
    tall = crop_around((10, 10, 100, 100), 6.0, 300, 2000)       # 540 px crop in a 300 px high image
    assert (tall.y0, tall.y1, tall.x1 - tall.x0) == (0, 300, 540)


def test_no_crop_when_it_would_be_the_whole_image():
    assert crop_around((100, 100, 400, 400), 3.0, 800, 800) is None
    assert crop_around((100, 100, 140, 140), 3.0, 800, 800) is not None


def test_best_match_maps_crop_pixels_to_the_image_and_needs_the_same_class_and_overlap():
    crop = Crop(300, 200, 700, 600)
    target = (400, 300, 500, 400)
    same = _inst((100, 100, 200, 200), kpts=[[150, 120, 0.5], [110, 190, 0.5]])  # = target in image pixels
    neighbour = _inst((180, 180, 280, 280))
    other_class = _inst((100, 100, 200, 200), class_index=1)
    assert best_match(target, 0, [neighbour, other_class, same], crop) is same
    assert best_match(target, 0, [neighbour, other_class], crop) is None       # IoU 0.02 < 0.3
    first = np.array([[1.0, 2.0, 0.7], [3.0, 4.0, 0.7]])
    out = refined_keypoints(first, same, crop)
    assert out.tolist() == [[450.0, 320.0, 0.7], [410.0, 390.0, 0.7]] and first[0, 0] == 1.0


def test_refine_argument_is_checked_and_auto_follows_the_file():
    with pytest.raises(PredictorError, match="refine"):
        Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", refine=0.5)
    p = Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash")
    assert p.refine is None                                       # the reference file recommends none
    assert Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", refine=4).refine == 4.0


def test_second_pass_keeps_boxes_and_scores(monkeypatch):
    """Random weights, box threshold 0: many detections. With refinement the same detections come
    back (boxes, scores, order); each gets one crop pass; a matched crop detection's keypoints,
    shifted by the crop's corner, replace the first pass's."""
    import unipose_model.refine as refine

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    kwargs = dict(device="cpu", text_encoder="hash", box_threshold=0.0, short_side=128, max_size=160,
                  max_instances=4)
    plain = Predictor("unipose_tiny", "reference", **kwargs)
    refined = Predictor(plain.model, refine=2.0, **kwargs)
    seen = []

    def first_candidate(box, class_index, candidates, crop):  # random boxes rarely overlap: take any
        seen.append(crop)
        return candidates[0]

    monkeypatch.setattr(refine, "best_match", first_candidate)
    a, b = plain.predict(image, "person"), refined.predict(image, "person")
    assert len(a) == len(b) == 4 and len(seen) == 4
    assert [x.box for x in a] == [x.box for x in b] and [x.score for x in a] == [x.score for x in b]
    for x, y, crop in zip(a, b, seen):
        assert np.array_equal(x.keypoints[:, 2], y.keypoints[:, 2])
        assert crop.x0 <= y.keypoints[:, 0].min() and y.keypoints[:, 0].max() <= crop.x1
        assert crop.y0 <= y.keypoints[:, 1].min() and y.keypoints[:, 1].max() <= crop.y1
        assert not np.allclose(x.keypoints[:, :2], y.keypoints[:, :2])
    assert refined.last_timing["refine_s"] > 0 and "refine_s" not in plain.last_timing


def test_speed_profiles_turn_refinement_off_and_accurate_brings_it_back():
    from unipose_model.speed import apply_profile

    p = Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", refine=3.0)
    apply_profile(p, "fast", 800, 1333)
    assert p.refine is None
    apply_profile(p, "accurate", 800, 1333)
    assert p.refine == 3.0


def test_only_the_best_scoring_detections_are_refined(monkeypatch):
    import unipose_model.refine as refine

    seen = []

    def record(box, class_index, candidates, crop):
        seen.append(box)
        return None

    monkeypatch.setattr(refine, "best_match", record)
    monkeypatch.setattr(refine, "MAX_REFINED_PER_IMAGE", 2)
    image = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    p = Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", box_threshold=0.0,
                  short_side=128, max_size=160, max_instances=5, refine=2.0)
    found = p.predict(image, "person")
    assert len(found) == 5 and seen == [found[0].box, found[1].box]
    assert found[0].score >= found[1].score >= max(f.score for f in found[2:])


def test_crop_pass_runs_at_refine_size(monkeypatch):
    """refine_size sets the crop pass's input size (square crops: both sides); the first pass
    keeps the predictor's; the reference file recommends none, so "auto" means short_side."""
    import unipose_model.inference as predictor_module  # where the Predictor preprocesses

    sizes = []
    real = predictor_module.preprocess_image

    def spy(rgb, short_side, max_size):
        sizes.append((rgb.shape[:2], short_side, max_size))
        return real(rgb, short_side=short_side, max_size=max_size)

    monkeypatch.setattr(predictor_module, "preprocess_image", spy)
    image = np.random.default_rng(2).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    kwargs = dict(device="cpu", text_encoder="hash", box_threshold=0.0, short_side=128, max_size=160,
                  max_instances=1, refine=2.0)
    assert Predictor("unipose_tiny", "reference", **kwargs).refine_size is None
    p = Predictor("unipose_tiny", "reference", refine_size=96, **kwargs)
    p.predict(image, "person")
    assert sizes[0] == ((240, 320), 128, 160) and len(sizes) == 2
    assert sizes[1][1:] == (96, 96)
    with pytest.raises(PredictorError, match="refine_size"):
        Predictor("unipose_tiny", "reference", refine_size=8, **kwargs)


def test_a_refiner_stored_in_the_model_file_runs_the_crop_pass(tmp_path, monkeypatch):
    """A model file may carry a second network for the crop pass ("refiner"): the Predictor
    loads it by default, runs the first pass with the main network and every crop with the
    refiner; refine_model=None keeps the main network for both."""
    import torch

    import unipose_model.predictor as predictor_module
    import unipose_model.refine as refine
    from unipose_model.model_file import read_model_file_info, save_model_file

    base = Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash")
    state = base.model.state_dict()
    gen = torch.Generator().manual_seed(0)
    other = {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
             for k, v in state.items()}
    path = save_model_file(tmp_path / "with_refiner.pth", state, model_name="unipose_tiny", refiner=other)
    assert read_model_file_info(path).refiner_config == {"name": "unipose_tiny", "overrides": {}}

    kwargs = dict(device="cpu", text_encoder="hash", box_threshold=0.0, short_side=128, max_size=160,
                  max_instances=2, refine=2.0)
    p = Predictor(checkpoint=path, **kwargs)
    assert p.refine_model is not None and p.refine_model is not p.model
    key = next(k for k, v in other.items() if v.is_floating_point())
    assert torch.equal(p.refine_model.state_dict()[key], other[key])
    assert Predictor(checkpoint=path, refine_model=None, **kwargs).refine_model is None

    ran = []
    real = predictor_module.call_entry

    def spy(model, entry, *args):
        ran.append(model)
        return real(model, entry, *args)

    monkeypatch.setattr(predictor_module, "call_entry", spy)
    monkeypatch.setattr(refine, "best_match", lambda box, cls, candidates, crop: candidates[0] if candidates else None)
    image = np.random.default_rng(3).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    found = p.predict(image, "person")
    assert len(found) == 2
    assert ran[0] is p.model and ran[1:] and all(m is p.refine_model for m in ran[1:])
