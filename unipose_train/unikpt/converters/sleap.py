"""SLEAP label files (``.slp``, HDF5).

Layout (SLEAP format 1.x): attribute ``metadata/json`` holds ``nodes`` (global node names),
``skeletons`` (each with ``nodes`` [{"id": global index}] in the skeleton's order and ``links``
{source, target} global indices), ``videos_json`` / ``tracks_json`` hold one json string per
video / track. Tables: ``frames`` (frame_id, video, frame_idx, instance_id_start/end),
``instances`` (instance_type 0 = user label, 1 = prediction; track; point_id_start/end) and
``points`` / ``pred_points`` (x, y, visible, complete). A point with ``visible`` false or NaN
coordinates is not labelled.

Only user-labelled instances are converted (predictions are not ground truth) unless
``include_predictions`` is set. Frames are referenced as ``<video>#frame=<index>``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from unipose_model.extras import require

from .base import Builder, ConversionError, image_size
from .naming import category_for_skeleton, flip_pairs_from_names


def _json_rows(dataset: Any) -> list[Any]:
    return [json.loads(v.decode() if isinstance(v, bytes) else v) for v in dataset[()]]


def _node_index(ref: Any) -> int:
    if isinstance(ref, dict):  # older files: {"id": {"py/id": n}} (1-based)
        ref = ref.get("id", ref)
        if isinstance(ref, dict):
            return int(ref["py/id"]) - 1
    return int(ref)


def read_slp(path: Path) -> dict[str, Any]:
    """The parts of a .slp file the converter needs, as plain python/numpy."""
    h5py = require("h5py", "train", f"{path}: reading SLEAP .slp files", ConversionError)

    try:
        fh = h5py.File(path, "r")
    except OSError as e:
        raise ConversionError(f"cannot open {path} as HDF5: {e}") from e
    with fh:
        if "metadata" not in fh or "json" not in fh["metadata"].attrs:
            raise ConversionError(f"{path}: no metadata/json attribute; not a SLEAP file")
        meta = fh["metadata"].attrs["json"]
        meta = json.loads(meta.decode() if isinstance(meta, bytes) else meta)
        return {"meta": meta,
                "videos": _json_rows(fh["videos_json"]) if "videos_json" in fh else [],
                "tracks": _json_rows(fh["tracks_json"]) if "tracks_json" in fh else [],
                "frames": fh["frames"][()], "instances": fh["instances"][()],
                "points": fh["points"][()],
                "pred_points": fh["pred_points"][()] if "pred_points" in fh else None}


def convert_sleap(src: Path, builder: Builder, category: str | None = None,
                  include_predictions: bool = False) -> None:
    slp = read_slp(src)
    meta = slp["meta"]
    all_nodes = [n["name"] for n in meta["nodes"]]
    skeletons = meta["skeletons"]
    if not skeletons:
        raise ConversionError(f"{src}: no skeleton")
    root = builder.images_root or src.parent
    cats, node_orders = [], []
    for s in skeletons:
        order = [_node_index(n["id"]) for n in s["nodes"]]
        raw = [all_nodes[i] for i in order]
        names = builder.vocab.resolve_keypoints(raw)
        where = {g: k for k, g in enumerate(order)}
        links = [(where[_node_index(l["source"])], where[_node_index(l["target"])]) for l in s["links"]
                 if _node_index(l["source"]) in where and _node_index(l["target"]) in where]
        name, set_id, sup = category_for_skeleton(builder.vocab, raw, names, category)
        cats.append(builder.category(name, names, skeleton=links, flip_pairs=flip_pairs_from_names(names),
                                     keypoint_set=set_id, supercategory=sup,
                                     source_name=s.get("graph", {}).get("name", "")))
        node_orders.append(order)

    videos = []
    for v in slp["videos"]:
        filename = str(v.get("backend", {}).get("filename", v.get("filename", "")))
        local = filename if (root / filename).exists() else Path(filename).name
        videos.append((local, image_size(root / f"{local}#frame=0")))

    frames = slp["frames"]
    instances = slp["instances"]
    for f in frames:
        vid = int(f["video"])
        if vid >= len(videos):
            builder.report(f"frame {int(f['frame_id'])}", "missing_image", f"video {vid} not listed")
            continue
        video, size = videos[vid]
        w, h = size if size is not None else (None, None)
        image_id = builder.image(f"{video}#frame={int(f['frame_idx'])}", w, h,
                                 ann_id=f"frame {int(f['frame_id'])}")
        for inst in instances[int(f["instance_id_start"]):int(f["instance_id_end"])]:
            predicted = int(inst["instance_type"]) == 1
            if predicted and not include_predictions:
                continue
            table = slp["pred_points"] if predicted else slp["points"]
            pts = table[int(inst["point_id_start"]):int(inst["point_id_end"])]
            xy = np.stack([pts["x"], pts["y"]], axis=1).astype(np.float64)
            xy[~pts["visible"].astype(bool)] = np.nan
            track = int(inst["track"])
            builder.instance(image_id, cats[int(inst["skeleton"])], xy,
                             track_id=track if track >= 0 else None,
                             ann_id=int(inst["instance_id"]) + 1)
    builder.data.info["tracks"] = [t[1] if isinstance(t, list) and len(t) > 1 else str(t) for t in slp["tracks"]]
