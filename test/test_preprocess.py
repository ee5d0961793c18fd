"""Preprocessing: the official resize rule and normalisation, reproduced bit for bit."""
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from unipose_model.preprocess import (ImageError, MAX_PIXELS, as_rgb_array, compute_resize,
                                      pad_batch, preprocess_batch, preprocess_image)

from shared_paths import DATA, REFERENCE

FIXTURES = REFERENCE / "fixtures"
COCO = DATA / "samples" / "coco"


def fixture_image(name):
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    path = COCO / Path(meta["image"]).name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["image_sha256"]
    expected = np.load(FIXTURES / f"{name}.npz")["in_image"]
    return meta, path, expected


@pytest.mark.parametrize("w,h,size,max_size,expected", [
    (640, 425, 384, 576, (382, 575)),    # 382.5 rounds half-to-even to 382 (half-up gives 383)
    (500, 333, 320, 512, (320, 480)),
    (640, 480, 800, 1333, (800, 1066)),  # truncation of 1066.67
    (480, 640, 800, 1333, (1066, 800)),  # portrait
    (1333, 800, 800, 1333, (800, 1333)),  # short side already equal: unchanged
    (4000, 1000, 800, 1333, (333, 1332)),  # long side capped: size = round(333.25) = 333
    (640, 425, 384, None, (384, 578)),
])
def test_compute_resize(w, h, size, max_size, expected):
    assert compute_resize(w, h, size, max_size) == expected


@pytest.mark.parametrize("name", ["coco_person", "multi_class"])
def test_reproduces_fixture_input(name):
    meta, path, expected = fixture_image(name)
    pil = Image.open(path).convert("RGB")
    ours = preprocess_image(pil, short_side=meta["short_side"], max_size=meta["max_size"])
    assert tuple(ours.shape) == tuple(meta["input_shape"][1:])
    assert ours.dtype == torch.float32
    assert np.abs(ours.numpy() - expected[0]).max() == 0.0
    # the same through an OpenCV BGR array
    bgr = cv2.imread(str(path))
    ours_bgr = preprocess_image(bgr, color="bgr", short_side=meta["short_side"], max_size=meta["max_size"])
    assert np.abs(ours_bgr.numpy() - expected[0]).max() == 0.0


def test_batch_pads_with_mask():
    a = np.full((40, 60, 3), 200, np.uint8)
    b = np.full((60, 30, 3), 10, np.uint8)
    batch = preprocess_batch([a, b], short_side=40, max_size=100)
    assert batch.original_sizes == [(40, 60), (60, 30)]
    assert batch.resized_sizes == [(40, 60), (80, 40)]
    assert tuple(batch.images.shape) == (2, 3, 80, 60)
    assert batch.masks.dtype == torch.bool
    assert not batch.masks[0, :40, :60].any() and batch.masks[0, 40:].all()
    assert not batch.masks[1, :80, :40].any() and batch.masks[1, :, 40:].all()
    assert (batch.images[0, :, 40:] == 0).all() and (batch.images[1, :, :, 40:] == 0).all()
    single = preprocess_image(b, short_side=40, max_size=100)
    assert torch.equal(batch.images[1, :, :80, :40], single)


def test_pad_batch_of_one_has_no_padding():
    t = torch.randn(3, 5, 7)
    images, masks = pad_batch([t])
    assert torch.equal(images[0], t) and not masks.any()


def test_grayscale_and_pil_inputs():
    gray = (np.arange(30 * 20) % 256).astype(np.uint8).reshape(30, 20)
    rgb = np.repeat(gray[:, :, None], 3, 2)
    assert np.array_equal(as_rgb_array(gray), rgb)
    assert np.array_equal(as_rgb_array(gray[:, :, None]), rgb)
    assert np.array_equal(as_rgb_array(Image.fromarray(gray)), rgb)
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    assert (as_rgb_array(bgr, "bgr")[..., 2] == 255).all()


@pytest.mark.parametrize("image,message", [
    (None, "None"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((10, 10, 4), np.uint8), "channels"),
    (np.zeros((10, 10, 3, 2), np.uint8), "shape"),
    ("image.jpg", "numpy array"),
])
def test_bad_images_raise_clear_errors(image, message):
    with pytest.raises(ImageError, match=message):
        as_rgb_array(image)


def test_huge_image_names_the_limit():
    side = int(MAX_PIXELS ** 0.5) + 1
    huge = np.broadcast_to(np.zeros(3, np.uint8), (side, side, 3))  # no memory allocated
    with pytest.raises(ImageError, match=r"too large.*limit is 100 MP"):
        as_rgb_array(huge)


def test_batch_error_names_the_image():
    with pytest.raises(ImageError, match="image 1"):
        preprocess_batch([np.zeros((8, 8, 3), np.uint8), None])
