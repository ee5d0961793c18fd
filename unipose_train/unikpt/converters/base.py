"""What every converter shares: the `Builder` that checks each annotation before it enters.

A converter reads its source format and calls `Builder.category/image/instance`; the builder
validates every instance (keypoint count, NaN, visibility, out-of-image points, boxes, unknown
category, missing image), records an `Issue` with file and annotation id for each bad one and
skips it. `finish()` returns the data and the report; in strict mode it raises instead.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..format import Category, Image, Instance, Issue, UniKPT, UniKPTError, media_exists, check_instance
from ..vocabulary import UniKPTVocabulary, normalize_name

__all__ = ["Builder", "ConversionResult", "ConversionError", "bbox_from_keypoints", "image_size",
           "as_keypoints", "category_name", "relative_name"]


class ConversionError(UniKPTError):
    """Bad annotations in strict mode, or a source that cannot be read at all."""


@dataclass
class ConversionResult:
    data: UniKPT
    issues: list[Issue] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # kind -> number of skipped annotations

    def summary(self) -> str:
        d = self.data
        text = (f"{d.dataset}: {len(d.images)} images, {len(d.instances)} instances, "
                f"{len(d.categories)} categories")
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {k}" for k, n in sorted(self.skipped.items()))
        return text


def category_name(raw: str) -> str:
    """Unified text form of a source category name ('long_sleeved_dress' -> 'long sleeved dress')."""
    return normalize_name(raw.replace("-", " "))


def as_keypoints(values: Any, num_keypoints: int | None = None) -> np.ndarray:
    """(K, 3) float array from a flat [x, y, v, ...] list or a (K, 2|3) array; (K, 2) gets v = 2
    for finite points and 0 for NaN points (lab tools mark missing points with NaN). Unlabelled
    points (v = 0) are zeroed, as COCO writes them."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        if arr.size % 3 != 0:
            return arr.reshape(-1, 1)  # malformed: the builder reports the count
        arr = arr.reshape(-1, 3)
    if arr.ndim == 2 and arr.shape[1] == 2:
        v = np.where(np.isfinite(arr).all(1), 2.0, 0.0)
        arr = np.concatenate([arr, v[:, None]], axis=1)
    if arr.ndim == 2 and arr.shape[1] == 3:
        arr = arr.copy()
        unlabelled = arr[:, 2] == 0
        arr[unlabelled, :2] = 0.0
    return arr


