"""Training the heatmap refiner: samples (crop geometry, flips, targets), the config, and
`unipose-train-refiner` end to end on real fly frames, through export into a model file that the
Predictor then uses."""
import json

import numpy as np
import pytest

from shared_paths import DATA
from unipose_model.heatmap_codec import encode_heatmaps
from unipose_train.heatmap_refiner_train import (ObjectPatch, RefinerAugmentConfig,
                                            load_refiner_config, main, make_sample)
from unipose_model.heatmap_refiner import HeatmapRefinerSpec

FLY_LABELS = DATA / "lab" / "fly_clip" / "clip_keypoints_coco.json"
NAMES = ("head", "thorax", "left wing", "right wing")
SPEC = HeatmapRefinerSpec(category="bug", keypoints=NAMES, align=("thorax", "head"), input_size=64,
                          context=1.5, widths=(4, 4, 4, 4, 4), flip_pairs=((2, 3),))
NO_JITTER = RefinerAugmentConfig(angle_std_deg=0.0, scale_range=0.0, shift_std=0.0, flip_prob=0.0,
                                 contrast=0.0, brightness=0.0)


def _object():
    """A 200x200 image with one bright pixel block under each keypoint, cut as a patch at (20, 30)."""
    image = np.zeros((200, 200), np.uint8)
    kp = np.array([[100.0, 60.0, 2], [100.0, 100.0, 2], [80.0, 130.0, 2], [125.0, 125.0, 2]])
    for x, y, _ in kp:
        image[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 200
    return ObjectPatch(image[30:, 20:].copy(), np.array([20.0, 30.0]), (75.0, 55.0, 130.0, 135.0), kp, 1.0)


def test_sample_keypoints_land_on_their_pixels_with_head_up():
    obj = _object()
    crop, xy, vis, affine = make_sample(obj, SPEC, None, None, NAMES)
    assert crop.shape == (64, 64) and vis.tolist() == [1, 1, 1, 1]
    for x, y in xy:
        assert crop[int(round(y)), int(round(x))] > 0.5        # each keypoint's bright block
    assert xy[0, 1] < xy[1, 1] and abs(xy[0, 0] - xy[1, 0]) < 1e-6   # head straight above thorax
    # the head is at -y, so the fly's left (image left here, facing up) stays on the crop's left
    assert xy[2, 0] < xy[1, 0] < xy[3, 0]


def test_flip_mirrors_the_crop_and_swaps_left_and_right():
    obj = _object()
    plain, xy, _, _ = make_sample(obj, SPEC, NO_JITTER, np.random.default_rng(0), NAMES)
    flip = RefinerAugmentConfig(**{**NO_JITTER.__dict__, "flip_prob": 1.0})
    mirrored, fxy, _, _ = make_sample(obj, SPEC, flip, np.random.default_rng(0), NAMES)
    assert np.allclose(mirrored, plain[:, ::-1])
    assert np.allclose(fxy[2], [63 - xy[3, 0], xy[3, 1]]) and np.allclose(fxy[3], [63 - xy[2, 0], xy[2, 1]])
    assert np.allclose(fxy[:2, 0], 63 - xy[:2, 0])


def test_targets_peak_at_the_keypoint_and_vanish_when_unlabelled():
    xy = np.array([[10.5, 20.5], [3.0, 3.0]])
    t = encode_heatmaps(xy, np.array([1.0, 0.0]), SPEC.input_size, SPEC.heatmap_size, 1.5)
    assert t.shape == (2, 32, 32)
    assert np.unravel_index(t[0].argmax(), t[0].shape) == (10, 5)     # crop px (10.5, 20.5) -> cell (5, 10)
    assert t[0].max() == pytest.approx(1.0, abs=1e-6) and t[1].max() == 0.0


def test_config_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {stpes: 3}\ndata: {train: [{ann: x.json}]}\n")
    assert main([str(bad)]) == 2
    assert "stpes" in capsys.readouterr().err
    empty = tmp_path / "empty.yaml"
    empty.write_text("category: fly\n")
    with pytest.raises(ValueError, match="data.train"):
        load_refiner_config(str(empty))


@pytest.mark.skipif(not FLY_LABELS.is_file(), reason="shared fly clip not available")
def test_train_export_and_predict_on_fly_frames(tmp_path, capsys):
    from unipose_train.model_export import export
    from unipose_model.media import read_video_frame
    from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_VIDEO
    from unipose_model.predictor import Predictor

    config = tmp_path / "refiner.yaml"
    config.write_text(f"""
category: fly
align: [thorax, head]
data:
  train: [{{ann: {FLY_LABELS}, images: {FLY_LABELS.parent}, id_range: [1000, 1040]}}]
  val: [{{ann: {FLY_LABELS}, images: {FLY_LABELS.parent}, id_range: [1100, 1104]}}]
model: {{input_size: 64, widths: [8, 8, 16, 16, 16]}}
optim: {{steps: 60, batch_size: 8, lr: 3.0e-3}}
run: {{out_dir: {tmp_path / 'run'}, eval_every: 30, progress: false, threads: 1}}
""")
    assert main([str(config)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["train_objects"] == 80 and result["val_objects"] == 8
    assert result["loss_last"] < 0.5 * result["loss_first"]           # it learns
    assert 0.0 <= result["val"]["pck"] <= 1.0 and len(result["val"]["per_keypoint"]) == 13
    assert (tmp_path / "run" / "result.json").is_file()

    model_file = export(str(BUNDLED_CHECKPOINT), str(tmp_path / "fly.pth"),
                        heatmap_refiner=result["checkpoint"])
    plain = Predictor(checkpoint=str(BUNDLED_CHECKPOINT), device="cpu", refine=0, heatmap_refiner=None)
    refined = Predictor(checkpoint=str(model_file), device="cpu", refine=0)
    assert refined.heatmap_refiner is not None and refined.box_threshold == plain.box_threshold
    frame = read_video_frame(str(BUNDLED_VIDEO), 1300, color="rgb")
    a, b = plain.predict(frame, "fly"), refined.predict(frame, "fly")
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x.box == y.box and x.score == y.score                   # detections unchanged
        moved = np.linalg.norm(x.keypoints[:, :2] - y.keypoints[:, :2], axis=1)
        assert moved.max() > 0                                         # keypoints from the heatmaps
        assert moved.max() < 2 * max(x.box[2] - x.box[0], x.box[3] - x.box[1])   # within the crop
    assert "heatmap_refine_s" in refined.last_timing
    off = Predictor(checkpoint=str(model_file), device="cpu", refine=0, heatmap_refiner=None)
    assert np.allclose(off.predict(frame, "fly")[0].keypoints, a[0].keypoints)


def test_export_refuses_a_file_that_is_not_a_matching_refiner(tmp_path, capsys):
    """A wrong --heatmap-refiner is named at export time, not when a user loads the model."""
    import torch

    from unipose_train.model_export import main as export_main
    from unipose_model.heatmap_refiner import HeatmapRefiner
    from unipose_model.model_file import BUNDLED_CHECKPOINT

    not_refiner = tmp_path / "plain.pth"
    torch.save({"model": {}}, not_refiner)
    assert export_main([str(BUNDLED_CHECKPOINT), str(tmp_path / "a.pth"), "--heatmap-refiner", str(not_refiner)]) == 2
    assert "not a checkpoint of unipose-train-refiner" in capsys.readouterr().err
    mismatched = tmp_path / "mismatched.pth"   # weights of a wider network under this spec
    wide = HeatmapRefiner(HeatmapRefinerSpec(**{**SPEC.to_dict(), "widths": (8, 8, 8, 8, 8)}))
    torch.save({"model": wide.state_dict(), "spec": SPEC.to_dict()}, mismatched)
    assert export_main([str(BUNDLED_CHECKPOINT), str(tmp_path / "b.pth"), "--heatmap-refiner", str(mismatched)]) == 2
    assert "mismatched.pth" in capsys.readouterr().err and not (tmp_path / "b.pth").exists()
