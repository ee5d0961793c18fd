"""The MP-100 category-agnostic protocol: 1-shot visual prompts on unseen categories, PCK@0.2.

    python -m unipose_train.evaluation.mp100 --split mp100_split1_test.json --images-root MP100/images \
        --checkpoint model.pth --model unipose_tiny_visual --out eval_mp100/

For every test category, each annotation in turn is the support (the 1-shot prompt) for the
other annotations of that category (the queries); the five MP-100 splits have disjoint
train/test categories, so the model has never seen them. Settings (paper Tables 2, 3, 12):
* `gt_box`: the query image is cropped to the query's ground-truth box and the best detection is
  scored (the classic CAPE protocol);
* `no_box`: the whole query image; every ground-truth instance of the category in that image is
  matched one-to-one (Hungarian, on mean keypoint distance) to the detections.
PCK@thr: a visible keypoint is correct when its distance to the ground truth is below
thr * max(w, h) of the ground-truth box. Images are split into single- and multi-object subsets
(by the number of instances of the category in the query image).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from .pck import correct_keypoints


@dataclass
class Episode:
    category: str
    support_ann: dict
    query_ann: dict


def load_split(path) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: not an MP-100 split file (no '{key}')")
    return data


def episodes(split: dict) -> List[Episode]:
    """All (support, query) pairs of annotations of the same category, in file order."""
    by_cat = defaultdict(list)
    for ann in split["annotations"]:
        if sum(v > 0 for v in ann["keypoints"][2::3]) > 0:
            by_cat[ann["category_id"]].append(ann)
    names = {c["id"]: c["name"] for c in split["categories"]}
    return [Episode(names[cid], s, q) for cid, anns in by_cat.items() for s in anns for q in anns if s is not q]


def pck(pred_xy: np.ndarray, gt_kpts: np.ndarray, bbox, thr: float) -> tuple:
    """(correct, counted) over the visible ground-truth keypoints (evaluation/pck.py's measure)."""
    return int(correct_keypoints(pred_xy, gt_kpts, bbox[2:4], thr).sum()), int((gt_kpts[:, 2] > 0).sum())


class MP100Evaluator:
    def __init__(self, model, images_root, *, short_side=800, max_size=1333, thr=0.2, box_threshold=0.0):
        self.model, self.root, self.thr = model, Path(images_root), thr
        self.short_side, self.max_size, self.box_threshold = short_side, max_size, box_threshold
        self._images: Dict[str, np.ndarray] = {}

    def image(self, file_name: str) -> np.ndarray:
        if file_name not in self._images:
            path = self.root / file_name
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise FileNotFoundError(f"MP-100 image not found or unreadable: {path} (check --images-root)")
            # episodes alternate between a category's few images: keep the last few, not all
            self._images[file_name] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            while len(self._images) > 4:
                self._images.pop(next(iter(self._images)))
        return self._images[file_name]

    def support(self, split_images, ann):
        from unipose_model.visual_prompt import VisualPrompt
        img = self.image(split_images[ann["image_id"]]["file_name"])
        x, y, w, h = ann["bbox"]
        return VisualPrompt(img, np.asarray(ann["keypoints"], np.float32).reshape(-1, 3),
                            box=(x, y, x + w, y + h))

    def detect(self, image, prompt):
        from unipose_model.visual_prompt import detect_with_visual_prompt
        return detect_with_visual_prompt(self.model, image, prompt, short_side=self.short_side,
                                         max_size=self.max_size, box_threshold=self.box_threshold)

    def run(self, split: dict) -> dict:
        images = {im["id"]: im for im in split["images"]}
        same_image = defaultdict(list)  # all instances of a category in an image
        for ann in split["annotations"]:
            same_image[(ann["image_id"], ann["category_id"])].append(ann)
        stats = {s: defaultdict(lambda: [0, 0]) for s in ("gt_box", "no_box")}
        subsets = {s: defaultdict(lambda: [0, 0]) for s in ("gt_box", "no_box")}
        for ep in episodes(split):
            prompt = self.support(images, ep.support_ann)
            q = ep.query_ann
            query = self.image(images[q["image_id"]]["file_name"])
            gt = np.asarray(q["keypoints"], np.float64).reshape(-1, 3)
            others = same_image[(q["image_id"], q["category_id"])]
            subset = "multi" if len(others) > 1 else "single"
            # gt_box: crop to the query box, take the best detection
            x, y, w, h = [int(round(v)) for v in q["bbox"]]
            crop = query[max(y, 0):max(y, 0) + max(h, 1), max(x, 0):max(x, 0) + max(w, 1)]
            det = self.detect(crop, prompt)
            pred = (det.keypoints[0] + [max(x, 0), max(y, 0)]) if len(det) else np.full((len(gt), 2), -1e9)
            self._add(stats["gt_box"], subsets["gt_box"], ep.category, subset, pck(pred, gt, q["bbox"], self.thr))
            # no_box: whole image, match this instance among the detections
            det = self.detect(query, prompt)
            pred = self._match(det, others, q) if len(det) else None
            pred = np.full((len(gt), 2), -1e9) if pred is None else pred
            self._add(stats["no_box"], subsets["no_box"], ep.category, subset, pck(pred, gt, q["bbox"], self.thr))
        return {setting: self._summary(stats[setting], subsets[setting]) for setting in stats}

    @staticmethod
    def _match(det, instances, query):
        """One-to-one matching of the image's instances to detections; the query's match or None."""
        cost = np.zeros((len(det), len(instances)))
        for j, ann in enumerate(instances):
            gt = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
            visible = gt[:, 2] > 0
            cost[:, j] = np.linalg.norm(det.keypoints[:, visible] - gt[None, visible, :2], axis=2).mean(1)
        rows, cols = linear_sum_assignment(cost)
        target = next(j for j, ann in enumerate(instances) if ann is query)
        hit = np.flatnonzero(cols == target)
        return det.keypoints[rows[hit[0]]] if len(hit) else None

    @staticmethod
    def _add(per_cat, per_subset, category, subset, result):
        for table, key in ((per_cat, category), (per_subset, subset)):
            table[key][0] += result[0]
            table[key][1] += result[1]

    @staticmethod
    def _summary(per_cat, per_subset) -> dict:
        cats = {c: (ok / n if n else float("nan")) for c, (ok, n) in sorted(per_cat.items())}
        valid = [v for v in cats.values() if v == v]
        return {"mean_pck": float(np.mean(valid)) if valid else float("nan"), "per_category": cats,
                "subsets": {s: (ok / n if n else float("nan")) for s, (ok, n) in per_subset.items()}}


def markdown(results: dict, thr: float) -> str:
    lines = [f"| setting | mean PCK@{thr} | single-object | multi-object | categories |", "|---|---|---|---|---|"]
    for setting, r in results.items():
        sub = r["subsets"]
        fmt = lambda v: "-" if v is None or v != v else f"{v:.3f}"
        lines.append(f"| {setting} | {fmt(r['mean_pck'])} | {fmt(sub.get('single'))} | {fmt(sub.get('multi'))} | "
                     f"{len(r['per_category'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="unipose-mp100", description=__doc__.split("\n")[0])
    p.add_argument("--split", nargs="+", required=True, help="MP-100 split test file(s) (COCO json)")
    p.add_argument("--images-root", required=True)
    p.add_argument("--checkpoint", required=True, help="checkpoint with a visual prompt encoder ('reference' = test weights)")
    p.add_argument("--model", default="unipose_tiny_visual")
    p.add_argument("--device", default="cpu")
    p.add_argument("--short-side", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--thr", type=float, default=0.2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import torch
    from unipose_model import build_model, load_official_checkpoint
    from unipose_model.checkpoint import CheckpointError, fill_reference_weights
    model = build_model(args.model)
    try:
        if args.checkpoint == "reference":
            fill_reference_weights(model)
        else:
            load_official_checkpoint(model, args.checkpoint)
    except CheckpointError as e:
        print(f"unipose-mp100: {e}", file=sys.stderr)
        return 2
    model = model.to(torch.device(args.device)).eval()
    evaluator = MP100Evaluator(model, args.images_root, short_side=args.short_side, max_size=args.max_size,
                               thr=args.thr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    for split_path in args.split:
        try:
            report[Path(split_path).stem] = evaluator.run(load_split(split_path))
        except (FileNotFoundError, ValueError) as e:
            print(f"unipose-mp100: {e}", file=sys.stderr)
            return 1
    (out / "mp100.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    text = "\n\n".join(f"### {name}\n\n{markdown(r, args.thr)}" for name, r in report.items())
    (out / "mp100.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
