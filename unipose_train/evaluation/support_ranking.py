"""`unipose-rank-supports`: find which of your labelled examples makes the best 1-shot visual prompt.

    unipose-rank-supports --labels clip_keypoints_coco.json --images ../fly_clip --id-range 1000 1200 \\
        --candidates 9 --eval-images 25 --out support/
    unipose predict new_frames/ --support-image support/support.png --support-keypoints support/support.json

A visual prompt is a single example, and the example matters: with the bundled fly model, nine
supports taken from the training frames scored between 0.78 and 0.92 PCK@0.2 on the other
training frames, and they kept that order on held-out frames. This tool picks candidate
instances from a labelled source (COCO json, DeepLabCut project or SLEAP file), prompts the
model with each one in turn, scores every candidate with PCK@0.2 on the other labelled images,
and writes the best one as a support image and COCO keypoints file (for a labelled video frame,
only the keypoints file, naming the frame as VIDEO#frame=N). Those work with
`unipose predict --support-image/--support-keypoints` and the ROS visual prompt.
Run it on images you train on or keep for validation, never on your test images.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..unikpt.format import Instance, UniKPT
from .oks import box_iou_matrix
from .report import evaluate_dataset

__all__ = ["Candidate", "pick_candidates", "pick_eval_images", "support_prompt", "rank_supports",
           "write_support", "found_and_extra", "main"]


@dataclass
class Candidate:
    image_id: int
    instance: int        # index among the image's annotated instances of this category (file order)
    annotation: Instance

    @property
    def label(self) -> str:
        return f"{self.image_id}:{self.instance}"


def found_and_extra(dets: Sequence[dict], gts: Sequence[Instance], iou_thr: float = 0.5) -> Tuple[int, int]:
    """(ground-truth instances found, detections matching none) in one image: each detection,
    best score first, takes the free ground truth it overlaps most if IoU >= iou_thr."""
    dets = sorted(dets, key=lambda d: -float(d["score"]))
    if not dets:
        return 0, 0
    iou = box_iou_matrix([d["bbox"] for d in dets], [g.bbox for g in gts], np.zeros(len(gts)))
    free, found, extra = set(range(len(gts))), 0, 0
    for i in range(len(dets)):
        best = max(free, key=lambda g: iou[i, g], default=None)
        if best is not None and iou[i, best] >= iou_thr:
            free.discard(best)
            found += 1
        else:
            extra += 1
    return found, extra


def _annotated(gt: UniKPT, category_id: int) -> dict[int, List[Instance]]:
    by_image: dict[int, List[Instance]] = {}
    for inst in gt.instances:
        if inst.category_id == category_id and not inst.iscrowd and inst.num_keypoints > 0:
            by_image.setdefault(inst.image_id, []).append(inst)
    return by_image


def pick_candidates(gt: UniKPT, category_id: int, count: int) -> List[Candidate]:
    """`count` instances spread evenly over the images (in id order) among those with the most
    labelled keypoints: a support shows the model every keypoint it should find."""
    by_image = _annotated(gt, category_id)
    pool = [Candidate(image_id, i, inst) for image_id in sorted(by_image)
            for i, inst in enumerate(by_image[image_id])]
    if not pool:
        raise ValueError(f"{gt.dataset}: no instance with labelled keypoints to use as a support")
    most = max(c.annotation.num_keypoints for c in pool)
    pool = [c for c in pool if c.annotation.num_keypoints == most]
    picks = np.linspace(0, len(pool) - 1, num=min(count, len(pool))).round().astype(int)
    return [pool[i] for i in dict.fromkeys(picks.tolist())]


def pick_eval_images(gt: UniKPT, category_id: int, count: int, exclude: Sequence[int] = ()) -> List[int]:
    """`count` image ids spread evenly over the labelled images of the category, minus `exclude`."""
    ids = [i for i in sorted(_annotated(gt, category_id)) if i not in set(exclude)]
    if not ids:
        raise ValueError(f"{gt.dataset}: no labelled image left to score the supports on "
                         "(every labelled image holds a candidate support)")
    picks = np.linspace(0, len(ids) - 1, num=min(count, len(ids))).round().astype(int)
    return [ids[i] for i in dict.fromkeys(picks.tolist())]


def support_prompt(gt: UniKPT, candidate: Candidate):
    """The candidate as a VisualPrompt: its image, keypoints, box, category names and skeleton."""
    from unipose_model.visual_prompt import VisualPrompt
    from ..dataset import read_rgb

    image = next(im for im in gt.images if im.id == candidate.image_id)
    cat = next(c for c in gt.categories if c.id == candidate.annotation.category_id)
    x, y, w, h = candidate.annotation.bbox
    return VisualPrompt(read_rgb(gt.image_path(image)), candidate.annotation.keypoints[:, :3].copy(),
                        cat.name, list(cat.keypoints), [tuple(link) for link in cat.skeleton],
                        (x, y, x + w, y + h) if w > 0 and h > 0 else None)


def _subset(gt: UniKPT, image_ids: Sequence[int], category_id: int) -> UniKPT:
    keep = set(image_ids)
    sub = copy.copy(gt)
    sub.images = [im for im in gt.images if im.id in keep]
    sub.instances = [i for i in gt.instances if i.image_id in keep and i.category_id == category_id]
    sub.categories = [c for c in gt.categories if c.id == category_id]
    return sub


def rank_supports(predictor, gt: UniKPT, candidates: Sequence[Candidate], eval_images: Sequence[int], *,
                  pck_thr: float = 0.2, progress: bool = True) -> List[dict]:
    """Score each candidate as the 1-shot prompt on `eval_images` (its own image left out).
    Rows sorted best first: PCK, instances found (IoU >= 0.5), detections matching nothing."""
    from ..dataset import read_rgb

    images = {im.id: im for im in gt.images}
    category_id = candidates[0].annotation.category_id
    frames = {}  # each evaluation image is read once, not once per candidate
    rows = []
    with tqdm(total=len(candidates) * len(eval_images), desc="supports", unit="img",
              disable=not progress) as bar:
        for cand in candidates:
            prompt = support_prompt(gt, cand)
            ids = [i for i in eval_images if i != cand.image_id]
            sub = _subset(gt, ids, category_id)
            truth = _annotated(sub, category_id)
            results, found, extra = [], 0, 0
            for image_id in ids:
                if image_id not in frames:
                    frames[image_id] = read_rgb(gt.image_path(images[image_id]))
                dets = [inst.to_coco(image_id, category_id)
                        for inst in predictor.predict(frames[image_id], visual_prompt=prompt, color="rgb")]
                f, e = found_and_extra(dets, truth.get(image_id, []))
                results += dets
                found, extra = found + f, extra + e
                bar.update()
            score = evaluate_dataset(sub, results, pck_thr=pck_thr, metric="pck")
            rows.append({"support": cand.label, "image_id": cand.image_id, "instance": cand.instance,
                         "file_name": images[cand.image_id].file_name, f"PCK@{pck_thr:g}": score[f"PCK@{pck_thr:g}"],
                         "found": found / max(1, len(sub.instances)), "extra_per_image": extra / max(1, len(ids)),
                         "images": len(ids)})
            bar.set_postfix(best=f"{max(r[f'PCK@{pck_thr:g}'] for r in rows):.3f}")
    key = f"PCK@{pck_thr:g}"
    return sorted(rows, key=lambda r: (-r[key], r["extra_per_image"]))


def write_support(prompt, out_dir: Path, name: str = "support", image_ref: Optional[str] = None
                  ) -> Tuple[str, Path]:
    """The prompt as files: `name`.png and `name`.json (COCO keypoints: one image, one annotation,
    a category with the keypoint names and a 1-based skeleton), readable by load_visual_prompt.
    With `image_ref` (a 'video.mp4#frame=N' reference to the support's own frame) no picture is
    written: the json names that frame, and the reference is the support image to pass."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    ann_path = out_dir / f"{name}.json"
    image_path = image_ref or str(out_dir / f"{name}.png")
    if image_ref is None and not cv2.imwrite(image_path, cv2.cvtColor(prompt.image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {image_path}")
    h, w = prompt.image.shape[:2]
    kpts = np.asarray(prompt.keypoints, dtype=np.float64)
    ann = {"id": 1, "image_id": 1, "category_id": 1, "keypoints": [round(float(v), 3) for v in kpts.ravel()],
           "num_keypoints": int((kpts[:, 2] > 0).sum()), "iscrowd": 0}
    if prompt.box is not None:
        x0, y0, x1, y1 = map(float, prompt.box)
        ann["bbox"], ann["area"] = [x0, y0, x1 - x0, y1 - y0], (x1 - x0) * (y1 - y0)
    doc = {"images": [{"id": 1, "file_name": Path(image_path).name, "width": w, "height": h}],
           "annotations": [ann],
           "categories": [{"id": 1, "name": prompt.class_name, "keypoints": list(prompt.keypoint_names),
                           "skeleton": [[a + 1, b + 1] for a, b in prompt.skeleton]}]}
    ann_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return image_path, ann_path


def _parse_support(text: str) -> Tuple[int, int]:
    image_id, _, instance = text.partition(":")
    try:
        return int(image_id), int(instance or 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IMAGE_ID or IMAGE_ID:INSTANCE, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unipose-rank-supports", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", required=True, help="COCO keypoints json, DeepLabCut project (folder or config.yaml) "
                                                   "or SLEAP .slp")
    p.add_argument("--images", help="image folder (COCO files whose file_name is relative)")
    p.add_argument("--category", help="class to rank supports for (default: the first with labels); names the "
                                      "class of DeepLabCut/SLEAP labels")
    p.add_argument("--id-range", nargs=2, type=int, metavar=("FIRST", "STOP"),
                   help="use only images with FIRST <= id < STOP (e.g. the training frames of a video)")
    p.add_argument("--candidates", type=int, default=8, help="how many candidate supports to try (default 8)")
    p.add_argument("--support", type=_parse_support, nargs="+", metavar="IMAGE_ID[:INSTANCE]",
                   help="try these instances instead of picking candidates")
    p.add_argument("--eval-images", type=int, default=20, help="labelled images each candidate is scored on "
                                                               "(default 20)")
    p.add_argument("--checkpoint", help="model file (default: the bundled fly model or the installed official one)")
    p.add_argument("--model", default=None, help="model configuration, for checkpoints that do not name one")
    p.add_argument("--refine", type=float, default=None, help="crop refinement factor (0: off; default: the model "
                                                              "file's)")
    p.add_argument("--no-heatmap-refiner", action="store_true",
                   help="score the supports with UniPose's own keypoints (skip the model file's heatmap refiner, "
                        "which places keypoints itself and so hides much of what a support changes)")
    p.add_argument("--pck-thr", type=float, default=0.2)
    p.add_argument("--out", required=True, help="folder for ranking.json and the best support (support.json, "
                                                "and support.png unless it is a video frame)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.candidates < 1 or args.eval_images < 1:
        parser.error("--candidates and --eval-images must be at least 1")
    from ..dataset import SourceConfig, load_source
    from ..unikpt.format import UniKPTError

    try:
        gt = load_source(SourceConfig(ann=args.labels, images=args.images, category=args.category,
                                      id_range=list(args.id_range) if args.id_range else None))
    except (UniKPTError, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"unipose-rank-supports: cannot read the labels {args.labels}: {e}", file=sys.stderr)
        return 1
    cats = [c for c in gt.categories if _annotated(gt, c.id)]
    if args.category:
        cats = [c for c in cats if c.name.lower() == args.category.lower()] or cats[:0]
    if not cats:
        known = ", ".join(c.name for c in gt.categories) or "none"
        print(f"unipose-rank-supports: {args.labels}: no labelled instance"
              + (f" of class {args.category!r} (classes: {known})" if args.category else ""), file=sys.stderr)
        return 1
    category = cats[0]
    try:
        if args.support:
            by_image = _annotated(gt, category.id)
            candidates = []
            for image_id, index in args.support:
                insts = by_image.get(image_id, [])
                if not 0 <= index < len(insts):
                    raise ValueError(f"image {image_id} has {len(insts)} labelled {category.name} instance(s); "
                                     f"instance {index} requested")
                candidates.append(Candidate(image_id, index, insts[index]))
        else:
            candidates = pick_candidates(gt, category.id, args.candidates)
        eval_images = pick_eval_images(gt, category.id, args.eval_images, exclude=[c.image_id for c in candidates])
    except ValueError as e:
        print(f"unipose-rank-supports: {e}", file=sys.stderr)
        return 1

    import torch
    from unipose_model.predictor import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = {"refine": "auto" if args.refine is None else args.refine,
              "heatmap_refiner": None if args.no_heatmap_refiner else "auto"}
    if args.model:
        kwargs["model"] = args.model
    try:
        predictor = Predictor(checkpoint=args.checkpoint, device="cpu", **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"unipose-rank-supports: cannot load the model: {e}", file=sys.stderr)
        return 2
    print(f"{len(candidates)} candidate {category.name} supports, each scored on {len(eval_images)} labelled images "
          f"({gt.dataset})")
    from unipose_model.visual_prompt import VisualPromptError
    try:
        rows = rank_supports(predictor, gt, candidates, eval_images, pck_thr=args.pck_thr)
    except VisualPromptError as e:  # e.g. a model without a visual prompt encoder
        print(f"\nunipose-rank-supports: {e}", file=sys.stderr)
        return 2
    key = f"PCK@{args.pck_thr:g}"
    print(f"\n{'support':>14}  {key:>8}  {'found':>6}  {'extra/img':>9}  image")
    for r in rows:
        print(f"{r['support']:>14}  {r[key]:8.3f}  {r['found']:6.3f}  {r['extra_per_image']:9.2f}  {r['file_name']}")
    out = Path(args.out)
    best = next(c for c in candidates if c.label == rows[0]["support"])
    best_file = str(gt.image_path(next(im for im in gt.images if im.id == best.image_id)))
    frame_ref = best_file if "#frame=" in best_file else None  # a video frame: name it, copy nothing
    image_path, ann_path = write_support(support_prompt(gt, best), out, image_ref=frame_ref)
    (out / "ranking.json").write_text(json.dumps({
        "labels": str(args.labels), "category": category.name, "checkpoint": str(predictor.checkpoint),
        "refine": predictor.refine, "eval_images": eval_images, "support_image": str(image_path),
        "support_keypoints": str(ann_path), "ranking": rows}, indent=1) + "\n", encoding="utf-8")
    print(f"\nbest support: {rows[0]['support']} ({rows[0]['file_name']}), {key} {rows[0][key]:.3f}\n"
          f"  unipose predict IMAGES --support-image '{image_path}' --support-keypoints {ann_path}\n"
          f"ranking: {out / 'ranking.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
