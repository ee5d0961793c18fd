"""Contact sheets: a grid of annotated instance crops per PNG, to check conversions by eye.

Each tile is the instance's box with a margin, scaled to the tile, with the skeleton (lines),
keypoints (one colour per keypoint index; occluded points hollow) and the category name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from unipose_model.visualize import keypoint_colors_rgb

from .format import Category, Image, Instance, UniKPT

__all__ = ["read_frame", "draw_keypoints", "contact_sheets", "tile"]

TILE = 256


def read_frame(path: Path) -> np.ndarray | None:
    """BGR image of a file or of a video frame 'clip.mp4#frame=N'; None if unreadable."""
    from unipose_model.media import MediaError, read_video_frame, split_frame_reference

    try:
        ref = split_frame_reference(path)
        return cv2.imread(str(path), cv2.IMREAD_COLOR) if ref is None else read_video_frame(*ref)
    except MediaError:
        return None


def draw_keypoints(canvas: np.ndarray, kpts: np.ndarray, skeleton: Sequence[tuple[int, int]], *,
                   scale: float = 1.0, offset=(0.0, 0.0), color: tuple[int, int, int] | None = None,
                   radius: int = 3, thickness: int = 2) -> np.ndarray:
    """Draw (K, 3) keypoints in place; `color` (BGR) for all, else one colour per index."""
    colors = [(b, g, r) for r, g, b in keypoint_colors_rgb(len(kpts))]
    pts = [(int(round((x - offset[0]) * scale)), int(round((y - offset[1]) * scale))) for x, y, _ in kpts]
    for i, j in skeleton:
        if kpts[i, 2] > 0 and kpts[j, 2] > 0:
            cv2.line(canvas, pts[i], pts[j], color or (200, 200, 200), max(1, thickness - 1), cv2.LINE_AA)
    for k, (p, v) in enumerate(zip(pts, kpts[:, 2])):
        if v > 0:
            cv2.circle(canvas, p, radius, color or colors[k], -1 if v >= 2 else 1, cv2.LINE_AA)
    return canvas


def tile(data: UniKPT, image: Image, inst: Instance, cat: Category, size: int = TILE,
         cache: dict | None = None, label: str | None = None) -> np.ndarray:
    path = data.image_path(image)
    img = cache.get(path) if cache is not None and path in cache else read_frame(path)
    if cache is not None:
        cache[path] = img
    out = np.full((size, size, 3), 64, np.uint8)
    x, y, w, h = inst.bbox
    margin = 0.15 * max(w, h) + 4
    side = max(w, h) + 2 * margin
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    scale = size / side
    if img is not None:
        m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float32)
        out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA, borderValue=(64, 64, 64))
    else:
        cv2.putText(out, "image missing", (8, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1)
    bx0, by0 = (x - x0) * scale, (y - y0) * scale
    cv2.rectangle(out, (int(bx0), int(by0)), (int(bx0 + w * scale), int(by0 + h * scale)), (255, 255, 255), 1)
    draw_keypoints(out, inst.keypoints, cat.skeleton, scale=scale, offset=(x0, y0))
    text = label or f"{cat.name} #{inst.id}"
    cv2.rectangle(out, (0, size - 18), (size, size), (0, 0, 0), -1)
    cv2.putText(out, text[:38], (4, size - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheets(data: UniKPT, out_dir: str | Path, n: int = 16, columns: int = 4, seed: int = 0,
                   size: int = TILE) -> list[Path]:
    """Write PNG sheets of `n` instances (spread over categories, reproducible); their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = data.image_index()
    cats = {c.id: c for c in data.categories}
    candidates = [i for i in data.instances if i.num_keypoints > 0] or list(data.instances)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(candidates))
    # Round-robin over categories so a 54-species file does not show only antelopes.
    by_cat: dict[int, list[Instance]] = {}
    for k in order:
        by_cat.setdefault(candidates[k].category_id, []).append(candidates[k])
    chosen: list[Instance] = []
    while len(chosen) < min(n, len(candidates)):
        for lst in by_cat.values():
            if lst and len(chosen) < n:
                chosen.append(lst.pop())
    cache: dict = {}
    per_sheet = columns * columns
    paths = []
    for s in range(0, len(chosen), per_sheet):
        tiles = [tile(data, images[i.image_id], i, cats[i.category_id], size, cache) for i in chosen[s:s + per_sheet]]
        while len(tiles) % columns:
            tiles.append(np.full((size, size, 3), 32, np.uint8))
        rows = [np.hstack(tiles[r:r + columns]) for r in range(0, len(tiles), columns)]
        path = out_dir / f"{data.dataset}_{s // per_sheet:03d}.png"
        cv2.imwrite(str(path), np.vstack(rows))
        paths.append(path)
    return paths
