"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Reading is zero-copy where the layout allows: the message buffer is wrapped with np.frombuffer and
rows are addressed with strides, so padded rows (step > width * pixel size) cost nothing. The
model wants 3-channel 8-bit colour; `image_to_color` returns that together with its channel order
("rgb" or "bgr") so that no channel swap is made here: the predictor folds it into normalisation.

Only this module knows about encodings; every problem raises ImageConversionError with a message
that names it (the node logs it, throttled, and skips the frame).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "ImageConversionError", "SUPPORTED_ENCODINGS", "image_to_array", "image_to_color",
    "compressed_to_color", "array_to_image", "array_to_compressed",
]


class ImageConversionError(ValueError):
    """The image message cannot be converted; the message says why."""


@dataclass(frozen=True)
class _Layout:
    channels: int
    dtype: np.dtype
    # How to get 3-channel 8-bit colour from the raw array: "rgb"/"bgr" (drop alpha if any),
    # "mono", "mono16", a cv2 conversion code name (yuv, bayer).
    to_color: str


_U8, _U16 = np.dtype(np.uint8), np.dtype(np.uint16)

# ROS encoding names (sensor_msgs/image_encodings.hpp). "yuv422" is UYVY byte order in ROS;
# "yuv422_yuy2" is YUYV. 8UCn are treated like cv_bridge does (bgr order).
_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, _U8, "rgb"),
    "bgr8": _Layout(3, _U8, "bgr"),
    "rgba8": _Layout(4, _U8, "rgb"),
    "bgra8": _Layout(4, _U8, "bgr"),
    "mono8": _Layout(1, _U8, "mono"),
    "8UC1": _Layout(1, _U8, "mono"),
    "8UC3": _Layout(3, _U8, "bgr"),
    "8UC4": _Layout(4, _U8, "bgr"),
    "mono16": _Layout(1, _U16, "mono16"),
    "16UC1": _Layout(1, _U16, "mono16"),
    "yuv422": _Layout(2, _U8, "COLOR_YUV2RGB_UYVY"),
    "uyvy": _Layout(2, _U8, "COLOR_YUV2RGB_UYVY"),
    "yuv422_yuy2": _Layout(2, _U8, "COLOR_YUV2RGB_YUY2"),
    "yuyv": _Layout(2, _U8, "COLOR_YUV2RGB_YUY2"),
    "bayer_rggb8": _Layout(1, _U8, "COLOR_BayerRGGB2RGB"),
    "bayer_bggr8": _Layout(1, _U8, "COLOR_BayerBGGR2RGB"),
    "bayer_gbrg8": _Layout(1, _U8, "COLOR_BayerGBRG2RGB"),
    "bayer_grbg8": _Layout(1, _U8, "COLOR_BayerGRBG2RGB"),
}
# OpenCV < 5 names the Bayer codes after the second row (RGGB pattern == "BayerBG").
_BAYER_FALLBACK = {"COLOR_BayerRGGB2RGB": "COLOR_BayerBG2RGB", "COLOR_BayerBGGR2RGB": "COLOR_BayerRG2RGB",
                   "COLOR_BayerGBRG2RGB": "COLOR_BayerGR2RGB", "COLOR_BayerGRBG2RGB": "COLOR_BayerGB2RGB"}

SUPPORTED_ENCODINGS = tuple(_LAYOUTS)


def _cv2_code(name: str) -> int:
    return getattr(cv2, name) if hasattr(cv2, name) else getattr(cv2, _BAYER_FALLBACK[name])


def image_to_array(msg) -> np.ndarray:
    """The pixels of a sensor_msgs/Image as an (H, W) or (H, W, C) array viewing the message buffer.

    Row padding is skipped with strides (no copy). The view is read-only and valid as long as the
    message is alive. 16-bit big-endian data is byte-swapped (a copy).
    """
    encoding = msg.encoding
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageConversionError(
            f"unsupported encoding '{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = msg.data
    if height == 0 or width == 0 or len(data) == 0:
        raise ImageConversionError(f"empty image ({width}x{height}, {len(data)} bytes)")
    itemsize = layout.dtype.itemsize
    row_bytes = width * layout.channels * itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width {width} x {layout.channels * itemsize} bytes per pixel "
            f"({row_bytes}) for {encoding}")
    if len(data) != step * height:
        raise ImageConversionError(
            f"data size {len(data)} != step {step} x height {height} ({step * height})")
    if step % itemsize:
        raise ImageConversionError(f"step {step} is not a multiple of the {itemsize}-byte sample size")

    flat = np.frombuffer(data, dtype=np.uint8)
    shape = (height, width, layout.channels)
    strides = (step, layout.channels * itemsize, itemsize)
    if itemsize == 1:
        array = as_strided(flat, shape=shape, strides=strides, writeable=False)
    else:
        dtype = layout.dtype.newbyteorder(">" if msg.is_bigendian else "<")
        array = as_strided(flat.view(dtype), shape=shape, strides=strides, writeable=False)
        if not dtype.isnative:
            array = array.astype(layout.dtype)
    return array[:, :, 0] if layout.channels == 1 else array


