"""Label source entries of a training config (`data.train` / `data.val`), and the expansion of a
UniKPT index into one source per file. Light on purpose (no torch, no OpenCV): the config loader
builds these without importing the dataset code."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence


@dataclass
class SourceConfig:
    ann: str                       # UniKPT/COCO json, DeepLabCut project (folder or config.yaml), SLEAP .slp
    images: Optional[str] = None   # image folder (COCO files; UniKPT files carry images_root)
    name: Optional[str] = None     # dataset name (default: the file's 'dataset' or stem)
    weight: float = 1.0            # relative sampling weight (balanced sampling)
    max_images: Optional[int] = None  # cap (the paper caps some datasets at 2,000 images)
    image_ids: Optional[List[int]] = None  # restrict to these image ids (tests, tiny runs)
    id_range: Optional[List[int]] = None   # restrict to image ids in [a, b) (e.g. frames of a video)
    format: Optional[str] = None   # auto (by path), or: unikpt, coco, deeplabcut, sleap
    category: Optional[str] = None  # class name for DeepLabCut/SLEAP labels (their files name none)
    # Keep the images whose position in a fixed shuffle (split_seed) falls in [a, b): the same
    # file as train [0, 0.8] and val [0.8, 1] gives a disjoint 80/20 split.
    split: Optional[List[float]] = None
    split_seed: int = 0


def expand_index_sources(sources: Sequence[SourceConfig]) -> List[SourceConfig]:
    """A source whose `ann` is a UniKPT index (`unipose-data merge`) becomes one source per file,
    restricted to the index's selected images. The index weight is per image (an image of
    dataset d is drawn with probability proportional to weight_d), so the per-source weight
    here is weight_d * selected images, times the source's own weight."""
    out: List[SourceConfig] = []
    for src in sources:
        head = ""
        if Path(src.ann).is_file() and Path(src.ann).suffix == ".json":  # not DLC folders / .slp
            with open(src.ann, "r", encoding="utf-8") as f:
                head = f.read(256)
        if '"unikpt index"' not in head:
            out.append(src)
            continue
        from .unikpt.merge import load_index
        index = load_index(src.ann)
        for entry in index["files"]:
            ids = entry.get("image_ids")
            n = len(ids) if ids is not None else entry.get("images", 1)
            w = index["datasets"][entry["dataset"]]["weight"] * n * src.weight
            out.append(SourceConfig(ann=entry["path"], name=entry["dataset"], weight=w, image_ids=ids,
                                    max_images=src.max_images))
    return out
