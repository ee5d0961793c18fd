"""COCO keypoints json and the COCO-like files of most datasets.

One reader serves COCO, Human-Art, 300-W (mmpose json), OneHand10K (json), AP-10K, APT-36K,
MacaquePose (json), Animal Kingdom (COCO export), Vinegar Fly and Desert Locust (json),
CarFusion, MP-100 and DeepFashion2 (294-point concatenated layout). Each dataset differs only in
how a source category maps to a vocabulary set and which extra fields it carries:

- Human-Art: image ``category`` ("digital art") becomes the image style.
- AP-10K / APT-36K: category ``supercategory`` is the animal family (taxonomy); APT-36K
  annotations carry ``track_id``.
- Animal Kingdom: the annotation's ``animal`` (species) is the category; class/subclass are
  kept as taxonomy.
- MP-100: each of its 100 categories maps to a set by name ("squirrel_body" -> the AP-10K
  layout, "klipspringer_face" -> animal face, "long_sleeved_dress" -> DeepFashion2's slice).
- DeepFashion2 (mmpose/MP-100 export): every annotation has 294 values, the 13 clothing layouts
  concatenated; the category id (1-13) selects the slice.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..format import Category, Image, Instance, UniKPT, UniKPTError
from ..vocabulary import canonical_keypoint_name
from .base import Builder, ConversionError, category_name

__all__ = ["convert_coco_like", "read_json", "resolve_set", "DEEPFASHION2_ORDER", "coco_to_unikpt",
           "check_coco_sections"]

# DeepFashion2 category ids 1..13 in order; the 294-point layout concatenates them in this order.
DEEPFASHION2_ORDER = ["short_sleeved_shirt", "long_sleeved_shirt", "short_sleeved_outwear",
                      "long_sleeved_outwear", "vest", "sling", "shorts", "trousers", "skirt",
                      "short_sleeved_dress", "long_sleeved_dress", "vest_dress", "sling_dress"]


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"cannot read {path}: {e}") from e


def resolve_set(builder: Builder, name: str, supercategory: str, num_keypoints: int) -> str | None:
    """Vocabulary set for an MP-100-style category name with `num_keypoints` points."""
    vocab = builder.vocab
    key = category_name(name)
    sup = category_name(supercategory or "")
    candidates = []
    if key.endswith(" face") and key != "human face" and (sup == "animal face" or num_keypoints == 9):
        candidates.append("animal_face")
    for text in (key, key[:-5] if key.endswith(" body") else key):
        found = vocab.model.lookup(text)
        if found is not None:
            candidates.append(found.id)
    candidates += {"bird": ["bird"], "animal face": ["animal_face"], "clothes": [],
                   "furniture": []}.get(sup, [])
    for set_id in candidates:
        if len(vocab.get_set(set_id)) == num_keypoints:
            return set_id
    return None


def _unified_category_name(name: str) -> str:
    key = category_name(name)
    return key[:-5] if key.endswith(" body") and key != "human body" else key


def convert_coco_like(src: Path, builder: Builder, dataset: str) -> None:
    """Fill `builder` from one COCO-like json file."""
    data = read_json(src)
    check_coco_sections(data, src)
    spec = builder.vocab.dataset(dataset)
    builder.data.info["source_info"] = data.get("info") if isinstance(data.get("info"), dict) else {}

    df2_offsets = np.cumsum([0] + [len(builder.vocab.get_set(s)) for s in DEEPFASHION2_ORDER])
    cat_map, bad_category = _map_categories(data, builder, dataset, spec, df2_offsets)
    image_map = _add_images(data, builder, dataset)
    _add_annotations(data, builder, dataset, spec, cat_map, bad_category, image_map, df2_offsets)


def _map_categories(data: dict, builder: Builder, dataset: str, spec, df2_offsets) -> tuple[dict, dict]:
    """source category id -> (unified id, keypoint slice or None); and the rejected ones -> why."""
    # --- categories: source id -> (unified id, keypoint slice)
    cat_map: dict[int, tuple[int, slice | None]] = {}
    bad_category: dict[int, str] = {}
    for c in data["categories"]:
        cid = int(c["id"])
        n_src = len(c.get("keypoints") or [])
        if dataset == "deepfashion2" or (dataset == "mp100" and n_src == int(df2_offsets[-1])):
            if not 1 <= cid <= 13:
                bad_category[cid] = f"DeepFashion2 category id {cid} is not 1-13"
                continue
            set_id = DEEPFASHION2_ORDER[cid - 1]
            span = slice(int(df2_offsets[cid - 1]), int(df2_offsets[cid]))
            cat_map[cid] = (builder.category_from_set(set_id.replace("_", " "), set_id, category_id=cid,
                                                      supercategory="clothes", style=spec.style,
                                                      source_name=c["name"]), span)
            continue
        if spec.set is not None:
            set_id = spec.set
            if dataset == "humanart" and n_src == 21:
                n_src = 17  # Human-Art v2 lists 21 names; 'keypoints' holds the COCO 17
            if n_src and n_src != len(builder.vocab.get_set(set_id)):
                bad_category[cid] = (f"category {c['name']!r} has {n_src} keypoints, the "
                                     f"{spec.title} layout has {len(builder.vocab.get_set(set_id))}")
                continue
        else:
            set_id = resolve_set(builder, c["name"], c.get("supercategory", ""), n_src)
            if set_id is None:
                bad_category[cid] = (f"category {c['name']!r} ({n_src} keypoints, supercategory "
                                     f"{c.get('supercategory')!r}) matches no vocabulary set")
                continue
        name = c["name"]
        taxonomy = None
        if dataset in ("ap10k", "apt36k") and c.get("supercategory"):
            taxonomy = {"class": "mammalia", "family": str(c["supercategory"]).lower()}
        if spec.set in ("face",) and name == "face":
            name = "face"
        cat_map[cid] = (builder.category_from_set(_unified_category_name(name), set_id, category_id=cid,
                                                  supercategory=spec.supercategory, style=spec.style,
                                                  taxonomy=taxonomy, source_name=name), None)
    return cat_map, bad_category


def _add_images(data: dict, builder: Builder, dataset: str) -> dict:
    """source image id -> builder image id."""
    # --- images
    image_map: dict[int, int | None] = {}
    for im in data["images"]:
        style = None
        if dataset == "humanart":
            style = category_name(str(im.get("category", ""))) or None
        image_map[int(im["id"])] = builder.image(im["file_name"], im.get("width"), im.get("height"),
                                                 image_id=int(im["id"]), style=style)
    return image_map


def _add_annotations(data: dict, builder: Builder, dataset: str, spec, cat_map: dict, bad_category: dict,
                     image_map: dict, df2_offsets) -> None:
    # --- annotations
    ak_categories: dict[str, int] = {}
    for a in data["annotations"]:
        ann_id = a.get("id")
        src_cat = int(a.get("category_id", -1))
        if src_cat in bad_category:
            builder.report(ann_id, "keypoint_count" if "keypoints" in bad_category[src_cat] else
                           "unknown_category", bad_category[src_cat])
            continue
        if src_cat not in cat_map:
            builder.report(ann_id, "unknown_category", f"category id {src_cat} is not in the file's "
                                                       "category list")
            continue
        if int(a.get("image_id", -1)) not in image_map:
            builder.report(ann_id, "missing_image", f"image id {a.get('image_id')} is not in the "
                                                    "file's image list")
            continue
        unified_cat, span = cat_map[src_cat]
        kpts = np.asarray(a.get("keypoints", []), dtype=np.float64)
        if span is not None:
            if kpts.size != 3 * int(df2_offsets[-1]):
                builder.report(ann_id, "keypoint_count", f"{kpts.size // 3} keypoints, DeepFashion2's "
                                                         f"layout has {int(df2_offsets[-1])}")
                continue
            outside = np.ones(kpts.size // 3, bool)
            outside[span] = False
            if (kpts.reshape(-1, 3)[outside, 2] > 0).any():
                builder.report(ann_id, "keypoint_count", "labelled points outside the slice of "
                                                         f"category {src_cat}")
                continue
            kpts = kpts.reshape(-1, 3)[span]
        if dataset == "animal_kingdom" and a.get("animal"):
            key = str(a["animal"])
            if key not in ak_categories:
                taxonomy = {k: str(a[f]).lower() for k, f in (("parent class", "animal_parent_class"),
                                                              ("class", "animal_class"),
                                                              ("subclass", "animal_subclass"))
                            if a.get(f)}
                ak_categories[key] = builder.category_from_set(key, spec.set, taxonomy=taxonomy,
                                                                supercategory=spec.supercategory,
                                                                style=spec.style, source_name=key)
            unified_cat = ak_categories[key]
        builder.instance(image_map[int(a["image_id"])], unified_cat, kpts, bbox=a.get("bbox"),
                         area=a.get("area"), iscrowd=a.get("iscrowd", 0), track_id=a.get("track_id"),
                         ann_id=ann_id)


# ---------------------------------------------------------------------------- plain COCO files
# A COCO keypoints file read as it is (names in text form, no vocabulary mapping): training
# sources (unipose_train/dataset.py) and unipose-eval ground truth. The converter above maps a
# dataset's file onto the UniKPT vocabulary instead; both start from check_coco_sections.

def check_coco_sections(data: Any, path: Path) -> None:
    """ConversionError unless `data` has the lists 'categories', 'images' and 'annotations'."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("categories", "images", "annotations")):
        have = ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__
        raise ConversionError(f"{path}: not a COCO keypoints file: it needs the lists 'categories', 'images' "
                              f"and 'annotations' (found: {have or 'nothing'})")