def bbox_from_keypoints(kpts: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight box around the labelled keypoints (None if fewer than one labelled point)."""
    pts = kpts[kpts[:, 2] > 0, :2]
    if len(pts) == 0 or not np.isfinite(pts).all():
        return None
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def relative_name(path: Path, root: Path) -> str:
    """`path` relative to `root` with '/' separators (may start with '..')."""
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file or of a video for 'clip.mp4#frame=N'; None if unreadable."""
    text = str(path)
    if "#frame=" in text:
        import cv2
        cap = cv2.VideoCapture(text.split("#frame=")[0])
        try:
            if not cap.isOpened():
                return None
            return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        finally:
            cap.release()
    try:
        from PIL import Image as PILImage
        with PILImage.open(path) as im:  # reads the header only
            return im.size
    except (OSError, ValueError):
        return None


class Builder:
    """Accumulates one UniKPT dataset, validating as it goes."""

    def __init__(self, dataset: str, vocab: UniKPTVocabulary, source: str | Path, *,
                 images_root: str | Path | None = None, check_images: bool = True,
                 strict: bool = False):
        self.vocab = vocab
        self.source = str(source)
        self.strict = strict
        self.images_root = Path(images_root).resolve() if images_root is not None else None
        self.check_images = check_images and self.images_root is not None
        self.data = UniKPT(dataset=dataset, images_root=str(self.images_root or ""),
                           info={"source": self.source, "converter": dataset})
        self.issues: list[Issue] = []
        self.skipped: Counter = Counter()
        self._images: dict[int, Image] = {}
        self._image_by_name: dict[str, int] = {}
        self._categories: dict[int, Category] = {}
        self._category_by_key: dict[tuple[str, str | None, int], int] = {}
        self._instance_ids: set[int] = set()

    # ------------------------------------------------------------------ reporting
    def report(self, ann_id: Any, kind: str, message: str, file: str | None = None) -> None:
        self.issues.append(Issue(file or self.source, ann_id, kind, message))
        self.skipped[kind] += 1

    # ------------------------------------------------------------------ categories
    def category_from_set(self, name: str, set_id: str, *, category_id: int | None = None,
                          supercategory: str | None = None, style: str | None = None,
                          taxonomy: dict[str, str] | None = None, source_name: str = "",
                          keypoint_subset: Sequence[str] | None = None) -> int:
        """A category whose keypoints are a vocabulary set (or the named subset of it).

        Its keypoint names are the set's model text, verbatim: for an official set that is the
        text the official model was trained with (the car's two "none" included)."""
        ks = self.vocab.get_set(set_id)
        if keypoint_subset is not None:
            ks = ks.subset(keypoint_subset)
        return self.category(name, list(ks.prompt_texts), skeleton=list(ks.skeleton),
                             flip_pairs=list(ks.flip_pairs),
                             sigmas=None if ks.sigmas is None else list(ks.sigmas),
                             keypoint_set=set_id, category_id=category_id,
                             supercategory=supercategory, style=style, taxonomy=taxonomy,
                             source_name=source_name)

    def category(self, name: str, keypoints: Sequence[str], *, skeleton=(), flip_pairs=(),
                 sigmas: Sequence[float] | None = None, keypoint_set: str | None = None,
                 category_id: int | None = None, supercategory: str | None = None,
                 style: str | None = None, taxonomy: dict[str, str] | None = None,
                 source_name: str = "") -> int:
        """Id of the category (created once per name, set and keypoint count)."""
        name = category_name(name)
        key = (name, keypoint_set, len(keypoints))
        if key in self._category_by_key:
            return self._category_by_key[key]
        meta = self.vocab.category_meta(name)
        if category_id is None or category_id in self._categories:
            category_id = max(self._categories, default=0) + 1
        cat = Category(id=int(category_id), name=name, keypoints=list(keypoints),
                       skeleton=[tuple(p) for p in skeleton], flip_pairs=[tuple(p) for p in flip_pairs],
                       sigmas=None if sigmas is None else [float(s) for s in sigmas],
                       supercategory=supercategory or meta.get("supercategory", ""),
                       keypoint_set=keypoint_set,
                       taxonomy=dict(taxonomy if taxonomy is not None else meta.get("taxonomy", {})),
                       style=style if style is not None else meta.get("style"),
                       source_name=source_name or name)
        self._categories[cat.id] = cat
        self._category_by_key[key] = cat.id
        self.data.categories.append(cat)
        return cat.id

    # ------------------------------------------------------------------ images
    def image(self, file_name: str, width: int | None = None, height: int | None = None, *,
              image_id: int | None = None, style: str | None = None, ann_id: Any = None) -> int | None:
        """Id of the image (created once per file name); None, reported, if it is missing or has
        no known size."""
        file_name = str(file_name).replace(os.sep, "/")
        if file_name in self._image_by_name:
            return self._image_by_name[file_name]
        where = ann_id if ann_id is not None else f"image {file_name}"
        path = None
        if self.images_root is not None:
            located = self._locate(file_name)
            if located is not None:
                file_name = located
            elif self.check_images:
                self.report(where, "missing_image", f"{self.images_root / file_name} does not exist")
                return None
            path = self.images_root / file_name
        if file_name in self._image_by_name:
            return self._image_by_name[file_name]
        if not width or not height:
            size = image_size(path) if path is not None else None
            if size is None:
                self.report(where, "missing_image", f"size of {file_name} unknown and the image "
                                                    "cannot be read (give --images-root)")
                return None
            width, height = size
        if image_id is None or image_id in self._images:
            image_id = max(self._images, default=0) + 1
        im = Image(id=int(image_id), file_name=file_name, width=int(width), height=int(height),
                   style=style)
        self._images[im.id] = im
        self._image_by_name[file_name] = im.id
        self.data.images.append(im)
        return im.id

    def _locate(self, file_name: str) -> str | None:
        """The file name relative to the images root: as given, or with leading folders dropped
        (Human-Art's json says 'HumanArt/images/...', relative to a parent of its image root)."""
        parts = file_name.split("/")
        for start in range(len(parts)):
            for folder in ("", "images/"):  # COCO-style trees keep images in images/
                candidate = folder + "/".join(parts[start:])
                if media_exists(self.images_root / candidate):
                    return candidate
        return None

    # ------------------------------------------------------------------ instances
    def instance(self, image_id: int | None, category_id: int | None, keypoints: Any, *,
                 bbox: Sequence[float] | None = None, area: float | None = None, iscrowd: int = 0,
                 track_id: int | None = None, ann_id: Any = None, file: str | None = None) -> bool:
        """Add one instance if it is sound; report and skip it otherwise. True if added."""
        where = ann_id if ann_id is not None else f"#{len(self.data.instances) + sum(self.skipped.values())}"
        if image_id is None:
            # missing image: reported once per image by image(); count the annotation too
            self.skipped["annotation_of_missing_image"] += 1
            return False
        if category_id is None or category_id not in self._categories:
            self.report(where, "unknown_category", f"category {category_id!r} is not in the dataset's "
                                                   "category list or the vocabulary", file)
            return False
        cat = self._categories[category_id]
        image = self._images[image_id]
        kpts = as_keypoints(keypoints)
        if bbox is not None and len(bbox) == 0:
            bbox = None
        if bbox is None and kpts.ndim == 2 and kpts.shape[1] == 3:
            bbox = bbox_from_keypoints(kpts)
            if bbox is not None and (bbox[2] <= 0 or bbox[3] <= 0):
                bbox = (bbox[0], bbox[1], max(bbox[2], 1.0), max(bbox[3], 1.0))  # single point
        problem = check_instance(kpts, bbox, len(cat.keypoints), image.width, image.height)
        if problem is None and bbox is None:
            problem = ("bad_bbox", "no box and no labelled keypoints to derive one from")
        if problem is not None:
            self.report(where, problem[0], problem[1], file)
            return False
        bbox = tuple(float(b) for b in bbox)
        if area is None or not np.isfinite(area) or area <= 0:
            area = bbox[2] * bbox[3]
        inst_id = ann_id if isinstance(ann_id, (int, np.integer)) and not isinstance(ann_id, bool) else None
        if inst_id is None or inst_id <= 0 or inst_id in self._instance_ids:
            # COCO tools treat id 0 as "no match", so ids start at 1 and stay unique.
            inst_id = max(self._instance_ids, default=0) + 1
        self._instance_ids.add(int(inst_id))
        self.data.instances.append(Instance(id=int(inst_id), image_id=image_id, category_id=category_id,
                                            keypoints=kpts, bbox=bbox, area=float(area),
                                            iscrowd=int(bool(iscrowd)), track_id=track_id))
        return True

    # ------------------------------------------------------------------ result
    def finish(self) -> ConversionResult:
        self.data.info["skipped"] = dict(self.skipped)
        self.data.info["issues"] = len(self.issues)
        result = ConversionResult(self.data, self.issues, self.skipped)
        if self.strict and self.issues:
            shown = "\n  ".join(str(i) for i in self.issues[:20])
            more = f"\n  ... and {len(self.issues) - 20} more" if len(self.issues) > 20 else ""
            raise ConversionError(f"{len(self.issues)} bad annotation(s) in {self.source} "
                                  f"(--strict):\n  {shown}{more}")
        return result
