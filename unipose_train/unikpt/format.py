"""The UniKPT annotation file: COCO-style images/annotations plus self-describing categories.

One file per converted dataset (split). It is a valid COCO keypoints file (pycocotools and
xtcocotools load it as ground truth), with these additions and rules::

    {
      "format": "unikpt", "version": 1,
      "dataset": "ap10k",                # registry name of the source dataset
      "images_root": "../ap10k/data",    # image paths are relative to this; itself relative to
                                         # the json's folder unless absolute
      "info": {...},                     # free-form provenance (source file, converter, counts)
      "categories": [{
          "id": 1, "name": "antelope",   # unified category name (text form, lower case, spaces)
          "supercategory": "animal",
          "keypoint_set": "animal",      # vocabulary set the names come from (null: custom)
          "keypoints": ["left eye", ...],  # unified keypoint names (vocabulary text form)
          "skeleton": [[0, 1], ...],     # 0-BASED links (COCO's own skeleton is 1-based)
          "flip_pairs": [[0, 1], ...],   # 0-based pairs swapped by a horizontal flip
          "sigmas": [0.025, ...] | null, # OKS sigmas when the source defines them
          "taxonomy": {"family": "bovidae"},   # optional, where the source has it
          "style": "photo" | null,       # default image style of the category
          "source_name": "antelope"      # the category's name in the source dataset
      }],
      "images": [{"id": 7, "file_name": "000000000007.jpg", "width": 640, "height": 480,
                  "style": "oil painting"?}],          # style only where the source has it
      "annotations": [{"id": 1, "image_id": 7, "category_id": 1,
                       "bbox": [x, y, w, h], "keypoints": [x, y, v, ...], "num_keypoints": 12,
                       "area": 1234.5, "iscrowd": 0, "track_id": 3?}]
    }

Keypoint v: 0 = not labelled (x = y = 0), 1 = labelled but occluded, 2 = labelled and visible.
Coordinates are pixels with the origin at the image's top-left corner.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

FORMAT_NAME = "unikpt"
FORMAT_VERSION = 1

__all__ = ["Category", "Image", "Instance", "Issue", "UniKPT", "UniKPTError", "load", "save",
           "FORMAT_NAME", "FORMAT_VERSION", "OUT_OF_IMAGE_TOLERANCE"]

# Labelled points may sit up to this many pixels outside the image (pixel-centre vs corner
# conventions differ between datasets); beyond it the point is reported as out of range.
OUT_OF_IMAGE_TOLERANCE = 2.0


class UniKPTError(ValueError):
    """A malformed UniKPT file, or bad annotations in strict mode."""


@dataclass(frozen=True)
class Issue:
    """One bad annotation: where it is and what is wrong with it."""

    file: str
    ann_id: Any  # the source's annotation id, or a description such as 'row 12'
    kind: str    # out_of_range | keypoint_count | missing_image | nan | unknown_category | bad_bbox | ...
    message: str

    def __str__(self) -> str:
        return f"{self.file}: annotation {self.ann_id}: {self.kind}: {self.message}"


@dataclass
class Category:
    id: int
    name: str
    keypoints: list[str]
    skeleton: list[tuple[int, int]] = field(default_factory=list)
    flip_pairs: list[tuple[int, int]] = field(default_factory=list)
    sigmas: list[float] | None = None
    supercategory: str = ""
    keypoint_set: str | None = None
    taxonomy: dict[str, str] = field(default_factory=dict)
    style: str | None = None
    source_name: str = ""

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "supercategory": self.supercategory,
                "keypoint_set": self.keypoint_set, "keypoints": list(self.keypoints),
                "skeleton": [list(p) for p in self.skeleton],
                "flip_pairs": [list(p) for p in self.flip_pairs],
                "sigmas": None if self.sigmas is None else list(self.sigmas),
                "taxonomy": dict(self.taxonomy), "style": self.style,
                "source_name": self.source_name}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Category":
        return cls(id=int(d["id"]), name=d["name"], keypoints=list(d["keypoints"]),
                   skeleton=[tuple(p) for p in d.get("skeleton", [])],
                   flip_pairs=[tuple(p) for p in d.get("flip_pairs", [])],
                   sigmas=None if d.get("sigmas") is None else [float(s) for s in d["sigmas"]],
                   supercategory=d.get("supercategory", ""), keypoint_set=d.get("keypoint_set"),
                   taxonomy=dict(d.get("taxonomy") or {}), style=d.get("style"),
                   source_name=d.get("source_name", ""))


@dataclass
class Image:
    id: int
    file_name: str
    width: int
    height: int
    style: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "file_name": self.file_name, "width": self.width,
               "height": self.height}
        if self.style is not None:
            out["style"] = self.style
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Image":
        return cls(id=int(d["id"]), file_name=d["file_name"], width=int(d["width"]),
                   height=int(d["height"]), style=d.get("style"))


@dataclass
class Instance:
    id: int
    image_id: int
    category_id: int
    keypoints: np.ndarray  # (K, 3) float64: x, y, v
    bbox: tuple[float, float, float, float]  # x, y, w, h
    area: float
    iscrowd: int = 0
    track_id: int | None = None

    @property
    def num_keypoints(self) -> int:
        return int((self.keypoints[:, 2] > 0).sum())

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "image_id": self.image_id, "category_id": self.category_id,
               "bbox": [float(v) for v in self.bbox],
               "keypoints": [float(v) if i % 3 < 2 else int(v)
                             for i, v in enumerate(self.keypoints.reshape(-1))],
               "num_keypoints": self.num_keypoints, "area": float(self.area),
               "iscrowd": int(self.iscrowd)}
        if self.track_id is not None:
            out["track_id"] = int(self.track_id)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Instance":
        kpts = np.asarray(d["keypoints"], dtype=np.float64).reshape(-1, 3)
        return cls(id=int(d["id"]), image_id=int(d["image_id"]), category_id=int(d["category_id"]),
                   keypoints=kpts, bbox=tuple(float(v) for v in d["bbox"]),
                   area=float(d["area"]), iscrowd=int(d.get("iscrowd", 0)),
                   track_id=None if d.get("track_id") is None else int(d["track_id"]))


@dataclass
class UniKPT:
    """One converted dataset: images, instances and categories in the unified format."""

    dataset: str
    images: list[Image] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    categories: list[Category] = field(default_factory=list)
    images_root: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # where it was loaded from / saved to (resolves images_root)

    # ------------------------------------------------------------------ lookups
    def category(self, category_id: int) -> Category:
        for c in self.categories:
            if c.id == category_id:
                return c
        raise KeyError(f"no category with id {category_id} in {self.dataset}")

    def image_index(self) -> dict[int, Image]:
        return {im.id: im for im in self.images}

    def instances_by_image(self) -> dict[int, list[Instance]]:
        out: dict[int, list[Instance]] = {im.id: [] for im in self.images}
        for inst in self.instances:
            out.setdefault(inst.image_id, []).append(inst)
        return out

    def root(self) -> Path:
        """The folder image file names are relative to."""
        base = self.path.parent if self.path is not None else Path.cwd()
        return base / self.images_root if self.images_root else base

    def image_path(self, image: Image) -> Path:
        """Path of an image; video frames keep their '#frame=N' suffix (see media.video_frame)."""
        return self.root() / image.file_name

    # ------------------------------------------------------------------ (de)serialisation
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "dataset": self.dataset,
                "images_root": self.images_root, "info": self.info,
                "categories": [c.to_json() for c in self.categories],
                "images": [im.to_json() for im in self.images],
                "annotations": [inst.to_json() for inst in self.instances]}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path | None = None) -> "UniKPT":
        where = str(path) if path else "<data>"
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise UniKPTError(f"{where}: not a UniKPT file (expected \"format\": \"{FORMAT_NAME}\"); "
                              "convert it first with `unipose-data convert`")
        if data.get("version") != FORMAT_VERSION:
            raise UniKPTError(f"{where}: UniKPT version {data.get('version')} is not supported "
                              f"(this code reads version {FORMAT_VERSION})")
        try:
            return cls(dataset=data["dataset"],
                       images=[Image.from_json(d) for d in data["images"]],
                       instances=[Instance.from_json(d) for d in data["annotations"]],
                       categories=[Category.from_json(d) for d in data["categories"]],
                       images_root=data.get("images_root", ""), info=data.get("info", {}),
                       path=path)
        except (KeyError, TypeError, ValueError) as e:
            raise UniKPTError(f"{where}: malformed UniKPT data: {e!r}") from e

    # ------------------------------------------------------------------ validation
    def validate(self, check_images: bool = False) -> list[Issue]:
        """Every problem in the file (empty list: the file is sound)."""
        where = str(self.path) if self.path else self.dataset
        issues: list[Issue] = []
        cats = {}
        for c in self.categories:
            if c.id in cats:
                issues.append(Issue(where, f"category {c.id}", "duplicate_id", "category id used twice"))
            cats[c.id] = c
            k = len(c.keypoints)
            for field_name in ("skeleton", "flip_pairs"):
                for i, j in getattr(c, field_name):
                    if not (0 <= i < k and 0 <= j < k) or i == j:
                        issues.append(Issue(where, f"category {c.id}", "bad_category",
                                            f"{field_name} link {[i, j]} invalid for {k} keypoints"))
            if c.sigmas is not None and (len(c.sigmas) != k or min(c.sigmas, default=1) <= 0):
                issues.append(Issue(where, f"category {c.id}", "bad_category",
                                    f"{len(c.sigmas)} sigmas for {k} keypoints (must be positive)"))
        images = {}
        for im in self.images:
            if im.id in images:
                issues.append(Issue(where, f"image {im.id}", "duplicate_id", "image id used twice"))
            images[im.id] = im
            if im.width <= 0 or im.height <= 0:
                issues.append(Issue(where, f"image {im.id}", "bad_image",
                                    f"size {im.width}x{im.height}"))
            if check_images and not media_exists(self.image_path(im)):
                issues.append(Issue(where, f"image {im.id}", "missing_image",
                                    f"{self.image_path(im)} does not exist"))
        seen: set[int] = set()
        for inst in self.instances:
            if inst.id in seen:
                issues.append(Issue(where, inst.id, "duplicate_id", "annotation id used twice"))
            seen.add(inst.id)
            cat = cats.get(inst.category_id)
            image = images.get(inst.image_id)
            if cat is None:
                issues.append(Issue(where, inst.id, "unknown_category",
                                    f"category id {inst.category_id} is not defined"))
                continue
            if image is None:
                issues.append(Issue(where, inst.id, "missing_image",
                                    f"image id {inst.image_id} is not defined"))
                continue
            problem = check_instance(inst.keypoints, inst.bbox, len(cat.keypoints),
                                     image.width, image.height)
            if problem:
                issues.append(Issue(where, inst.id, *problem))
        return issues


def check_instance(kpts: np.ndarray, bbox: Iterable[float] | None, num_keypoints: int,
                   width: int, height: int) -> tuple[str, str] | None:
    """(kind, message) of the first problem of one instance, or None when it is sound."""
    if kpts.ndim != 2 or kpts.shape[1] != 3 or kpts.shape[0] != num_keypoints:
        return "keypoint_count", (f"{kpts.shape[0] if kpts.ndim == 2 else kpts.size} keypoints, "
                                  f"category has {num_keypoints}")
    v = kpts[:, 2]
    if not np.isfinite(v).all() or not np.isin(v, (0, 1, 2)).all():
        return "bad_visibility", f"visibility flags {sorted(set(v.tolist()))} not in {{0, 1, 2}}"
    labelled = kpts[v > 0, :2]
    if not np.isfinite(labelled).all():
        bad = np.flatnonzero((v > 0) & ~np.isfinite(kpts[:, :2]).all(1)).tolist()
        return "nan", f"labelled keypoints {bad} have NaN/inf coordinates"
    tol = OUT_OF_IMAGE_TOLERANCE
    outside = ((labelled[:, 0] < -tol) | (labelled[:, 0] > width + tol)
               | (labelled[:, 1] < -tol) | (labelled[:, 1] > height + tol))
    if outside.any():
        idx = np.flatnonzero(v > 0)[outside].tolist()
        return "out_of_range", (f"labelled keypoints {idx} lie outside the {width}x{height} image, "
                                f"e.g. {labelled[outside][0].round(2).tolist()}")
    if bbox is not None:
        box = list(bbox)
        if len(box) != 4 or not all(math.isfinite(b) for b in box):
            return "nan", f"bbox {box} is not 4 finite numbers"
        if box[2] <= 0 or box[3] <= 0:
            return "bad_bbox", f"bbox {box} has no area"
    return None


def media_exists(path: Path) -> bool:
    """A file, or a video frame reference 'clip.mp4#frame=N' whose video exists."""
    from unipose_model.media import MediaError, split_frame_reference

    try:
        ref = split_frame_reference(path)
    except MediaError:  # 'clip.mp4#frame=x': not a frame that can exist
        return False
    return os.path.exists(path if ref is None else ref[0])


def load(path: str | Path) -> UniKPT:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UniKPTError(f"cannot read UniKPT file {path}: {e}") from e
    return UniKPT.from_json(data, path=path)


def save(data: UniKPT, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data.to_json(), separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)
    data.path = path
    return path
