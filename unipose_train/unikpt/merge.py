"""The UniKPT index: which converted files (and which of their images) make up the training set.

The index does not copy annotations; it lists the per-dataset UniKPT files, the images chosen
from each after the per-dataset cap, and each dataset's sampling weight::

    {"format": "unikpt index", "version": 1, "seed": 0,
     "datasets": {"onehand10k": {"cap": 2000, "weight": 1.0, "images": 10000, "selected": 2000,
                                 "instances": 2000}, ...},
     "files": [{"file": "onehand10k_train.json", "dataset": "onehand10k", "images": 10000,
                "image_ids": [...] | null}],        # null: every image of the file
     "totals": {"images": ..., "instances": ..., "categories": ..., "keypoint_names": ...}}

Paths are relative to the index file. A training sampler draws an image of dataset d with
probability proportional to ``weight_d`` (weight 1 everywhere = uniform over selected images).
The paper caps OneHand10K, MacaquePose and Keypoint-5 at 2,000 images: those are the defaults.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .format import UniKPT, load

__all__ = ["DEFAULT_CAPS", "build_index", "save_index", "load_index", "iter_index", "INDEX_FORMAT"]

INDEX_FORMAT = "unikpt index"
DEFAULT_CAPS = {"onehand10k": 2000, "macaque": 2000, "keypoint5": 2000}


def build_index(files: Sequence[str | Path], *, caps: dict[str, int] | None = None,
                weights: dict[str, float] | None = None, seed: int = 0,
                relative_to: str | Path | None = None) -> dict:
    """Index over converted files; `caps` (dataset -> max images, default DEFAULT_CAPS; a cap of 0
    or less means no cap) are sampled reproducibly with `seed`."""
    caps = dict(DEFAULT_CAPS if caps is None else caps)
    weights = dict(weights or {})
    loaded = [load(f) for f in files]
    by_dataset: dict[str, list[int]] = defaultdict(list)
    for k, data in enumerate(loaded):
        by_dataset[data.dataset].append(k)
    unknown = sorted(set(weights) - set(by_dataset))
    if unknown:
        raise ValueError(f"--weight for dataset(s) not among the inputs: {unknown}")
    rng = np.random.default_rng(seed)
    selected: dict[int, set[int] | None] = {}
    datasets = {}
    for name, members in sorted(by_dataset.items()):
        pool = [(k, im.id) for k in members for im in loaded[k].images]
        cap = caps.get(name)
        if cap is not None and 0 < cap < len(pool):
            chosen = {pool[i] for i in sorted(rng.choice(len(pool), size=cap, replace=False))}
            for k in members:
                selected[k] = {i for kk, i in chosen if kk == k}
        else:
            for k in members:
                selected[k] = None
        n_sel = sum(len(loaded[k].images) if selected[k] is None else len(selected[k]) for k in members)
        n_inst = sum(sum(1 for i in loaded[k].instances if selected[k] is None or i.image_id in selected[k])
                     for k in members)
        datasets[name] = {"cap": cap if cap and cap > 0 else None, "weight": float(weights.get(name, 1.0)),
                          "images": len(pool), "selected": n_sel, "instances": n_inst}
    base = Path(relative_to) if relative_to is not None else Path.cwd()
    entries = []
    for k, (f, data) in enumerate(zip(files, loaded)):
        ids = selected[k]
        entries.append({"file": Path(os.path.relpath(Path(f).resolve(), base.resolve())).as_posix(),
                        "dataset": data.dataset, "images": len(data.images),
                        "image_ids": None if ids is None else sorted(ids)})
    names = {c.name for d in loaded for c in d.categories}
    kp_names = {n for d in loaded for c in d.categories for n in c.keypoints}
    return {"format": INDEX_FORMAT, "version": 1, "seed": seed, "datasets": datasets, "files": entries,
            "totals": {"images": sum(d["selected"] for d in datasets.values()),
                       "instances": sum(d["instances"] for d in datasets.values()),
                       "categories": len(names), "keypoint_names": len(kp_names)}}


def save_index(index: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_index(path: str | Path) -> dict:
    path = Path(path)
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: not a UniKPT index (build one with `unipose-data merge`)")
    for entry in index["files"]:
        entry["path"] = str((path.parent / entry["file"]).resolve())
    return index


def iter_index(index: dict) -> Iterator[tuple[UniKPT, set[int] | None, float]]:
    """(data, selected image ids or None for all, dataset weight) per file of a loaded index."""
    for entry in index["files"]:
        ids = entry.get("image_ids")
        weight = index["datasets"][entry["dataset"]]["weight"]
        yield load(entry["path"]), (None if ids is None else set(ids)), weight
