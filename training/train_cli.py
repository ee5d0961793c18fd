"""`unipose-train CONFIG [key=value ...] [--resume PATH]`.

One process:        unipose-train training/configs/fly_tiny.yaml run.out_dir=outputs/fly
Several GPUs:       torchrun --nproc_per_node 4 -m training.train_cli CONFIG ...
Resume after a stop: the same command plus --resume OUT_DIR (its newest checkpoint) or a file.
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
    parser.add_argument("config", help="YAML training config (see training/configs/)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.lr=2e-4 run.out_dir=out")
    parser.add_argument("--resume", help="checkpoint file, or a run folder (its newest checkpoint)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_intermixed_args(argv)  # flags may come before or after the overrides
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # training never downloads; CLIP comes from the cache
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from .trainer import Trainer, load_config
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, OSError) as e:
        print(f"unipose-train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    trainer = Trainer(cfg, resume=args.resume)
    result = trainer.fit()
    if trainer.is_main:
        print(json.dumps(result))
    if trainer.distributed:
        import torch.distributed as dist
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
