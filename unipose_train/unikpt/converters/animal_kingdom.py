"""Animal Kingdom's own pose annotation json (a list of per-instance records), besides its
COCO export (see coco.py).

Each record: ``image`` (path relative to the images folder), ``animal`` (species),
``animal_parent_class``, ``animal_class``, ``animal_subclass``, ``joints`` (23 x [x, y], -1 for
missing), ``joints_vis`` (23 x 0/1), ``scale`` and ``center`` (the box is ``scale * 200`` square
around ``center``, the MPII convention the dataset follows). Image sizes are read from the images,
so give the images folder (``--images-root``) when it is not beside the json.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Builder, category_name
from .coco import read_json


def convert_animal_kingdom_list(src: Path, builder: Builder, records: list | None = None) -> None:
    records = read_json(src) if records is None else records
    spec = builder.vocab.dataset("animal_kingdom")
    for i, r in enumerate(records):
        where = f"record {i} ({r.get('image', '?')})"
        species = category_name(str(r.get("animal") or r.get("animal_class") or "animal"))
        taxonomy = {k: str(r[f]).lower() for k, f in (("parent class", "animal_parent_class"),
                                                      ("class", "animal_class"),
                                                      ("subclass", "animal_subclass")) if r.get(f)}
        cat = builder.category_from_set(species, spec.set, supercategory="animal", style=spec.style,
                                        taxonomy=taxonomy, source_name=str(r.get("animal", "")))
        joints = np.asarray(r.get("joints", []), dtype=np.float64).reshape(-1, 2)
        vis = np.asarray(r.get("joints_vis", [1] * len(joints)), dtype=np.float64).reshape(-1)
        if len(vis) != len(joints):
            builder.report(where, "keypoint_count", f"{len(joints)} joints but {len(vis)} visibility flags")
            continue
        kpts = np.concatenate([joints, np.where(vis > 0, 2.0, 0.0)[:, None]], axis=1)
        box = None
        if r.get("scale") is not None and r.get("center") is not None:
            side = float(r["scale"]) * 200.0
            cx, cy = (float(v) for v in r["center"])
            box = [cx - side / 2, cy - side / 2, side, side]
        image_id = builder.image(str(r["image"]), ann_id=where)
        # The MPII-style square box is coarse; keep the tight keypoint box as the instance box and
        # the square only when no keypoint is labelled.
        builder.instance(image_id, cat, kpts, bbox=None if (vis > 0).any() else box, ann_id=where)
