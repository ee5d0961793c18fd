"""Training curves as PNG (OpenCV, no matplotlib dependency)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Sequence

import numpy as np


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
