"""The paper's training augmentation on numpy images and pixel annotations.

DETR / ED-Pose recipe: horizontal flip (p=0.5), then either a random resize of the short side
to one of `scales` (long side <= max_size), or a resize to one of `crop_resize_scales`, a random
crop of [crop_min, crop_max] pixels and the random resize again.

Annotations are a dict of numpy arrays in pixels of the current image:
    boxes (M, 4) xyxy, keypoints (M, K, 3) x, y, v (v > 0 labelled), class_names [M],
    keypoint_names [K], flip_pairs [(i, j), ...]
Every function returns new arrays (the caller's annotation is never modified).

Left/right under a flip: keypoints of a flip pair swap their coordinates (index i keeps its
name, e.g. "left eye", and gets the point that is now the object's left eye). A name with a
left/right word whose partner is not in the list (a prompt that asks for "left eye" alone), and
class names such as "left hand", swap the word instead: "left eye" -> "right eye".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from unipose_model.preprocess import compute_resize

Annotation = Dict[str, object]

_LR = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_LR_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}
# Name pairs with L/R markers that are not separate words ("wingL"/"wingR", "forelegL4", "l_ankle").
_LR_MARK = re.compile(r"(?<![A-Za-z])([lLrR])(?=[_\s\-]|$)|(?<=[a-z])([LR])(?=\d*$)")


def swap_left_right(text: str) -> str:
    """Swap the words left and right (keeping case): "left eye" <-> "right eye"."""
    return _LR.sub(lambda m: _LR_SWAP[m.group(0)], text)


def left_right_key(name: str) -> Tuple[str, str] | None:
    """(side, name with its side marker blanked) or None when `name` has no side."""
    m = _LR.search(name)
    if m:
        return m.group(0).lower(), name[:m.start()] + "#" + name[m.end():]
    m = _LR_MARK.search(name)
    if m:
        side = (m.group(1) or m.group(2)).lower()
        return ("left" if side == "l" else "right"), name[:m.start()] + "#" + name[m.end():]
    return None


def infer_flip_pairs(names: Sequence[str]) -> List[Tuple[int, int]]:
    """Flip pairs from names that differ only by a left/right marker ("left eye"/"right eye",
    "wingL"/"wingR", "l_ankle"/"r_ankle"); for annotation files that give none."""
    lefts, rights = {}, {}
    for i, n in enumerate(names):
        key = left_right_key(n)
        if key:
            (lefts if key[0] == "left" else rights)[key[1]] = i
    return sorted((lefts[k], rights[k]) for k in lefts if k in rights)


def copy_annotation(ann: Annotation) -> Annotation:
    out = dict(ann)
    out["boxes"] = np.array(ann["boxes"], dtype=np.float64).reshape(-1, 4)
    out["keypoints"] = np.array(ann["keypoints"], dtype=np.float64).reshape(len(out["boxes"]), -1, 3)
    out["class_names"] = list(ann.get("class_names", [""] * len(out["boxes"])))
    out["keypoint_names"] = list(ann.get("keypoint_names", []))
    out["flip_pairs"] = [tuple(p) for p in ann.get("flip_pairs", [])]
    return out


def hflip(image: np.ndarray, ann: Annotation) -> Tuple[np.ndarray, Annotation]:
    """Mirror the image; x -> W - x (continuous pixel coordinates, as DETR's boxes)."""
    out = copy_annotation(ann)
    W = image.shape[1]
    boxes = out["boxes"]
    out["boxes"] = np.stack((W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]), -1)
    kpts = out["keypoints"].copy()
    kpts[..., 0] = np.where(kpts[..., 2] > 0, W - kpts[..., 0], kpts[..., 0])
    paired = set()
    for i, j in out["flip_pairs"]:
        kpts[:, [i, j]] = kpts[:, [j, i]]
        paired.update((i, j))
    out["keypoints"] = kpts
    out["keypoint_names"] = [n if k in paired else swap_left_right(n) for k, n in enumerate(out["keypoint_names"])]
    out["class_names"] = [swap_left_right(n) for n in out["class_names"]]
    return np.ascontiguousarray(image[:, ::-1]), out


