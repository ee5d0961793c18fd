"""Torch side of the data pipeline: annotation files -> augmented, prompted, padded batches.

Sources are UniKPT files (unipose_train/unikpt/format.py), plain COCO keypoint files, DeepLabCut
projects (folder or config.yaml) or SLEAP .slp files (a user's own labels; the last two through
the converters in unipose_train/unikpt/converters), read into the same in-memory form. Each item is one image with:
  image (3, H, W) ImageNet-normalised, instance_texts [N] (positives + negatives),
  keypoint_texts [K] (one keypoint list per image), target dict (see losses.py), meta.

Determinism: the sampler hands the dataset (index, seed) keys, and every random choice of a
sample (augmentation, prompts, negatives) comes from that seed. Data order and content are then
a function of (run seed, epoch, position) only: the same with any number of workers, and a
resumed run continues with exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from unipose_model.media import split_frame_reference
from unipose_model.preprocess import IMAGENET_MEAN, IMAGENET_STD

from .augment import Augmenter, hflip, swap_left_right
from .prompts import PromptBuilder
from .side_swap import swap_side
from .sources import SourceConfig
from .unikpt.converters.coco import coco_to_unikpt
from .unikpt.format import Category, Image, Instance, UniKPT, UniKPTError, load as load_unikpt

DEFAULT_SIGMA = 0.05   # OKS sigma where a dataset defines none (COCO-like, uniform)


@dataclass
class VisualPromptSampling:
    """Visual prompts in training (the paper trains text and visual prompts jointly).

    With probability `prob` a sample's keypoint category is prompted by a support: another
    instance of the same category (from another image when there is one) with its keypoints,
    cropped as at inference (unipose_model.visual_prompt.prepare_support). Of those samples,
    `with_text_prob` average the visual features with the text ones (both prompts given)."""
    prob: float = 0.0
    with_text_prob: float = 0.25
    size: int = 224             # support crop side; must equal the encoder's image size
    min_visible: int = 1        # support instances need at least this many labelled keypoints


# ---------------------------------------------------------------------- sources
SOURCE_FORMATS = ("unikpt", "coco", "deeplabcut", "sleap")


def source_format(path: Path) -> str:
    """What kind of labels `path` holds, from its name (json content decides unikpt vs coco)."""
    if path.is_dir() or path.name == "config.yaml":
        if (path / "config.yaml" if path.is_dir() else path).is_file():
            return "deeplabcut"
        raise ValueError(f"{path}: a folder source must be a DeepLabCut project (with config.yaml)")
    if path.suffix == ".slp":
        return "sleap"
    return "json"


def load_source(src: SourceConfig) -> UniKPT:
    path = Path(src.ann)
    if not path.exists():
        raise FileNotFoundError(f"training source not found: {path}")
    kind = src.format or source_format(path)
    if kind not in SOURCE_FORMATS + ("json",):
        raise ValueError(f"unknown source format {kind!r}; use one of {', '.join(SOURCE_FORMATS)}")
    images = None if src.images is None else str(Path(src.images).resolve())
    if kind in ("deeplabcut", "sleap"):
        from .unikpt.converters import convert
        ds = convert(kind, path, images_root=images, category=src.category).data
        if src.name:
            ds.dataset = src.name
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UniKPTError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
        except UnicodeDecodeError as e:
            raise UniKPTError(f"{path}: not a text (UTF-8 JSON) file: {e}") from e
        if isinstance(data, dict) and data.get("format") == "unikpt":
            ds = load_unikpt(path)
            if images is not None:
                ds.images_root = images
            if src.name:
                ds.dataset = src.name
        else:
            ds = coco_to_unikpt(data, path, images, src.name)
    if src.id_range is not None:
        a, b = (int(v) for v in src.id_range)
        _keep_images(ds, {im.id for im in ds.images if a <= im.id < b})
    return _apply_split(ds, src) if src.split is not None else ds


def _keep_images(ds: UniKPT, keep: set) -> None:
    ds.images = [im for im in ds.images if im.id in keep]
    ds.instances = [i for i in ds.instances if i.image_id in keep]


def _apply_split(ds: UniKPT, src: SourceConfig) -> UniKPT:
    a, b = (float(v) for v in src.split)
    if not 0.0 <= a < b <= 1.0:
        raise ValueError(f"split {src.split} must be [a, b] with 0 <= a < b <= 1")
    ids = sorted(im.id for im in ds.images)
    order = np.random.default_rng(src.split_seed).permutation(len(ids))
    _keep_images(ds, {ids[i] for i in order[int(round(a * len(ids))):int(round(b * len(ids)))]})
    return ds


# ---------------------------------------------------------------------- image reading
class _FrameReader:
    """'video.mp4#frame=N' references, with one open capture per video and a few frames cached.

    A random seek in an mp4 decodes from the previous key frame (~90 ms for the fly clip), so
    `preload` decodes a video's needed frames once, in order, and keeps them as lossless PNG
    bytes (single-channel when the frame is grey): ~5 ms per read afterwards, and forked
    DataLoader workers share the bytes with the main process.
    """

    def __init__(self, cache: int = 8):
        self.caps: Dict[str, cv2.VideoCapture] = {}
        self.frames: OrderedDict = OrderedDict()
        self.cache = cache
        self.encoded: Dict[Tuple[str, int], np.ndarray] = {}

    def preload(self, video: str, indices: Sequence[int]) -> int:
        wanted = {int(i) for i in indices} - {i for v, i in self.encoded if v == video}
        if not wanted:
            return 0
        cap = cv2.VideoCapture(video)
        try:
            for index in range(max(wanted) + 1):
                ok, frame = cap.read()
                if not ok:
                    break
                if index in wanted:
                    grey = bool((frame[..., 0] == frame[..., 1]).all() and (frame[..., 1] == frame[..., 2]).all())
                    img = frame[..., 0] if grey else frame
                    self.encoded[(video, index)] = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1]
        finally:
            cap.release()
        return len(wanted)

    def read(self, video: str, index: int) -> np.ndarray:
        key = (video, index)
        if key in self.encoded:
            img = cv2.imdecode(self.encoded[key], cv2.IMREAD_UNCHANGED)
            return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
        if key in self.frames:
            return self.frames[key]
        cap = self.caps.get(video)
        if cap is None:
            cap = self.caps[video] = cv2.VideoCapture(video)
        if int(cap.get(cv2.CAP_PROP_POS_FRAMES)) != index:
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        if not ok:
            raise IOError(f"cannot read frame {index} of {video}")
        self.frames[key] = frame
        if len(self.frames) > self.cache:
            self.frames.popitem(last=False)
        return frame


_frames = _FrameReader()


def read_rgb(path: Path) -> np.ndarray:
    ref = split_frame_reference(path)
    if ref is not None:
        bgr = _frames.read(str(ref[0]), ref[1])
    else:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise IOError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------- dataset
@dataclass
class Record:
    source: int
    dataset: str
    image: Image
    path: Path
    instances: List[Instance]


class KeypointDataset(Dataset):
    def __init__(self, sources: Sequence[UniKPT], augmenter: Augmenter, prompts: PromptBuilder,
                 max_keypoints: int = 68, image_ids: Optional[Sequence[Optional[Sequence[int]]]] = None,
                 max_images: Optional[Sequence[Optional[int]]] = None,
                 visual: Optional[VisualPromptSampling] = None):
        self.sources = list(sources)
        self.visual = visual if visual is not None and visual.prob > 0 else None
        self.augmenter = augmenter
        self.prompts = prompts
        self.max_keypoints = max_keypoints
        self.records: List[Record] = []
        self.source_ranges: List[Tuple[int, int]] = []
        self.categories: List[Dict[int, Category]] = []
        for s, ds in enumerate(self.sources):
            cats = {c.id: c for c in ds.categories}
            self.categories.append(cats)
            by_image = ds.instances_by_image()
            wanted = None if image_ids is None or image_ids[s] is None else set(image_ids[s])
            start = len(self.records)
            for im in ds.images:
                if wanted is not None and im.id not in wanted:
                    continue
                insts = [i for i in by_image.get(im.id, []) if not i.iscrowd and i.category_id in cats
                         and i.bbox[2] > 0 and i.bbox[3] > 0]
                if not insts:
                    continue  # images without objects carry no keypoint supervision
                self.records.append(Record(s, ds.dataset, im, ds.image_path(im), insts))
                cap = None if max_images is None else max_images[s]
                if cap is not None and len(self.records) - start >= cap:
                    break
            self.source_ranges.append((start, len(self.records)))
        # (source, category id) -> [(record, instance)]: where visual-prompt supports come from
        self.support_pool: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
        for r, rec in enumerate(self.records):
            for m, inst in enumerate(rec.instances):
                need = self.visual.min_visible if self.visual else 1
                if inst.num_keypoints >= need:
                    self.support_pool.setdefault((rec.source, inst.category_id), []).append((r, m))
        self._preload_video_frames()

    def _preload_video_frames(self) -> None:
        """Decode each referenced video once, here, before the DataLoader forks its workers."""
        per_video: Dict[str, List[int]] = {}
        for rec in self.records:
            ref = split_frame_reference(rec.path)
            if ref is not None:
                per_video.setdefault(str(ref[0]), []).append(ref[1])
        for video, indices in per_video.items():
            _frames.preload(video, indices)

    def __len__(self) -> int:
        return len(self.records)

    def source_sizes(self) -> List[int]:
        return [b - a for a, b in self.source_ranges]

    def all_prompt_inputs(self):
        """(category, keypoints, parts, styles) per category, and all image styles (text precompute)."""
        cats, all_styles = [], set()
        for ds in self.sources:
            styles = {im.style for im in ds.images if im.style}
            for c in ds.categories:
                cat_styles = sorted(styles | ({c.style} if c.style else set()))
                cats.append((c.name, list(c.keypoints), None, cat_styles))
                all_styles.update(cat_styles)
        return cats, sorted(all_styles)

    # .................................................................. one sample
    def __getitem__(self, key) -> Dict:
        index, seed = key if isinstance(key, tuple) else (key, key)
        rng = np.random.default_rng(seed)
        rec = self.records[index]
        cats = self.categories[rec.source]
        image = read_rgb(rec.path)
        inst_cats = [cats[i.category_id] for i in rec.instances]
        # One keypoint list per image: the set of a random instance's category; instances of
        # categories with another list keep their class and box targets only.
        kp_cat = inst_cats[int(rng.integers(len(inst_cats)))]
        K = len(kp_cat.keypoints)
        ann = self._annotation(rec, kp_cat)
        if self.augmenter.train and self.augmenter.cfg.side_swap_prob > 0:
            image, ann = self._swap_sides(index, rec, kp_cat, image, ann, rng)
        image, ann = self.augmenter(image, ann, rng)
        h, w = image.shape[:2]
        sigmas = np.asarray(kp_cat.sigmas if kp_cat.sigmas else [DEFAULT_SIGMA] * K, dtype=np.float64)
        kpt_names, kpts = ann["keypoint_names"], ann["keypoints"]
        if K > self.max_keypoints:  # more slots than the model has: a random subset per sample
            keep = np.sort(rng.choice(K, self.max_keypoints, replace=False))
            kpt_names, kpts, sigmas = [kpt_names[i] for i in keep], kpts[:, keep], sigmas[keep]

        style = rec.image.style or kp_cat.style
        inst_texts, class_list = self.prompts.instance_prompts(ann["class_names"], style, rng)
        col = {n: i for i, n in enumerate(class_list)}
        obj = ann["class_names"][0] if ann["class_names"] else kp_cat.name
        kpt_texts = self.prompts.keypoint_prompts(kpt_names, obj, style, rng)

        boxes = ann["boxes"]
        scale = np.array([w, h, w, h], dtype=np.float64)
        cxcywh = np.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                           boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), -1) / scale if len(boxes) else np.zeros((0, 4))
        labels = [col[n] for n in ann["class_names"]]
        target = {
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "boxes": torch.as_tensor(cxcywh, dtype=torch.float32).reshape(-1, 4),
            "keypoints": torch.as_tensor(kpts[..., :2] / np.array([w, h]), dtype=torch.float32).reshape(len(labels), -1, 2),
            "visibility": torch.as_tensor(kpts[..., 2] > 0, dtype=torch.float32).reshape(len(labels), -1),
            # OKS scale: the object's box area in pixels (boxes are what every source has)
            "areas": torch.as_tensor((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0),
                                     dtype=torch.float32),
            "sigmas": torch.as_tensor(sigmas, dtype=torch.float32),
            "size": torch.as_tensor([h, w], dtype=torch.int64),
        }
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        tensor = (tensor - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
        meta = {"index": index, "image_id": rec.image.id, "dataset": rec.dataset, "category": kp_cat.name,
                "keypoint_names": kpt_names, "classes": class_list}
        sample = {"image": tensor, "instance_texts": inst_texts, "keypoint_texts": kpt_texts,
                  "target": target, "meta": meta}
        if self.visual is not None and rng.random() < self.visual.prob:
            column = col.get(kp_cat.name, col.get(swap_left_right(kp_cat.name)))
            support = self._support(index, rec, kp_cat, keep if K > self.max_keypoints else None, rng)
            if column is not None and support is not None:
                support["class_index"] = int(column)
                support["with_text"] = bool(rng.random() < self.visual.with_text_prob)
                sample["support"] = support
        return sample

    def _annotation(self, rec: Record, kp_cat: Category) -> Dict:
        """The augmenter's annotation of an image: every instance's box and class, and the
        keypoints (in `kp_cat`'s order) of the instances that use `kp_cat`'s keypoint list."""
        cats = self.categories[rec.source]
        inst_cats = [cats[i.category_id] for i in rec.instances]
        names = list(kp_cat.keypoints)
        K = len(names)
        kpts = np.zeros((len(inst_cats), K, 3))
        for m, (inst, c) in enumerate(zip(rec.instances, inst_cats)):
            if list(c.keypoints) == names and inst.keypoints.shape == (K, 3):
                kpts[m] = inst.keypoints
        kpts[kpts[..., 2] <= 0] = 0.0
        boxes = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (i.bbox for i in rec.instances)])
        return {"boxes": boxes, "keypoints": kpts, "class_names": [c.name for c in inst_cats],
                "keypoint_names": names, "flip_pairs": list(kp_cat.flip_pairs)}

    def _swap_sides(self, index: int, rec: Record, kp_cat: Category, image: np.ndarray, ann: Dict,
                    rng: np.random.Generator) -> Tuple[np.ndarray, Dict]:
        """Side swap (unipose_train/side_swap.py): each instance of `kp_cat`, with probability
        side_swap_prob, gets one side from another image's instance (mirrored with probability
        side_swap_mirror_prob, so a side can also come from the donor's other side)."""
        c = self.augmenter.cfg
        pool = [p for p in self.support_pool.get((rec.source, kp_cat.id), []) if p[0] != index]
        if not pool:
            return image, ann
        for m, inst in enumerate(rec.instances):
            if inst.category_id != kp_cat.id or rng.random() >= c.side_swap_prob:
                continue
            r, d = pool[int(rng.integers(len(pool)))]
            donor_rec = self.records[r]
            donor_image, donor_ann = read_rgb(donor_rec.path), self._annotation(donor_rec, kp_cat)
            if rng.random() < c.side_swap_mirror_prob:
                donor_image, donor_ann = hflip(donor_image, donor_ann)
            side = "left" if rng.random() < 0.5 else "right"
            spliced = swap_side(image, ann, m, donor_image, donor_ann, d, side)
            if spliced is not None:
                image, ann = spliced
        return image, ann

    def _support(self, index: int, rec: Record, cat: Category, keep: Optional[np.ndarray],
                 rng: np.random.Generator) -> Optional[Dict]:
        """A support for `cat`: another instance of it, from another image where possible, with
        its keypoints in the sample's keypoint order (the same `keep` subset). None if none fits."""
        from unipose_model.visual_prompt import VisualPrompt, VisualPromptError, prepare_support
        pool = self.support_pool.get((rec.source, cat.id), [])
        others = [p for p in pool if p[0] != index]
        pool = others or pool
        if not pool:
            return None
        r, m = pool[int(rng.integers(len(pool)))]
        srec = self.records[r]
        inst = srec.instances[m]
        kpts = np.array(inst.keypoints, dtype=np.float64)
        if keep is not None:
            kpts = kpts[keep]
        x, y, w, h = inst.bbox
        try:
            prompt = VisualPrompt(read_rgb(srec.path), kpts, class_name=cat.name, box=(x, y, x + w, y + h))
        except VisualPromptError:
            return None  # e.g. all kept keypoints unlabelled: this sample keeps its text prompt
        image, xy, visible = prepare_support(prompt, self.visual.size)
        return {"image": image, "keypoints": xy, "visible": visible}


def collate(batch: Sequence[Dict]) -> Dict:
    """Pad images to the batch's largest size; mask True on padding (DETR's nested tensors).

    Texts stay strings: the trainer turns them into features with its TextFeatureTable (and
    the (B, N) / (B, K) valid masks come from their lengths)."""
    H = max(b["image"].shape[1] for b in batch)
    W = max(b["image"].shape[2] for b in batch)
    images = torch.zeros(len(batch), 3, H, W)
    masks = torch.ones(len(batch), H, W, dtype=torch.bool)
    for i, b in enumerate(batch):
        _, h, w = b["image"].shape
        images[i, :, :h, :w] = b["image"]
        masks[i, :h, :w] = False
    return {"images": images, "masks": masks, "supports": [b.get("support") for b in batch],
            "instance_texts": [b["instance_texts"] for b in batch],
            "keypoint_texts": [b["keypoint_texts"] for b in batch],
            "targets": [b["target"] for b in batch], "meta": [b["meta"] for b in batch]}


# ---------------------------------------------------------------------- sampling
class BalancedSampler(Sampler):
    """Deterministic, resumable, rank-aware sampling of (index, seed) keys.

    Per epoch, `samples_per_epoch` draws: a dataset is picked with probability proportional
    to its weight, then its next image from a per-epoch permutation (cycled when exhausted), so
    small datasets are revisited and large ones sub-sampled. Global batch i (size
    batch_size * world_size) is positions [i*G, (i+1)*G); rank r takes its r-th slice, so one
    process with the global batch sees the same samples as all ranks together.
    """

    def __init__(self, source_sizes: Sequence[int], batch_size: int, weights: Optional[Sequence[float]] = None,
                 samples_per_epoch: Optional[int] = None, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.sizes = list(source_sizes)
        self.offsets = np.cumsum([0] + self.sizes[:-1]).tolist()
        w = np.asarray(weights if weights is not None else [1.0] * len(self.sizes), dtype=np.float64)
        w = np.where(np.asarray(self.sizes) > 0, w, 0.0)
        if w.sum() <= 0:
            raise ValueError("no images to sample from (all sources empty or weight 0)")
        self.probs = w / w.sum()
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.global_batch = batch_size * world_size
        total = samples_per_epoch or sum(self.sizes)
        self.batches_per_epoch = max(1, total // self.global_batch)
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_batch = 0, 0

    def set_state(self, epoch: int, start_batch: int = 0) -> None:
        """Continue at global batch `start_batch` of `epoch` (resume)."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def epoch_order(self, epoch: int) -> List[Tuple[int, int]]:
        n = self.batches_per_epoch * self.global_batch
        rng = np.random.default_rng([self.seed, epoch])
        if len(self.sizes) == 1:
            picks = np.zeros(n, dtype=np.int64)
        else:
            picks = rng.choice(len(self.sizes), size=n, p=self.probs)
        perms = [rng.permutation(s) if self.shuffle else np.arange(s) for s in self.sizes]
        cursor = [0] * len(self.sizes)
        seeds = rng.integers(0, 2 ** 31 - 1, size=n)
        order = []
        for i, s in enumerate(picks):
            size = self.sizes[s]
            order.append((int(self.offsets[s] + perms[s][cursor[s] % size]), int(seeds[i])))
            cursor[s] += 1
        return order

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        order = self.epoch_order(self.epoch)
        G, B = self.global_batch, self.batch_size
        for i in range(self.start_batch, self.batches_per_epoch):
            base = i * G + self.rank * B
            yield from order[base:base + B]

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size
