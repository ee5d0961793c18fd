"""Inputs that used to crash or lose results (issue 19, items 1-3 and 8), through the entry points
users hit: `unipose predict` and Predictor."""
from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from unipose_model.cli import main
from unipose_model.media import read_image
from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_VIDEO
from unipose_model.predictor import Predictor
from unipose_model.preprocess import compute_resize

from shared_paths import DATA

FLY = DATA / "samples" / "fly" / "1400.jpg"
SAMPLE = BUNDLED_VIDEO.with_name("sample_fly.jpg")
TINY = ["--model", "unipose_tiny", "--checkpoint", "reference", "--text-encoder", "hash",
        "--short-side", "192", "--max-size", "320", "--box-threshold", "0.0"]


@pytest.fixture(scope="module")
def tiny():
    return Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", box_threshold=0.0,
                     short_side=192, max_size=320)


# ------------------------------------------------------------------------- 1. very thin images
def test_resize_of_very_thin_images_keeps_one_pixel():
    assert compute_resize(3000, 1, 800, 1333) == (1, 1333)
    assert compute_resize(1, 3000, 800, 1333) == (1333, 1)
    assert compute_resize(4000, 2, 512, 512) == (1, 512)  # the bundled model's input size
    assert compute_resize(4000, 2, 800, 1333) == (1, 2000)  # the official rule's own result: unchanged
    assert compute_resize(3000, 1, 800, None) == (800, 2400000)  # no cap: the official rule, unchanged
    assert compute_resize(640, 480, 800, 1333) == (800, 1066)  # ordinary images: the official rule


def test_predictor_on_a_thin_array_gives_a_result(tiny):
    for shape in [(1, 3000, 3), (3000, 1, 3), (2, 4000, 3)]:
        instances = tiny.predict(np.full(shape, 128, np.uint8), "person")  # was: ValueError
        for inst in instances:
            x0, y0, x1, y1 = inst.box
            assert 0 <= x0 <= x1 <= shape[1] and 0 <= y0 <= y1 <= shape[0]


