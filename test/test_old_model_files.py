"""Model files written before the Predictor split (issue 23) load as before: the bundled
fly_demo.pth, with the same configuration name, state-dict keys, recommended settings and
detections. The expected figures were printed by the code of commit 70bc17e (before the split)
on frame 700 of the bundled clip; rounding: 4 decimals for scores, 0.1 px for positions."""
import cv2
import numpy as np
import pytest

from unipose_model.loading import load_model
from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_VIDEO
from unipose_model.predictor import Predictor

BEFORE = {"settings": [0.3, 512, 512],
          "instances": [[0.5846, [252.6, 417.1, 353.8, 497.6], [335.3, 444.5, 302.4, 458.4, 272.8, 471.7]],
                        [0.5189, [346.8, 395.8, 440.9, 457.8], [436.6, 415.1, 396.3, 422.9, 361.1, 427.5]]]}


def test_the_bundled_model_file_loads_with_its_stored_names():
    model, checkpoint, info = load_model(None, BUNDLED_CHECKPOINT)
    assert info.model_name == model.config.name == "unipose_tiny_visual" and checkpoint == BUNDLED_CHECKPOINT
    import torch
    stored = torch.load(BUNDLED_CHECKPOINT, map_location="cpu", weights_only=True)["model"]
    assert set(stored) <= set(model.state_dict())  # no key renamed


def test_the_bundled_model_file_gives_the_detections_it_gave_before_the_split():
    cap = cv2.VideoCapture(str(BUNDLED_VIDEO))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 700)
    ok, frame = cap.read()
    cap.release()
    assert ok
    p = Predictor(model="fly", device="cpu")
    assert [p.box_threshold, p.short_side, p.max_size] == BEFORE["settings"]
    found = p.predict(frame, "fly", color="bgr")
    assert len(found) == len(BEFORE["instances"])
    for inst, (score, box, first_keypoints) in zip(found, BEFORE["instances"]):
        assert inst.score == pytest.approx(score, abs=2e-3)
        np.testing.assert_allclose(inst.box, box, atol=0.5)
        np.testing.assert_allclose(inst.keypoints[:, :2].ravel()[:6], first_keypoints, atol=0.5)
