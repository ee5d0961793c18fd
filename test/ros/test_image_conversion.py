"""sensor_msgs Image/CompressedImage <-> numpy without cv_bridge: every encoding and every error."""
import cv2
import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from unipose_ros.image_conversion import (  # noqa: E402
    ImageConversionError, array_to_compressed, array_to_image,
    compressed_to_color, image_to_array, image_to_color)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def padded_image(array, encoding, pad=0, bigendian=False):
    """An Image whose rows carry `pad` bytes of garbage after the pixels."""
    array = np.asarray(array)
    rows = array.reshape(array.shape[0], -1)
    dtype = array.dtype.newbyteorder(">" if bigendian else "<")
    raw = rows.astype(dtype).view(np.uint8).reshape(array.shape[0], -1)
    padded = np.concatenate([raw, np.full((array.shape[0], pad), 0xAB, np.uint8)], 1)
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                is_bigendian=int(bigendian), step=padded.shape[1])
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize("encoding, array, expected, order", [
    ("rgb8", RGB, RGB, "rgb"),
    ("bgr8", RGB[:, :, ::-1], RGB[:, :, ::-1], "bgr"),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)]), RGB, "rgb"),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 7, np.uint8)]), RGB[:, :, ::-1], "bgr"),
    ("mono8", RGB[:, :, 0], np.dstack([RGB[:, :, 0]] * 3), "rgb"),
    ("8UC3", RGB[:, :, ::-1], RGB[:, :, ::-1], "bgr"),
])
@pytest.mark.parametrize("pad", [0, 3])
def test_8bit_encodings_with_and_without_row_padding(encoding, array, expected, order, pad):
    msg = padded_image(array, encoding, pad=pad)
    color, got_order = image_to_color(msg)
    assert got_order == order
    assert color.shape == (6, 8, 3) and color.dtype == np.uint8
    np.testing.assert_array_equal(color, expected)
    np.testing.assert_array_equal(image_to_array(msg), array)


def test_8bit_reads_are_zero_copy_views_of_the_message():
    msg = padded_image(RGB, "rgb8", pad=4)
    color, _ = image_to_color(msg)
    assert np.shares_memory(color, np.frombuffer(msg.data, np.uint8))
    assert not color.flags.writeable
    alpha = padded_image(np.dstack([RGB, RGB[:, :, 0]]), "bgra8")
    assert np.shares_memory(image_to_color(alpha)[0], np.frombuffer(alpha.data, np.uint8))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 4])
def test_mono16_scaled_by_frame_maximum(bigendian, pad):
    depth = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 85)  # 12-bit-ish range, max 3995
    msg = padded_image(depth, "mono16", pad=pad, bigendian=bigendian)
    np.testing.assert_array_equal(image_to_array(msg), depth)
    color, order = image_to_color(msg)
    assert order == "rgb" and color.shape == (6, 8, 3) and color.dtype == np.uint8
    assert color[..., 0].max() == 255 and color[0, 0, 0] == 0
    np.testing.assert_array_equal(color[..., 0], color[..., 2])


def test_mono16_all_zero_is_black():
    color, _ = image_to_color(padded_image(np.zeros((2, 2), np.uint16), "16UC1"))
    assert color.max() == 0


@pytest.mark.parametrize("encoding, code", [
    ("yuv422", cv2.COLOR_RGB2YUV_UYVY), ("uyvy", cv2.COLOR_RGB2YUV_UYVY),
    ("yuv422_yuy2", getattr(cv2, "COLOR_RGB2YUV_YUY2", None)), ("yuyv", getattr(cv2, "COLOR_RGB2YUV_YUY2", None)),
])
@pytest.mark.parametrize("pad", [0, 6])
def test_yuv422_variants(encoding, code, pad):
    flat = np.zeros((6, 8, 3), np.uint8)
    flat[:] = (200, 120, 40)  # a flat colour survives chroma subsampling
    if code is None:
        pytest.skip("this OpenCV has no RGB->YUY2 encoder")
    packed = cv2.cvtColor(flat, code)
    assert packed.shape == (6, 8, 2)
    color, order = image_to_color(padded_image(packed, encoding, pad=pad))
    assert order == "rgb" and color.shape == (6, 8, 3)
    assert np.abs(color.astype(int) - flat).max() <= 3


def test_yuv422_odd_width_rejected():
    msg = padded_image(np.zeros((2, 3, 2), np.uint8), "yuv422")
    with pytest.raises(ImageConversionError, match="even width"):
        image_to_color(msg)