def test_predict_folder_with_thin_images_keeps_going(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_thin.png"), np.full((1, 3000, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "b_thin.png"), np.full((2, 4000, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "c_fly.png"), cv2.imread(str(FLY)))
    rc = main(["predict", str(folder), "--prompt", "fly", "--out", str(tmp_path / "out"), *TINY[:-6],
               "--short-side", "512", "--max-size", "512", "--box-threshold", "0.0"])  # 4000x2 -> 0 px before
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    meta = json.loads((tmp_path / "out" / "images.json").read_text())
    h, w = cv2.imread(str(FLY)).shape[:2]
    assert [(im["file_name"], im["width"], im["height"]) for im in meta["images"]] == [
        ("a_thin.png", 3000, 1), ("b_thin.png", 4000, 2), ("c_fly.png", w, h)]
    assert cv2.imread(str(tmp_path / "out" / "a_thin.png")).shape == (1, 3000, 3)


# ------------------------------------------------------------------ 2. a video with no frames
def zero_frame_video(path):
    """An mp4 that opens (its index is intact) but whose frame data is zeroed: 0 frames decode."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(3):
        writer.write(np.full((48, 64, 3), 100, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    at = 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"mdat":
            data[at + 8:at + size] = bytes(size - 8)
        at += size
    path.write_bytes(bytes(data))
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened() and not cap.read()[0]
    cap.release()
    return path


@pytest.mark.parametrize("overlay", [[], ["--no-overlay"]])
def test_a_video_that_decodes_nothing_is_named_and_the_run_goes_on(tmp_path, capsys, overlay):
    video = zero_frame_video(tmp_path / "a_empty.mp4")
    out = tmp_path / "out"
    rc = main(["predict", str(video), str(FLY), "--prompt", "fly", "--out", str(out), *overlay, *TINY])
    err = capsys.readouterr().err
    assert rc == 1, err  # an input gave nothing: exit 1, the others' results are written
    assert "no frames could be decoded from video" in err and "a_empty.mp4" in err and "Traceback" not in err
    assert "1 input(s) gave no result" in err
    meta = json.loads((out / "images.json").read_text())
    assert [im["file_name"] for im in meta["images"]] == ["1400.jpg"]  # the file after the video
    assert not (out / "a_empty_annotated.mp4").exists()


# --------------------------------------------------------------------- 3. 16-bit PIL images
def test_16_bit_pil_image_is_read_like_the_cli_reads_the_file(tmp_path):
    grey = cv2.imread(str(SAMPLE), cv2.IMREAD_GRAYSCALE)
    wide = grey.astype(np.uint16) * 257 + 100  # 16-bit data whose high byte is the 8-bit image
    path = tmp_path / "fly16.png"
    cv2.imwrite(str(path), wide)
    pil = Image.open(path)
    assert pil.mode == "I;16"
    predictor = Predictor(checkpoint=BUNDLED_CHECKPOINT, device="cpu")
    from_pil = predictor.predict(pil, "fly")  # was: 0 detections (clipped, 99.9 % white)
    from_file = predictor.predict(read_image(path), "fly", color="bgr")  # what `unipose predict` does
    assert len(from_pil) == len(from_file) >= 2
    for a, b in zip(from_pil, from_file):
        assert a.score == pytest.approx(b.score, abs=1e-6)
        assert np.allclose(a.keypoints, b.keypoints, atol=1e-3)


# --------------------------------------------------------------------- 8. EXIF orientation
@pytest.fixture
def rotated_photo(tmp_path):
    """A JPEG stored landscape-less (as a phone stores it) with EXIF orientation 6 (rotate 90 CW)."""
    image = Image.open(FLY).convert("RGB").crop((0, 0, 1024, 600))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_option_in_the_cli(tmp_path, rotated_photo, capsys):
    sizes = {}
    for flag in ([], ["--exif-orientation"]):
        out = tmp_path / f"out{len(flag)}"
        assert main(["predict", str(rotated_photo), "--prompt", "fly", "--out", str(out), *flag, *TINY]) == 0
        image = json.loads((out / "images.json").read_text())["images"][0]
        results = json.loads((out / "results.json").read_text())
        assert results and all(r["bbox"][0] + r["bbox"][2] <= image["width"] + 1e-3 and
                               r["bbox"][1] + r["bbox"][3] <= image["height"] + 1e-3 for r in results)
        assert cv2.imread(str(out / "phone.png")).shape[:2] == (image["height"], image["width"])
        sizes[bool(flag)] = (image["width"], image["height"])
    assert sizes == {False: (1024, 600), True: (600, 1024)}  # stored grid (official) vs displayed
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "EXIF" in capsys.readouterr().out


def test_exif_orientation_option_in_predictor_and_loader(rotated_photo, tiny):
    from PIL import ImageOps

    displayed = read_image(rotated_photo, color="rgb", exif_orientation=True)
    assert displayed.shape[:2] == (1024, 600) and read_image(rotated_photo).shape[:2] == (600, 1024)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(rotated_photo)))
    oriented = Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", box_threshold=0.0,
                         short_side=192, max_size=320, exif_orientation=True)
    a, b = oriented.predict(Image.open(rotated_photo), "fly"), tiny.predict(upright, "fly")
    assert a and [i.box for i in a] == [i.box for i in b]
    assert all(i.box[2] <= 600 + 1e-3 for i in a)  # in the displayed image
    assert any(i.box[2] > 600 for i in tiny.predict(Image.open(rotated_photo), "fly"))  # default: stored grid


# ------------------------------------------------------------------- 7. a 100 kB prompt
@pytest.mark.parametrize("checkpoint", ["reference", "bundled"])
def test_a_huge_prompt_is_not_echoed_whole(tmp_path, capsys, checkpoint):
    model = TINY if checkpoint == "reference" else ["--checkpoint", str(BUNDLED_CHECKPOINT)]
    for prompt in ["a" * 100_000, "cat: " + "q, " * 33_000 + "q"]:
        rc = main(["predict", str(FLY), "--prompt", prompt, "--out", str(tmp_path / "o"), *model])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "characters)" in err, err[:300]
        assert len(err) < 1500, len(err)  # was 100,818 characters
