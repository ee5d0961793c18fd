"""Run the exported detector with onnxruntime.

The graph has a static image size (see export/onnx_export.py), so one ONNX file is exported per
input size on first use and kept in a cache directory, named by the weights hash: the same
weights and size never export twice, across processes too. Prompt sizes are dynamic.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from . import BackendError


def default_cache_dir() -> Path:
    return Path(os.environ.get("UNIPOSE_CACHE", "~/.cache/unipose")).expanduser() / "onnx"


class OnnxRuntimeBackend:
    """model: the UniPose to export (CPU, float32; its weights are hashed once).

    providers: onnxruntime execution providers (default: CPU). threads: intra-op threads
    (default: onnxruntime's choice). cache_dir: where exported graphs live.
    """

    name = "onnxruntime"

    def __init__(self, model: nn.Module, *, cache_dir: str | Path | None = None,
                 providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                 opset: Optional[int] = None, force_rebuild: bool = False):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise BackendError(f"the onnxruntime backend needs the 'onnxruntime' package ({e}); "
                               f"pip install 'unipose_ros[export]'") from None
        from ..export.onnx_export import DEFAULT_OPSET, weights_hash

        self.model = model  # exported from a CPU float32 copy when needed
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.threads = threads
        self.opset = opset or DEFAULT_OPSET
        self.force_rebuild = force_rebuild  # re-export each input size once, ignoring the cache
        self.weights_sha256 = weights_hash(self.model)
        self._sessions: Dict[Tuple[int, int], object] = {}
        self._lock = threading.Lock()

    def onnx_path(self, image_size: Tuple[int, int]) -> Path:
        H, W = image_size
        return self.cache_dir / (f"{self.model.config.name}-{self.weights_sha256[:16]}-{H}x{W}"
                                 f"-opset{self.opset}.onnx")

    def session(self, image_size: Tuple[int, int]):
        """The onnxruntime session for one input size (exported on first use)."""
        import onnxruntime as ort

        key = (int(image_size[0]), int(image_size[1]))
        with self._lock:
            if key in self._sessions:
                return self._sessions[key]
            path = self.onnx_path(key)
            if self.force_rebuild or not path.is_file():
                from ..export.onnx_export import export_onnx

                tmp = path.with_suffix(f".tmp{os.getpid()}")
                export_onnx(self.model, tmp, key, opset=self.opset)
                os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
            options = ort.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = int(self.threads)
            sess = ort.InferenceSession(str(path), options, providers=self.providers)
            self._sessions[key] = sess
            return sess

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, instance_text: torch.Tensor,
                 keypoint_text: torch.Tensor) -> Dict[str, torch.Tensor]:
        cfg = self.model.config
        if not 0 < instance_text.shape[-2] < cfg.max_text_slots:
            raise BackendError(f"the exported graph takes 1..{cfg.max_text_slots - 1} classes, "
                               f"got {instance_text.shape[-2]}")
        if instance_text.dim() != 2 or keypoint_text.dim() != 2:
            raise BackendError("the exported graph takes one prompt for the batch: (N, 512) and (K, 512)")
        sess = self.session(tuple(images.shape[-2:]))
        inst = instance_text.detach().float().cpu().numpy()
        kpt = keypoint_text.detach().float().cpu().numpy()
        outs = []
        for b in range(images.shape[0]):  # the graph's batch is 1
            feed = {"image": images[b:b + 1].detach().float().cpu().numpy(),
                    "mask": masks[b:b + 1].detach().cpu().numpy().astype(np.bool_),
                    "instance_text": inst, "keypoint_text": kpt}
            outs.append(sess.run(None, feed))
        device = images.device
        logits, boxes, keypoints = (torch.from_numpy(np.concatenate(x, 0)).to(device) for x in zip(*outs))
        return {"pred_logits": logits, "pred_boxes": boxes, "pred_keypoints": keypoints}