@pytest.mark.parametrize("encoding, pattern", [
    ("bayer_rggb8", ("R", "G", "G", "B")), ("bayer_bggr8", ("B", "G", "G", "R")),
    ("bayer_gbrg8", ("G", "B", "R", "G")), ("bayer_grbg8", ("G", "R", "B", "G")),
])
def test_bayer_patterns_demosaic_to_the_right_colour(encoding, pattern):
    rgb = dict(R=210, G=120, B=30)
    mosaic = np.zeros((8, 8), np.uint8)
    for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        mosaic[dy::2, dx::2] = rgb[pattern[k]]
    color, order = image_to_color(padded_image(mosaic, encoding, pad=2))
    assert order == "rgb"
    centre = color[2:6, 2:6].reshape(-1, 3).astype(int)
    assert np.abs(centre - [210, 120, 30]).max() <= 2


def test_array_to_image_round_trips():
    for encoding, array in [("rgb8", RGB), ("bgr8", RGB), ("mono8", RGB[:, :, 0]),
                            ("mono16", RGB[:, :, 0].astype(np.uint16) * 200),
                            ("rgba8", np.dstack([RGB, RGB[:, :, 0]])), ("yuv422", RGB[:, :, :2])]:
        msg = array_to_image(array, encoding)
        assert msg.step * msg.height == len(msg.data)
        np.testing.assert_array_equal(image_to_array(msg), array)


def test_array_to_image_rejects_mismatched_arrays():
    with pytest.raises(ImageConversionError, match="does not match rgb8"):
        array_to_image(RGB[:, :, 0], "rgb8")
    with pytest.raises(ImageConversionError, match="does not match mono16"):
        array_to_image(RGB[:, :, 0], "mono16")
    with pytest.raises(ImageConversionError, match="unsupported encoding"):
        array_to_image(RGB, "hsv8")


# ------------------------------------------------------------------------------------ errors
def test_unsupported_encoding_named():
    msg = padded_image(RGB, "rgb8")
    msg.encoding = "32FC1"
    with pytest.raises(ImageConversionError, match="unsupported encoding '32FC1'"):
        image_to_color(msg)


@pytest.mark.parametrize("height, width, data", [(0, 8, b""), (6, 0, b""), (6, 8, b"")])
def test_empty_image(height, width, data):
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    msg.data = data
    with pytest.raises(ImageConversionError, match="empty image"):
        image_to_color(msg)


def test_step_smaller_than_a_row():
    msg = padded_image(RGB, "rgb8")
    msg.step = 8 * 3 - 1
    with pytest.raises(ImageConversionError, match="step 23 is smaller than width 8"):
        image_to_color(msg)


def test_data_size_mismatch():
    msg = padded_image(RGB, "rgb8")
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ImageConversionError, match=r"data size 143 != step 24 x height 6"):
        image_to_color(msg)


def test_odd_step_for_16_bit():
    msg = padded_image(np.zeros((2, 2), np.uint16), "mono16", pad=1)
    with pytest.raises(ImageConversionError, match="not a multiple"):
        image_to_color(msg)


# -------------------------------------------------------------------------------- compressed
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(fmt):
    smooth = cv2.resize(RGB, (64, 48), interpolation=cv2.INTER_LINEAR)
    msg = array_to_compressed(smooth, fmt, color="rgb")
    assert isinstance(msg, CompressedImage) and fmt in msg.format
    bgr, order = compressed_to_color(msg)
    assert order == "bgr" and bgr.shape == (48, 64, 3)
    tolerance = 0 if fmt == "png" else 40
    assert np.abs(bgr[:, :, ::-1].astype(int) - smooth).max() <= tolerance


@pytest.mark.parametrize("fmt", ["jpeg", "png", "", "rgb8; jpeg compressed bgr8"])
def test_compressed_format_strings_accepted(fmt):
    msg = array_to_compressed(RGB, "png")
    msg.format = fmt
    assert compressed_to_color(msg)[0].shape == RGB.shape


def test_corrupt_compressed_named():
    msg = array_to_compressed(RGB, "jpeg")
    msg.data = b"\xff\xd8\xff\xe0garbage" * 10
    with pytest.raises(ImageConversionError, match="corrupt compressed image"):
        compressed_to_color(msg)


def test_empty_compressed_named():
    msg = CompressedImage(format="jpeg")
    with pytest.raises(ImageConversionError, match="empty compressed image"):
        compressed_to_color(msg)


@pytest.mark.parametrize("fmt, reason", [("16UC1; compressedDepth png", "compressed depth"),
                                         ("theora", "unsupported compressed format")])
def test_unsupported_compressed_formats_named(fmt, reason):
    msg = array_to_compressed(RGB, "png")
    msg.format = fmt
    with pytest.raises(ImageConversionError, match=reason):
        compressed_to_color(msg)
