"""Converter registry: dataset name -> reader of its published format(s).

`convert(name, src)` picks the reader from the dataset and the source's form (json, txt, csv,
h5, mat, pts folder, ...), runs it through a validating `Builder` and returns a
`ConversionResult` (data + report of skipped bad annotations).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..vocabulary import UniKPTVocabulary
from .base import Builder, ConversionError, ConversionResult

__all__ = ["CONVERTERS", "ConverterInfo", "convert", "ConversionError", "ConversionResult"]


@dataclass(frozen=True)
class ConverterInfo:
    name: str
    title: str
    forms: str  # what --src may be
    run: Callable[[Path, Builder, dict], None]
    prune_categories: bool = False  # drop categories no instance uses


def _coco(dataset: str):
    def run(src: Path, b: Builder, opts: dict) -> None:
        from .coco import convert_coco_like
        convert_coco_like(_single_json(src), b, dataset)
    return run


def _single_json(src: Path) -> Path:
    if src.is_file():
        return src
    found = sorted(src.glob("*.json")) + sorted(src.glob("annotations/*.json"))
    if len(found) != 1:
        raise ConversionError(f"{src}: expected one annotation json, found {len(found)}; pass the file")
    return found[0]


def _300w(src: Path, b: Builder, opts: dict) -> None:
    if src.suffix == ".json":
        from .coco import convert_coco_like
        convert_coco_like(src, b, "300w")
    else:
        from .w300 import convert_300w_files
        convert_300w_files(src, b)


def _onehand10k(src: Path, b: Builder, opts: dict) -> None:
    if src.suffix == ".txt":
        from .onehand10k import convert_onehand10k_txt
        convert_onehand10k_txt(src, b)
    else:
        _coco("onehand10k")(src, b, opts)


def _macaque(src: Path, b: Builder, opts: dict) -> None:
    if src.suffix == ".csv":
        from .macaque import convert_macaque_csv
        convert_macaque_csv(src, b)
    else:
        _coco("macaque")(src, b, opts)


def _animal_kingdom(src: Path, b: Builder, opts: dict) -> None:
    from .coco import read_json
    path = _single_json(src)
    data = read_json(path)
    if isinstance(data, list):
        from .animal_kingdom import convert_animal_kingdom_list
        convert_animal_kingdom_list(path, b, data)
    else:
        _coco("animal_kingdom")(path, b, opts)


def _dpk_or_coco(dataset: str):
    def run(src: Path, b: Builder, opts: dict) -> None:
        if src.suffix in (".h5", ".hdf5"):
            from .deepposekit import convert_deepposekit
            convert_deepposekit(src, b, dataset, frames_dir=opts.get("frames_dir"))
        else:
            _coco(dataset)(src, b, opts)
    return run


def _animalweb(src: Path, b: Builder, opts: dict) -> None:
    from .animalweb import convert_animalweb
    convert_animalweb(src, b)


def _keypoint5(src: Path, b: Builder, opts: dict) -> None:
    from .keypoint5 import convert_keypoint5
    convert_keypoint5(src, b)


def _sleap(src: Path, b: Builder, opts: dict) -> None:
    from .sleap import convert_sleap
    convert_sleap(src, b, category=opts.get("category"))


def _deeplabcut(src: Path, b: Builder, opts: dict) -> None:
    from .deeplabcut import convert_deeplabcut
    convert_deeplabcut(src, b, category=opts.get("category"))


CONVERTERS: dict[str, ConverterInfo] = {c.name: c for c in [
    ConverterInfo("coco", "COCO keypoints", "person_keypoints_*.json", _coco("coco")),
    ConverterInfo("humanart", "Human-Art", "COCO-like json", _coco("humanart")),
    ConverterInfo("300w", "300-W faces", "mmpose json, .pts/.ljson file or folder", _300w),
    ConverterInfo("onehand10k", "OneHand10K", "COCO-like json or label_joint.txt", _onehand10k),
    ConverterInfo("ap10k", "AP-10K", "COCO json", _coco("ap10k")),
    ConverterInfo("apt36k", "APT-36K", "COCO-like json (track_id per annotation)", _coco("apt36k")),
    ConverterInfo("macaque", "MacaquePose", "COCO-like json or annotations.csv", _macaque),
    ConverterInfo("animal_kingdom", "Animal Kingdom", "AK list json or its COCO export", _animal_kingdom,
                  prune_categories=True),
    ConverterInfo("animalweb", "AnimalWeb", ".pts file or folder", _animalweb),
    ConverterInfo("vinegar_fly", "Vinegar Fly", "COCO-like json or DeepPoseKit .h5", _dpk_or_coco("vinegar_fly")),
    ConverterInfo("desert_locust", "Desert Locust", "COCO-like json or DeepPoseKit .h5",
                  _dpk_or_coco("desert_locust")),
    ConverterInfo("keypoint5", "Keypoint-5", "folder of <class>/coords.mat or one coords.mat", _keypoint5),
    ConverterInfo("mp100", "MP-100", "split json (e.g. mp100_split1_train.json)", _coco("mp100")),
    ConverterInfo("deepfashion2", "DeepFashion2", "COCO-like json, 294-point concatenated layout",
                  _coco("deepfashion2")),
    ConverterInfo("carfusion", "CarFusion", "COCO-like json (14 points)", _coco("carfusion")),
    ConverterInfo("sleap", "SLEAP labels (lab)", ".slp file", _sleap),
    ConverterInfo("deeplabcut", "DeepLabCut project (lab)", "project folder or config.yaml", _deeplabcut),
]}


def convert(dataset: str, src: str | Path, *, images_root: str | Path | None = None,
            strict: bool = False, check_images: bool = True, vocab: UniKPTVocabulary | None = None,
            **options) -> ConversionResult:
    """Convert one source file/folder of `dataset` into the unified format.

    images_root: folder image paths are relative to (default: the source's folder).
    check_images: report annotations whose image file is missing (needs the images).
    options: converter-specific (category= for SLEAP/DeepLabCut, frames_dir= for DeepPoseKit).
    """
    if dataset not in CONVERTERS:
        raise ConversionError(f"unknown dataset {dataset!r}; known: {', '.join(CONVERTERS)}")
    info = CONVERTERS[dataset]
    src = Path(src)
    if not src.exists():
        raise ConversionError(f"source {src} does not exist")
    if images_root is None:
        images_root = src if src.is_dir() else src.parent
    builder = Builder(dataset, vocab or UniKPTVocabulary.load(), src, images_root=images_root,
                      check_images=check_images, strict=strict)
    info.run(src, builder, options)
    if info.prune_categories:
        used = {i.category_id for i in builder.data.instances}
        builder.data.categories = [c for c in builder.data.categories if c.id in used]
    return builder.finish()
