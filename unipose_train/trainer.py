"""The UniPose trainer: one process (CPU or GPU) or torchrun + DDP, resumable at any step.

Resumability: the data order is a pure function of (seed, epoch, position) (dataset.py), and a
checkpoint holds model, optimizer, scheduler, grad scaler, step, epoch, position in the epoch
and every RNG state. A run killed at any moment (even SIGKILL; checkpoints are written to a
temp file and renamed) and resumed from its last checkpoint reaches the same parameters as an
uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from unipose_model import build_model
from unipose_model.checkpoint import load_official_checkpoint

from .augment import AugmentConfig, Augmenter
from .denoising import DenoisingConfig, DenoisingQueries, build_denoising_queries, denoising_losses
from .dataset import (BalancedSampler, KeypointDataset, SourceConfig, VisualPromptSampling, collate,
                      load_source)
from .label_checks import check_training_labels
from .losses import LossWeights, SetCriterion, global_num_boxes
from .matcher import HungarianMatcher, MatcherWeights
from .prompts import PromptBuilder, PromptConfig
from .text_features import TextFeatureTable, build_table

log = logging.getLogger("unipose.train")


# ====================================================================== configuration
@dataclass
class ModelConfig:
    name: str = "unipose_tiny"
    overrides: Dict[str, Any] = field(default_factory=dict)   # UniPoseConfig fields (e.g. num_select)
    init: Optional[str] = None       # official-format checkpoint to fine-tune from; None = scratch
    init_strict: bool = True
    init_deepen: bool = False        # layers `init` lacks (a deeper decoder) start as copies of its deepest one
    freeze: List[str] = field(default_factory=list)  # backbone, input_proj, encoder, decoder, text_projection or prefixes
    dtype: str = "float32"           # float64 only for exactness tests


@dataclass
class DataConfig:
    train: List[SourceConfig] = field(default_factory=list)
    val: List[SourceConfig] = field(default_factory=list)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    negative_pool: str = "data"      # "data": categories of the sources; "vocabulary": all UniKPT categories
    visual_prompts: VisualPromptSampling = field(default_factory=VisualPromptSampling)
    batch_size: int = 2              # per process
    num_workers: int = 2
    samples_per_epoch: Optional[int] = None


@dataclass
class TextConfig:
    encoder: str = "clip"            # clip | hash | path to a precomputed feature file
    clip_weights: Optional[str] = None
    cache: Optional[str] = None      # feature cache file (default: <out_dir>/text_features.pt)
    precompute: bool = True          # encode every possible prompt up front (else on first use)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    backbone_lr_mult: float = 0.1
    linear_proj_lr_mult: float = 0.1  # deformable attention sampling offsets (Deformable DETR)
    weight_decay: float = 1e-4
    clip_grad: float = 0.1
    max_steps: int = 1000
    warmup_steps: int = 0
    warmup_factor: float = 0.001
    schedule: str = "step"           # step | cosine | constant
    milestones: List[int] = field(default_factory=list)   # steps (step schedule)
    gamma: float = 0.1
    min_lr_ratio: float = 0.01       # cosine floor


@dataclass
class RunConfig:
    out_dir: str = "outputs/run"
    seed: int = 42
    device: str = "auto"             # auto | cpu | cuda
    amp: str = "bf16"                # bf16 | fp16 | none (GPU only; CPU runs in float32)
    checkpoint_every: int = 500
    keep_last: int = 3
    eval_every: int = 0              # 0: only at the end
    log_every: int = 10
    progress: bool = True
    find_unused_parameters: bool = True   # some heads are unused in some configs (and DN labels)
    threads: int = 0                 # torch CPU threads (0: leave as is)


@dataclass
class EvalConfig:
    max_images: Optional[int] = None
    pck_threshold: float = 0.2
    batch_size: int = 2


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    matcher: MatcherWeights = field(default_factory=MatcherWeights)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    denoising: DenoisingConfig = field(default_factory=DenoisingConfig)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


def _build(cls, data: Any, where: str):
    """Nested dataclass from plain data; unknown keys are errors (a typo must not be ignored)."""
    if not dataclasses.is_dataclass(cls):
        return data
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or '<root>'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) in {where or '<root>'}: {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = _SECTIONS.get((cls.__name__, name))
        if sub is list:  # list of sources
            kwargs[name] = [_build(SourceConfig, v, f"{where}.{name}[{i}]") for i, v in enumerate(value or [])]
        elif sub is not None:
            kwargs[name] = _build(sub, value, f"{where}.{name}".lstrip("."))
        else:
            kwargs[name] = _coerce(fields[name], value, f"{where}.{name}".lstrip("."))
    return cls(**kwargs)


def _coerce(f: dataclasses.Field, value: Any, where: str) -> Any:
    """Numbers written as YAML strings ('2e-4' is a string in YAML 1.1) become numbers."""
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return type(default)(float(value)) if isinstance(default, float) else int(value)
        except ValueError:
            raise ValueError(f"config {where}: expected a number, got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool) and isinstance(default, float):
        return float(value)
    return value


_SECTIONS = {("TrainConfig", "model"): ModelConfig, ("TrainConfig", "data"): DataConfig,
             ("TrainConfig", "text"): TextConfig, ("TrainConfig", "optim"): OptimConfig,
             ("TrainConfig", "loss"): LossWeights, ("TrainConfig", "matcher"): MatcherWeights,
             ("TrainConfig", "run"): RunConfig, ("TrainConfig", "eval"): EvalConfig,
             ("TrainConfig", "denoising"): DenoisingConfig,
             ("DataConfig", "augment"): AugmentConfig,
             ("DataConfig", "visual_prompts"): VisualPromptSampling, ("DataConfig", "prompts"): PromptConfig,
             ("DataConfig", "train"): list, ("DataConfig", "val"): list}


def apply_overrides(data: Dict, overrides: Sequence[str]) -> Dict:
    """`a.b.c=value` strings (value parsed as YAML) into a nested dict."""
    import yaml
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value (e.g. optim.lr=2e-4)")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p, nxt in zip(parts[:-1], parts[1:]):
            if isinstance(node, list):   # data.train.0.ann=...: an index into a list of sources
                node = node[int(p)]
            elif isinstance(node, dict):
                node = node.setdefault(p, [] if nxt.isdigit() else {})
            else:
                raise ValueError(f"override {item!r}: {p} is not a section")
        last = parts[-1]
        if isinstance(node, list):
            i = int(last)
            node.extend([{}] * (i + 1 - len(node)))
            node[i] = yaml.safe_load(value)
        else:
            node[last] = yaml.safe_load(value)
    return data


def load_config(path: Optional[str] = None, overrides: Sequence[str] = (), data: Optional[Dict] = None) -> TrainConfig:
    """YAML file (relative source paths are resolved against the file's folder) + overrides."""
    raw: Dict = {}
    if path is not None:
        import yaml
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if data:
        raw = _deep_merge(raw, data)
    raw = apply_overrides(raw, overrides)
    cfg = _build(TrainConfig, raw, "")
    if path is not None:
        base = Path(path).resolve().parent
        for src in cfg.data.train + cfg.data.val:
            src.ann = _resolve(base, src.ann)
            src.images = None if src.images is None else _resolve(base, src.images)
    return cfg


def _resolve(base: Path, p: str) -> str:
    p = os.path.expandvars(os.path.expanduser(p))
    return p if os.path.isabs(p) else str((base / p).resolve())


def _deep_merge(a: Dict, b: Dict) -> Dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ====================================================================== helpers
FREEZE_ALIASES = {"backbone": ["backbone."], "input_proj": ["input_proj."],
                  "encoder": ["transformer.encoder.", "transformer.level_embed"],
                  "decoder": ["transformer.decoder.", "bbox_embed.", "pose_embed.", "pose_hw_embed."],
                  "text_projection": ["projection.", "projection_kpt."],
                  "two_stage": ["transformer.enc_output", "transformer.enc_out_bbox_embed", "transformer.tgt_embed"]}


def freeze(model: torch.nn.Module, names: Sequence[str]) -> List[str]:
    prefixes = [p for n in names for p in FREEZE_ALIASES.get(n, [n])]
    frozen = []
    for name, p in model.named_parameters():
        if any(name.startswith(x) for x in prefixes):
            p.requires_grad_(False)
            frozen.append(name)
    if names and not frozen:
        raise ValueError(f"freeze {list(names)} matched no parameter; aliases: {sorted(FREEZE_ALIASES)}")
    return frozen


def param_groups(model: torch.nn.Module, cfg: OptimConfig) -> List[Dict]:
    groups: Dict[str, List] = {"base": [], "backbone": [], "linear_proj": []}
    for name, p in model.named_parameters():   # named_parameters de-duplicates shared heads
        if not p.requires_grad:
            continue
        if name.startswith("backbone."):
            groups["backbone"].append(p)
        elif "sampling_offsets" in name or "reference_points" in name:
            groups["linear_proj"].append(p)
        else:
            groups["base"].append(p)
    mult = {"base": 1.0, "backbone": cfg.backbone_lr_mult, "linear_proj": cfg.linear_proj_lr_mult}
    return [{"params": ps, "lr": cfg.lr * mult[k], "name": k} for k, ps in groups.items() if ps]


def lr_lambda(cfg: OptimConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            a = step / max(1, cfg.warmup_steps)
            return cfg.warmup_factor * (1 - a) + a
        if cfg.schedule == "step":
            return cfg.gamma ** sum(step >= m for m in cfg.milestones)
        if cfg.schedule == "cosine":
            t = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if cfg.schedule == "constant":
            return 1.0
        raise ValueError(f"unknown schedule {cfg.schedule!r} (step, cosine, constant)")
    return f


def rng_state() -> Dict:
    """All RNG states, as tensors/ints so the checkpoint loads with weights_only=True."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": _py_state_to_list(random.getstate()),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_py_state_from_list(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_list(s):
    return [s[0], list(s[1]), s[2]]


def _py_state_from_list(s):
    return (s[0], tuple(s[1]), s[2])


def atomic_save(obj: Dict, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "step", "epoch", "batch_in_epoch", "sampler", "rng")


def read_resume_checkpoint(path: Path) -> Dict:
    """A training checkpoint (Trainer.state), or ValueError saying what the file is instead and
    what --resume needs."""
    from unipose_model.checkpoint import CheckpointError, load_checkpoint_file

    older = sorted(p.name for p in path.parent.glob("checkpoint_*.pth") if p != path)
    elsewhere = f" Earlier checkpoints of the run: {', '.join(older[-3:])}." if older else ""
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointError as e:
        raise ValueError(f"cannot resume: {e}{elsewhere}") from None
    missing = [k for k in RESUME_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        weights = isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict)
        what = ("a weights-only file (model weights" + (" and metrics, like best.pth)" if "metrics" in ckpt else ")")
                if weights else "not a training checkpoint")
        raise ValueError(f"cannot resume from {path}: it is {what}, without the training state ({', '.join(missing)}). "
                         f"--resume needs a checkpoint_NNNNNNNN.pth of a run, or the run folder (its newest one);"
                         f"{elsewhere} To start a new run from these weights, use model.init={path}")
    return ckpt


def remove_unfinished_saves(out_dir: Path) -> None:
    """Temp files of a save the process was killed during (atomic_save's '.NAME.tmpPID')."""
    for tmp in out_dir.glob(".*.tmp*"):
        if tmp.is_file():
            log.warning("removing %s: an unfinished save of a run that was stopped while writing it", tmp)
            tmp.unlink(missing_ok=True)


def trim_log(path: Path, step: int) -> None:
    """Keep the log records up to `step` (those after it will be logged again by the resumed
    run) and drop a line cut short by a kill."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record.get("step", 0)) <= step
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
        log.info("log.jsonl: %d record(s) after step %d removed (the resumed run logs those steps again)", dropped, step)


def latest_checkpoint(path: str | os.PathLike) -> Optional[Path]:
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.glob("checkpoint_*.pth"))
    return found[-1] if found else None


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


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


# ====================================================================== evaluation
@torch.no_grad()
def predict_batch(model, batch, table: TextFeatureTable, device, dtype):
    inst, inst_valid = table.batch(batch["instance_texts"])
    kpt, kpt_valid = table.batch(batch["keypoint_texts"])
    out = model(batch["images"].to(device, dtype), batch["masks"].to(device), inst.to(dtype), kpt.to(dtype),
                kpt_valid, instance_valid=inst_valid)
    return out


@torch.no_grad()
def evaluate_pck(model, dataset: KeypointDataset, table: TextFeatureTable, device, dtype=torch.float32,
                 threshold: float = 0.2, batch_size: int = 2, max_images: Optional[int] = None) -> Dict[str, float]:
    """PCK@threshold (box-normalised: distance < threshold * max(box w, h)) over labelled keypoints.

    Each ground-truth object is paired one-to-one (Hungarian, on mean keypoint distance) with
    one of the highest-scoring predictions of its class; an object left without a prediction
    scores 0 on all its keypoints. Also reports the mean OKS of the pairs (sigmas of the data).
    """
    from scipy.optimize import linear_sum_assignment
    was_training = model.training
    model.eval()
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    hits = total = 0.0
    oks_sum, oks_n = 0.0, 0
    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(n, start + batch_size))])
        out = predict_batch(model, batch, table, device, dtype)
        for b, t in enumerate(batch["targets"]):
            M, K = t["keypoints"].shape[:2]
            if M == 0:
                continue
            h, w = t["size"].tolist()
            scale = torch.tensor([w, h], dtype=torch.float64)
            logits = out["pred_logits"][b].double().cpu()
            pk = out["pred_keypoints"][b, :, :K].double().cpu() * scale        # (S, K, 2) px
            gk = t["keypoints"].double() * scale
            vis = t["visibility"] > 0
            score = logits[:, t["labels"]].sigmoid()                            # (S, M)
            cand = min(len(logits), 3 * M)
            dist = (pk[:, None] - gk[None]).norm(dim=-1)                         # (S, M, K)
            mean = (dist * vis[None]).sum(-1) / vis.sum(-1).clamp(min=1)[None]
            top = score.topk(min(cand, score.shape[0]), dim=0).indices          # per object candidates
            allowed = torch.zeros_like(score, dtype=torch.bool)
            allowed.scatter_(0, top, True)
            cost = torch.where(allowed, mean, torch.full_like(mean, 1e9)).numpy()
            rows, cols = linear_sum_assignment(cost)
            box_wh = t["boxes"][:, 2:].double() * scale
            ref = box_wh.max(-1).values                                          # (M,)
            for q, m in zip(rows, cols):
                if not allowed[q, m]:
                    continue
                v = vis[m]
                hits += float(((dist[q, m] < threshold * ref[m]) & v).sum())
                d2 = dist[q, m] ** 2
                var = (2 * t["sigmas"].double()) ** 2
                e = torch.exp(-d2 / (2 * float(t["areas"][m]) * var + 1e-9))
                if v.any():
                    oks_sum += float(e[v].mean())
                    oks_n += 1
            total += float(vis.sum())
    model.train(was_training)
    return {"pck": hits / max(total, 1.0), "mean_oks": oks_sum / max(oks_n, 1), "keypoints": total}


@torch.no_grad()
def predict_results(model, dataset: KeypointDataset, table: TextFeatureTable, device, dtype=torch.float32,
                    batch_size: int = 2, max_images: Optional[int] = None, top_k: int = 20) -> List[List[Dict]]:
    """COCO-format results (original image pixels) per source of an evaluation dataset.

    Each query becomes one result for its best class (score = sigmoid of that logit), if that
    class is a category of the source with the image's keypoint list; top_k per image.
    """
    was_training = model.training
    model.eval()
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    results: List[List[Dict]] = [[] for _ in dataset.sources]
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        batch = collate([dataset[i] for i in idx])
        out = predict_batch(model, batch, table, device, dtype)
        for b, i in enumerate(idx):
            rec, meta = dataset.records[i], batch["meta"][b]
            cats = dataset.categories[rec.source]
            by_name = {c.name: c for c in cats.values()}
            names = meta["keypoint_names"]
            K = len(names)
            W, H = rec.image.width, rec.image.height
            probs = out["pred_logits"][b].float().sigmoid().cpu()
            score, cls = probs.max(-1)
            kp = out["pred_keypoints"][b, :, :K].float().cpu() * torch.tensor([W, H])
            box = out["pred_boxes"][b].float().cpu() * torch.tensor([W, H, W, H])
            for q in score.argsort(descending=True)[:top_k].tolist():
                cat = by_name.get(meta["classes"][int(cls[q])])
                if cat is None or len(cat.keypoints) != K:
                    continue
                k = torch.cat((kp[q], torch.ones(K, 1)), -1)
                cx, cy, bw, bh = box[q].tolist()
                results[rec.source].append({"image_id": rec.image.id, "category_id": cat.id, "score": float(score[q]),
                                            "keypoints": k.flatten().tolist(),
                                            "bbox": [cx - bw / 2, cy - bh / 2, bw, bh]})
    model.train(was_training)
    return results


def ground_truth_subsets(dataset: KeypointDataset, max_images: Optional[int] = None):
    """Per source, the UniKPT ground truth restricted to the images the dataset evaluates."""
    from .unikpt.format import UniKPT
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    for s, src in enumerate(dataset.sources):
        ids = {r.image.id for r in dataset.records[:n] if r.source == s}
        cats = {c.id for c in src.categories}
        # the objects the dataset trains on (label_checks reported the others), crowds kept as ignore regions
        instances = [i for i in src.instances if i.image_id in ids and i.category_id in cats
                     and (i.iscrowd or (i.bbox[2] > 0 and i.bbox[3] > 0))]
        yield UniKPT(dataset=src.dataset, images=[im for im in src.images if im.id in ids],
                     instances=instances, categories=src.categories,
                     images_root=src.images_root, info=src.info, path=src.path)


# ====================================================================== trainer
class Trainer:
    def __init__(self, cfg: TrainConfig, resume: Optional[str] = None):
        self.cfg = cfg
        self.resume_path = resume
        self._setup_distributed()
        rc = cfg.run
        if rc.threads:
            torch.set_num_threads(rc.threads)
        # Near-converged focal terms drive tiny values into denormal floats, which are ~100x slower
        # on x86 CPUs (seen: 18 -> 0.7 images/s mid-run). Flushing them changes nothing that matters.
        torch.set_flush_denormal(True)
        # OpenCV's thread pool does not survive fork: a DataLoader worker forked after evaluation
        # (which resizes images here) hung in cv2.setNumThreads. Without a pool there is no lock.
        import cv2
        cv2.setNumThreads(1)
        self.out_dir = Path(rc.out_dir)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_unfinished_saves(self.out_dir)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.model.dtype]
        self._seed_everything(rc.seed + self.rank)
        self._build_model()
        self._build_data()
        self._build_optim()
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: Optional[float] = None
        self.history: List[Dict] = []
        if resume:
            self._resume(resume)
        self._writer = None
        self._log_file = None

    # .................................................................. setup
    def _setup_distributed(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = self.cfg.run.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev == "cuda":
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device(dev)
        self.distributed = self.world_size > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.is_main = self.rank == 0

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)

    def _build_model(self) -> None:
        mc = self.cfg.model
        model = build_model(mc.name, **mc.overrides)
        if mc.init:
            report = load_official_checkpoint(model, os.path.expanduser(mc.init), strict=mc.init_strict,
                                              deepen=mc.init_deepen)
            if self.is_main:
                log.info("initialised from %s", report)
        self.frozen = freeze(model, mc.freeze)
        if self.cfg.denoising.number <= 0:
            model.label_enc.weight.requires_grad_(False)  # denoising label queries: unused without DN
        elif model.config.dn_labelbook_size < 1:
            raise ValueError("denoising needs a model with dn_labelbook_size >= 1")
        model.to(self.device, self.dtype).train()
        self.model = model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.local_rank] if self.device.type == "cuda" else None
            self.ddp = DDP(model, device_ids=ids, find_unused_parameters=self.cfg.run.find_unused_parameters)
        else:
            self.ddp = model
        self.criterion = SetCriterion(self.cfg.loss, HungarianMatcher(self.cfg.matcher))
        amp = self.cfg.run.amp if self.device.type == "cuda" else "none"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _build_data(self) -> None:
        dc = self.cfg.data
        if not dc.train:
            raise ValueError("config has no data.train sources")
        dc.train, dc.val = expand_index_sources(dc.train), expand_index_sources(dc.val)
        train_sources = [load_source(s) for s in dc.train]
        val_sources = [load_source(s) for s in dc.val]
        # every label and image file, before the first step: a bad entry is named now, not in a
        # DataLoader worker or as a non-finite loss at step 0 (unipose_train/label_checks.py)
        check_training_labels(train_sources + val_sources, [s.image_ids for s in dc.train + dc.val],
                              log_warnings=self.is_main)
        pool = self._negative_pool(train_sources)
        self.prompts = PromptBuilder(dc.prompts, pool)
        max_k = self.model.config.max_keypoints
        visual = dc.visual_prompts
        if visual.prob > 0:
            encoder = self.model.visual_prompt_encoder
            if encoder is None:
                raise ValueError(f"data.visual_prompts.prob > 0 needs a model with a visual prompt encoder; "
                                 f"'{self.cfg.model.name}' has none (e.g. use unipose_tiny_visual)")
            visual = dataclasses.replace(visual, size=int(encoder.image_size))
        self.train_set = KeypointDataset(train_sources, Augmenter(dc.augment, train=True), self.prompts, max_k,
                                         image_ids=[s.image_ids for s in dc.train],
                                         max_images=[s.max_images for s in dc.train], visual=visual)
        self.sampler = BalancedSampler(self.train_set.source_sizes(), dc.batch_size, [s.weight for s in dc.train],
                                       dc.samples_per_epoch, self.cfg.run.seed, self.rank, self.world_size)
        self.val_set = None
        if dc.val:
            fixed = dataclasses.replace(dc.prompts, fixed=True)
            self.val_set = KeypointDataset(val_sources, Augmenter(dc.augment, train=False), PromptBuilder(fixed),
                                           max_k, image_ids=[s.image_ids for s in dc.val],
                                           max_images=[s.max_images for s in dc.val])
        cats, styles = self.train_set.all_prompt_inputs()
        if self.val_set is not None:
            vc, vs = self.val_set.all_prompt_inputs()
            cats, styles = cats + vc, styles + vs
        texts = self.prompts.all_texts(cats, styles) if self.cfg.text.precompute else []
        cache = self.cfg.text.cache or str(self.out_dir / "text_features.pt")
        t0 = time.time()
        # rank 0 encodes and writes the cache; the other ranks then only read it
        if self.distributed and not self.is_main:
            dist.barrier()
        self.text_table = build_table(self.cfg.text.encoder, texts, self.device, cache, self.cfg.text.clip_weights,
                                      write_cache=self.is_main)
        if self.distributed and self.is_main:
            dist.barrier()
        if self.is_main:
            log.info("text features: %d prompts in %.1fs", len(self.text_table), time.time() - t0)
        # config, vocabulary and prompt features go into every checkpoint: it runs on its own
        from .model_export import model_file_entries
        self.model_file_entries = model_file_entries(self.cfg, train_sources, pool, self.text_table)

    def _negative_pool(self, sources) -> List[str]:
        if self.cfg.data.negative_pool == "vocabulary":
            from .unikpt.vocabulary import UniKPTVocabulary
            return UniKPTVocabulary.load().category_names()
        return [c.name for ds in sources for c in ds.categories]

    def _build_optim(self) -> None:
        oc = self.cfg.optim
        self.optimizer = torch.optim.AdamW(param_groups(self.model, oc), lr=oc.lr, weight_decay=oc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(oc))

    # .................................................................. checkpoints
    def state(self) -> Dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "sampler": {"epoch": self.epoch, "start_batch": self.batch_in_epoch, "seed": self.cfg.run.seed,
                            "world_size": self.world_size, "batch_size": self.cfg.data.batch_size},
                "rng": rng_state(), "best": self.best, "config": json.dumps(self.cfg.to_dict()),
                "model_name": self.model.config.name, **self.model_file_entries}

    def save_checkpoint(self) -> Optional[Path]:
        # Every rank's RNG state would differ; rank 0's file is the run's checkpoint (data RNG
        # is position-derived, and the model has no dropout, so the ranks need nothing else).
        if not self.is_main:
            return None
        path = self.out_dir / f"checkpoint_{self.step:08d}.pth"
        atomic_save(self.state(), path)
        old = sorted(self.out_dir.glob("checkpoint_*.pth"))
        for p in old[:max(0, len(old) - self.cfg.run.keep_last)]:
            p.unlink(missing_ok=True)
        return path

    def _resume(self, path: str) -> None:
        ckpt_path = latest_checkpoint(path)
        if ckpt_path is None:
            raise FileNotFoundError(f"no checkpoint to resume from at {path}")
        ckpt = read_resume_checkpoint(ckpt_path)
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise ValueError(f"cannot resume from {ckpt_path}: its weights do not fit this config's model "
                             f"({str(e).splitlines()[0][:200]}); resume with the run's own config") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        s = ckpt["sampler"]
        if s["world_size"] * s["batch_size"] != self.world_size * self.cfg.data.batch_size:
            log.warning("global batch changed since the checkpoint (%d -> %d): data order will differ",
                        s["world_size"] * s["batch_size"], self.world_size * self.cfg.data.batch_size)
        self.best = ckpt.get("best")
        if self.world_size == s["world_size"] and self.rank == 0:
            set_rng_state(ckpt["rng"])
        if self.is_main:
            trim_log(self.out_dir / "log.jsonl", self.step)
            log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_path, self.step, self.epoch,
                     self.batch_in_epoch)

    # .................................................................. logging
    def _log(self, record: Dict) -> None:
        if not self.is_main:
            return
        self.history.append(record)
        if self._log_file is None:
            self._log_file = open(self.out_dir / "log.jsonl", "a", encoding="utf-8")
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed: logging to log.jsonl only")
        self._log_file.write(json.dumps(record) + "\n")
        self._log_file.flush()
        if self._writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._writer.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # .................................................................. training
    def train_step(self, batch: Dict) -> Dict[str, float]:
        inst, inst_valid = self.text_table.batch(batch["instance_texts"])
        kpt, kpt_valid = self.text_table.batch(batch["keypoint_texts"])
        images = batch["images"].to(self.device, self.dtype, non_blocking=True)
        masks = batch["masks"].to(self.device, non_blocking=True)
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in batch["targets"]]
        inst, kpt = self._apply_visual_prompts(batch.get("supports"), inst, kpt)
        dn = self._denoising_queries(targets, inst_valid)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.ddp(images, masks, inst.to(self.dtype), kpt.to(self.dtype), kpt_valid, aux=True,
                           instance_valid=inst_valid, denoising=None if dn is None else dn.model_input())
        loss, terms = self.criterion(out, targets, inst_valid, kpt_valid)
        if dn is not None:
            dn_terms = denoising_losses(out["dn_outputs"], dn, targets, global_num_boxes(targets, self.device),
                                        self.cfg.loss, inst_valid)
            scale = self.cfg.denoising.weight
            for name, value in dn_terms.items():
                loss = loss + scale * value
                terms[name] = float(value.detach())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step}: {terms}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
        else:
            grad_norm = torch.zeros(())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        terms["loss"] = float(loss.detach())
        terms["grad_norm"] = float(grad_norm)
        return terms

    def _apply_visual_prompts(self, supports, inst: torch.Tensor, kpt: torch.Tensor):
        """Samples with a support get the visual prompt encoder's features for their keypoint
        category (its class column and the keypoint slots), alone or averaged with the text ones."""
        rows = [b for b, s in enumerate(supports or ()) if s is not None]
        if not rows:
            return inst, kpt
        sup = [supports[b] for b in rows]
        K = max(len(s["visible"]) for s in sup)
        images = torch.stack([s["image"] for s in sup]).to(self.device, self.dtype)
        xy = torch.zeros(len(sup), K, 2)
        visible = torch.zeros(len(sup), K, dtype=torch.bool)
        valid = torch.zeros(len(sup), K, dtype=torch.bool)
        for i, s in enumerate(sup):
            k = len(s["visible"])
            xy[i, :k], visible[i, :k], valid[i, :k] = s["keypoints"], s["visible"], True
        # Outside the DDP forward, but DDP still reduces these gradients: the encoder's outputs
        # feed the wrapped forward, so its parameters are reached from the loss (the DDP test
        # with visual prompts checks it).
        v_inst, v_kpt = self.model.encode_visual_prompt(images, xy.to(self.device, self.dtype),
                                                        visible.to(self.device), valid.to(self.device))
        inst, kpt = inst.to(self.device, self.dtype).clone(), kpt.to(self.device, self.dtype).clone()
        for i, (b, s) in enumerate(zip(rows, sup)):
            k, c = len(s["visible"]), s["class_index"]
            vi, vk = v_inst[i], v_kpt[i, :k]
            if s["with_text"]:
                vi, vk = (vi + inst[b, c]) / 2, (vk + kpt[b, :k]) / 2
            inst[b, c] = vi
            kpt[b, :k] = vk
        return inst, kpt

    def _denoising_queries(self, targets, inst_valid) -> Optional[DenoisingQueries]:
        """DN queries for this batch. Their noise comes from a generator seeded by (run seed,
        step, rank), not from the global RNG (which DataLoader iterators also draw from): a
        resumed run draws exactly the noise the uninterrupted run drew at that step."""
        cfg = self.cfg.denoising
        if cfg.number <= 0:
            return None
        num_classes = inst_valid.sum(1).tolist()
        labelbook = self.model.config.dn_labelbook_size
        if max(num_classes, default=0) > labelbook:
            raise ValueError(f"a batch has {max(num_classes)} prompt classes; the model's denoising label "
                             f"table has {labelbook}")
        seed = (int(self.cfg.run.seed) * 1_000_003 + int(self.step)) * 131 + int(self.rank)
        return build_denoising_queries(targets, num_classes, cfg, torch.Generator().manual_seed(seed % 2 ** 63))

    def loader(self) -> DataLoader:
        self.sampler.set_state(self.epoch, self.batch_in_epoch)
        nw = self.cfg.data.num_workers
        return DataLoader(self.train_set, batch_size=self.cfg.data.batch_size, sampler=self.sampler,
                          collate_fn=collate, num_workers=nw, drop_last=True,
                          pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init,
                          persistent_workers=False, prefetch_factor=2 if nw > 0 else None)

    def evaluate(self) -> Dict[str, float]:
        """Validation metrics: the project's evaluator (OKS AP where the data has sigmas, PCK@0.2)
        when importable, else the local PCK. `pck` (and `AP` where computed) are always present."""
        if self.val_set is None or not self.is_main:
            return {}
        ec = self.cfg.eval
        try:
            from .evaluation.report import evaluate_dataset
        except ImportError:
            return evaluate_pck(self.model, self.val_set, self.text_table, self.device, self.dtype,
                                ec.pck_threshold, ec.batch_size, ec.max_images)
        results = predict_results(self.model, self.val_set, self.text_table, self.device, self.dtype,
                                  ec.batch_size, ec.max_images)
        metrics: Dict[str, float] = {}
        pcks, aps = [], []
        for s, gt in enumerate(ground_truth_subsets(self.val_set, ec.max_images)):
            row = evaluate_dataset(gt, results[s], pck_thr=ec.pck_threshold)
            p = row[f"PCK@{ec.pck_threshold:g}"]
            metrics[f"{gt.dataset}/pck"] = p
            pcks.append(p)
            if "AP" in row:
                metrics[f"{gt.dataset}/AP"] = row["AP"]
                aps.append(row["AP"])
        metrics["pck"] = float(np.mean(pcks)) if pcks else 0.0
        if aps:
            metrics["AP"] = float(np.mean(aps))
        return metrics

    def fit(self) -> Dict:
        rc, oc = self.cfg.run, self.cfg.optim
        bar = None
        if self.is_main and rc.progress:
            from tqdm import tqdm
            bar = tqdm(total=oc.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        global_batch = self.cfg.data.batch_size * self.world_size
        t_last, n_last = time.time(), 0
        metrics: Dict[str, float] = {}
        try:
            while self.step < oc.max_steps:
                for batch in self.loader():
                    terms = self.train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    n_last += global_batch
                    if self.batch_in_epoch >= self.sampler.batches_per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if self.step % rc.log_every == 0 or self.step == oc.max_steps:
                        now = time.time()
                        ips = n_last / max(now - t_last, 1e-9)
                        t_last, n_last = now, 0
                        rec = {"step": self.step, "epoch": self.epoch, "lr": self.scheduler.get_last_lr()[0],
                               "images_per_s": ips, **terms}
                        self._log(rec)
                        if bar is not None:
                            bar.set_postfix(loss=f"{terms['loss']:.3f}", img_s=f"{ips:.1f}")
                    if bar is not None:
                        bar.update(1)
                    last = self.step >= oc.max_steps
                    if rc.eval_every and self.step % rc.eval_every == 0 and not last:
                        metrics = self._eval_and_track()
                    if rc.checkpoint_every and self.step % rc.checkpoint_every == 0 and not last:
                        self.save_checkpoint()
                    if last or self.batch_in_epoch == 0:
                        break   # epoch boundary: a fresh loader for the next epoch's order
            metrics = self._eval_and_track()
            self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            self.close()
        if self.distributed:
            dist.barrier()
        return {"step": self.step, "metrics": metrics, "best": self.best}

    def _eval_and_track(self) -> Dict[str, float]:
        metrics = self.evaluate()
        if metrics and self.is_main:
            self._log({"step": self.step, **{f"val/{k}": v for k, v in metrics.items()}})
            score = metrics.get("AP", metrics["pck"])
            if self.best is None or score > self.best:
                self.best = score
                atomic_save({"model": self.model.state_dict(), "step": self.step, "metrics": metrics,
                             "model_name": self.model.config.name, **self.model_file_entries},
                            self.out_dir / "best.pth")
        if self.distributed:
            dist.barrier()
        return metrics


def _worker_init(_: int) -> None:
    import cv2
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def train(cfg: TrainConfig, resume: Optional[str] = None) -> Dict:
    trainer = Trainer(cfg, resume)
    return trainer.fit()


def save_loss_curve(history: Sequence[Dict], path: str | os.PathLike, keys: Sequence[str] = ("loss",),
                    title: str = "training loss") -> Path:
    """Plot logged training terms against step (log scale) into a PNG with OpenCV."""
    import cv2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    W, H, m = 900, 500, 70
    img = np.full((H, W, 3), 255, np.uint8)
    series = {k: [(r["step"], r[k]) for r in history if k in r and r[k] > 0] for k in keys}
    pts = [p for s in series.values() for p in s]
    if not pts:
        raise ValueError(f"no logged values for {list(keys)}")
    x0, x1 = min(p[0] for p in pts), max(max(p[0] for p in pts), min(p[0] for p in pts) + 1)
    ly = [math.log10(p[1]) for p in pts]
    y0, y1 = math.floor(min(ly)), math.ceil(max(ly) + 1e-9)
    y1 = max(y1, y0 + 1)

    def xy(step, value):
        return (int(m + (step - x0) / (x1 - x0) * (W - 2 * m)),
                int(H - m - (math.log10(value) - y0) / (y1 - y0) * (H - 2 * m)))

    cv2.rectangle(img, (m, m), (W - m, H - m), (0, 0, 0), 1)
    for e in range(y0, y1 + 1):
        y = xy(x0, 10 ** e)[1]
        cv2.line(img, (m, y), (W - m, y), (220, 220, 220), 1)
        cv2.putText(img, f"1e{e}", (5, y + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    for t in np.linspace(x0, x1, 6):
        x = xy(t, 10 ** y0)[0]
        cv2.putText(img, f"{int(t)}", (x - 10, H - m + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "step", (W // 2 - 20, H - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, title, (m, m - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    colours = [(200, 60, 20), (20, 140, 20), (20, 20, 200), (150, 0, 150), (0, 140, 200), (90, 90, 90)]
    for i, (k, s) in enumerate(series.items()):
        c = colours[i % len(colours)]
        poly = np.array([xy(a, b) for a, b in s], np.int32)
        cv2.polylines(img, [poly], False, c, 2)
        cv2.putText(img, k, (W - m - 150, m + 20 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1)
    cv2.imwrite(str(path), img)
    return path
