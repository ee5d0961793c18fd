"""`unipose-train CONFIG [key=value ...] [--resume PATH]`.

One process:        unipose-train unipose_train/configs/fly_tiny.yaml run.out_dir=outputs/fly
Several GPUs:       torchrun --nproc_per_node 4 -m unipose_train.train_cli CONFIG ...
Resume after a stop: the same command plus --resume OUT_DIR (its newest checkpoint) or a file.
Your own labels:    unipose-train unipose_train/configs/own_labels.yaml --data PROJECT_OR_FILE --category mouse
                    (a DeepLabCut project folder or config.yaml, a SLEAP .slp, a COCO/UniKPT json;
                    --holdout 0.2 keeps a fixed 20 % of the images for validation)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="unipose-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML training config (see unipose_train/configs/)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.lr=2e-4 run.out_dir=out")
    parser.add_argument("--resume", help="checkpoint file, or a run folder (its newest checkpoint)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--data", help="labels to train on (replaces data.train/val): DeepLabCut project, "
                                       ".slp, COCO or UniKPT json")
    parser.add_argument("--images", help="image folder for --data (COCO json whose paths are relative elsewhere)")
    parser.add_argument("--category", help="class name of the --data objects (DeepLabCut/SLEAP name none)")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="fraction of the --data images held out for validation (default 0.2; 0 = none)")
    args = parser.parse_intermixed_args(argv)  # flags may come before or after the overrides
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # training never downloads; CLIP comes from the cache
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from .trainer import Trainer, load_config
    try:
        cfg = load_config(args.config, args.overrides, data=_data_section(args))
    except (ValueError, OSError) as e:
        print(f"unipose-train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    try:  # reads every label file: a broken one is named here, before any training starts
        trainer = Trainer(cfg, resume=args.resume)
    except (ValueError, OSError) as e:
        print(f"unipose-train: {e}", file=sys.stderr)
        return 2
    result = trainer.fit()
    if trainer.is_main:
        print(json.dumps(result))
    if trainer.distributed:
        import torch.distributed as dist
        dist.destroy_process_group()
    return 0


def _data_section(args) -> dict | None:
    """--data PATH as train/val sources: one file, split by a fixed shuffle of its images."""
    if not args.data:
        return None
    if not 0.0 <= args.holdout < 1.0:
        raise SystemExit("unipose-train: --holdout must be in [0, 1)")
    path = os.path.abspath(os.path.expanduser(args.data))
    src = {"ann": path, "images": os.path.abspath(args.images) if args.images else None,
           "category": args.category}
    if args.holdout == 0:
        return {"data": {"train": [src], "val": []}}
    cut = 1.0 - args.holdout
    return {"data": {"train": [{**src, "split": [0.0, cut]}], "val": [{**src, "split": [cut, 1.0]}]}}


if __name__ == "__main__":
    sys.exit(main())
