"""Side swap: one half of an animal replaced by the same half of another labelled instance.

A small labelled set ties the two sides of a body together: in the fly clip's training frames
a fly that holds its left wing open keeps its right wing folded, and the limbs of one side move
with those of the other as the few labelled strides did. A model trained on it learns those
couplings as a prior and misses poses that break them (both wings open, new leg combinations).
This augmentation makes such poses from the labels: a donor instance of the same category is
aligned to the target on the keypoints of the body midline (those with no left/right partner:
head, thorax, abdomen), and one side of the target, cut along the midline, is replaced by the
donor's same side; that side's keypoints come from the donor, the rest stay the target's.

It needs a body midline of at least two labelled unpaired keypoints in both instances (flies,
mice, most lab animals; not COCO people, whose only unpaired keypoint is the nose). Pixels
away from the two bodies' swapped side are not touched, nor are those around any other instance
(of either image), so neighbours are never cut; a target whose swapped keypoints would lie there
is left alone. Same video, same camera: the two halves meet on the same background.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .augment import Annotation, copy_annotation, left_right_key, box_hugs_keypoints

# Donor and target must be the same size to within this factor (after alignment).
MAX_SCALE_CHANGE = 1.35
# Mean distance between the aligned midline keypoints, as a fraction of the body length, above
# which two bodies are too differently bent to splice.
MAX_MIDLINE_RESIDUAL = 0.15
# Spliced area: within this fraction of the body length of the swapped side's keypoint hull.
BODY_MARGIN = 0.12
# Pixels around another instance's keypoint hull that the splice leaves alone (wing and leg edges).
NEIGHBOUR_MARGIN = 4.0


def keypoint_sides(names: Sequence[str], flip_pairs: Sequence[Tuple[int, int]]
                   ) -> Tuple[List[int], List[int], List[int]]:
    """(midline, left, right) keypoint indices: unpaired ones are the midline; a pair's side
    comes from its names ("wingL", "left eye"), else the pair's order (i: left, j: right)."""
    left, right = [], []
    for i, j in flip_pairs:
        side = left_right_key(names[i])
        if side is not None and side[0] == "right":
            i, j = j, i
        left.append(int(i))
        right.append(int(j))
    paired = set(left) | set(right)
    return [k for k in range(len(names)) if k not in paired], left, right


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift; no mirror) taking the
    points `src` onto `dst` (Umeyama)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    U, S, Vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    R = U @ sign @ Vt
    var = (s ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(S) @ sign) / var) if var > 0 else 1.0
    A = scale * R
    return np.concatenate([A, (mu_d - A @ mu_s)[:, None]], axis=1)


