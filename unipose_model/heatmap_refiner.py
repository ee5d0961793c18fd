"""Heatmap refinement: a small top-down keypoint network run on each detection, after UniPose.

UniPose regresses keypoints as coordinates from a few sampled features, which learns a prior over
whole poses: on the bundled fly model, a spread wing or leg the training frames rarely show is
placed where the usual pose would have it. A fully convolutional heatmap network (the centred-
instance stage of SLEAP, the top-down heads of MMPose) scores every pixel of a crop for each
keypoint, so it finds a limb where it *is*. It needs the detector for two things only: which
object (the crop is centred on its box) and which way it faces (the crop is rotated so that
the `align` keypoints, e.g. thorax -> head, point up, which makes left and right unambiguous).

It refines the keypoints of one category, matched by name (in canonical form: 'wingL' is 'left
wing'); instances of other categories or prompts missing the align keypoints keep UniPose's
keypoints. Pure PyTorch + OpenCV, no ROS.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .heatmap_codec import decode_heatmaps
from .vocabulary import canonical_keypoint_name

MAX_REFINED_PER_IMAGE = 20  # best-scoring detections refined per image: bounds the cost in crowds


@dataclass(frozen=True)
class HeatmapRefinerSpec:
    """What a heatmap refiner was trained on; stored next to its weights."""

    category: str
    keypoints: tuple[str, ...]
    align: tuple[str, str] | None = None   # (from, to): the crop is rotated so from -> to points up
    input_size: int = 128                  # crop side in pixels (square)
    context: float = 1.5                   # crop side = context x the box's longer side
    widths: tuple[int, ...] = (24, 32, 48, 64, 96)
    flip_pairs: tuple[tuple[int, int], ...] = field(default=())  # left/right keypoint index pairs

    def __post_init__(self):
        object.__setattr__(self, "keypoints", tuple(self.keypoints))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "flip_pairs", tuple(tuple(int(i) for i in p) for p in self.flip_pairs))
        if self.align is not None:
            object.__setattr__(self, "align", tuple(self.align))
            missing = [n for n in self.align if n not in self.keypoints]
            if len(self.align) != 2 or missing:
                raise ValueError(f"align must name two of the keypoints of {self.category!r} "
                                 f"({', '.join(self.keypoints)}), got {list(self.align)}")
        if len(self.widths) != 5:
            raise ValueError(f"widths must have 5 entries, got {self.widths}")
        if self.input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {self.input_size}")

    @property
    def heatmap_size(self) -> int:
        return self.input_size // 2

    def to_dict(self) -> dict:
        out = asdict(self)
        out["keypoints"] = list(self.keypoints)
        out["align"] = list(self.align) if self.align else None
        out["widths"] = list(self.widths)
        out["flip_pairs"] = [list(p) for p in self.flip_pairs]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "HeatmapRefinerSpec":
        known = {k: d[k] for k in ("category", "keypoints", "align", "input_size", "context", "widths",
                                    "flip_pairs") if k in d and d[k] is not None}
        return cls(**known)

    def flip_permutation(self) -> list[int]:
        perm = list(range(len(self.keypoints)))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class HeatmapRefiner(nn.Module):
    """A small U-Net: a grey crop (B, 1, S, S) -> one heatmap per keypoint (B, K, S/2, S/2).

    Four stride-2 stages down to S/16 (a 128 px crop: 8x8 cells, so the deepest features see the
    whole animal and can tell its left from its right), then back up to S/2 with skip connections
    for precise peaks. Greyscale: the refiner learns shape, and colour cameras are converted."""

    def __init__(self, spec: HeatmapRefinerSpec):
        super().__init__()
        self.spec = spec
        w0, w1, w2, w3, w4 = spec.widths
        self.stem = nn.Sequential(_conv(1, w0), _conv(w0, w1, 2))              # S/2
        self.down1 = nn.Sequential(_conv(w1, w2, 2), _conv(w2, w2))             # S/4
        self.down2 = nn.Sequential(_conv(w2, w3, 2), _conv(w3, w3))             # S/8
        self.down3 = nn.Sequential(_conv(w3, w4, 2), _conv(w4, w4), _conv(w4, w4))  # S/16
        self.up2 = _conv(w4 + w3, w3)
        self.up1 = _conv(w3 + w2, w2)
        self.up0 = nn.Sequential(_conv(w2 + w1, w1), _conv(w1, w1))
        self.head = nn.Conv2d(w1, len(spec.keypoints), 1)

    @staticmethod
    def _merge(deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        deep = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([deep, skip], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem(x)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        s3 = self.down3(s2)
        y = self.up2(self._merge(s3, s2))
        y = self.up1(self._merge(y, s1))
        y = self.up0(self._merge(y, s0))
        return self.head(y)


# ---------------------------------------------------------------------------- geometry

def facing_angle(keypoints_xy: np.ndarray, spec: HeatmapRefinerSpec, names: Sequence[str]) -> float | None:
    """The image angle (radians) of the align direction (e.g. thorax -> head) from an instance's
    keypoints; None when the refiner has no align pair or the instance lacks one of them."""
    if spec.align is None:
        return -math.pi / 2  # no rotation: "up" stays up
    own = [canonical_keypoint_name(n) for n in names]
    try:
        a, b = (own.index(canonical_keypoint_name(n)) for n in spec.align)
    except ValueError:
        return None
    d = keypoints_xy[b, :2] - keypoints_xy[a, :2]
    if not np.isfinite(d).all() or float(np.hypot(*d)) < 1e-6:
        return None
    return math.atan2(float(d[1]), float(d[0]))


def crop_affine(box, angle: float, spec: HeatmapRefinerSpec, scale: float = 1.0,
                shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The 2x3 map from image pixels to crop pixels: the box centre (+ shift, image pixels) to
    the crop centre, direction `angle` to "up", and context x the box's longer side x scale to
    the crop side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = spec.context * max(x1 - x0, y1 - y0, 1.0) * scale
    s = spec.input_size / side
    rot = -(angle + math.pi / 2)
    c, si = math.cos(rot) * s, math.sin(rot) * s
    m = np.array([[c, -si, 0.0], [si, c, 0.0]], np.float64)
    centre = np.array([(x0 + x1) / 2 + shift[0], (y0 + y1) / 2 + shift[1]])
    m[:, 2] = spec.input_size / 2 - m[:, :2] @ centre
    return m


def to_grey(image: np.ndarray) -> np.ndarray:
    """HxW or HxWx3 (RGB) uint8 -> HxW uint8."""
    import cv2

    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def warp_crop(grey: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.warpAffine(grey, affine.astype(np.float32), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def apply_affine(affine: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ affine[:, :2].T + affine[:, 2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
    lin = np.linalg.inv(affine[:, :2])
    return np.concatenate([lin, -lin @ affine[:, 2:]], axis=1)


# ---------------------------------------------------------------------------- inference

@torch.no_grad()
def refine_instances(refiner: HeatmapRefiner, images: Sequence[np.ndarray], results: Sequence[list],
                     device: torch.device | str = "cpu") -> int:
    """Replace the x, y of the keypoints the refiner knows, for each instance (an object with
    ``label``, ``box``, ``keypoints`` (K, 3) and ``keypoint_names``) of its category, by the
    heatmap peaks of one crop per instance. Returns how many instances were refined."""
    spec = refiner.spec
    # names as a visual prompt's file may spell them ('wingL' is 'left wing')
    known = {canonical_keypoint_name(n): j for j, n in enumerate(spec.keypoints)}
    crops, owners = [], []
    for image, instances in zip(images, results):
        grey = None
        for inst in instances[:MAX_REFINED_PER_IMAGE]:
            if inst.label != spec.category:
                continue
            names = list(inst.keypoint_names)
            columns = [(i, known[n]) for i, n in enumerate(map(canonical_keypoint_name, names)) if n in known]
            angle = facing_angle(inst.keypoints, spec, names)
            if not columns or angle is None:
                continue
            grey = to_grey(image) if grey is None else grey
            affine = crop_affine(inst.box, angle, spec)
            crops.append(warp_crop(grey, affine, spec.input_size))
            owners.append((inst, affine, columns))
    if not crops:
        return 0
    x = torch.from_numpy(np.stack(crops)).to(device=device, dtype=torch.float32).unsqueeze(1) / 255.0
    heatmaps = refiner(x).float().cpu()
    points, _ = decode_heatmaps(heatmaps, spec.input_size)
    for (inst, affine, columns), xy in zip(owners, points):
        image_xy = apply_affine(invert_affine(affine), xy)
        kpts = inst.keypoints.copy()
        for own, theirs in columns:
            kpts[own, :2] = image_xy[theirs]
        inst.keypoints = kpts
    return len(owners)
