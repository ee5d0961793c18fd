"""Labels and image files checked before the first training step (issue 19, item 5).

Fatal (training cannot use them, and would die mid-run or at step 0): missing or unreadable
image files, non-finite keypoints or boxes. Reported but tolerated (the entry is left out of
training, as before, but now by name): boxes with no area, annotations of unknown images or
categories, images whose declared size differs from the file's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from unipose_model.media import split_frame_reference

from .unikpt.format import UniKPT

log = logging.getLogger("unipose.train")

SHOWN = 5  # entries named per kind of problem; the rest are counted


@dataclass
class LabelReport:
    errors: Dict[str, List[str]] = field(default_factory=dict)     # kind -> entries
    warnings: Dict[str, List[str]] = field(default_factory=dict)
    _seen: set = field(default_factory=set, repr=False)

    def add(self, fatal: bool, kind: str, entry: str) -> None:
        if (kind, entry) in self._seen:  # one file used for training and validation is reported once
            return
        self._seen.add((kind, entry))
        (self.errors if fatal else self.warnings).setdefault(kind, []).append(entry)

    @staticmethod
    def _lines(problems: Dict[str, List[str]]) -> List[str]:
        out = []
        for kind, entries in problems.items():
            shown = ", ".join(entries[:SHOWN]) + (f" and {len(entries) - SHOWN} more" if len(entries) > SHOWN else "")
            out.append(f"{len(entries)} {kind}: {shown}")
        return out

    def error_message(self) -> str:
        return "the training labels cannot be used: " + "; ".join(self._lines(self.errors))

    def warning_lines(self) -> List[str]:
        return self._lines(self.warnings)


def check_sources(sources: Sequence[UniKPT], image_ids: Sequence[Sequence[int] | None] | None = None,
                  check_files: bool = True) -> LabelReport:
    """Every annotation and image of `sources` (see the module docstring); image_ids: per source,
    the only images used (as SourceConfig.image_ids), or None for all."""
    report = LabelReport()
    for s, ds in enumerate(sources):
        where = str(ds.path) if ds.path is not None else ds.dataset
        wanted = None if image_ids is None or image_ids[s] is None else set(image_ids[s])
        images = {im.id: im for im in ds.images}
        cats = {c.id for c in ds.categories}
        used = set()
        for inst in ds.instances:
            if wanted is not None and inst.image_id not in wanted:
                continue
            name = f"{where} annotation {inst.id} (image {inst.image_id})"
            kpts, box = np.asarray(inst.keypoints, dtype=np.float64), np.asarray(inst.bbox, dtype=np.float64)
            if not np.isfinite(kpts).all():
                report.add(True, "annotations with NaN or infinite keypoints", name)
            if not np.isfinite(box).all():
                report.add(True, "annotations with a NaN or infinite box", name)
            elif inst.bbox[2] <= 0 or inst.bbox[3] <= 0:
                report.add(False, "annotations with an empty or negative box (left out)", name)
            if inst.image_id not in images:
                report.add(False, "annotations of an image id the file does not list (left out)", name)
            if inst.category_id not in cats:
                report.add(False, "annotations of an unknown category id (left out)", name)
            used.add(inst.image_id)
        if check_files:
            _check_image_files(ds, [images[i] for i in sorted(used) if i in images], where, report)
    return report


def _check_image_files(ds: UniKPT, images, where: str, report: LabelReport) -> None:
    """Existence, readability and size of each image with annotations (headers only: fast)."""
    from PIL import Image, UnidentifiedImageError

    videos: Dict[str, Tuple[int, int, int] | None] = {}
    for im in images:
        path = ds.image_path(im)
        ref = split_frame_reference(path)
        name = f"{where} image {im.id} ({path})"
        if ref is not None:
            size = _video_size(str(ref[0]), videos)
            if size is None:
                report.add(True, "missing or unreadable videos", name)
                continue
            width, height, frames = size
            if frames and ref[1] >= frames:
                report.add(True, "frames past the end of their video", name)
                continue
        else:
            if not Path(path).is_file():
                report.add(True, "missing image files", name)
                continue
            try:
                with Image.open(path) as f:
                    width, height = f.size
            except (UnidentifiedImageError, OSError):
                report.add(True, "unreadable image files", name)
                continue
        if (im.width, im.height) != (width, height) and im.width and im.height:
            report.add(False, "images whose file size differs from the labels' width x height "
                              "(keypoints are read in the file's pixels)",
                       f"{name}: labels {im.width}x{im.height}, file {width}x{height}")


def _video_size(video: str, cache: Dict) -> Tuple[int, int, int] | None:
    if video not in cache:
        import cv2
        cap = cv2.VideoCapture(video) if Path(video).is_file() else None
        if cap is None or not cap.isOpened():
            cache[video] = None
        else:
            cache[video] = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                            max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))))
            cap.release()
    return cache[video]


def check_training_labels(sources: Sequence[UniKPT], image_ids=None, log_warnings: bool = True) -> LabelReport:
    """check_sources, then: ValueError naming the fatal entries; the rest logged as warnings."""
    report = check_sources(sources, image_ids)
    if report.errors:
        raise ValueError(report.error_message())
    if log_warnings:
        for line in report.warning_lines():
            log.warning("labels: %s", line)
    return report
