"""`unipose-eval` core: score COCO-format predictions against UniKPT ground truth.

    unipose-eval --gt unikpt/coco_val.json unikpt/ap10k_test.json \
                 --pred preds/coco_val.json preds/ap10k_test.json --out eval/ [--worst 8]
    unipose-eval --gt unikpt/coco_val.json --checkpoint unipose_swint.pth --out eval/   # runs the model

Predictions are COCO results: [{"image_id", "category_id", "keypoints": [x, y, score, ...],
"score", "bbox"?}] using the ground-truth file's ids. With --checkpoint instead of --pred, the
model is run on every ground-truth image (prompted with the file's own categories and keypoint
names) and its predictions are written to eval/predictions/. Writes eval/results.md,
eval/results.json and eval/worst/*.png, and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..unikpt.format import UniKPTError, load
from .check_predictions import usable_predictions
from .report import draw_cases, evaluate_dataset, worst_cases, write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unipose-eval", description=__doc__.split("\n")[0])
    p.add_argument("--gt", nargs="+", required=True, help="UniKPT ground-truth files")
    p.add_argument("--pred", nargs="+", help="COCO-results json per ground-truth file")
    p.add_argument("--checkpoint", help="run this checkpoint ('reference' = test weights) instead of --pred")
    p.add_argument("--model", default="unipose_swint", help="model configuration for --checkpoint")
    p.add_argument("--text-encoder", default="clip", help="clip, hash, or a precomputed feature file")
    p.add_argument("--device", default="auto")
    p.add_argument("--short-side", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--box-threshold", type=float, default=0.1)
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images of each file")
    p.add_argument("--out", required=True, help="folder for results.md/json and worst-case overlays")
    p.add_argument("--metric", choices=["auto", "oks", "pck"], default="auto",
                   help="auto: OKS AP where the dataset has sigmas, PCK otherwise")
    p.add_argument("--pck-thr", type=float, default=0.2)
    p.add_argument("--backend", choices=["numpy", "xtcocotools", "pycocotools"], default="numpy",
                   help="OKS AP implementation (numpy is this package's, equal to the COCO tools)")
    p.add_argument("--worst", type=int, default=8, help="overlay images of the N worst instances per dataset")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.checkpoint:
        return _run_checkpoint(args)
    if not args.pred:
        print("unipose-eval: give --pred files (one per --gt) or --checkpoint to run a model", file=sys.stderr)
        return 2
    return _evaluate(args, args.gt, args.pred)


def _run_checkpoint(args) -> int:
    from unipose_model.predictor import Predictor
    from .predict import predict_dataset, write_predictions
    try:
        predictor = Predictor(args.model, args.checkpoint, device=args.device, text_encoder=args.text_encoder,
                              box_threshold=args.box_threshold, short_side=args.short_side,
                              max_size=args.max_size)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"unipose-eval: cannot load the model: {e}", file=sys.stderr)
        return 2
    preds = []
    for gt_path in args.gt:
        try:
            gt = load(gt_path)
        except (UniKPTError, OSError, json.JSONDecodeError) as e:
            print(f"unipose-eval: {gt_path}: {e}", file=sys.stderr)
            return 1
        ids = [im.id for im in gt.images][:args.max_images] if args.max_images else None
        results = predict_dataset(predictor, gt, ids)
        preds.append(str(write_predictions(results, Path(args.out) / "predictions" / f"{Path(gt_path).stem}.json")))
    return _evaluate(args, args.gt, preds, restrict=bool(args.max_images))


def _evaluate(args, gt_paths, pred_paths, restrict: bool = False) -> int:
    if len(gt_paths) != len(pred_paths):
        print(f"unipose-eval: {len(gt_paths)} --gt files but {len(pred_paths)} --pred files", file=sys.stderr)
        return 2
    rows = []
    for gt_path, pred_path in zip(gt_paths, pred_paths):
        try:
            gt = load(gt_path)
            if restrict:  # only the images the model was run on
                gt.images = gt.images[:args.max_images]
                kept = {im.id for im in gt.images}
                gt.instances = [i for i in gt.instances if i.image_id in kept]
            results, problems = usable_predictions(gt, json.loads(Path(pred_path).read_text(encoding="utf-8")),
                                                   source=str(pred_path))
            _print_problems(problems)
            row = evaluate_dataset(gt, results, pck_thr=args.pck_thr, metric=args.metric, backend=args.backend)
        except (UniKPTError, OSError, json.JSONDecodeError, ValueError) as e:
            print(f"unipose-eval: {gt_path}: {e}", file=sys.stderr)
            return 1
        rows.append(row)
        if args.worst > 0:
            draw_cases(gt, worst_cases(gt, results, args.worst), Path(args.out) / "worst")
    md, _ = write_report(rows, args.out)
    print(md.read_text(encoding="utf-8"))
    return 0


def _print_problems(problems, most: int = 10) -> None:
    for line in problems[:most]:
        print(f"unipose-eval: {line}", file=sys.stderr)
    if len(problems) > most:
        print(f"unipose-eval: ... and {len(problems) - most} more left out", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
