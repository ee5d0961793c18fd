"""`unipose predict` on a video tracks: the bundled fly model on held-out frames of the clip writes a
track_id per result, one per fly for the whole video, matching the labels' own identities."""
import json

import cv2
import numpy as np
import pytest

from shared_paths import DATA
from unipose_model.cli import main
from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_VIDEO
from unipose_model.box_ops import box_iou

LABELS = DATA / "lab" / "fly_clip" / "clip_keypoints_coco.json"
FIRST, COUNT = 1240, 4   # held-out frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "flies.mp4"
    cap = cv2.VideoCapture(str(BUNDLED_VIDEO))
    cap.set(cv2.CAP_PROP_POS_FRAMES, FIRST)
    frames = [cap.read()[1] for _ in range(COUNT)]
    cap.release()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, frames[0].shape[1::-1])
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.mark.slow
def test_video_results_carry_track_ids_that_follow_each_fly(tmp_path, clip):
    out = tmp_path / "out"
    assert main(["predict", str(clip), "--prompt", "fly", "--out", str(out), "--checkpoint",
                 str(BUNDLED_CHECKPOINT), "--device", "cpu", "--no-overlay"]) == 0
    results = json.loads((out / "results.json").read_text())
    labels = json.loads(LABELS.read_text())["annotations"]
    pairs = set()
    for frame in range(COUNT):
        truth = [a for a in labels if a["image_id"] == FIRST + frame]
        found = [r for r in results if r["image_id"] == frame]
        assert len(found) == 2 and all(r["track_id"] >= 1 for r in found)
        iou = box_iou(np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in truth)]),
                      np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in found)]))
        for t, r in enumerate(iou.argmax(1)):
            pairs.add((truth[t]["track_id"], found[r]["track_id"]))
    assert len(pairs) == 2 and len({p[1] for p in pairs}) == 2  # one id per fly, never swapped

    assert main(["predict", str(clip), "--prompt", "fly", "--out", str(tmp_path / "plain"), "--checkpoint",
                 str(BUNDLED_CHECKPOINT), "--device", "cpu", "--no-overlay", "--no-track"]) == 0
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert plain and not any("track_id" in r for r in plain)
