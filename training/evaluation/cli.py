"""`unipose-eval` core: score COCO-format predictions against UniKPT ground truth.

    unipose-eval --gt unikpt/coco_val.json unikpt/ap10k_test.json \
                 --pred preds/coco_val.json preds/ap10k_test.json --out eval/ [--worst 8]

Predictions are COCO results: [{"image_id", "category_id", "keypoints": [x, y, score, ...],
"score", "bbox"?}] using the ground-truth file's ids. Writes eval/results.md, eval/results.json
and eval/worst/*.png, and prints the table. (Running a checkpoint to produce the predictions is
the trainer's part.)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..unikpt.format import UniKPTError, load
from .report import draw_cases, evaluate_dataset, worst_cases, write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unipose-eval", description=__doc__.split("\n")[0])
    p.add_argument("--gt", nargs="+", required=True, help="UniKPT ground-truth files")
    p.add_argument("--pred", nargs="+", required=True, help="COCO-results json per ground-truth file")
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
    if len(args.gt) != len(args.pred):
        print(f"unipose-eval: {len(args.gt)} --gt files but {len(args.pred)} --pred files", file=sys.stderr)
        return 2
    rows = []
    for gt_path, pred_path in zip(args.gt, args.pred):
        try:
            gt = load(gt_path)
            results = json.loads(Path(pred_path).read_text(encoding="utf-8"))
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


if __name__ == "__main__":
    sys.exit(main())
