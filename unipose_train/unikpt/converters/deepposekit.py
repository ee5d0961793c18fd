"""DeepPoseKit annotation sets (``.h5``): Vinegar Fly and Desert Locust in their original form.

Layout (DeepPoseKit ``DataGenerator``): ``images`` (N, H, W, C) uint8, ``annotations`` (N, K, 2)
x, y, ``annotated`` (N, K) bool (False: the point was never confirmed by a human), ``skeleton``
(K, 2) int: each node's parent and swap index (-1: none). One animal per frame, centred.

The frames live inside the file, so the converter writes them as PNGs into an ``images/`` folder
next to the output (``frames_dir``) and refers to those. Unconfirmed points get v = 0 only when
``annotated_only`` is set; DeepPoseKit's example sets are model pre-filled, so by default every
finite point is kept and the count of unconfirmed points is recorded in ``info``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from unipose_model.extras import require

from .base import Builder, ConversionError


def convert_deepposekit(src: Path, builder: Builder, dataset: str, frames_dir: Path | None = None,
                        annotated_only: bool = False) -> None:
    import cv2
    h5py = require("h5py", "train", f"{src}: reading DeepPoseKit .h5 files", ConversionError)

    spec = builder.vocab.dataset(dataset)
    ks = builder.vocab.get_set(spec.set)
    try:
        fh = h5py.File(src, "r")
    except OSError as e:
        raise ConversionError(f"cannot open {src} as HDF5: {e}") from e
    with fh:
        for key in ("images", "annotations"):
            if key not in fh:
                raise ConversionError(f"{src}: no '{key}' dataset; not a DeepPoseKit annotation set")
        images, annotations = fh["images"], fh["annotations"][()]
        annotated = fh["annotated"][()] if "annotated" in fh else np.ones(annotations.shape[:2], bool)
        n, h, w = images.shape[:3]
        if annotations.shape[1] != len(ks):
            raise ConversionError(f"{src}: {annotations.shape[1]} keypoints per frame, the {spec.title} "
                                  f"layout has {len(ks)}")
        cat = builder.category_from_set(dataset.replace("_", " "), spec.set, supercategory=spec.supercategory,
                                        style=spec.style, source_name=dataset)
        frames_dir = Path(frames_dir) if frames_dir is not None else Path(src).with_suffix("") / "images"
        frames_dir.mkdir(parents=True, exist_ok=True)
        builder.images_root = frames_dir.resolve()
        builder.data.images_root = str(builder.images_root)
        for i in range(n):
            name = f"{i:06d}.png"
            if not (frames_dir / name).exists():
                cv2.imwrite(str(frames_dir / name), np.asarray(images[i]))
            image_id = builder.image(name, w, h, image_id=i + 1)
            xy = annotations[i].astype(np.float64)
            if annotated_only:
                xy[~annotated[i]] = np.nan
            builder.instance(image_id, cat, xy, ann_id=i + 1)
        builder.data.info["unconfirmed_points"] = int((~annotated).sum())
