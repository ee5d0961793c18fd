"""AnimalWeb (Khan et al., CVPR 2020): animal faces with 9 landmarks, one ``.pts`` per image.

Published layout: images and same-stem ``.pts`` files (300-W style, 1-based ``x y`` lines inside
``{ }``), 9 points per face in the order two per eye (right eye outer, inner; left eye inner,
outer), nose tip, right and left mouth corner, upper and lower lip centre — the order MP-100's
animal-face categories reuse. Files are named ``<species>_<number>.<ext>`` (MP-100 keeps these
names, e.g. ``klipspringer_41.jpg``), so the species is the name without the trailing number;
images in a per-species folder take the folder name instead.
"""
from __future__ import annotations

import re
from pathlib import Path

from .base import Builder, ConversionError, relative_name, category_name
from .w300 import image_for_points, read_pts


def species_of(path: Path, root: Path) -> str:
    stem = re.sub(r"[_\-\s]*\d+$", "", path.stem)
    if stem:
        return category_name(stem)
    return category_name(path.parent.name) if path.parent != root else "animal"


def convert_animalweb(src: Path, builder: Builder) -> None:
    files = [src] if src.is_file() else sorted(src.rglob("*.pts"))
    root = builder.images_root or (src.parent if src.is_file() else src)
    spec = builder.vocab.dataset("animalweb")
    for path in files:
        try:
            pts = read_pts(path)
        except (ConversionError, ValueError) as e:
            builder.report(path.name, "unreadable", str(e), file=str(path))
            continue
        species = species_of(path, root)
        cat = builder.category_from_set(f"{species} face", spec.set, supercategory="animal face",
                                        style=spec.style, source_name=species)
        image = image_for_points(path)
        if image is None:
            builder.report(path.name, "missing_image", f"no image next to {path}", file=str(path))
            continue
        image_id = builder.image(relative_name(image, root), ann_id=path.name)
        builder.instance(image_id, cat, pts, ann_id=path.name, file=str(path))