def coco_to_unikpt(data: dict, path: Path, images_root: Optional[str], name: Optional[str]) -> UniKPT:
    """A plain COCO keypoints file as UniKPT: names in text form, flip pairs from the names.

    A file that is not COCO keypoints (a missing section or field, a value of the wrong type, a
    keypoint list that is not x, y, v triples or not one per category keypoint) raises
    UniKPTError naming the file and the entry.
    """
    check_coco_sections(data, path)
    cats = _read_entries(path, data, "categories", _coco_category)
    sizes = {c.id: len(c.keypoints) for c in cats}
    images = _read_entries(path, data, "images", _coco_image)
    insts = _read_entries(path, data, "annotations", lambda a: _coco_instance(a, sizes))
    root = images_root if images_root is not None else ""
    return UniKPT(dataset=name or path.stem, images=images, instances=insts, categories=cats,
                  images_root=str(root), path=path)


def _read_entries(path: Path, data: dict, section: str, read) -> list:
    """`read` applied to each entry of data[section]; an entry it cannot read is named in the error
    ('annotations[12] (id 345): missing field 'bbox'')."""
    out = []
    for i, entry in enumerate(data[section]):
        try:
            out.append(read(entry))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            ident = entry.get("id") if isinstance(entry, dict) else None
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise UniKPTError(f"{path}: not a valid COCO keypoints file: {section}[{i}]"
                              + (f" (id {ident})" if ident is not None else "") + f": {what}") from e
    return out