def resize(image: np.ndarray, ann: Annotation, short: int, max_size: int | None) -> Tuple[np.ndarray, Annotation]:
    """DETR resize rule (the model's own preprocessing rule): short side -> `short`, long <= max_size."""
    h, w = image.shape[:2]
    nh, nw = compute_resize(w, h, short, max_size)
    out = copy_annotation(ann)
    if (nh, nw) == (h, w):
        return image, out
    sx, sy = nw / w, nh / h
    out["boxes"] = out["boxes"] * np.array([sx, sy, sx, sy])
    out["keypoints"][..., 0] *= sx
    out["keypoints"][..., 1] *= sy
    interp = cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR
    return cv2.resize(image, (nw, nh), interpolation=interp), out


def crop(image: np.ndarray, ann: Annotation, top: int, left: int, height: int, width: int
         ) -> Tuple[np.ndarray, Annotation]:
    """Cut a window; boxes are clipped, empty boxes dropped, keypoints outside become unlabelled."""
    out = copy_annotation(ann)
    shift = np.array([left, top, left, top], dtype=np.float64)
    boxes = out["boxes"] - shift
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    kpts = out["keypoints"].copy()
    kpts[..., 0] -= left
    kpts[..., 1] -= top
    inside = (kpts[..., 0] >= 0) & (kpts[..., 0] < width) & (kpts[..., 1] >= 0) & (kpts[..., 1] < height)
    kpts[~inside] = 0.0  # unlabelled: v = 0 and no coordinates
    out["boxes"], out["keypoints"] = boxes[keep], kpts[keep]
    out["class_names"] = [n for n, k in zip(out["class_names"], keep) if k]
    for key in ("areas", "category_ids", "set_match"):
        if key in out:
            out[key] = np.asarray(out[key])[keep]
    return image[top:top + height, left:left + width], out


def box_hugs_keypoints(box: Sequence[float], points: np.ndarray) -> bool:
    """Whether a box is one made from its keypoints (xy `points`): they span >= 90 % of it on
    both axes. Such a box is rebuilt from moved keypoints; a box drawn around the animal is not."""
    x0, y0, x1, y1 = box
    return len(points) >= 2 and np.ptp(points[:, 0]) >= 0.9 * (x1 - x0) and np.ptp(points[:, 1]) >= 0.9 * (y1 - y0)


