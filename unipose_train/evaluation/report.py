"""Per-dataset result table (markdown + JSON, like the paper's Table 5 / Table 8) and overlays of
the worst-scored instances."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..unikpt.format import UniKPT
from ..unikpt.show import draw_keypoints, read_frame
from ..unikpt.stats import markdown_table
from .box_ap import evaluate_boxes
from .coco_eval import evaluate_keypoints, library_eval
from .oks import oks_matrix
from .pck import match_by_distance, normalized_errors, pck

__all__ = ["evaluate_dataset", "worst_cases", "draw_cases", "write_report", "TABLE_COLUMNS"]

TABLE_COLUMNS = ["dataset", "metric", "AP", "AP50", "AP75", "APM", "APL", "PCK@0.2",
                 "box AP", "box APM", "box APL", "images", "instances"]


def uses_oks(gt: UniKPT) -> bool:
    """OKS AP when every category has sigmas; PCK otherwise."""
    return bool(gt.categories) and all(c.sigmas is not None for c in gt.categories)


def evaluate_dataset(gt: UniKPT, results: Sequence[dict], *, pck_thr: float = 0.2, metric: str = "auto",
                     backend: str = "numpy") -> dict:
    """One table row: OKS AP stats or PCK, plus box AP when results carry boxes."""
    row: dict = {"dataset": gt.dataset, "images": len(gt.images), "instances": len(gt.instances)}
    oks = uses_oks(gt) if metric == "auto" else metric == "oks"
    if oks:
        if backend == "numpy":
            stats = evaluate_keypoints(gt, results)
        else:
            sigmas = {tuple(c.sigmas) for c in gt.categories}
            if len(sigmas) != 1:
                raise ValueError(f"{gt.dataset}: categories use different sigmas; the {backend} backend "
                                 "takes one vector, use --backend numpy")
            stats = library_eval(gt, results, "keypoints", sigmas=list(sigmas.pop()), backend=backend)
        row.update({"metric": "OKS AP", **{k: stats[k] for k in ("AP", "AP50", "AP75", "APM", "APL", "AR")}})
    else:
        row["metric"] = f"PCK@{pck_thr:g}"
    p = pck(gt, results, thr=pck_thr)
    row[f"PCK@{pck_thr:g}"] = p["PCK"]
    row["PCK_keypoints"] = p["PCK_keypoints"]
    row[f"PCK@{pck_thr:g} per keypoint"] = p["per_keypoint"]
    if any(r.get("bbox") for r in results):
        box = evaluate_boxes(gt, results)
        row.update({"box AP": box["AP"], "box APM": box["APM"], "box APL": box["APL"]})
    return row


def worst_cases(gt: UniKPT, results: Sequence[dict], n: int = 8) -> list[tuple]:
    """The `n` lowest-scored ground-truth instances: (instance, matched result or None, score),
    score = OKS with its best-matching prediction where the category has sigmas, else PCK@0.2."""
    cats = {c.id: c for c in gt.categories}
    scored = []
    for inst, r in match_by_distance(gt, results):
        cat = cats[inst.category_id]
        if r is None:
            scored.append((inst, None, 0.0))
            continue
        k = np.asarray(r["keypoints"], dtype=np.float64).reshape(1, -1, 3)
        if cat.sigmas is not None:
            s = float(oks_matrix(k, inst.keypoints[None], np.array([inst.area]), np.array([inst.bbox]),
                                 np.array(cat.sigmas))[0, 0])
        else:
            s = float((normalized_errors(inst, k[0]) < 0.2).mean())
        scored.append((inst, r, s))
    scored.sort(key=lambda t: t[2])
    return scored[:n]


def draw_cases(gt: UniKPT, cases: Sequence[tuple], out_dir: str | Path, size: int = 384) -> list[Path]:
    """One PNG per case: ground truth in green, prediction in red, over the instance's crop."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = gt.image_index()
    cats = {c.id: c for c in gt.categories}
    paths = []
    for rank, (inst, r, score) in enumerate(cases):
        img = read_frame(gt.image_path(images[inst.image_id]))
        x, y, w, h = inst.bbox
        side = max(w, h) * 1.4 + 8
        x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
        scale = size / side
        if img is None:
            canvas = np.full((size, size, 3), 64, np.uint8)
        else:
            m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float32)
            canvas = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA, borderValue=(64, 64, 64))
        skeleton = cats[inst.category_id].skeleton
        draw_keypoints(canvas, inst.keypoints, skeleton, scale=scale, offset=(x0, y0), color=(0, 200, 0))
        if r is not None:
            k = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3).copy()
            k[:, 2] = np.where(inst.keypoints[:, 2] > 0, 2, 0)  # draw the points that are scored
            draw_keypoints(canvas, k, skeleton, scale=scale, offset=(x0, y0), color=(0, 0, 255))
        label = f"{cats[inst.category_id].name} #{inst.id} score {score:.3f}" + ("" if r else " (missed)")
        cv2.rectangle(canvas, (0, 0), (size, 20), (0, 0, 0), -1)
        cv2.putText(canvas, label[:50], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        path = out_dir / f"{gt.dataset}_worst_{rank:02d}_ann{inst.id}.png"
        cv2.imwrite(str(path), canvas)
        paths.append(path)
    return paths


def _per_keypoint_tables(rows: Sequence[dict]) -> str:
    """One table per dataset: each keypoint's PCK (pooled over the dataset's categories)."""
    parts = []
    for r in rows:
        for key, per in r.items():
            if key.endswith(" per keypoint") and per:
                table = [{"keypoint": k, "PCK": f"{100 * v:.1f}"} for k, v in per.items()]
                parts.append(f"\n## {r.get('dataset', '')}: {key}\n\n" + markdown_table(table, ["keypoint", "PCK"]) + "\n")
    return "".join(parts)


def write_report(rows: Sequence[dict], out_dir: str | Path, title: str = "UniPose evaluation") -> tuple[Path, Path]:
    """results.md (table) and results.json (rows as given)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table_rows = [{c: (r.get(c) if r.get(c) is not None else "-") for c in TABLE_COLUMNS} for r in rows]
    for r in table_rows:
        for c in TABLE_COLUMNS[2:11]:
            if isinstance(r[c], float):
                r[c] = f"{100 * r[c]:.1f}" if r[c] >= 0 else "-"
    md = out_dir / "results.md"
    md.write_text(f"# {title}\n\nScores in percent. OKS AP uses each dataset's sigmas (COCO protocol); "
                  "PCK is box-normalised (max(w, h) of the ground-truth box).\n\n"
                  + markdown_table(table_rows, TABLE_COLUMNS) + "\n" + _per_keypoint_tables(rows), encoding="utf-8")
    js = out_dir / "results.json"
    js.write_text(json.dumps(list(rows), indent=1), encoding="utf-8")
    return md, js
