"""The Predictor's run-time settings: one frozen object, one "auto" rule.

``AUTO`` ("auto") means "the model file's value": the score threshold, input size and crop
refinement it recommends, or the library default where it names none (:func:`file_defaults`).
The CLI, ``unipose bag`` and the ROS node all spell it this way; interfaces that can only hold
numbers (ROS parameters) write it as a negative number and translate it with :func:`auto_if_negative`.

Settings are changed by replacing them, never field by field::

    predictor.settings = predictor.settings.replace(box_threshold=0.3, short_side=AUTO)

so a speed profile or a ROS parameter never leaves half-applied state behind, and the Predictor
re-resolves AUTO against its model file on every change. Torch-free: ``unipose --help`` and the
CLI's defaults read it without importing the model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Union

from .errors import PredictorError

AUTO = "auto"

# The official post-processing and resize rule (X-Pose's inference), the library defaults.
DEFAULT_BOX_THRESHOLD = 0.1
DEFAULT_IOU_THRESHOLD = 0.9
DEFAULT_SHORT_SIDE = 800
DEFAULT_MAX_SIZE = 1333

DTYPES = ("float32", "bfloat16", "float16")

Auto = str  # the literal AUTO
FloatOrAuto = Union[float, Auto]


@dataclass(frozen=True)
class Settings:
    """What a Predictor does with each image (the model and its weights stay as loaded).

    box_threshold: least detection score; iou_threshold: NMS overlap (1: none).
    short_side / max_size: resize rule (max_size None: no cap on the long side).
    max_instances: most detections per image, best first (None: all).
    refine: crop-refinement factor (None: off); refine_size: its input size (None: short_side).
    heatmap_refiner: use the model file's heatmap refiner when it has one.
    dtype: compute precision, "float32", "bfloat16" or "float16" (autocast), or AUTO: the
    machine's default (cpu_info.auto_dtype, through Predictor.model_defaults).
    num_queries / num_select: proposals after the encoder and instances given keypoint queries
    (None: the model's configuration); fewer is faster and changes the outputs (speed.py).
    """

    box_threshold: float | Auto = AUTO
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    short_side: int | Auto = AUTO
    max_size: int | None | Auto = AUTO
    max_instances: int | None = None
    refine: float | None | Auto = AUTO
    refine_size: int | None | Auto = AUTO
    heatmap_refiner: bool = True
    dtype: str = "float32"
    num_queries: int | None = None
    num_select: int | None = None

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def resolved(self, defaults: dict) -> "Settings":
        """AUTO fields replaced by `defaults` (see file_defaults), values normalised (refine 0:
        None), and every value checked: a PredictorError names the first bad one."""
        pick = lambda name: defaults[name] if getattr(self, name) == AUTO else getattr(self, name)  # noqa: E731
        out = Settings(box_threshold=float(pick("box_threshold")), iou_threshold=float(self.iou_threshold),
                       short_side=int(pick("short_side")), max_size=_optional_int(pick("max_size")),
                       max_instances=_optional_int(self.max_instances),
                       refine=float(pick("refine")) if pick("refine") else None,
                       refine_size=int(pick("refine_size")) if pick("refine_size") else None,
                       heatmap_refiner=bool(self.heatmap_refiner), dtype=dtype_name(pick("dtype")),
                       num_queries=_optional_int(self.num_queries), num_select=_optional_int(self.num_select))
        out.check()
        return out

    def check(self) -> None:
        """Range checks of resolved settings (one PredictorError naming the value)."""
        if not 0.0 <= self.box_threshold < 1.0:
            raise PredictorError(f"box_threshold must be in [0, 1), got {self.box_threshold}")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise PredictorError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if not 1 <= self.short_side <= 8192 or self.max_size is not None and not 1 <= self.max_size <= 16384:
            raise PredictorError(f"input size must be a short side in [1, 8192] and a long-side cap in "
                                 f"[1, 16384] or None, got {self.short_side}, {self.max_size}")
        if self.max_instances is not None and self.max_instances < 0:
            raise PredictorError(f"max_instances must be >= 0 or None, got {self.max_instances}")
        if self.refine is not None and not 1.0 <= self.refine <= 20.0:
            raise PredictorError(f"refine must be 0/None (off) or a crop factor in [1, 20], got {self.refine}")
        if self.refine_size is not None and not 32 <= self.refine_size <= 4096:
            raise PredictorError(f"refine_size must be an input size in [32, 4096] pixels, got {self.refine_size}")


# What AUTO stands for when the model file says nothing.
LIBRARY_DEFAULTS = {"box_threshold": DEFAULT_BOX_THRESHOLD, "short_side": DEFAULT_SHORT_SIDE,
                    "max_size": DEFAULT_MAX_SIZE, "refine": None, "refine_size": None, "dtype": "float32"}


def file_defaults(info) -> dict:
    """What a model file recommends (a ModelFileInfo), LIBRARY_DEFAULTS where it says nothing:
    the values AUTO stands for."""
    trained = info.input_size or {}
    return {"box_threshold": float(info.postprocess.get("box_threshold", DEFAULT_BOX_THRESHOLD)),
            "short_side": int(trained.get("short_side", DEFAULT_SHORT_SIDE)),
            "max_size": trained.get("max_size", DEFAULT_MAX_SIZE),
            "refine": info.postprocess.get("refine") or None,
            "refine_size": int(info.postprocess.get("refine_size", 0)) or None,
            "dtype": "float32"}  # a model file recommends no precision; the Predictor adds the machine's


def auto_if_negative(value):
    """A number from an interface that cannot hold "auto" (ROS parameters, ``unipose bag``'s
    mirror of them): negative means AUTO, anything else is the value itself."""
    return AUTO if value is not None and value < 0 else value


def dtype_name(dtype) -> str:
    """"float32" for "float32", torch.float32 or "fp32"-style names the text encoder accepts."""
    name = str(dtype).replace("torch.", "").lower()
    name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16",
            "float": "float32"}.get(name, name)
    if name not in DTYPES:
        raise PredictorError(f"unknown dtype {dtype!r}; use {', '.join(DTYPES)}")
    return name


def _optional_int(value):
    return None if value is None else int(value)


__all__ = ["AUTO", "Settings", "LIBRARY_DEFAULTS", "file_defaults", "auto_if_negative", "dtype_name", "DEFAULT_BOX_THRESHOLD",
           "DEFAULT_IOU_THRESHOLD", "DEFAULT_SHORT_SIDE", "DEFAULT_MAX_SIZE"]
