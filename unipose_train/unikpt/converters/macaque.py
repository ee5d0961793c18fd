"""MacaquePose original ``annotations.csv``, besides its COCO-like json (see coco.py).

Published layout: a csv with a header and the columns ``image file name``, ``segmentation`` and
``keypoints``. ``keypoints`` holds a JSON list with one entry per monkey in the image, each a list
of 17 dicts, one per keypoint in COCO order: ``{"name": "nose", "position": [x, y]}`` (``null``
when not labelled); ``{"name", "x", "y"}`` dicts are accepted as well. ``segmentation`` holds, per
monkey, a list of polygons whose points are ``{"x", "y"}`` dicts or ``[x, y]`` pairs; a monkey's
box is its polygons' extent (or its keypoints' if it has none). Images are in ``images/`` beside
the csv or directly beside it.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from .base import Builder


def _point(p: Any) -> tuple[float, float]:
    if isinstance(p, dict):
        if "position" in p:
            pos = p["position"]
            return (np.nan, np.nan) if pos is None else (float(pos[0]), float(pos[1]))
        if p.get("x") is None or p.get("y") is None:
            return np.nan, np.nan
        return float(p["x"]), float(p["y"])
    if p is None:
        return np.nan, np.nan
    return float(p[0]), float(p[1])


def _polygon_box(polygons: Any) -> list[float] | None:
    pts = []
    for poly in polygons or []:
        if poly and isinstance(poly[0], (int, float)):  # flat [x0, y0, x1, y1, ...]
            pts += list(zip(poly[0::2], poly[1::2]))
        else:
            pts += [_point(p) for p in poly]
    arr = np.array(pts, dtype=np.float64).reshape(-1, 2)
    arr = arr[np.isfinite(arr).all(1)]
    if len(arr) == 0:
        return None
    (x0, y0), (x1, y1) = arr.min(0), arr.max(0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _loads(text: str) -> Any:
    text = (text or "").strip()
    if not text:
        return []
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(text.replace("'", '"').replace("None", "null"))


def convert_macaque_csv(src: Path, builder: Builder) -> None:
    spec = builder.vocab.dataset("macaque")
    cat = builder.category_from_set("macaque", "macaque", supercategory="animal", style="photo",
                                    source_name="macaque")
    order = list(spec.source_keypoints)
    with open(src, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        missing = {"image file name", "keypoints"} - set(columns)
        if missing:
            builder.report("header", "unreadable", f"csv lacks columns {sorted(missing)}")
            return
        for row_no, row in enumerate(reader, start=2):
            name = row[columns["image file name"]].strip()
            where = f"row {row_no} ({name})"
            try:
                monkeys = _loads(row[columns["keypoints"]])
                segs = _loads(row.get(columns.get("segmentation", ""), "") or "")
            except json.JSONDecodeError as e:
                builder.report(where, "unreadable", f"keypoints/segmentation are not JSON: {e}")
                continue
            for candidate in (f"images/{name}", name):
                if builder.images_root is None or (builder.images_root / candidate).exists():
                    name = candidate
                    break
            image_id = builder.image(name, ann_id=where)
            for k, monkey in enumerate(monkeys):
                xy = np.full((len(order), 2), np.nan)
                unknown = []
                for p in monkey:
                    key = str(p.get("name", "")).strip() if isinstance(p, dict) else ""
                    if key in order:
                        xy[order.index(key)] = _point(p)
                    else:
                        unknown.append(key)
                if len(monkey) != len(order) or unknown:
                    builder.report(f"{where} monkey {k}", "keypoint_count",
                                   f"{len(monkey)} points (unknown names {unknown}); MacaquePose has "
                                   f"{len(order)}")
                    continue
                box = _polygon_box(segs[k]) if k < len(segs) else None
                builder.instance(image_id, cat, xy, bbox=box, ann_id=f"{where} monkey {k}")
