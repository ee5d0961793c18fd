"""Run a checkpoint over a UniKPT ground-truth file and write COCO-format predictions.

The prompt of a dataset is its own categories, each with its own keypoint names (one decoder
pass per keypoint set, see unipose_model.predictor), so the predictions map back to the
ground truth's category ids by label.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List, Optional

from tqdm import tqdm

from ..unikpt.format import UniKPT


def dataset_prompt(gt: UniKPT):
    """One prompt group per category: its name and its keypoint names and skeleton."""
    from unipose_model.prompt import parse_prompt
    groups = [{"instances": [c.name], "keypoints": list(c.keypoints), "skeleton": [list(l) for l in c.skeleton]}
              for c in gt.categories]
    return parse_prompt(json.dumps(groups))


def predict_dataset(predictor, gt: UniKPT, image_ids: Optional[Iterable[int]] = None,
                    progress: bool = True) -> List[dict]:
    """COCO keypoint results for the images of `gt` (all, or `image_ids`)."""
    from ..dataset import read_rgb
    prompt = dataset_prompt(gt)
    category_of = {c.name.lower(): c.id for c in gt.categories}
    wanted = None if image_ids is None else set(image_ids)
    images = [im for im in gt.images if wanted is None or im.id in wanted]
    results: List[dict] = []
    for image in tqdm(images, desc=gt.dataset, unit="img", disable=not progress):
        rgb = read_rgb(gt.image_path(image))
        for inst in predictor.predict(rgb, prompt, color="rgb"):
            results.append(inst.to_coco(image.id, category_of.get(inst.label.lower(), inst.class_index + 1)))
    return results


def write_predictions(results: List[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results), encoding="utf-8")
    return path
