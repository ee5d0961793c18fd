"""The steps of one Predictor call: batching by input size, the forward pass, post-processing
into Instances, and the two optional refinement passes (crop and heatmap).

Functions of explicit arguments (settings, threshold, the forward callable): the Predictor holds
the state and calls them; nothing here keeps any.
"""
from __future__ import annotations

import contextlib
import threading
import time
import weakref
from typing import Callable

import numpy as np
import torch
from torch import nn

from .instance import Instance
from .postprocess import merge_selections, select_queries, to_pixels
from .preprocess import pad_batch, preprocess_image
from .prompt_features import PreparedPrompt

Forward = Callable[[torch.Tensor, torch.Tensor, PreparedPrompt, "nn.Module | None"], list]


def run_batches(rgbs: list[np.ndarray], prepared: PreparedPrompt, forward: Forward, *, device: torch.device,
                batch_size: int, short_side: int, max_size: int | None, threshold: float, iou_threshold: float,
                max_instances: int | None, model: nn.Module | None = None,
                convert_s: float = 0.0) -> tuple[list[list[Instance]], dict]:
    """The model on validated RGB arrays -> (instances per image, timing). convert_s: time
    already spent converting them, counted in the preprocess timing; model: another network than
    the predictor's (the crop pass), passed on to `forward`."""
    t0 = time.perf_counter() - convert_s
    if not rgbs:
        return [], {}
    tensors, sizes = [], []
    for rgb in rgbs:
        sizes.append(rgb.shape[:2])
        tensors.append(preprocess_image(rgb, short_side=short_side, max_size=max_size))
    # One forward per distinct input size: no padding, so an image's result does not depend
    # on what else is in the batch (Swin sees padded pixels, which would shift the outputs).
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(tensors):
        buckets.setdefault(tuple(t.shape[1:]), []).append(i)
    chunks = [same[k:k + batch_size] for same in buckets.values() for k in range(0, len(same), batch_size)]
    t1 = time.perf_counter()
    model_s = 0.0
    results: list[list[Instance]] = [[] for _ in rgbs]
    for indices in chunks:
        batch, masks = pad_batch([tensors[i] for i in indices])
        t_start = time.perf_counter()
        outputs = forward(batch.to(device), masks.to(device), prepared, model)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        model_s += time.perf_counter() - t_start
        for b, i in enumerate(indices):
            results[i] = instances_of(outputs, b, sizes[i], prepared, threshold, iou_threshold, max_instances)
    t2 = time.perf_counter()
    return results, {"preprocess_s": t1 - t0, "model_s": model_s, "postprocess_s": t2 - t1 - model_s}


def instances_of(outputs: list[dict], b: int, size: tuple[int, int], prepared: PreparedPrompt,
                 threshold: float, iou_threshold: float, max_instances: int | None) -> list[Instance]:
    """Image `b` of the per-group outputs -> Instances in pixels, best first: each group keeps
    the detections of its own classes, then one class-agnostic NMS over the groups."""
    height, width = size
    selections, pixels = [], []
    for out, group in zip(outputs, prepared.groups):
        allowed = None if len(group.class_indices) == len(prepared.classes) else group.class_indices
        sel = select_queries(out["pred_logits"][b], out["pred_boxes"][b], out["pred_keypoints"][b],
                             box_threshold=threshold, iou_threshold=iou_threshold, allowed_classes=allowed)
        selections.append(sel)
        pixels.append(to_pixels(sel, height, width))
    owners, rows = merge_selections(selections, iou_threshold)
    if max_instances is not None:
        owners, rows = owners[:max_instances], rows[:max_instances]
    instances = []
    for g, r in zip(owners, rows):
        det, group = pixels[g], prepared.groups[g]
        score = float(det.scores[r])
        xy = det.keypoints[r] if group.slots is None else det.keypoints[r][list(group.slots)]
        kpts = np.concatenate([xy, np.full((len(group.keypoint_names), 1), score)], 1)
        label = int(det.labels[r])
        instances.append(Instance(prepared.classes[label], label, score, tuple(float(v) for v in det.boxes[r]),
                                  kpts, group.keypoint_names, group.skeleton))
    return instances


def refine_crops(rgbs: list[np.ndarray], results: list[list[Instance]], factor: float,
                 second_pass: Callable[[list[np.ndarray]], list[list[Instance]]]) -> None:
    """Replace each detection's keypoints by those of a zoomed-in second pass (refine.py):
    `second_pass` runs the model on the crops (crop pixels in, crop-pixel instances out)."""
    from . import refine

    crops, owners = [], []
    for i, (rgb, instances) in enumerate(zip(rgbs, results)):
        for j, inst in enumerate(instances[:refine.MAX_REFINED_PER_IMAGE]):  # best score first
            crop = refine.crop_around(inst.box, factor, *rgb.shape[:2])
            if crop is not None:
                crops.append(crop.cut(rgb))
                owners.append((i, j, crop))
    if not crops:
        return
    for (i, j, crop), candidates in zip(owners, second_pass(crops)):
        inst = results[i][j]
        match = refine.best_match(inst.box, inst.class_index, candidates, crop)
        if match is not None:
            inst.keypoints = refine.refined_keypoints(inst.keypoints, match, crop)


# ------------------------------------------------------------------ query counts, per call
_model_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _model_lock(model: nn.Module) -> threading.RLock:
    with _locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def query_counts(model: nn.Module, num_queries: int | None, num_select: int | None):
    """Run `model` with these query counts (None: its configuration's) for the block only.

    The counts are module attributes read during the forward pass; several Predictors may share
    one model, so each call sets them under the model's own lock and puts back what was there:
    one Predictor's speed profile never changes another's results."""
    transformer = getattr(model, "transformer", None)
    if transformer is None:  # a wrapped or foreign network: it runs as it is configured
        if num_queries is not None or num_select is not None:
            from .errors import PredictorError
            raise PredictorError(f"query counts need a UniPose model; {type(model).__name__} has no transformer")
        yield
        return
    cfg = model.config
    nq = cfg.num_queries if num_queries is None else int(num_queries)
    ns = cfg.num_select if num_select is None else int(num_select)
    with _model_lock(model):  # also with the configured counts: another predictor may be mid-call
        before = transformer.num_queries, transformer.decoder.num_select
        transformer.num_queries, transformer.decoder.num_select = nq, ns
        try:
            yield
        finally:
            transformer.num_queries, transformer.decoder.num_select = before


def check_query_counts(config, num_queries: int | None, num_select: int | None) -> None:
    from .errors import PredictorError

    nq = config.num_queries if num_queries is None else int(num_queries)
    ns = config.num_select if num_select is None else int(num_select)
    if not 1 <= nq <= config.num_queries or not 1 <= ns <= nq:
        raise PredictorError(f"need 1 <= num_select <= num_queries <= {config.num_queries}; got {ns}, {nq}")


__all__ = ["run_batches", "instances_of", "refine_crops", "query_counts", "check_query_counts"]
