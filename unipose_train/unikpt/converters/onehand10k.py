"""OneHand10K original label files (``label_joint.txt``), besides its COCO json (see coco.py).

Published layout: one line per image, ``file_name, width, height, x1, y1, ..., x21, y21`` —
comma-separated (whitespace is accepted too), 21 joints in the dataset's order (wrist, then thumb
to little finger, base to tip), ``-1 -1`` for a joint that is not labelled. Image files are in
``source/`` next to the label file (``Train/source/…``) or directly beside it.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .base import Builder


def convert_onehand10k_txt(src: Path, builder: Builder) -> None:
    cat = builder.category_from_set("hand", "hand", supercategory="hand", style="photo", source_name="hand")
    lines = src.read_text(encoding="utf-8", errors="replace").splitlines()
    for row, line in enumerate(lines, start=1):
        fields = [f for f in re.split(r"[,\s]+", line.strip()) if f]
        if not fields:
            continue
        where = f"line {row}"
        try:
            name, width, height = fields[0], int(float(fields[1])), int(float(fields[2]))
            values = np.array([float(f) for f in fields[3:]], dtype=np.float64)
        except (IndexError, ValueError) as e:
            builder.report(where, "unreadable", f"cannot parse {line[:80]!r}: {e}")
            continue
        if values.size % 2:
            builder.report(where, "keypoint_count", f"odd number of coordinates ({values.size})")
            continue
        xy = values.reshape(-1, 2)
        missing = (xy < 0).all(1)  # -1, -1 marks a joint that is not labelled
        xy[missing] = np.nan
        for candidate in (f"source/{name}", name):
            if builder.images_root is None or (builder.images_root / candidate).exists():
                name = candidate
                break
        image_id = builder.image(name, width, height, ann_id=where)
        builder.instance(image_id, cat, xy, ann_id=where)
