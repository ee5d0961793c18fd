"""DeepLabCut projects: ``config.yaml`` + ``labeled-data/<video>/CollectedData_<scorer>.csv|.h5``.

``config.yaml`` gives ``bodyparts`` (or ``multianimalbodyparts`` + ``uniquebodyparts`` and
``individuals`` for multi-animal projects) and ``skeleton`` (pairs of names). The csv has header
rows ``scorer``, [``individuals``], ``bodyparts``, ``coords`` and one row per labelled frame; the
frame path is one column (``labeled-data/v/img001.png``) or three (``labeled-data``, ``v``,
``img001.png``). Empty cells / NaN mean not labelled. Without a csv the pandas ``.h5`` table is
read with h5py (single-animal projects: columns are x, y per body part in config order).
Paths are relative to the project folder.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from unipose_model.extras import require

from .base import Builder, ConversionError
from .naming import category_for_skeleton, flip_pairs_from_names


def _read_csv(path: Path) -> tuple[list[list[str]], list[tuple[str, np.ndarray]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header_end = next((i for i, r in enumerate(rows) if r and r[0].strip() == "coords"), None)
    if header_end is None:
        raise ConversionError(f"{path}: no 'coords' header row; not a DeepLabCut CollectedData csv")
    coords_row = rows[header_end]
    first = next(i for i, c in enumerate(coords_row) if c.strip() in ("x", "y", "likelihood"))
    headers = [r[first:] for r in rows[:header_end + 1]]
    frames = []
    for r in rows[header_end + 1:]:
        if not r:
            continue
        image = "/".join(c for c in r[:first] if c)
        values = np.array([float(c) if c.strip() not in ("", "nan", "NaN") else np.nan for c in r[first:]])
        frames.append((image, values))
    return headers, frames


def _read_h5(path: Path, n_columns: int) -> list[tuple[str, np.ndarray]]:
    h5py = require("h5py", "train", f"{path}: reading DeepLabCut .h5 labels", ConversionError)

    with h5py.File(path, "r") as fh:
        table = fh.get("df_with_missing/table")
        if table is None:
            raise ConversionError(f"{path}: no df_with_missing/table; export the labels as csv")
        data = table[()]
    names = data.dtype.names
    if "index" not in names or "values_block_0" not in names or data["values_block_0"].shape[1] != n_columns:
        raise ConversionError(f"{path}: unexpected table layout; export the labels as csv")
    return [(i.decode() if isinstance(i, bytes) else str(i), v.astype(np.float64))
            for i, v in zip(data["index"], data["values_block_0"])]


def convert_deeplabcut(src: Path, builder: Builder, category: str | None = None) -> None:
    import yaml

    config_path = src / "config.yaml" if src.is_dir() else src
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConversionError(f"cannot read DeepLabCut config {config_path}: {e}") from e
    project = config_path.parent
    multi = bool(config.get("multianimalproject"))
    bodyparts = list(config.get("multianimalbodyparts") or [] if multi else config.get("bodyparts") or [])
    if not bodyparts:
        raise ConversionError(f"{config_path}: no bodyparts")
    names = builder.vocab.resolve_keypoints(bodyparts)
    links = [(bodyparts.index(a), bodyparts.index(b)) for a, b in config.get("skeleton") or []
             if a in bodyparts and b in bodyparts]
    name, set_id, sup = category_for_skeleton(builder.vocab, bodyparts, names, category)
    cat = builder.category(name, names, skeleton=links, flip_pairs=flip_pairs_from_names(names),
                           keypoint_set=set_id, supercategory=sup, source_name=str(config.get("Task", "")))
    builder.data.info["scorer"] = config.get("scorer")
    builder.data.info["raw_keypoints"] = bodyparts

    label_files = sorted((project / "labeled-data").glob("*/CollectedData_*.csv"))
    folders_with_csv = {p.parent for p in label_files}
    h5_files = [p for p in sorted((project / "labeled-data").glob("*/CollectedData_*.h5"))
                if p.parent not in folders_with_csv]
    if not label_files and not h5_files:
        raise ConversionError(f"{project}: no labeled-data/*/CollectedData_*.csv or .h5")
    for path in label_files + h5_files:
        if path.suffix == ".csv":
            headers, frames = _read_csv(path)
            parts_row = next(r for r in headers if r and r[0] in bodyparts) if headers else []
            individuals = headers[1] if multi and len(headers) >= 4 else None
        else:
            frames, parts_row, individuals = _read_h5(path, 2 * len(bodyparts)), [], None
            parts_row = [p for p in bodyparts for _ in (0, 1)]
        coords = headers[-1] if path.suffix == ".csv" else ["x", "y"] * len(bodyparts)
        for image, values in frames:
            where = f"{path.parent.name}/{Path(image).name}"
            image_id = builder.image(image, ann_id=where)
            groups = sorted(set(individuals), key=individuals.index) if individuals else [None]
            for track, who in enumerate(groups):
                xy = np.full((len(bodyparts), 2), np.nan)
                for col, (part, axis) in enumerate(zip(parts_row, coords)):
                    if (who is not None and individuals[col] != who) or part not in bodyparts:
                        continue
                    if axis in ("x", "y"):
                        xy[bodyparts.index(part), "xy".index(axis)] = values[col]
                if np.isnan(xy).all():
                    continue
                builder.instance(image_id, cat, xy, track_id=track if who is not None else None,
                                 ann_id=where if who is None else f"{where} {who}", file=str(path))
