"""The training config schema (`unipose-train` YAML files: unipose_train/configs/, docs/TRAINING.md).

Section and field names are stored in every checkpoint (`config`, JSON) and read back by
model_export and --resume: rename nothing.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from . import config_loader
from .augment import AugmentConfig
from .dataset import VisualPromptSampling
from .sources import SourceConfig
from .denoising import DenoisingConfig
from .losses import LossWeights
from .matcher import MatcherWeights
from .prompts import PromptConfig


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


def load_config(path: Optional[str | os.PathLike] = None, overrides: Sequence[str] = (), data: Optional[Dict] = None,
                data_root: Optional[str] = None) -> TrainConfig:
    """A YAML file (a path or a shipped config's name; `_base_` inheritance) + `data` + overrides
    (unipose_train/config_loader.py has the rules)."""
    return config_loader.load(TrainConfig, path, overrides, data, data_root)


def config_from_dict(data: Dict[str, Any]) -> TrainConfig:
    """The config stored in a checkpoint (`json.loads(ckpt["config"])`), paths as stored."""
    return config_loader.build(TrainConfig, data)
