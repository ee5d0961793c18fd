"""Keypoint-5 (Wu et al., ECCV 2016, 3D-INN): furniture keypoints in MATLAB ``.mat`` files.

Published layout: one folder per class (``bed``, ``chair``, ``sofa``, ``swivelchair``, ``table``)
with ``images/`` and ``coords.mat``. ``coords`` holds the 2D keypoints as (2, K, N) — x/y, keypoint,
image — (an (N, K, 2) array is accepted too); missing points are NaN or non-positive. The image
names are in a cell array ``imgs``/``images``/``names`` when present, otherwise the sorted files
of ``images/`` are taken in order. The keypoint order is the class's set in the vocabulary (the
order MP-100's furniture categories use).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Builder, ConversionError, relative_name


def _names(mat: dict, folder: Path, n: int) -> list[str]:
    for key in ("imgs", "images", "names", "img_names"):
        if key in mat:
            flat = np.asarray(mat[key], dtype=object).reshape(-1)
            names = [str(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size else "" for v in flat]
            if len(names) == n:
                return [nm if "/" in nm else f"images/{nm}" for nm in names]
    files = sorted(p.name for p in (folder / "images").glob("*") if p.is_file())
    if len(files) != n:
        raise ConversionError(f"{folder}: {n} annotations but {len(files)} files in images/ and no "
                              "image name list in the .mat")
    return [f"images/{f}" for f in files]


def convert_keypoint5(src: Path, builder: Builder) -> None:
    from scipy.io import loadmat

    parts = builder.vocab.dataset("keypoint5").parts
    mats = [src] if src.is_file() else sorted(src.glob("*/coords.mat")) + sorted(src.glob("coords.mat"))
    if not mats:
        raise ConversionError(f"{src}: no <class>/coords.mat found")
    root = builder.images_root or (src.parent.parent if src.is_file() else src)
    for mat_path in mats:
        folder = mat_path.parent
        cls = folder.name.lower().replace("_", "")
        if cls not in parts:
            builder.report(str(mat_path), "unknown_category", f"class folder {folder.name!r} is not one "
                                                             f"of {sorted(parts)}", file=str(mat_path))
            continue
        set_id = parts[cls]
        ks = builder.vocab.get_set(set_id)
        mat = loadmat(mat_path)
        if "coords" not in mat:
            raise ConversionError(f"{mat_path}: no 'coords' variable")
        coords = np.asarray(mat["coords"], dtype=np.float64)
        if coords.ndim == 3 and coords.shape[0] == 2:
            coords = coords.transpose(2, 1, 0)  # (2, K, N) -> (N, K, 2)
        if coords.ndim != 3 or coords.shape[2] != 2:
            raise ConversionError(f"{mat_path}: coords has shape {coords.shape}, expected (2, K, N)")
        cat = builder.category_from_set(set_id.replace("_", " "), set_id, supercategory="furniture",
                                        style="photo", source_name=folder.name)
        names = _names(mat, folder, coords.shape[0])
        rel = relative_name(folder, root)
        for i, xy in enumerate(coords):
            where = f"{folder.name} #{i}"
            xy = xy.copy()
            xy[(xy <= 0).any(1)] = np.nan  # MATLAB exports mark missing points with 0 or NaN
            image_id = builder.image(f"{rel}/{names[i]}" if rel != "." else names[i], ann_id=where)
            if xy.shape[0] != len(ks):
                builder.report(where, "keypoint_count", f"{xy.shape[0]} keypoints, {set_id} has {len(ks)}",
                               file=str(mat_path))
                continue
            builder.instance(image_id, cat, xy, ann_id=where, file=str(mat_path))
