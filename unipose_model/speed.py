"""Speed profiles: trade accuracy for frames per second without retraining.

A profile scales three knobs of a loaded model, relative to its own defaults:
  * the input resolution (short side and long-side cap): the encoder's cost grows with the
    number of image tokens, i.e. with the square of the scale;
  * `num_queries`, the two-stage proposals that enter the decoder;
  * `num_select`, the instances that get keypoint queries (the keypoint layers' cost);
turns crop refinement (a second pass per detection) off except in "accurate" and the heatmap
refiner (a small network per detection, ~20 ms per fly on a 2-core CPU) off in "fastest" and
"realtime", and may run
the matrix products in bfloat16 (autocast; sampling positions stay float32), where
the device does bf16 natively (CUDA, or a CPU with AVX512-BF16 / AMX): about 2x on them.
"accurate" is the model as trained; the others change its outputs (measured cost:
docs/BENCHMARKS.md, speed profiles).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpeedProfile:
    name: str
    input_scale: float     # x the configured short side and long-side cap
    query_scale: float     # x the model's num_queries
    select_scale: float    # x the model's num_select
    bfloat16: bool = False  # matrix products in bf16 where the device supports it natively
    refine: bool = False    # keep crop refinement (refine.py) if the predictor has it: 1 + N passes
    heatmap_refine: bool = False  # keep the heatmap refiner (heatmap_refiner.py) if the predictor has one

    def describe(self) -> str:
        return (f"{self.name}: input x{self.input_scale:g}, proposals x{self.query_scale:g}, "
                f"keypoint instances x{self.select_scale:g}" + (", bfloat16" if self.bfloat16 else "")
                + ("" if self.refine else ", no crop refinement")
                + ("" if self.heatmap_refine else ", no heatmap refiner"))


PROFILES = {p.name: p for p in (
    SpeedProfile("accurate", 1.0, 1.0, 1.0, refine=True, heatmap_refine=True),
    SpeedProfile("fast", 0.6, 1 / 3, 0.4, heatmap_refine=True),
    SpeedProfile("fastest", 0.4, 1 / 9, 0.2),
    # 0.35: the input at which Swin-T reaches 2 frames/s on a 2-core AVX512-BF16 CPU (BENCHMARKS.md)
    SpeedProfile("realtime", 0.35, 1 / 9, 0.2, bfloat16=True),
)}


def get_profile(name: str) -> SpeedProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown speed profile {name!r}; one of {', '.join(PROFILES)}") from None


def profile_settings(profile: SpeedProfile, base, config, device, backend: str = "pytorch"):
    """The Settings of `profile` scaled from `base` (the accurate settings, AUTO resolved): input
    size and, for the pytorch backend, query counts from the model configuration and bf16 where
    the device runs it natively (exported graphs fix counts and precision)."""
    from .loading import native_bf16

    changes = dict(short_side=max(32, int(round(base.short_side * profile.input_scale))),
                   max_size=None if not base.max_size else max(32, int(round(base.max_size * profile.input_scale))),
                   refine=base.refine if profile.refine else None,
                   heatmap_refiner=base.heatmap_refiner and profile.heatmap_refine)
    if backend == "pytorch":
        use_bf16 = profile.bfloat16 and base.dtype == "float32" and native_bf16(device)
        changes.update(num_queries=max(1, int(round(config.num_queries * profile.query_scale))),
                       num_select=max(1, int(round(config.num_select * profile.select_scale))),
                       dtype="bfloat16" if use_bf16 else base.dtype)
    return base.replace(**changes)


def apply_profile(predictor, name: str, short_side: int | None = None, max_size: int | None = None, *,
                  base=None) -> SpeedProfile:
    """Give `predictor` the settings of profile `name`, scaled from `base` (default: the settings
    it was built with) with the accurate input size `short_side` / `max_size` when given. One
    settings assignment: nothing else of the predictor, and nothing of its model, changes."""
    profile = get_profile(name)
    base = predictor.initial_settings if base is None else base
    if short_side is not None:
        base = base.replace(short_side=short_side, max_size=max_size)
    base = base.resolved(predictor.model_defaults())  # AUTO: the model file's values
    predictor.settings = profile_settings(profile, base, predictor.model.config, predictor.device,
                                          getattr(predictor, "backend", "pytorch"))
    return profile
