"""The Predictor's result type: one detected object with its box and keypoints."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Instance:
    """One detected object.

    ``box`` is (x0, y0, x1, y1) and ``keypoints`` is a (K, 3) array of x, y, score, all in pixels
    of the original image.  The official model has no per-keypoint confidence (its visibility
    output is the constant sigmoid(1)), so every keypoint's score is the instance score.
    """

    label: str
    class_index: int
    score: float
    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...] = ()  # 0-based index pairs into keypoint_names
    track_id: int | None = None  # identity across frames (tracking.py); None: not tracked, -1: not yet

    def to_coco(self, image_id: int, category_id: int | None = None) -> dict:
        """A COCO keypoint-results entry (bbox x, y, w, h; keypoints [x, y, score] * K), with
        ``track_id`` when the instance was tracked."""
        x0, y0, x1, y1 = self.box
        entry = {
            "image_id": int(image_id),
            "category_id": int(self.class_index + 1 if category_id is None else category_id),
            "bbox": [round(float(x0), 2), round(float(y0), 2),
                     round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            "score": round(float(self.score), 5),
            "keypoints": [round(float(v), 2) if i % 3 != 2 else round(float(v), 5)
                          for i, v in enumerate(self.keypoints.reshape(-1))],
        }
        if self.track_id is not None:
            entry["track_id"] = int(self.track_id)
        return entry
