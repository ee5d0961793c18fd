"""Image preprocessing identical to the official UniPose / X-Pose inference.

Pipeline per image: DETR resize (short side, capped long side) through torchvision's PIL path,
to-tensor (/255), ImageNet normalisation.  Several images are zero-padded to a common size with
a mask that is True on padded pixels (DETR's nested-tensor convention).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from .settings import DEFAULT_MAX_SIZE, DEFAULT_SHORT_SIDE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_PIXELS = 100_000_000  # refuse anything bigger: resizing it would take seconds and GBs


class ImageError(ValueError):
    """An input image that cannot be used (None, empty, wrong dtype or channel count, too big)."""


def compute_resize(w: int, h: int, size: int = DEFAULT_SHORT_SIDE,
                   max_size: int | None = DEFAULT_MAX_SIZE) -> tuple[int, int]:
    """Output (height, width) of the DETR resize rule for an image of width ``w``, height ``h``.

    The short side becomes ``size`` unless the long side would then exceed ``max_size``; in that
    case ``size`` shrinks to ``round(max_size * short / long)`` with Python's round (half to
    even), and the long side is truncated, not rounded.  An image whose short side already
    equals ``size`` keeps its size.

    Very thin images (aspect ratio beyond 2 * max_size : 1, e.g. 3000x1), where the official
    rule gives a 0-pixel side and crashes, keep a 1-pixel short side and a long side capped at
    ``max_size``: the model still runs on them (and mostly finds nothing).
    """
    if w <= 0 or h <= 0:
        raise ImageError(f"image size must be positive, got {w}x{h} (w x h)")
    if max_size is not None:
        short, long = float(min(w, h)), float(max(w, h))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if size < 1:  # only where the official rule would produce an empty image
        size = 1
        cap = max_size if max_size is not None else max(w, h)
        return (min(int(h / w), cap), 1) if w < h else (1, min(int(w / h), cap))
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def as_rgb_array(image, color: str = "rgb", exif_orientation: bool = False) -> np.ndarray:
    """Validate ``image`` and return it as a contiguous HxWx3 uint8 RGB array.

    Accepts a PIL image, an HxW / HxWx1 grayscale array or an HxWx3 array whose channel order
    is ``color`` ("rgb" or "bgr").  Raises :class:`ImageError` naming the problem otherwise.
    exif_orientation: apply a PIL image's EXIF orientation tag (default: ignore it, as the
    official pipeline does; arrays carry no tag).
    """
    if color not in ("rgb", "bgr"):
        raise ImageError(f"color must be 'rgb' or 'bgr', got {color!r}")
    if image is None:
        raise ImageError("image is None (was the file or frame read successfully?)")
    if isinstance(image, Image.Image):
        if exif_orientation:
            from PIL import ImageOps
            image = ImageOps.exif_transpose(image)
        if image.width * image.height == 0:
            raise ImageError(f"image is empty ({image.width}x{image.height} pixels)")
        _check_pixels(image.height, image.width)
        if image.mode in _WIDE_PIL_MODES:
            return _wide_to_rgb(image)
        return np.asarray(image.convert("RGB"))  # PIL images are RGB by definition
    if isinstance(image, torch.Tensor):
        raise ImageError("expected a numpy array or PIL image, got a torch.Tensor; "
                         "pass tensor.cpu().numpy() as HxWx3 uint8")
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array or PIL image, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3):
        raise ImageError(f"expected an HxW or HxWx3 image, got an array of shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image is empty (shape {image.shape}, 0 pixels)")
    if image.ndim == 3 and image.shape[2] != 3:
        raise ImageError(f"expected 1 or 3 channels, got {image.shape[2]} (shape {image.shape}); "
                         "drop an alpha channel first, e.g. image[..., :3]")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got dtype {image.dtype}; "
                         "convert 0..1 floats with (image * 255).round().astype(np.uint8)")
    _check_pixels(image.shape[0], image.shape[1])
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif color == "bgr":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


# 16-bit (and 32-bit integer / float) single-channel PIL modes: PIL's convert("RGB") clips them
# at 255, which turns almost every pixel of a 16-bit image white.
_WIDE_PIL_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _wide_to_rgb(image: Image.Image) -> np.ndarray:
    """A 16-bit grey PIL image as 8-bit RGB the way OpenCV reads the same file (the CLI's path):
    the high byte (value >> 8). Modes "I" and "F" hold 16-bit data when PIL opens a 16-bit PNG
    or TIFF, and are scaled the same way (values beyond 0..65535 saturate)."""
    values = np.asarray(image, dtype=np.float64)
    grey = np.clip(np.floor(values / 256.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _check_pixels(h: int, w: int) -> None:
    if h * w > MAX_PIXELS:
        raise ImageError(f"image is too large: {w}x{h} = {h * w / 1e6:.1f} MP, the limit is "
                         f"{MAX_PIXELS / 1e6:.0f} MP; downscale it first")


def preprocess_image(image, *, color: str = "rgb", short_side: int = DEFAULT_SHORT_SIDE,
                     max_size: int | None = DEFAULT_MAX_SIZE) -> torch.Tensor:
    """One image -> normalised float32 tensor (3, h, w) at the DETR-resized size."""
    rgb = as_rgb_array(image, color)
    h, w = rgb.shape[:2]
    oh, ow = compute_resize(w, h, short_side, max_size)
    pil = Image.fromarray(rgb)
    if (oh, ow) != (h, w):
        # torchvision's PIL path: PIL bilinear, which antialiases when downscaling
        pil = TF.resize(pil, [oh, ow])
    tensor = TF.to_tensor(pil)
    return TF.normalize(tensor, IMAGENET_MEAN, IMAGENET_STD)


@dataclass
class Batch:
    """A padded batch ready for the model."""

    images: torch.Tensor            # (B, 3, H, W) float32, zero-padded on the right / bottom
    masks: torch.Tensor             # (B, H, W) bool, True on padded pixels
    original_sizes: list[tuple[int, int]]  # (h, w) of each input image
    resized_sizes: list[tuple[int, int]]   # (h, w) of each image inside the padded batch

    def to(self, device) -> "Batch":
        return Batch(self.images.to(device), self.masks.to(device),
                     self.original_sizes, self.resized_sizes)


def pad_batch(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (3, h_i, w_i) tensors into (B, 3, H, W) with zeros and a True-on-padding mask."""
    if not tensors:
        raise ImageError("no images given")
    hmax = max(t.shape[1] for t in tensors)
    wmax = max(t.shape[2] for t in tensors)
    images = tensors[0].new_zeros((len(tensors), 3, hmax, wmax))
    masks = torch.ones((len(tensors), hmax, wmax), dtype=torch.bool)
    for i, t in enumerate(tensors):
        images[i, :, :t.shape[1], :t.shape[2]] = t
        masks[i, :t.shape[1], :t.shape[2]] = False
    return images, masks


def preprocess_batch(images: Sequence, *, color: str = "rgb",
                     short_side: int = DEFAULT_SHORT_SIDE,
                     max_size: int | None = DEFAULT_MAX_SIZE) -> Batch:
    """Preprocess and pad several images (any sizes).  ``color`` applies to every array."""
    if images is None or len(images) == 0:
        raise ImageError("no images given")
    tensors, original = [], []
    for i, image in enumerate(images):
        try:
            rgb = as_rgb_array(image, color)
        except ImageError as e:
            raise ImageError(f"image {i}: {e}") from None
        original.append(rgb.shape[:2])
        tensors.append(preprocess_image(rgb, short_side=short_side, max_size=max_size))
    padded, masks = pad_batch(tensors)
    return Batch(padded, masks, [tuple(s) for s in original],
                 [tuple(t.shape[1:]) for t in tensors])
