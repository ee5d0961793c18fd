"""Overlay drawing of detections (boxes, skeletons, keypoints, labels) with OpenCV.

Line widths, dot sizes and fonts scale with the image so the overlay is readable from thumbnails
to 4K frames.  Works on BGR (OpenCV, ROS bgr8) or RGB arrays: say which with ``color``.
"""
from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np

# Distinct, saturated colours (RGB) for instances / classes; cycles when there are more.
PALETTE_RGB = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]


def keypoint_colors_rgb(n: int) -> list[tuple[int, int, int]]:
    """n colours spread around the hue circle, one per keypoint index."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb(i / max(n, 1), 0.85, 1.0)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _order(rgb: tuple[int, int, int], color: str) -> tuple[int, int, int]:
    return rgb if color == "rgb" else (rgb[2], rgb[1], rgb[0])


def draw_instances(image: np.ndarray, instances: Sequence, *, color: str = "bgr",
                   color_by: str = "instance", draw_boxes: bool = True, draw_skeleton: bool = True,
                   draw_keypoints: bool = True, draw_labels: bool = True, min_score: float = 0.0,
                   thickness: int | None = None, radius: int | None = None,
                   font_scale: float | None = None, copy: bool = True) -> np.ndarray:
    """Draw ``instances`` (objects with label, class_index, score, box, keypoints, skeleton).

    Args:
        image: HxWx3 (or HxW) uint8 array; channel order given by ``color`` ("bgr" or "rgb").
        color_by: "instance" (each detection its own colour; a tracked one, the colour of its
            track id, the same in every frame) or "class".
        min_score: skip detections below this score.
        thickness, radius, font_scale: override the size-dependent defaults.
        copy: draw on a copy (default) or in place.
    Returns the annotated image (same channel order, always 3 channels).
    """
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        canvas = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    else:
        canvas = image.copy() if copy else image
    h, w = canvas.shape[:2]
    base = max(h, w)
    thickness = thickness or max(1, round(base / 400))
    radius = radius or max(2, round(base / 220))
    font_scale = font_scale or max(0.35, base / 1400)
    font_thickness = max(1, round(font_scale * 1.6))

    for idx, inst in enumerate(instances):
        if inst.score < min_score:
            continue
        track = getattr(inst, "track_id", None)
        if color_by == "class":
            key = inst.class_index
        else:  # a tracked instance keeps its colour from frame to frame
            key = track - 1 if track is not None and track > 0 else idx
        main = _order(PALETTE_RGB[key % len(PALETTE_RGB)], color)
        kpts = np.asarray(inst.keypoints, dtype=np.float64).reshape(-1, np.asarray(inst.keypoints).shape[-1])
        if draw_boxes:
            x0, y0, x1, y1 = (int(round(v)) for v in inst.box)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), main, thickness, cv2.LINE_AA)
        if draw_skeleton:
            for a, b in inst.skeleton:
                if a < len(kpts) and b < len(kpts) and np.isfinite(kpts[[a, b], :2]).all():
                    pa = tuple(int(round(v)) for v in kpts[a, :2])
                    pb = tuple(int(round(v)) for v in kpts[b, :2])
                    cv2.line(canvas, pa, pb, main, thickness, cv2.LINE_AA)
        if draw_keypoints:
            colours = keypoint_colors_rgb(len(kpts))
            for k, (x, y) in enumerate(kpts[:, :2]):
                if not (np.isfinite(x) and np.isfinite(y)):
                    continue
                centre = (int(round(x)), int(round(y)))
                cv2.circle(canvas, centre, radius, _order(colours[k], color), -1, cv2.LINE_AA)
                cv2.circle(canvas, centre, radius, (0, 0, 0), max(1, thickness // 2), cv2.LINE_AA)
        if draw_labels:
            name = f"{inst.label} #{track}" if track is not None and track > 0 else inst.label
            _draw_label(canvas, f"{name} {inst.score:.2f}", inst.box, main, font_scale,
                        font_thickness)
    return canvas


def _draw_label(canvas, text, box, colour, font_scale, font_thickness) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), baseline = cv2.getTextSize(text, font, font_scale, font_thickness)
    h, w = canvas.shape[:2]
    x = int(min(max(box[0], 0), max(w - tw - 2, 0)))
    y = int(box[1]) - th - baseline - 2
    if y < 0:  # no room above the box: put the label inside it
        y = int(max(box[1], 0))
    cv2.rectangle(canvas, (x, y), (x + tw + 2, y + th + baseline + 2), colour, -1)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]  # order-agnostic enough
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(canvas, text, (x + 1, y + th + 1), font, font_scale, ink, font_thickness, cv2.LINE_AA)


def draw_summary(image: np.ndarray, text: str, *, color: str = "bgr") -> np.ndarray:
    """Write one line of text (e.g. a warning) in the top-left corner, in place."""
    base = max(image.shape[:2])
    scale = max(0.4, base / 1400)
    thick = max(1, round(scale * 1.6))
    (tw, th), bl = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(image, (0, 0), (tw + 6, th + bl + 6), (0, 0, 0), -1)
    cv2.putText(image, text, (3, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                _order((255, 200, 0), color), thick, cv2.LINE_AA)
    return image