def _apply(M: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ M[:, :2].T + M[:, 2]


def _outline(box: np.ndarray, kpts: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Convex hull (float32 points, after the 2x3 map M) of an instance's labelled keypoints, or
    its box where fewer than 3 are labelled."""
    pts = kpts[kpts[:, 2] > 0, :2]
    if len(pts) < 3:
        x0, y0, x1, y1 = box
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    return cv2.convexHull(_apply(M, pts).astype(np.float32)).reshape(-1, 2)


def _distance_to(hull: np.ndarray, origin: Tuple[int, int], shape: Tuple[int, int]) -> np.ndarray:
    """Distance in px of each pixel of a window (top-left `origin`, `shape`) from a convex
    polygon in image coordinates; 0 inside it."""
    drawn = np.full(shape, 255, np.uint8)
    cv2.fillConvexPoly(drawn, np.round(hull - np.asarray(origin)).astype(np.int32), 0)
    return cv2.distanceTransform(drawn, cv2.DIST_L2, 3)


def _box_margins(box: np.ndarray, kpts: np.ndarray) -> Optional[np.ndarray]:
    """How far the box reaches past its labelled keypoints on each side (x0, y0, x1, y1), when
    the box is one made from its keypoints (augment.box_hugs_keypoints); None otherwise."""
    pts = kpts[kpts[:, 2] > 0, :2]
    if not box_hugs_keypoints(box, pts):
        return None
    x0, y0, x1, y1 = box
    return np.array([pts[:, 0].min() - x0, pts[:, 1].min() - y0, x1 - pts[:, 0].max(), y1 - pts[:, 1].max()])


def _alignment(tk: np.ndarray, dk: np.ndarray, midline, swapped):
    """The donor-to-target similarity from the midline keypoints both have, and the target's
    midline points and body length; None where they do not align well enough to splice."""
    common = [k for k in midline if tk[k, 2] > 0 and dk[k, 2] > 0]
    if len(common) < 2 or not any(dk[k, 2] > 0 for k in swapped):
        return None
    M = similarity(dk[common, :2], tk[common, :2])
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    body = tk[common, :2]
    length = float(np.linalg.norm(body.max(0) - body.min(0)))
    if length < 4 or not 1 / MAX_SCALE_CHANGE <= scale <= MAX_SCALE_CHANGE:
        return None
    if np.linalg.norm(_apply(M, dk[common, :2]) - body, axis=1).mean() > MAX_MIDLINE_RESIDUAL * length:
        return None
    return M, body, length


def _side_sign(centre, normal, swapped_xy, other_xy) -> Optional[float]:
    """Which way the normal points to the swapped side: the side's keypoints (both bodies,
    aligned) lie on one side of the midline, the other side's on the other."""
    side_mean, other_mean = ((swapped_xy - centre) @ normal).mean(), ((other_xy - centre) @ normal).mean()
    if side_mean == other_mean:
        return None
    return 1.0 if side_mean > other_mean else -1.0


def _neighbour_outlines(ann: Annotation, target: int, donor_ann: Annotation, donor: int, M) -> list:
    """Outlines of every other instance (either image's, the donor's aligned)."""
    outlines = [_outline(ann["boxes"][n], np.asarray(ann["keypoints"], dtype=np.float64)[n], np.eye(2, 3))
                for n in range(len(ann["boxes"])) if n != target]
    outlines += [_outline(donor_ann["boxes"][n], np.asarray(donor_ann["keypoints"], dtype=np.float64)[n], M)
                 for n in range(len(donor_ann["boxes"])) if n != donor]
    return outlines


def _blend(image: np.ndarray, donor_image: np.ndarray, M, window, weight) -> np.ndarray:
    """Warp only the window of the donor and blend it in with `weight`."""
    x0, y0, x1, y1 = window
    Mw = M.copy()
    Mw[:, 2] -= (x0, y0)  # the shift moves the donor's pixels into the window's coordinates
    warped = cv2.warpAffine(donor_image, Mw, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101)
    out_image = image.copy()
    patch = out_image[y0:y1, x0:x1].astype(np.float64)
    wgt = weight[..., None] if patch.ndim == 3 else weight
    out_image[y0:y1, x0:x1] = np.clip(patch * (1 - wgt) + warped * wgt + 0.5, 0, 255).astype(image.dtype)
    return out_image


def _spliced_annotation(ann: Annotation, target: int, tk, moved, swapped, size) -> Annotation:
    """The target's keypoints with the swapped side's from the donor, and its box to match."""
    w, h = size
    out = copy_annotation(ann)
    new = tk.copy()
    new[swapped] = moved[swapped]
    outside = (new[:, 0] < 0) | (new[:, 0] >= w) | (new[:, 1] < 0) | (new[:, 1] >= h)
    new[(new[:, 2] <= 0) | outside] = 0.0
    out["keypoints"][target] = new
    margins = _box_margins(out["boxes"][target], tk)
    labelled = new[new[:, 2] > 0, :2]
    if margins is not None and len(labelled) >= 2:
        box = np.concatenate([labelled.min(0) - margins[:2], labelled.max(0) + margins[2:]])
    else:  # a box drawn around the animal: grow it to what the new side reaches
        box = out["boxes"][target].copy()
        if len(labelled):
            box[:2] = np.minimum(box[:2], labelled.min(0))
            box[2:] = np.maximum(box[2:], labelled.max(0))
    box[0::2] = box[0::2].clip(0, w)
    box[1::2] = box[1::2].clip(0, h)
    out["boxes"][target] = box
    return out


def swap_side(image: np.ndarray, ann: Annotation, target: int, donor_image: np.ndarray,
              donor_ann: Annotation, donor: int, side: str, feather: float = 2.0
              ) -> Optional[Tuple[np.ndarray, Annotation]]:
    """Replace the `side` ("left" or "right") of instance `target` of (image, ann) by the same
    side of instance `donor` of (donor_image, donor_ann); both annotations list the same keypoint
    names. Returns the new (image, annotation), or None where the two cannot be spliced (too few
    midline keypoints, different sizes or bends, a neighbour too close, sides not apart)."""
    names = list(ann["keypoint_names"])
    midline, left, right = keypoint_sides(names, ann["flip_pairs"])
    swapped = left if side == "left" else right
    tk = np.asarray(ann["keypoints"], dtype=np.float64)[target]
    dk = np.asarray(donor_ann["keypoints"], dtype=np.float64)[donor]
    aligned = _alignment(tk, dk, midline, swapped)
    if aligned is None:
        return None
    M, body, length = aligned

    # The midline: the principal direction of the target's midline keypoints through their mean.
    centre = body.mean(0)
    direction = np.linalg.svd(body - centre)[2][0]
    normal = np.array([-direction[1], direction[0]])
    moved = dk.copy()
    moved[:, :2] = _apply(M, dk[:, :2])
    other = left if side == "right" else right
    swapped_xy = np.concatenate([tk[[k for k in swapped if tk[k, 2] > 0], :2],
                                 moved[[k for k in swapped if moved[k, 2] > 0], :2]])
    other_xy = tk[[k for k in other if tk[k, 2] > 0], :2]
    if not len(swapped_xy) or not len(other_xy):
        return None
    sign = _side_sign(centre, normal, swapped_xy, other_xy)
    if sign is None:
        return None

    # The spliced area: the swapped side of the midline, within BODY_MARGIN (a fraction of the
    # body length) of the hull over the midline and both bodies' swapped-side keypoints, so that
    # the target's own limbs there go and the donor's arrive, and little background moves.
    margin = BODY_MARGIN * length
    reach = np.concatenate([body, swapped_xy])
    h, w = image.shape[:2]
    x0, y0 = np.floor(reach.min(0) - margin - feather).astype(int)
    x1, y1 = np.ceil(reach.max(0) + margin + feather).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    across = sign * ((xx - centre[0]) * normal[0] + (yy - centre[1]) * normal[1])
    near = margin - _distance_to(cv2.convexHull(reach.astype(np.float32)).reshape(-1, 2), (x0, y0), xx.shape)
    weight = np.clip(across / feather + 0.5, 0, 1) * np.clip(near / feather + 0.5, 0, 1)

    # Neighbours keep their pixels: the mask is cut out around the convex hull of each one's
    # keypoints (its box without them). A swapped keypoint there would then not show: no splice.
    keep_out = NEIGHBOUR_MARGIN + feather
    for hull in _neighbour_outlines(ann, target, donor_ann, donor, M):
        if any(cv2.pointPolygonTest(hull, (float(x), float(y)), True) > -keep_out for x, y in swapped_xy):
            return None
        weight = weight * np.clip((_distance_to(hull, (x0, y0), xx.shape) - NEIGHBOUR_MARGIN) / feather, 0, 1)
    if weight.max() <= 0:
        return None
    return (_blend(image, donor_image, M, (x0, y0, x1, y1), weight),
            _spliced_annotation(ann, target, tk, moved, swapped, (w, h)))
