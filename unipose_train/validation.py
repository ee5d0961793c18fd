"""Validation during training: the model's predictions on the validation set as COCO-format
results, scored by the project's one evaluator (unipose_train/evaluation: OKS AP where the data
has sigmas, PCK@thr always), per source and averaged."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch

from .config import EvalConfig
from .dataset import KeypointDataset, collate
from .evaluation.report import evaluate_dataset
from .text_features import TextFeatureTable


@torch.no_grad()
def predict_batch(model, batch, table: TextFeatureTable, device, dtype):
    inst, inst_valid = table.batch(batch["instance_texts"])
    kpt, kpt_valid = table.batch(batch["keypoint_texts"])
    out = model(batch["images"].to(device, dtype), batch["masks"].to(device), inst.to(dtype), kpt.to(dtype),
                kpt_valid, instance_valid=inst_valid)
    return out


@torch.no_grad()
def predict_results(model, dataset: KeypointDataset, table: TextFeatureTable, device, dtype=torch.float32,
                    batch_size: int = 2, max_images: Optional[int] = None, top_k: int = 20) -> List[List[Dict]]:
    """COCO-format results (original image pixels) per source of an evaluation dataset.

    Each query becomes one result for its best class (score = sigmoid of that logit), if that
    class is a category of the source with the image's keypoint list; top_k per image.
    """
    was_training = model.training
    model.eval()
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    results: List[List[Dict]] = [[] for _ in dataset.sources]
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        batch = collate([dataset[i] for i in idx])
        out = predict_batch(model, batch, table, device, dtype)
        for b, i in enumerate(idx):
            rec, meta = dataset.records[i], batch["meta"][b]
            cats = dataset.categories[rec.source]
            by_name = {c.name: c for c in cats.values()}
            names = meta["keypoint_names"]
            K = len(names)
            W, H = rec.image.width, rec.image.height
            probs = out["pred_logits"][b].float().sigmoid().cpu()
            score, cls = probs.max(-1)
            kp = out["pred_keypoints"][b, :, :K].float().cpu() * torch.tensor([W, H])
            box = out["pred_boxes"][b].float().cpu() * torch.tensor([W, H, W, H])
            for q in score.argsort(descending=True)[:top_k].tolist():
                cat = by_name.get(meta["classes"][int(cls[q])])
                if cat is None or len(cat.keypoints) != K:
                    continue
                k = torch.cat((kp[q], torch.ones(K, 1)), -1)
                cx, cy, bw, bh = box[q].tolist()
                results[rec.source].append({"image_id": rec.image.id, "category_id": cat.id, "score": float(score[q]),
                                            "keypoints": k.flatten().tolist(),
                                            "bbox": [cx - bw / 2, cy - bh / 2, bw, bh]})
    model.train(was_training)
    return results


def ground_truth_subsets(dataset: KeypointDataset, max_images: Optional[int] = None):
    """Per source, the UniKPT ground truth restricted to the images the dataset evaluates."""
    from .unikpt.format import UniKPT
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    for s, src in enumerate(dataset.sources):
        ids = {r.image.id for r in dataset.records[:n] if r.source == s}
        cats = {c.id for c in src.categories}
        # the objects the dataset trains on (label_checks reported the others), crowds kept as ignore regions
        instances = [i for i in src.instances if i.image_id in ids and i.category_id in cats
                     and (i.iscrowd or (i.bbox[2] > 0 and i.bbox[3] > 0))]
        yield UniKPT(dataset=src.dataset, images=[im for im in src.images if im.id in ids],
                     instances=instances, categories=src.categories,
                     images_root=src.images_root, info=src.info, path=src.path)


def validation_metrics(model, dataset: KeypointDataset, table: TextFeatureTable, device, dtype,
                       cfg: EvalConfig) -> Dict[str, float]:
    """`<dataset>/pck` (and `<dataset>/AP` where computed) per source, `pck` (and `AP`) averaged."""
    results = predict_results(model, dataset, table, device, dtype, cfg.batch_size, cfg.max_images)
    metrics: Dict[str, float] = {}
    pcks, aps = [], []
    for s, gt in enumerate(ground_truth_subsets(dataset, cfg.max_images)):
        row = evaluate_dataset(gt, results[s], pck_thr=cfg.pck_threshold)
        p = row[f"PCK@{cfg.pck_threshold:g}"]
        metrics[f"{gt.dataset}/pck"] = p
        pcks.append(p)
        if "AP" in row:
            metrics[f"{gt.dataset}/AP"] = row["AP"]
            aps.append(row["AP"])
    metrics["pck"] = float(np.mean(pcks)) if pcks else 0.0
    if aps:
        metrics["AP"] = float(np.mean(aps))
    return metrics
