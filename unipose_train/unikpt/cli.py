"""`unipose-data`: convert datasets to UniKPT, merge them into an index, count, and draw them.

    unipose-data convert --dataset ap10k --src ap10k/annotations/ap10k-train-split1.json \
                         --images-root ap10k/data --out unikpt/ap10k_train.json [--strict]
    unipose-data merge unikpt/*_train.json --out unikpt/index.json [--cap onehand10k=2000] [--weight coco=0.5]
    unipose-data stats unikpt/*_train.json
    unipose-data show unikpt/ap10k_train.json --out sheets/ [--n 16]
    unipose-data datasets            # the converters and what --src each takes
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .converters import CONVERTERS, ConversionError, convert
from .format import UniKPTError, load, save
from .merge import DEFAULT_CAPS, build_index, save_index
from .show import contact_sheets
from .stats import markdown_table, stats_rows


def _pairs(values: list[str] | None, kind, flag: str) -> dict:
    out = {}
    for v in values or []:
        name, sep, num = v.partition("=")
        if not sep:
            raise SystemExit(f"unipose-data: {flag} expects NAME=VALUE, got {v!r}")
        try:
            out[name] = kind(num)
        except ValueError:
            raise SystemExit(f"unipose-data: {flag} {v!r}: {num!r} is not a number") from None
    return out


def cmd_convert(args) -> int:
    try:
        result = convert(args.dataset, args.src, images_root=args.images_root, strict=args.strict,
                         check_images=not args.no_image_check, category=args.category,
                         frames_dir=Path(args.out).parent / "frames" if args.dataset in
                         ("vinegar_fly", "desert_locust") and str(args.src).endswith(".h5") else None)
    except ConversionError as e:
        print(f"unipose-data convert: {e}", file=sys.stderr)
        return 1
    data = result.data
    out = Path(args.out)
    if data.images_root:  # keep the file movable together with its images
        data.images_root = Path(os.path.relpath(data.images_root, out.resolve().parent)).as_posix()
    save(data, out)
    for issue in result.issues[: args.show_issues]:
        print(f"  skipped: {issue}", file=sys.stderr)
    if len(result.issues) > args.show_issues:
        print(f"  ... {len(result.issues) - args.show_issues} more skipped annotations", file=sys.stderr)
    print(f"{result.summary()} -> {out}")
    return 0


def cmd_merge(args) -> int:
    caps = dict(DEFAULT_CAPS)
    caps.update(_pairs(args.cap, int, "--cap"))
    try:
        index = build_index(args.inputs, caps=caps, weights=_pairs(args.weight, float, "--weight"),
                            seed=args.seed, relative_to=Path(args.out).resolve().parent)
    except (UniKPTError, ValueError) as e:
        print(f"unipose-data merge: {e}", file=sys.stderr)
        return 1
    save_index(index, args.out)
    rows = [{"dataset": k, **v} for k, v in index["datasets"].items()]
    print(markdown_table(rows, ["dataset", "images", "selected", "instances", "cap", "weight"]))
    print(f"index -> {args.out}: {json.dumps(index['totals'])}")
    return 0


def cmd_stats(args) -> int:
    try:
        datasets = [load(f) for f in args.files]
    except UniKPTError as e:
        print(f"unipose-data stats: {e}", file=sys.stderr)
        return 1
    rows = stats_rows(datasets)
    print(json.dumps(rows, indent=1) if args.json else markdown_table(rows))
    return 0


def cmd_show(args) -> int:
    try:
        data = load(args.file)
    except UniKPTError as e:
        print(f"unipose-data show: {e}", file=sys.stderr)
        return 1
    paths = contact_sheets(data, args.out, n=args.n, columns=args.columns, seed=args.seed)
    for p in paths:
        print(p)
    return 0


def cmd_datasets(args) -> int:
    for c in CONVERTERS.values():
        print(f"{c.name:16s} {c.title:28s} {c.forms}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unipose-data", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert one dataset file/folder to a UniKPT file")
    c.add_argument("--dataset", required=True, choices=sorted(CONVERTERS))
    c.add_argument("--src", required=True, help="annotation file or folder in the dataset's own format")
    c.add_argument("--out", required=True, help="UniKPT json to write")
    c.add_argument("--images-root", help="folder image paths are relative to (default: the source's folder)")
    c.add_argument("--strict", action="store_true", help="fail on the first bad annotation report")
    c.add_argument("--no-image-check", action="store_true",
                   help="do not require the image files (annotation-only downloads such as MP-100 splits)")
    c.add_argument("--category", help="category name for lab formats (SLEAP, DeepLabCut), e.g. mouse")
    c.add_argument("--show-issues", type=int, default=20, help="how many skipped annotations to list")
    c.set_defaults(func=cmd_convert)

    m = sub.add_parser("merge", help="build the UniKPT index with per-dataset caps and weights")
    m.add_argument("inputs", nargs="+", help="UniKPT files")
    m.add_argument("--out", required=True)
    m.add_argument("--cap", action="append", metavar="NAME=N",
                   help=f"max images of a dataset (defaults: {DEFAULT_CAPS}; N<=0: no cap)")
    m.add_argument("--weight", action="append", metavar="NAME=W", help="sampling weight (default 1)")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=cmd_merge)

    s = sub.add_parser("stats", help="images, instances, keypoints, categories per dataset")
    s.add_argument("files", nargs="+")
    s.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    s.set_defaults(func=cmd_stats)

    v = sub.add_parser("show", help="draw annotations to PNG contact sheets")
    v.add_argument("file")
    v.add_argument("--out", required=True, help="folder for the PNGs")
    v.add_argument("--n", type=int, default=16)
    v.add_argument("--columns", type=int, default=4)
    v.add_argument("--seed", type=int, default=0)
    v.set_defaults(func=cmd_show)

    d = sub.add_parser("datasets", help="list the converters")
    d.set_defaults(func=cmd_datasets)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