def rotate(image: np.ndarray, ann: Annotation, degrees: float, stretch: float = 1.0,
           stretch_axis: float = 0.0) -> Tuple[np.ndarray, Annotation]:
    """Rotate about the image centre (counter-clockwise for positive `degrees`), same canvas size,
    after stretching by `stretch` along the direction `stretch_axis` (degrees) and by 1/stretch
    across it (area kept).

    The stretch changes the angles between an object's parts (with stretch 1/1.3 to 1.3, a wing
    30 degrees off the body axis comes out at 19-44 degrees), which gives a small labelled set
    poses it does not contain.
    Boxes that hug their keypoints (the keypoints span >= 90 % of the box on both axes, as in
    boxes made from keypoints) become the box of the moved keypoints; other boxes become the
    box of their moved corners, clipped to the image. Neither step changes an object's
    handedness, so left/right names stay. Keypoints moved out of the canvas become unlabelled.
    """
    out = copy_annotation(ann)
    h, w = image.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
    if stretch != 1.0:
        a = np.deg2rad(stretch_axis)
        axis = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        S = axis @ np.diag([stretch, 1.0 / stretch]) @ axis.T
        centre = np.array([w / 2.0, h / 2.0])
        linear = M[:, :2] @ S
        M = np.concatenate([linear, (centre - linear @ centre)[:, None]], axis=1)
    rotated = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    def apply(points: np.ndarray) -> np.ndarray:
        return points @ M[:, :2].T + M[:, 2]

    kpts = out["keypoints"].copy()
    labelled = kpts[..., 2] > 0
    kpts[..., :2] = apply(kpts[..., :2].reshape(-1, 2)).reshape(kpts.shape[:-1] + (2,))
    inside = (kpts[..., 0] >= 0) & (kpts[..., 0] < w) & (kpts[..., 1] >= 0) & (kpts[..., 1] < h)
    kpts[~(labelled & inside)] = 0.0
    boxes = out["boxes"]
    new_boxes = np.zeros_like(boxes)
    for m, (x0, y0, x1, y1) in enumerate(boxes):
        old = ann["keypoints"]
        pts = np.asarray(old, dtype=np.float64).reshape(len(boxes), -1, 3)[m]
        pts = pts[pts[:, 2] > 0, :2]
        hugs = box_hugs_keypoints((x0, y0, x1, y1), pts)
        kept = labelled[m] & inside[m]
        if hugs and kept.sum() >= 2:
            corners = kpts[m, kept, :2]
        else:
            corners = apply(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64))
        new_boxes[m] = (corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max())
    new_boxes[:, 0::2] = new_boxes[:, 0::2].clip(0, w)
    new_boxes[:, 1::2] = new_boxes[:, 1::2].clip(0, h)
    out["boxes"], out["keypoints"] = new_boxes, kpts
    return rotated, out


def _window_start(rng: np.random.Generator, lo: float, hi: float, size: int, limit: int) -> int:
    """Random start of a `size` window within [0, limit) that covers [lo, hi] (or its centre
    when the object is larger than the window)."""
    if hi - lo > size:
        lo = hi = (lo + hi) / 2.0
    first = max(0, int(np.ceil(hi)) - size)
    last = min(int(np.floor(lo)), limit - size)
    if last < first:
        return int(rng.integers(0, limit - size + 1))
    return int(rng.integers(first, last + 1))


