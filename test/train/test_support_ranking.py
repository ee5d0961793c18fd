"""unipose-rank-supports: candidates and evaluation images, the ranking on the real fly labels with
the bundled model, the support files it writes, and its errors."""
import json

import numpy as np
import pytest

from shared_paths import DATA
from unipose_train.dataset import SourceConfig, load_source
from unipose_train.evaluation import support_ranking as sr

LABELS = DATA / "lab" / "fly_clip" / "clip_keypoints_coco.json"
pytestmark = pytest.mark.skipif(not LABELS.is_file(), reason="shared fly labels not available")


@pytest.fixture(scope="module")
def walking():
    """The walking training frames of the fly clip (the bundled model's own training data)."""
    return load_source(SourceConfig(ann=str(LABELS), images=str(LABELS.parent), id_range=[1000, 1200]))


def test_candidates_spread_over_the_images_and_show_every_keypoint(walking):
    cands = sr.pick_candidates(walking, 1, 5)
    ids = [c.image_id for c in cands]
    assert len(cands) == 5 and ids == sorted(ids) and ids[0] == 1000 and ids[-1] == 1199
    assert all(c.annotation.num_keypoints == 13 for c in cands)
    evals = sr.pick_eval_images(walking, 1, 4, exclude=ids)
    assert len(evals) == 4 and not set(evals) & set(ids) and all(1000 <= i < 1200 for i in evals)


def test_found_and_extra_counts_matches_once():
    from unipose_train.unikpt.format import Instance
    truth = [Instance(i, 0, 1, np.zeros((1, 3)), box, 1.0) for i, box in enumerate([(0, 0, 10, 10), (50, 50, 10, 10)])]
    dets = [{"score": 0.9, "bbox": [0, 0, 10, 10]}, {"score": 0.8, "bbox": [1, 1, 10, 10]},  # 2nd: a duplicate
            {"score": 0.7, "bbox": [52, 50, 10, 10]}]
    assert sr.found_and_extra(dets, truth) == (2, 1)
    assert sr.found_and_extra([], truth) == (0, 0)


def test_ranks_real_supports_and_writes_a_usable_support(tmp_path):
    """End to end through the CLI on the real labels with the bundled model: a full support
    (frame 1000, fly 0) must beat one with its keypoints scrambled into wrong places, and the
    written files reproduce the winning prompt."""
    scrambled = json.loads(LABELS.read_text())
    scrambled["images"] = [im for im in scrambled["images"] if 1000 <= im["id"] < 1200]
    scrambled["annotations"] = [a for a in scrambled["annotations"] if 1000 <= a["image_id"] < 1200]
    for ann in scrambled["annotations"]:
        if ann["image_id"] == 1040:  # both flies of frame 1040: keypoints shuffled within the fly
            k = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
            ann["keypoints"] = k[np.roll(np.arange(len(k)), 5)].ravel().tolist()
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(scrambled))
    out = tmp_path / "best"
    rc = sr.main(["--labels", str(labels), "--images", str(LABELS.parent), "--support", "1040:0", "1000",
                  "--eval-images", "2", "--refine", "0", "--no-heatmap-refiner", "--threads", "1", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "ranking.json").read_text())
    rows = report["ranking"]
    assert [r["support"] for r in rows] == ["1000:0", "1040:0"]
    assert rows[0]["PCK@0.2"] > 0.6 > rows[1]["PCK@0.2"]   # UniPose's keypoints: the support's own effect
    assert rows[0]["found"] == 1.0 and rows[0]["images"] == 2

    from unipose_model.visual_prompt import load_visual_prompt
    # a labelled video frame: the support names the frame instead of copying it
    assert not (out / "support.png").exists()
    assert report["support_image"] == f"{(LABELS.parent / 'clip.mp4').resolve()}#frame=1000"
    prompt = load_visual_prompt(report["support_image"], out / "support.json")
    truth = next(a for a in scrambled["annotations"] if a["image_id"] == 1000)
    assert np.allclose(prompt.keypoints, np.asarray(truth["keypoints"]).reshape(-1, 3), atol=1e-3)
    assert prompt.class_name == "fly" and len(prompt.keypoint_names) == 13 and len(prompt.skeleton) == 12
    assert prompt.image.shape == (1024, 1024, 3)
    from unipose_train.dataset import read_rgb
    assert np.array_equal(prompt.image, read_rgb(report["support_image"]))  # the very frame that was ranked


def test_clear_errors(tmp_path, capsys):
    assert sr.main(["--labels", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 1
    assert "cannot read the labels" in capsys.readouterr().err
    assert sr.main(["--labels", str(LABELS), "--images", str(LABELS.parent), "--id-range", "1000", "1010",
                    "--support", "1003:5", "--out", str(tmp_path)]) == 1
    assert "instance 5 requested" in capsys.readouterr().err
    assert sr.main(["--labels", str(LABELS), "--images", str(LABELS.parent), "--category", "mouse",
                    "--out", str(tmp_path)]) == 1
    assert "classes: fly" in capsys.readouterr().err
    assert sr.main(["--labels", str(LABELS), "--images", str(LABELS.parent), "--id-range", "1000", "1010",
                    "--candidates", "1", "--eval-images", "1", "--checkpoint", "reference", "--model", "unipose_tiny",
                    "--out", str(tmp_path)]) == 2
    assert "has no visual prompt encoder" in capsys.readouterr().err
    for bad in (["--support", "x:y"], ["--candidates", "0"]):
        with pytest.raises(SystemExit):
            sr.main(["--labels", str(LABELS), "--out", str(tmp_path), *bad])


def test_support_written_as_a_picture_for_image_files(tmp_path):
    from unipose_model.visual_prompt import VisualPrompt, load_visual_prompt
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    kpts = np.array([[10, 12, 2], [40, 30, 2], [0, 0, 0]], dtype=np.float32)
    prompt = VisualPrompt(image, kpts, "widget", ["a", "b", "c"], [(0, 1), (1, 2)], (5, 5, 50, 40))
    image_path, ann_path = sr.write_support(prompt, tmp_path)
    back = load_visual_prompt(image_path, ann_path)
    assert np.array_equal(back.image, image) and np.array_equal(back.keypoints, kpts)
    assert back.skeleton == ((0, 1), (1, 2)) and back.keypoint_names == ("a", "b", "c")
    assert back.class_name == "widget" and np.allclose(back.box, (5, 5, 50, 40))
