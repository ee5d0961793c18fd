"""The `unipose` command line, end to end on real images and a short video (tiny model)."""
import json
import shutil

import cv2
import pytest
import torch

from unipose_model.cli import main
from unipose_model.model_file import BUNDLED_CHECKPOINT

from shared_paths import DATA

SAMPLES = DATA / "samples"
IMAGES = [SAMPLES / "coco" / "000000000785.jpg", SAMPLES / "fly" / "1400.jpg"]
TINY = ["--model", "unipose_tiny", "--checkpoint", "reference", "--text-encoder", "hash",
        "--short-side", "192", "--max-size", "320", "--box-threshold", "0.0"]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "flies.mp4"
    frame = cv2.imread(str(IMAGES[1]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, frame.shape[1::-1])
    for i in range(5):
        writer.write(cv2.flip(frame, 1) if i % 2 else frame)
    writer.release()
    return path


def test_predict_images_and_video(tmp_path, video, capsys):
    out = tmp_path / "out"
    rc = main(["predict", *map(str, IMAGES), str(video), "--prompt", "person", "--out", str(out),
               "--max-instances", "3", "-v", *TINY])
    assert rc == 0
    err = capsys.readouterr().err
    assert "meaningless" in err and "000000000785.jpg:" in err and "flies.mp4#frame=4" in err

    results = json.loads((out / "results.json").read_text())
    meta = json.loads((out / "images.json").read_text())
    ids = [im["id"] for im in meta["images"]]
    assert len(ids) == 2 + 5 and len(set(ids)) == 7
    assert ids[:2] == [785, 1400]  # numeric file names are COCO image ids
    assert meta["categories"][0]["name"] == "person" and len(meta["categories"][0]["keypoints"]) == 17
    assert meta["meaningless"] is True
    by_image = {}
    for r in results:
        assert set(r) >= {"image_id", "category_id", "bbox", "score", "keypoints"}
        assert r["category_id"] == 1 and len(r["keypoints"]) == 17 * 3 and len(r["bbox"]) == 4
        assert r["bbox"][2] >= 0 and r["bbox"][3] >= 0
        by_image.setdefault(r["image_id"], []).append(r)
    assert set(by_image) <= set(ids) and all(len(v) <= 3 for v in by_image.values())
    assert 785 in by_image

    for name in ("000000000785.png", "1400.png"):
        image = cv2.imread(str(out / name))
        assert image is not None
    assert cv2.imread(str(out / "000000000785.png")).shape == (425, 640, 3)
    cap = cv2.VideoCapture(str(out / "flies_annotated.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 5


def test_directory_input(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(IMAGES[1], folder / "a.jpg")
    (folder / "notes.txt").write_text("ignored")
    rc = main(["predict", str(folder), "--prompt", "fly: head, thorax", "--out", str(tmp_path / "o"),
               "--no-overlay", *TINY])
    assert rc == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert all(len(r["keypoints"]) == 6 for r in results)
    assert not (tmp_path / "o" / "a.png").exists()


def test_overlay_never_overwrites_an_input(tmp_path):
    image = tmp_path / "b.png"
    cv2.imwrite(str(image), cv2.imread(str(IMAGES[1])))
    before = image.read_bytes()
    assert main(["predict", str(image), "--prompt", "person", "--out", str(tmp_path), *TINY]) == 0
    assert image.read_bytes() == before and (tmp_path / "b_1.png").is_file()


def _error(args, capsys):
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert "Traceback" not in err and len(errors) == 1, err
    return errors[0]


def test_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path / "o")]
    err = _error(["predict", str(tmp_path / "missing.jpg"), "--prompt", "person", *out, *TINY], capsys)
    assert "file not found" in err and "missing.jpg" in err

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not a jpeg")
    # an unreadable image among good ones is skipped with a message; the others' results are kept
    assert main(["predict", str(broken), str(IMAGES[1]), "--prompt", "fly", *out, *TINY]) == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "cannot decode image" in err and "broken.jpg" in err
    images = json.loads((tmp_path / "o" / "images.json").read_text())
    assert [im["file_name"] for im in images["images"]] == ["1400.jpg"]
    assert (tmp_path / "o" / "1400.png").exists()

    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    err = _error(["predict", str(notes), "--prompt", "person", *out, *TINY], capsys)
    assert "unsupported file type" in err

    err = _error(["predict", str(IMAGES[1]), "--prompt", "", *out, *TINY], capsys)
    assert "prompt is empty" in err

    err = _error(["predict", str(IMAGES[1]), "--prompt", "person", *out, *TINY, "--refine", "0.5"], capsys)
    assert "refine must be 0/None (off) or a crop factor in [1, 20], got 0.5" in err

    err = _error(["predict", str(IMAGES[1]), "--prompt", "person", *out, *TINY, "--dtype", "float16",
                  "--device", "cpu"], capsys)
    assert "needs a CUDA device" in err
    if not torch.cuda.is_available():
        err = _error(["predict", str(IMAGES[1]), "--prompt", "person", *out, *TINY, "--device", "cuda"],
                     capsys)
        assert "CUDA is not available" in err

    monkeypatch.setenv("UNIPOSE_CACHE", str(tmp_path / "cache"))
    err = _error(["predict", str(IMAGES[1]), "--prompt", "person", *out, "--text-encoder", "hash"], capsys)
    assert "unipose_swint.pth" in err and "X-Pose" in err and "--checkpoint PATH" in err
    err = _error(["predict", str(IMAGES[1]), "--prompt", "person", *out, "--text-encoder", "hash",
                  "--checkpoint", str(tmp_path / "nope.pth")], capsys)
    assert "checkpoint not found" in err

    monkeypatch.setenv("HOME", str(tmp_path))
    # a corrupt checkpoint is named as such, before CLIP (absent here) is looked for
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(BUNDLED_CHECKPOINT.read_bytes()[:1000])
    err = _error(["predict", str(IMAGES[1]), "--prompt", "person", *out, "--checkpoint", str(truncated)], capsys)
    assert "cannot read checkpoint" in err and "truncated.pth" in err and "CLIP" not in err

    err = _error(["predict", str(IMAGES[1]), "--prompt", "cat: nose", *out, "--checkpoint", str(BUNDLED_CHECKPOINT)],
                 capsys)
    assert err.startswith("unipose predict: error: unknown prompt 'cat', 'nose': this model") and "Known prompts: fly" in err

    err = _error(["predict", str(IMAGES[1]), "--prompt", "person", *out, "--checkpoint", "reference",
                  "--model", "unipose_tiny"], capsys)
    assert "CLIP" in err and "--clip-weights" in err


def test_cli_defaults_match_the_library():
    from unipose_model import cli, postprocess, preprocess

    assert cli.DEFAULT_BOX_THRESHOLD == postprocess.DEFAULT_BOX_THRESHOLD
    assert cli.DEFAULT_IOU_THRESHOLD == postprocess.DEFAULT_IOU_THRESHOLD
    assert cli.DEFAULT_SHORT_SIDE == preprocess.DEFAULT_SHORT_SIDE
    assert cli.DEFAULT_MAX_SIZE == preprocess.DEFAULT_MAX_SIZE


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "predict" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    for flag in ("--prompt", "--checkpoint", "--out", "--box-threshold", "--clip-weights", "--max-instances", "--refine"):
        assert flag in text
    with pytest.raises(SystemExit) as exit_:
        main([])  # no command: usage error
    assert exit_.value.code == 2


def test_predict_with_a_visual_prompt(tmp_path, capsys):
    """--support-image + --support-keypoints (the simple 'name: x y' list and COCO json): the
    results use the support's class and keypoint names; bad support files fail in one line."""
    visual = ["--model", "unipose_tiny_visual", *TINY[2:]]
    keypoints = tmp_path / "support.txt"
    keypoints.write_text("head: 90 80\nthorax: 100 95\nabdomen: 110 120\nleft wing: -\n")
    out = tmp_path / "out"
    rc = main(["predict", str(IMAGES[0]), "--support-image", str(IMAGES[1]), "--support-keypoints",
               str(keypoints), "--support-class", "fly", "--out", str(out), "--max-instances", "2", *visual])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "images.json").read_text())
    assert meta["categories"] == [{"id": 1, "name": "fly", "keypoints": ["head", "thorax", "abdomen", "left wing"],
                                   "skeleton": []}]
    assert "visual prompt" in meta["prompt"]
    results = json.loads((out / "results.json").read_text())
    assert results and all(len(r["keypoints"]) == 4 * 3 and r["label"] == "fly" for r in results)

    coco = tmp_path / "support.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": IMAGES[1].name}],
                                "annotations": [{"id": 5, "image_id": 1, "category_id": 2, "bbox": [80, 70, 40, 60],
                                                 "keypoints": [90, 80, 2, 100, 95, 2]}],
                                "categories": [{"id": 2, "name": "bug", "keypoints": ["head", "tail"],
                                                "skeleton": [[1, 2]]}]}))
    out2 = tmp_path / "out2"
    assert main(["predict", str(IMAGES[0]), "--support-image", str(IMAGES[1]), "--support-keypoints", str(coco),
                 "--out", str(out2), *visual]) == 0
    meta = json.loads((out2 / "images.json").read_text())
    assert meta["categories"][0]["name"] == "bug" and meta["categories"][0]["skeleton"] == [[0, 1]]
    capsys.readouterr()

    o = ["--out", str(tmp_path / "o")]
    err = _error(["predict", str(IMAGES[0]), "--support-image", str(IMAGES[1]), *o, *visual], capsys)
    assert "both --support-image and --support-keypoints" in err
    err = _error(["predict", str(IMAGES[0]), *o, *visual], capsys)
    assert "--prompt" in err and "--support-image" in err
    outside = tmp_path / "outside.txt"
    outside.write_text("head: 5000 10\n")
    err = _error(["predict", str(IMAGES[0]), "--support-image", str(IMAGES[1]), "--support-keypoints",
                  str(outside), *o, *visual], capsys)
    assert "outside" in err
    err = _error(["predict", str(IMAGES[0]), "--support-image", str(IMAGES[1]), "--support-keypoints",
                  str(keypoints), *o, *TINY], capsys)
    assert "no visual prompt encoder" in err
