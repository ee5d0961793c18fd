"""`unipose-train-refiner CONFIG [key=value ...]`: train a heatmap refiner (unipose_model/heatmap_refiner.py).

The refiner is the top-down second stage run on each UniPose detection: a crop centred on the
object's box, rotated so that its `align` keypoints point up, scored per pixel for each keypoint.
It trains on the same label sources as `unipose-train` (COCO/UniKPT json, DeepLabCut projects,
SLEAP files, video frames), one object per sample:

    unipose-train-refiner fly_demo_heatmap
    python -m unipose_train.model_export STAGE7.pth out.pth --heatmap-refiner outputs/fly_heatmap/refiner.pth

Each sample's crop is jittered as a detector's would be (box centre, size and facing angle, from
labelled keypoints), flipped with left/right keypoints swapped, and its contrast varied. The
validation score is PCK@0.2 on crops from the labelled boxes (an upper bound of what it adds
behind a detector; score the whole pipeline with unipose-eval or scripts/eval_fly_demo.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import config_loader
from .sources import SourceConfig

log = logging.getLogger("unipose.refiner")


@dataclass
class RefinerModelConfig:
    input_size: int = 128
    context: float = 1.5
    widths: List[int] = field(default_factory=lambda: [24, 32, 48, 64, 96])


@dataclass
class RefinerAugmentConfig:
    angle_std_deg: float = 8.6     # facing-angle noise (a detector's head/thorax are a few px off)
    scale_range: float = 0.2       # crop side x exp(U(-r, r)): the detector's box size error
    shift_std: float = 0.05        # box-centre noise, as a fraction of the box's longer side
    flip_prob: float = 0.5         # mirror the crop, swapping left and right keypoints
    contrast: float = 0.3          # intensity x U(1 - c, 1 + c)
    brightness: float = 0.15       # intensity + U(-b, b) (intensities in [0, 1])
    sigma: float = 1.5             # target Gaussian, in heatmap cells


@dataclass
class RefinerOptimConfig:
    lr: float = 2.0e-3
    weight_decay: float = 1.0e-4
    steps: int = 2500
    batch_size: int = 32
    warmup_fraction: float = 0.05


@dataclass
class RefinerRunConfig:
    out_dir: str = "outputs/heatmap_refiner"
    device: str = "auto"           # auto (CUDA when available), cpu, cuda, cuda:1, ...
    seed: int = 0
    threads: int = 0               # torch threads; 0 = torch's default
    eval_every: int = 500
    log_every: int = 50
    progress: bool = True


@dataclass
class RefinerDataConfig:
    train: List[SourceConfig] = field(default_factory=list)
    val: List[SourceConfig] = field(default_factory=list)


@dataclass
class RefinerTrainConfig:
    category: str = ""                      # the class to refine ("" = the sources' only class)
    align: Optional[List[str]] = None       # [from, to] keypoint names: from -> to points up in the crop
    data: RefinerDataConfig = field(default_factory=RefinerDataConfig)
    model: RefinerModelConfig = field(default_factory=RefinerModelConfig)
    augment: RefinerAugmentConfig = field(default_factory=RefinerAugmentConfig)
    optim: RefinerOptimConfig = field(default_factory=RefinerOptimConfig)
    run: RefinerRunConfig = field(default_factory=RefinerRunConfig)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


def load_refiner_config(path: Optional[str], overrides: Sequence[str] = (),
                        data_root: Optional[str] = None) -> RefinerTrainConfig:
    """YAML file (a path or a shipped config's name) + `a.b=value` overrides, by the trainers' one
    loader (unipose_train/config_loader.py: `_base_` inheritance, source paths, data root)."""
    cfg = config_loader.load(RefinerTrainConfig, path, overrides, root=data_root)
    if not cfg.data.train:
        raise ValueError("data.train names no label source")
    return cfg


# ---------------------------------------------------------------------------- data

@dataclass
class ObjectPatch:
    """One labelled object: a grey patch of its image large enough for any jittered crop."""

    patch: np.ndarray        # (h, w) uint8
    origin: np.ndarray       # image xy of the patch's top-left pixel
    box: tuple               # x0, y0, x1, y1 (image pixels)
    keypoints: np.ndarray    # (K, 3) x, y, visibility (image pixels)
    weight: float            # relative sampling weight (its source's)


def _resolve_category(sources, wanted: str):
    names = {c.name for ds in sources for c in ds.categories}
    if not wanted:
        if len(names) != 1:
            raise ValueError(f"the sources have several categories ({sorted(names)}); set category:")
        wanted = names.pop()
    cats = [c for ds in sources for c in ds.categories if c.name == wanted]
    if not cats:
        raise ValueError(f"no source has the category {wanted!r} (they have {sorted(names)})")
    keypoints = tuple(cats[0].keypoints)
    if any(tuple(c.keypoints) != keypoints for c in cats):
        raise ValueError(f"the sources disagree on the keypoints of {wanted!r}")
    return wanted, keypoints, [tuple(p) for p in cats[0].flip_pairs]


def collect_patches(sources, source_configs, category: str, spec, max_scale: float,
                    progress: bool = False) -> List[ObjectPatch]:
    """Cut, once, a grey patch around every labelled object of `category` (the images are read
    once each; the patches hold only what any augmented crop can reach)."""
    from unipose_model.heatmap_refiner import to_grey

    from .dataset import read_rgb

    patches: List[ObjectPatch] = []
    work = []
    for ds, src in zip(sources, source_configs):
        cat_ids = {c.id for c in ds.categories if c.name == category}
        by_image = ds.instances_by_image()
        for im in ds.images:
            insts = [i for i in by_image.get(im.id, []) if i.category_id in cat_ids and not i.iscrowd
                     and (i.keypoints[:, 2] > 0).sum() >= 2 and i.bbox[2] > 0 and i.bbox[3] > 0]
            if insts:
                work.append((ds, im, insts, float(src.weight)))
    iterator = work
    if progress:
        from tqdm import tqdm
        iterator = tqdm(work, desc="reading labelled images", dynamic_ncols=True)
    for ds, im, insts, weight in iterator:
        grey = to_grey(read_rgb(ds.image_path(im)))
        h, w = grey.shape
        for inst in insts:
            x, y, bw, bh = inst.bbox
            box = (x, y, x + bw, y + bh)
            # the farthest any crop reaches: half its diagonal at the largest scale, plus the shift
            reach = spec.context * max(bw, bh) * max_scale * (math.sqrt(2) / 2 + 0.25)
            cx, cy = x + bw / 2, y + bh / 2
            x0, y0 = int(max(0, math.floor(cx - reach))), int(max(0, math.floor(cy - reach)))
            x1, y1 = int(min(w, math.ceil(cx + reach))), int(min(h, math.ceil(cy + reach)))
            patches.append(ObjectPatch(np.ascontiguousarray(grey[y0:y1, x0:x1]), np.array([x0, y0], np.float64),
                                       box, inst.keypoints.astype(np.float64), weight))
    return patches


def make_sample(obj: ObjectPatch, spec, aug: Optional[RefinerAugmentConfig], rng, names: Sequence[str]):
    """(crop (S, S) float32 in [0, 1]-ish, crop keypoints (K, 2), visible (K,), affine image->crop)."""
    from unipose_model.heatmap_refiner import apply_affine, crop_affine, facing_angle, warp_crop

    visible = obj.keypoints[:, 2] > 0
    # an unlabelled align keypoint sits at (0, 0) in the labels: no facing to take from them
    facing_known = spec.align is None or all(visible[list(names).index(n)] for n in spec.align)
    angle = facing_angle(obj.keypoints, spec, names) if facing_known else None
    scale, shift = 1.0, (0.0, 0.0)
    if aug is not None:
        if angle is None or spec.align is None:  # nothing to align on: any orientation
            angle = rng.uniform(-math.pi, math.pi)
        else:
            angle += rng.normal(0.0, math.radians(aug.angle_std_deg))
        scale = math.exp(rng.uniform(-aug.scale_range, aug.scale_range))
        side = max(obj.box[2] - obj.box[0], obj.box[3] - obj.box[1])
        shift = tuple(rng.normal(0.0, aug.shift_std * side, 2))
    elif angle is None:
        angle = -math.pi / 2
    affine = crop_affine(obj.box, angle, spec, scale, shift)
    local = affine.copy()
    local[:, 2] += affine[:, :2] @ obj.origin  # the patch's pixel (0, 0) is the image's origin
    crop = warp_crop(obj.patch, local, spec.input_size).astype(np.float32) / 255.0
    xy = apply_affine(affine, obj.keypoints[:, :2])
    vis = visible.astype(np.float32)
    if aug is not None:
        if rng.random() < aug.flip_prob:
            crop = crop[:, ::-1].copy()
            perm = spec.flip_permutation()
            xy, vis = xy[perm].copy(), vis[perm].copy()
            xy[:, 0] = spec.input_size - 1 - xy[:, 0]
        crop = crop * rng.uniform(1 - aug.contrast, 1 + aug.contrast) + rng.uniform(-aug.brightness, aug.brightness)
    return crop, xy, vis, affine


def pck_on_patches(model, patches: Sequence[ObjectPatch], spec, names, threshold: float = 0.2,
                   batch: int = 64, device="cpu") -> Dict[str, float]:
    """PCK of the refiner on crops from the labelled boxes and facing (no detector in the loop)."""
    import torch

    from unipose_model.heatmap_refiner import apply_affine, decode_heatmaps, invert_affine

    from .evaluation.pck import correct_keypoints

    was_training = model.training
    model.eval()
    hits, counts = np.zeros(len(names)), np.zeros(len(names))
    with torch.no_grad():
        for start in range(0, len(patches), batch):
            chunk = patches[start:start + batch]
            samples = [make_sample(p, spec, None, None, names) for p in chunk]
            x = torch.from_numpy(np.stack([s[0] for s in samples]))[:, None].to(device)
            points, _ = decode_heatmaps(model(x).float().cpu(), spec.input_size)
            for obj, (_, _, _, affine), xy in zip(chunk, samples, points):
                image_xy = apply_affine(invert_affine(affine), xy)
                x0, y0, x1, y1 = obj.box
                hits += correct_keypoints(image_xy, obj.keypoints, (x1 - x0, y1 - y0), threshold)
                counts += obj.keypoints[:, 2] > 0
    model.train(was_training)
    per = hits / np.maximum(counts, 1)
    return {"pck": float(hits.sum() / max(counts.sum(), 1)),
            "per_keypoint": {n: round(float(v), 4) for n, v in zip(names, per)}}


# ---------------------------------------------------------------------------- training

def prepare_patches(cfg: RefinerTrainConfig):
    """(spec, keypoint names, training patches, validation patches) for the config's category."""
    from unipose_model.heatmap_refiner import HeatmapRefinerSpec

    from .dataset import load_source

    train_sources = [load_source(s) for s in cfg.data.train]
    val_sources = [load_source(s) for s in cfg.data.val]
    category, names, flip_pairs = _resolve_category(train_sources, cfg.category)
    spec = HeatmapRefinerSpec(category=category, keypoints=names, align=tuple(cfg.align) if cfg.align else None,
                              input_size=cfg.model.input_size, context=cfg.model.context,
                              widths=tuple(cfg.model.widths), flip_pairs=tuple(flip_pairs))
    max_scale = math.exp(cfg.augment.scale_range)
    train_patches = collect_patches(train_sources, cfg.data.train, category, spec, max_scale, cfg.run.progress)
    val_patches = collect_patches(val_sources, cfg.data.val, category, spec, 1.0, cfg.run.progress)
    if not train_patches:
        raise ValueError(f"the training sources have no labelled {category!r} object")
    log.info("%d training objects, %d validation objects, keypoints: %s", len(train_patches), len(val_patches),
             ", ".join(names))
    return spec, names, train_patches, val_patches


def training_batch(patches: Sequence[ObjectPatch], weights: np.ndarray, spec, names, cfg: RefinerTrainConfig, rng):
    """(crops (B, 1, S, S), target heatmaps (B, K, S/2, S/2)) of objects drawn by weight, augmented."""
    import torch

    from unipose_model.heatmap_codec import encode_heatmaps

    picks = rng.choice(len(patches), size=cfg.optim.batch_size, p=weights)
    crops, targets = [], []
    for i in picks:
        crop, xy, vis, _ = make_sample(patches[i], spec, cfg.augment, rng, names)
        crops.append(crop)
        targets.append(encode_heatmaps(xy, vis, spec.input_size, spec.heatmap_size, cfg.augment.sigma))
    return torch.from_numpy(np.stack(crops))[:, None], torch.from_numpy(np.stack(targets))


def train(cfg: RefinerTrainConfig) -> Dict:
    import torch
    import torch.nn.functional as F

    from unipose_model.heatmap_refiner import HeatmapRefiner

    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    rng = np.random.default_rng(cfg.run.seed)
    out_dir = Path(cfg.run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    spec, names, train_patches, val_patches = prepare_patches(cfg)
    weights = np.array([p.weight for p in train_patches])
    weights /= weights.sum()

    device = torch.device("cuda" if cfg.run.device == "auto" and torch.cuda.is_available()
                          else "cpu" if cfg.run.device == "auto" else cfg.run.device)
    model = HeatmapRefiner(spec).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    steps = cfg.optim.steps
    if steps < 2:
        raise ValueError(f"optim.steps must be at least 2, got {steps}")
    # warm-up over warmup_fraction of the steps, then cosine down; the bounds keep both phases
    # at least one step long in very short runs (tests)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.optim.lr, total_steps=steps,
                                                pct_start=min(max(cfg.optim.warmup_fraction, 2.0 / steps), 0.75))
    writer = None
    try:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tensorboard"))
    except ImportError:  # tensorboard is optional
        pass
    bar = None
    if cfg.run.progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc="train refiner", dynamic_ncols=True)
    history, losses = [], []
    t0 = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        x, y = training_batch(train_patches, weights, spec, names, cfg, rng)
        x, y = x.to(device), y.to(device)
        # peaks are 1 on a background of 0: scaled so the loss reads in units of ~1
        loss = F.mse_loss(model(x), y) * 1000.0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"the refiner's loss became {loss.item()} at step {step}")
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        elif step % (10 * cfg.run.log_every) == 0:  # no bar (logs, CI): a line now and then
            log.info("step %d/%d: loss %.4f (%.0f s)", step, steps, loss.item(), time.perf_counter() - t0)
        if writer is not None and step % cfg.run.log_every == 0:
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
        if val_patches and (step % cfg.run.eval_every == 0 or step == steps):
            score = pck_on_patches(model, val_patches, spec, names, device=device)
            history.append({"step": step, "val_pck@0.2": round(score["pck"], 4)})
            log.info("step %d: loss %.4f, validation PCK@0.2 %.4f (labelled boxes)", step, loss.item(), score["pck"])
            if writer is not None:
                writer.add_scalar("val/pck@0.2", score["pck"], step)
    if bar is not None:
        bar.close()
    result = _save(model, spec, cfg, out_dir, time.perf_counter() - t0, losses, history,
                   len(train_patches), len(val_patches))
    if val_patches:
        result["val"] = pck_on_patches(model, val_patches, spec, names, device=device)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    if writer is not None:
        writer.close()
    return result