def _coco_category(c: dict) -> Category:
    raw = list(c.get("keypoints", []))
    skel = [tuple(p) for p in c.get("skeleton", [])]
    if skel and min(min(p) for p in skel) >= 1 and max(max(p) for p in skel) == len(raw):
        skel = [(i - 1, j - 1) for i, j in skel]   # COCO's skeleton is 1-based
    from ...augment import infer_flip_pairs  # the trainer's left/right rule (torch-free import kept lazy)
    flips = [tuple(p) for p in c.get("flip_pairs", [])] or infer_flip_pairs(raw)
    return Category(id=int(c["id"]), name=" ".join(str(c["name"]).replace("_", " ").lower().split()),
                    keypoints=[canonical_keypoint_name(k) for k in raw], skeleton=skel, flip_pairs=flips,
                    sigmas=c.get("sigmas"), supercategory=c.get("supercategory", ""))


def _coco_image(im: dict) -> Image:
    return Image(id=int(im["id"]), file_name=im["file_name"], width=int(im["width"]),
                 height=int(im["height"]), style=im.get("style"))


def _coco_instance(a: dict, sizes: Dict[int, int]) -> Instance:
    """sizes: keypoints per category id (an annotation with keypoints must have that many)."""
    k = a.get("keypoints") or []
    if len(k) % 3:
        raise ValueError(f"'keypoints' holds {len(k)} numbers, not x, y, v triples")
    size = sizes.get(int(a["category_id"]))
    if k and size is not None and len(k) != 3 * size:
        raise ValueError(f"{len(k) // 3} keypoints, but its category {a['category_id']} names {size}")
    return Instance(id=int(a["id"]), image_id=int(a["image_id"]), category_id=int(a["category_id"]),
                    keypoints=np.asarray(k, dtype=np.float64).reshape(-1, 3),
                    bbox=tuple(float(v) for v in a["bbox"]), area=float(a.get("area", 0.0)),
                    iscrowd=int(a.get("iscrowd", 0)))