def object_window(image: np.ndarray, ann: Annotation, rng: np.random.Generator,
                  context: Sequence[float]) -> Tuple[np.ndarray, Annotation] | None:
    """A square window around one random object, of side U(context) x its box's longer side,
    its centre jittered by up to a tenth of the side (a first-pass box is never exactly centred)
    and shifted inside the image like refine.crop_around; None when the object is degenerate."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in ann["boxes"][int(rng.integers(len(ann["boxes"])))])
    longer = max(x1 - x0, y1 - y0)
    if longer < 2:
        return None
    side = int(round(min(float(rng.uniform(*context)) * longer, h, w)))
    cx = (x0 + x1) / 2 + rng.uniform(-0.1, 0.1) * side
    cy = (y0 + y1) / 2 + rng.uniform(-0.1, 0.1) * side
    left = int(round(min(max(cx - side / 2, 0.0), w - side)))
    top = int(round(min(max(cy - side / 2, 0.0), h - side)))
    window = crop(image, ann, top, left, side, side)
    return window if len(window[1]["boxes"]) else None


@dataclass
class AugmentConfig:
    scales: List[int] = field(default_factory=lambda: list(range(480, 801, 32)))
    max_size: int = 1333
    flip_prob: float = 0.5
    crop_prob: float = 0.5
    crop_resize_scales: List[int] = field(default_factory=lambda: [400, 500, 600])
    crop_min: int = 384
    crop_max: int = 600
    eval_size: int = 800     # evaluation: fixed short side
    eval_max_size: Optional[int] = None  # evaluation long-side cap; None: max_size
    rotate_prob: float = 0.0  # the paper does not rotate; top-down lab video (any heading) wants it
    rotate_max: float = 180.0  # degrees, uniform in [-rotate_max, rotate_max]
    # With a rotation: stretch by a factor log-uniform in [1/stretch_max, stretch_max] along a
    # random direction (and shrink across it), so limbs take angles the labels never show.
    stretch_prob: float = 0.0
    stretch_max: float = 1.3
    # Crop windows placed to contain one randomly chosen object whole (where it fits): small
    # objects in a large frame (lab video) then train at full resolution on small images.
    crop_around_objects: bool = False
    # Object crops: a square window of `object_crop_context` x one object's longer side around it,
    # resized to `object_crop_scales`: what a crop-refinement pass (unipose_model/refine.py) sees,
    # so that pass can zoom in further than the whole-image scales alone would allow.
    object_crop_prob: float = 0.0
    object_crop_context: List[float] = field(default_factory=lambda: [2.0, 4.5])
    object_crop_scales: List[int] = field(default_factory=lambda: [384])
    # Side swap (unipose_train/side_swap.py, applied by the dataset before the steps above): each
    # instance, with this probability, gets one side of its body from another image's instance,
    # so the model sees combinations of left and right poses the labels do not contain.
    side_swap_prob: float = 0.0
    side_swap_mirror_prob: float = 0.5  # the donor mirrored first: its other side, as this side

    def __post_init__(self):
        if not self.stretch_max >= 1.0:
            raise ValueError(f"data.augment.stretch_max must be >= 1 (1: no stretch; 1.35: up to x1.35 "
                             f"along one direction and /1.35 across it), got {self.stretch_max}")


class Augmenter:
    """Random training transform; all randomness from the `rng` passed per sample (resumable)."""

    def __init__(self, cfg: AugmentConfig | None = None, train: bool = True):
        self.cfg = cfg or AugmentConfig()
        self.train = train

    def __call__(self, image: np.ndarray, ann: Annotation, rng: np.random.Generator
                 ) -> Tuple[np.ndarray, Annotation]:
        c = self.cfg
        if not self.train:
            return resize(image, ann, c.eval_size, c.eval_max_size or c.max_size)
        if rng.random() < c.flip_prob:
            image, ann = hflip(image, ann)
        if c.rotate_prob > 0 and rng.random() < c.rotate_prob:
            degrees = float(rng.uniform(-c.rotate_max, c.rotate_max))
            stretch, axis = 1.0, 0.0
            if c.stretch_prob > 0 and rng.random() < c.stretch_prob:
                stretch = float(np.exp(rng.uniform(-1.0, 1.0) * np.log(c.stretch_max)))
                axis = float(rng.uniform(0.0, 180.0))
            image, ann = rotate(image, ann, degrees, stretch, axis)
        if c.object_crop_prob > 0 and len(ann["boxes"]) and rng.random() < c.object_crop_prob:
            window = object_window(image, ann, rng, c.object_crop_context)
            if window is not None:
                size = int(rng.choice(c.object_crop_scales))
                return resize(*window, size, size)
        if rng.random() < c.crop_prob:
            image, ann = resize(image, ann, int(rng.choice(c.crop_resize_scales)), None)
            h, w = image.shape[:2]
            ch = int(rng.integers(min(c.crop_min, h), min(c.crop_max, h) + 1))
            cw = int(rng.integers(min(c.crop_min, w), min(c.crop_max, w) + 1))
            if c.crop_around_objects and len(ann["boxes"]):
                box = ann["boxes"][int(rng.integers(len(ann["boxes"])))]
                left = _window_start(rng, box[0], box[2], cw, w)
                top = _window_start(rng, box[1], box[3], ch, h)
            else:
                top = int(rng.integers(0, h - ch + 1))
                left = int(rng.integers(0, w - cw + 1))
            window = crop(image, ann, top, left, ch, cw)
            if len(window[1]["boxes"]) or not len(ann["boxes"]):
                image, ann = window  # a window without any object is skipped: it leaves no targets
        return resize(image, ann, int(rng.choice(c.scales)), c.max_size)