def image_to_color(msg) -> tuple[np.ndarray, str]:
    """A sensor_msgs/Image as 3-channel uint8 (H, W, 3) plus its channel order, "rgb" or "bgr".

    rgb8/bgr8 and the alpha formats are views of the message buffer; mono8 is a broadcast view;
    mono16 is scaled to 8 bits by the frame's maximum (10/12-bit sensors use a fraction of the
    range); yuv422 and Bayer are converted with OpenCV.
    """
    array = image_to_array(msg)
    order = _LAYOUTS[msg.encoding].to_color
    if order in ("rgb", "bgr"):
        return array[:, :, :3], order
    if order == "mono":
        return np.broadcast_to(array[:, :, None], (*array.shape, 3)), "rgb"
    if order == "mono16":
        peak = int(array.max())
        scaled = (array.astype(np.float32) * (255.0 / peak)).astype(np.uint8) if peak else \
            np.zeros(array.shape, np.uint8)
        return np.broadcast_to(scaled[:, :, None], (*scaled.shape, 3)), "rgb"
    # cv2 accepts row-strided input but not a read-only view; a contiguous copy is cheap next to
    # the colour conversion itself.
    if order.startswith("COLOR_YUV") and msg.width % 2:
        raise ImageConversionError(f"{msg.encoding} needs an even width, got {msg.width}")
    return cv2.cvtColor(np.ascontiguousarray(array), _cv2_code(order)), "rgb"


def compressed_to_color(msg) -> tuple[np.ndarray, str]:
    """A sensor_msgs/CompressedImage (jpeg or png, as image_transport's `compressed` publishes)
    as 3-channel uint8 BGR."""
    fmt = (msg.format or "").lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(
            f"compressed depth images are not supported (format '{msg.format}')")
    if fmt and not any(name in fmt for name in ("jpeg", "jpg", "png")):
        raise ImageConversionError(f"unsupported compressed format '{msg.format}' (jpeg or png)")
    if len(msg.data) == 0:
        raise ImageConversionError("empty compressed image (0 bytes)")
    image = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageConversionError(
            f"corrupt compressed image: cannot decode {len(msg.data)} bytes as '{msg.format or 'jpeg/png'}'")
    return image, "bgr"


def array_to_image(array: np.ndarray, encoding: str, header=None):
    """A numpy image as a sensor_msgs/Image with a dense layout (step = width * pixel size).

    `encoding` must describe the array: (H, W, 3) uint8 for rgb8/bgr8, (H, W) for mono8/mono16,
    (H, W, 2) for yuv422 (packed bytes), and so on.
    """
    from sensor_msgs.msg import Image

    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageConversionError(f"unsupported encoding '{encoding}'")
    array = np.asarray(array)
    expected_ndim = 2 if layout.channels == 1 else 3
    if array.ndim != expected_ndim or (expected_ndim == 3 and array.shape[2] != layout.channels) \
            or array.dtype != layout.dtype:
        raise ImageConversionError(
            f"array of shape {array.shape} and dtype {array.dtype} does not match {encoding} "
            f"({layout.channels} channel(s) of {layout.dtype})")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * layout.channels * layout.dtype.itemsize
    # tobytes() then assignment is the fast path (assigning the ndarray itself is ~100x slower).
    msg.data = np.ascontiguousarray(array).astype(layout.dtype.newbyteorder("<"), copy=False).tobytes()
    return msg


def array_to_compressed(array: np.ndarray, fmt: str = "jpeg", color: str = "bgr", header=None,
                        jpeg_quality: int = 90):
    """A 3-channel uint8 image as a sensor_msgs/CompressedImage ("jpeg" or "png")."""
    from sensor_msgs.msg import CompressedImage

    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"unsupported compressed format '{fmt}' (jpeg or png)")
    bgr = array[:, :, ::-1] if color == "rgb" else array
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode("." + ("jpg" if fmt == "jpeg" else "png"), np.ascontiguousarray(bgr), params)
    if not ok:
        raise ImageConversionError(f"cannot encode the image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"bgr8; {fmt} compressed bgr8"
    msg.data = encoded.tobytes()
    return msg
