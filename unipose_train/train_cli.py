"""`unipose-train CONFIG [key=value ...] [--resume PATH]`.

One process:        unipose-train fly_tiny run.out_dir=outputs/fly   (a shipped config by name, or a file)
Several GPUs:       torchrun --nproc_per_node 4 -m unipose_train.train_cli CONFIG ...
Resume after a stop: the same command plus --resume OUT_DIR (its newest checkpoint) or a file.
Your own labels:    unipose-train own_labels --data PROJECT_OR_FILE --category mouse
                    (a DeepLabCut project folder or config.yaml, a SLEAP .slp, a COCO/UniKPT json;
                    --holdout 0.2 keeps a fixed 20 % of the images for validation)
Data root:          the shipped fly configs read $UNIPOSE_DATA_ROOT/data/...: --data-root DIR (or the
                    UNIPOSE_DATA_ROOT variable; default: ../shared beside a checkout)
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
    parser.add_argument("config", help="YAML training config: a file, or the name of a shipped one "
                                       "(unipose_train/configs/: own_labels, fly_tiny, fly_demo, ...)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.lr=2e-4 run.out_dir=out")
    parser.add_argument("--resume", help="checkpoint file, or a run folder (its newest checkpoint)")
    parser.add_argument("--data-root", help="folder that $UNIPOSE_DATA_ROOT in config paths stands for "
                                            "(default: the UNIPOSE_DATA_ROOT variable, else ../shared beside a checkout)")
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

    from .config import load_config
    from .config_loader import check_source_paths
    from .trainer import Trainer
    try:
        cfg = load_config(args.config, args.overrides, data=_data_section(args), data_root=args.data_root)
        if args.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        check_source_paths(cfg.data.train, args.data_root, "data.train")
        check_source_paths(cfg.data.val, args.data_root, "data.val")
    except (ValueError, OSError) as e:
        print(f"unipose-train: {e}", file=sys.stderr)
        return 2
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
