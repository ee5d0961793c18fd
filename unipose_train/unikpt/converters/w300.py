"""300-W faces in their original formats: ``.pts`` files and menpo ``.ljson`` files.

``.pts`` (iBUG): ``version: 1`` / ``n_points: 68`` / ``{`` / one ``x y`` line per point / ``}``,
coordinates 1-based (the first pixel's centre is 1, 1), so 1 is subtracted. The image is the file
with the same stem next to it (jpg, png, ppm, ...).

``.ljson`` (menpo landmark json): version 2 ``{"landmarks": {"points": ...}}`` or version 3
``{"groups": {NAME: {"landmarks": {"points": ...}}}}``; points are stored **(y, x)** (menpo's
row/column order) and ``null`` marks a missing point. The group with 68 points is used.

A folder is searched recursively for both kinds. Boxes are tight around the landmarks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import Builder, ConversionError, relative_name

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".JPG", ".PNG")


def read_pts(path: Path) -> np.ndarray:
    """(N, 2) x, y in 0-based pixel coordinates."""
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8", errors="replace").splitlines()]
    try:
        start, end = lines.index("{"), lines.index("}")
    except ValueError:
        raise ConversionError(f"{path}: not a .pts file (no '{{' ... '}}' block)") from None
    header = {ln.split(":")[0].strip(): ln.split(":", 1)[1].strip() for ln in lines[:start] if ":" in ln}
    rows = [ln.split() for ln in lines[start + 1:end] if ln]
    pts = np.array([[float(r[0]), float(r[1])] for r in rows], dtype=np.float64) - 1.0
    if "n_points" in header and int(header["n_points"]) != len(pts):
        raise ConversionError(f"{path}: header says {header['n_points']} points, file has {len(pts)}")
    return pts.reshape(-1, 2)


def read_ljson(path: Path, num_points: int = 68) -> np.ndarray:
    """(N, 2) x, y from a menpo ljson file (stored y, x)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    groups = data["groups"] if "groups" in data else {"": data}
    for group in groups.values():
        points = group.get("landmarks", {}).get("points", [])
        if len(points) == num_points:
            yx = np.array([[np.nan, np.nan] if p is None or None in p else p for p in points], dtype=np.float64)
            return yx[:, ::-1].copy()
    raise ConversionError(f"{path}: no landmark group with {num_points} points")


def image_for_points(path: Path) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def convert_300w_files(src: Path, builder: Builder) -> None:
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.suffix in (".pts", ".ljson"))
    root = builder.images_root or (src.parent if src.is_file() else src)
    cat = builder.category_from_set("face", "face", supercategory="face", style="photo", source_name="face")
    for path in files:
        try:
            pts = read_pts(path) if path.suffix == ".pts" else read_ljson(path)
        except (ConversionError, ValueError, KeyError, json.JSONDecodeError) as e:
            builder.report(path.name, "unreadable", str(e), file=str(path))
            continue
        image = image_for_points(path)
        if image is None:
            builder.report(path.name, "missing_image", f"no image next to {path}", file=str(path))
            continue
        image_id = builder.image(relative_name(image, root), ann_id=path.name)
        builder.instance(image_id, cat, pts, ann_id=path.name, file=str(path))