def _save(model, spec, cfg: RefinerTrainConfig, out_dir: Path, seconds: float, losses, history,
          n_train: int, n_val: int) -> Dict:
    """refiner.pth (what model_export --heatmap-refiner reads) and the run's summary."""
    import torch

    steps = cfg.optim.steps
    path = out_dir / "refiner.pth"
    torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "spec": spec.to_dict(), "step": steps,
                "config": cfg.to_dict(), "train_seconds": round(seconds, 1)}, path)
    return {"checkpoint": str(path), "steps": steps, "train_seconds": round(seconds, 1),
            "train_objects": n_train, "val_objects": n_val, "history": history,
            # mean of the first and of the last (up to) 20 steps' losses
            "loss_first": round(float(np.mean(losses[:20])), 4), "loss_last": round(float(np.mean(losses[-20:])), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="unipose-train-refiner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config: a file or a shipped config's name (e.g. fly_demo_heatmap)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.steps=500 run.out_dir=out")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--data-root", help="folder that $UNIPOSE_DATA_ROOT in config paths stands for "
                                            "(default: the UNIPOSE_DATA_ROOT variable, else ../shared beside a checkout)")
    args = parser.parse_intermixed_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # training never downloads
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = load_refiner_config(args.config, args.overrides, data_root=args.data_root)
        if args.print_config:
            print(json.dumps(cfg.to_dict(), indent=2, default=str))
            return 0
        config_loader.check_source_paths(cfg.data.train, args.data_root, "data.train")
        config_loader.check_source_paths(cfg.data.val, args.data_root, "data.val")
        result = train(cfg)
    except (ValueError, OSError, TypeError) as e:
        print(f"unipose-train-refiner: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
