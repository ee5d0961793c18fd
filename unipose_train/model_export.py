"""What a trained checkpoint needs to run on its own: config, vocabulary, prompt features.

The trainer adds these entries to every checkpoint it writes (unipose_model/model_file.py has
the layout); `python -m unipose_train.model_export RUN_CHECKPOINT OUT.pth` turns a training
checkpoint into a small deployable file (no optimizer state, optionally float16 weights).

Only the inference-template texts are stored ("a photo of fly", "a photo of left wing"): those
are what the Predictor asks for. Negative classes are stored too, so a prompt naming them is
answered by the function the model was trained with.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from unipose_model.text_encoder import instance_prompt, keypoint_prompt
from unipose_model.vocabulary import category_key, normalize_name

from .augment import swap_left_right


def vocabulary_entries(sources) -> List[Dict[str, Any]]:
    """Keypoint-set entries (keypoint_sets.json layout) for the categories of the training data."""
    entries, seen = [], set()
    for ds in sources:
        for c in ds.categories:
            name = category_key(c.name)
            if name in seen:
                continue
            seen.add(name)
            # the training text verbatim where it is in text form (the official Animal Kingdom
            # "ankle left " keeps its space); names that repeat (CarFusion's two official "none")
            # are hidden, as in the predefined car set
            texts = [k if k.strip() == normalize_name(k) else normalize_name(k) for k in c.keypoints]
            names = [normalize_name(k) for k in texts]
            entry = {"id": re.sub(r"[^a-z0-9_]", "_", name), "description": f"trained on {ds.dataset}", "source": str(ds.dataset),
                     "keypoints": texts,
                     "skeleton": [list(map(int, p)) for p in c.skeleton],
                     "flip_pairs": [list(map(int, p)) for p in c.flip_pairs], "categories": [name]}
            if c.sigmas:
                entry["sigmas"] = [float(v) for v in c.sigmas]
            hidden = [i for i, n in enumerate(names) if names.count(n) > 1]
            if hidden:
                entry["hidden"] = hidden
            entries.append(entry)
    return entries


def inference_texts(vocabulary: List[Dict[str, Any]], negatives: List[str]) -> List[str]:
    """The prompt texts the Predictor produces for this vocabulary (and the negative classes)."""
    texts: Dict[str, None] = {}
    for entry in vocabulary:
        for c in entry["categories"]:
            texts[instance_prompt(c)] = None
        for k in entry["keypoints"]:
            texts[keypoint_prompt(k)] = None
            texts[keypoint_prompt(swap_left_right(k))] = None
    for n in negatives:
        texts[instance_prompt(n)] = None
    return list(texts)


def model_file_entries(cfg, sources, negative_pool: List[str], table) -> Dict[str, Any]:
    """The self-describing entries for a checkpoint of this run (see unipose_model.model_file)."""
    vocab = vocabulary_entries(sources)
    negatives = negative_pool if cfg.data.prompts.num_negatives > 0 and not cfg.data.prompts.fixed else []
    texts = inference_texts(vocab, negatives)
    aug = cfg.data.augment
    return {"model_config": {"name": cfg.model.name, "overrides": dict(cfg.model.overrides)},
            "text_features": {"encoder": table.encoder.name, "texts": texts,
                              "features": table.lookup(texts).detach().cpu().float()},
            "vocabulary": vocab,
            "input_size": {"short_side": int(aug.eval_size), "max_size": int(aug.eval_max_size or aug.max_size)}}


def export(src: str, dst: str, *, half: bool = True, config: Optional[str] = None,
           box_threshold: Optional[float] = None, refine: Optional[float] = None,
           refine_size: Optional[int] = None, refiner: Optional[str] = None, info: Optional[Dict[str, Any]] = None,
           heatmap_refiner: Optional[str] = None) -> Path:
    """A trainer checkpoint (or best.pth, or a deployable file) -> deployable file. Entries missing
    from `src` (older checkpoints) are rebuilt from the run's config (`config`, or the one stored
    in `src`); a deployable `src` keeps its stored defaults unless new ones are given.
    refiner: a trainer checkpoint of a network for the crop-refinement pass (trained on crops
    around one object), stored in the same file and used for the crop pass by default.
    heatmap_refiner: the checkpoint unipose-train-refiner wrote (a heatmap network run on each
    detection after UniPose), stored in the same file and used by default."""
    from unipose_model.model_file import save_model_file

    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    entries = {k: ckpt[k] for k in ("model_config", "text_features", "vocabulary", "input_size") if k in ckpt}
    if len(entries) < 4:
        entries = _entries_from_config(config, ckpt, Path(src).parent)
    tf = entries["text_features"]
    meta = dict(ckpt.get("info") or {})
    if "source_checkpoint" not in meta:  # a deployable src keeps the provenance it carries
        meta.update({"step": ckpt.get("step"), "source_checkpoint": Path(src).name})
    if ckpt.get("metrics"):
        meta["val_metrics_during_training"] = ckpt["metrics"]
    meta.update(info or {})
    postprocess = dict(ckpt.get("postprocess") or {})
    postprocess.update({k: v for k, v in (("box_threshold", box_threshold), ("refine", refine),
                                          ("refine_size", refine_size)) if v is not None})
    refiner_state, refiner_config = None, None
    if isinstance(ckpt.get("refiner"), dict) and not refiner:
        refiner_state, refiner_config = ckpt["refiner"]["model"], ckpt["refiner"].get("model_config")
    heatmap_entry = ckpt.get("heatmap_refiner") if isinstance(ckpt.get("heatmap_refiner"), dict) else None
    if heatmap_refiner:
        from unipose_model.model_file import heatmap_refiner_from_entry

        other = torch.load(heatmap_refiner, map_location="cpu", weights_only=True)
        if not isinstance(other, dict) or "spec" not in other or "model" not in other:
            raise ValueError(f"{heatmap_refiner} is not a checkpoint of unipose-train-refiner (it has no "
                             f"'spec' and 'model' entries); pass the refiner.pth that command wrote")
        heatmap_refiner_from_entry(other, heatmap_refiner)  # a mismatched or corrupt one fails here, not in use
        heatmap_entry = {"model": other["model"], "spec": other["spec"]}
        meta["heatmap_refiner_checkpoint"] = (f"{Path(heatmap_refiner).parent.name}/{Path(heatmap_refiner).name} "
                                              f"(step {other.get('step')})")
    if refiner:
        other = torch.load(refiner, map_location="cpu", weights_only=True)
        refiner_state = other["model"]
        refiner_config = other.get("model_config") or entries["model_config"]
        meta["refiner_checkpoint"] = f"{Path(refiner).parent.name}/{Path(refiner).name} (step {other.get('step')})"
    return save_model_file(dst, ckpt["model"], model_name=entries["model_config"]["name"],
                           overrides=entries["model_config"].get("overrides"), texts=tf["texts"],
                           features=tf["features"], text_encoder=tf["encoder"],
                           vocabulary=entries["vocabulary"], input_size=entries["input_size"],
                           info={k: v for k, v in meta.items() if v is not None}, half=half,
                           postprocess=postprocess or None,
                           refiner=refiner_state, refiner_config=refiner_config, heatmap_refiner=heatmap_entry)


def _entries_from_config(config: Optional[str], ckpt: Dict, run_dir: Path) -> Dict[str, Any]:
    from .config import config_from_dict, load_config
    from .dataset import load_source
    from .sources import expand_index_sources
    from .prompts import negative_pool
    from .text_features import build_table

    if config:
        cfg = load_config(config)
    elif "config" in ckpt:
        cfg = config_from_dict(json.loads(ckpt["config"]))
    else:
        raise ValueError("the checkpoint carries no config: pass --config CONFIG.yaml (the run's)")
    sources = [load_source(s) for s in expand_index_sources(cfg.data.train)]
    pool = negative_pool(cfg.data.negative_pool, sources)
    cache = cfg.text.cache or str(run_dir / "text_features.pt")
    table = build_table(cfg.text.encoder, [], "cpu", cache if Path(cache).is_file() else None,
                        cfg.text.clip_weights, write_cache=False)
    return model_file_entries(cfg, sources, pool, table)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m unipose_train.model_export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="trainer checkpoint (checkpoint_*.pth or best.pth)")
    p.add_argument("output", help="deployable .pth to write")
    p.add_argument("--config", help="the run's YAML config (for checkpoints that carry none)")
    p.add_argument("--float32", action="store_true", help="keep float32 weights (default float16)")
    p.add_argument("--info", help="JSON object of provenance to store (data, split, metrics, ...)")
    p.add_argument("--box-threshold", type=float, default=None,
                   help="score threshold to store as the model's default (choose it on held-out data)")
    p.add_argument("--refine", type=float, default=None,
                   help="crop-refinement factor to store as the model's default (unipose_model/refine.py; "
                        "choose it on training or validation frames)")
    p.add_argument("--refine-size", type=int, default=None,
                   help="input size of the crop pass to store with --refine (default: the first pass's)")
    p.add_argument("--refiner", help="trainer checkpoint of a network trained on crops around one object, "
                                      "stored in the file for the crop-refinement pass (see --refine)")
    p.add_argument("--heatmap-refiner", help="checkpoint written by unipose-train-refiner: a heatmap network run "
                                              "on each detection after UniPose, stored in the file")
    args = p.parse_args(argv)
    try:
        path = export(args.checkpoint, args.output, half=not args.float32, config=args.config,
                      box_threshold=args.box_threshold, refine=args.refine,
                      refine_size=args.refine_size, refiner=args.refiner,
                      info=json.loads(args.info) if args.info else None, heatmap_refiner=args.heatmap_refiner)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # RuntimeError: CheckpointError too
        print(f"model_export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
