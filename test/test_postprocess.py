"""Post-processing: the official threshold + NMS, reproduced exactly from the fixture outputs."""
import json

import numpy as np
import pytest
import torch

from unipose_model.postprocess import (box_cxcywh_to_xyxy, from_official_layout, merge_selections,
                                       select_queries, to_pixels)

from shared_paths import REFERENCE

FIXTURES = REFERENCE / "fixtures"


def load(name):
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    with np.load(FIXTURES / f"{name}.npz") as z:
        arrays = {k: z[k] for k in z.files if k.startswith(("out_", "post_"))}
    return meta, arrays


@pytest.mark.parametrize("name", ["coco_person", "multi_class"])
def test_reproduces_fixture_postprocessing(name):
    meta, z = load(name)
    n, k = len(meta["instances"]), len(meta["keypoints"])
    logits, boxes, kpts = from_official_layout(z["out_pred_logits"], z["out_pred_boxes"],
                                               z["out_pred_keypoints"], n, k)
    assert tuple(kpts.shape) == (1, 50, k, 2)
    sel = select_queries(logits[0], boxes[0], kpts[0], box_threshold=meta["box_threshold"],
                         iou_threshold=meta["iou_threshold"])
    assert np.array_equal(sel.filter_index.numpy(), z["post_filter_query_index"])
    assert np.array_equal(sel.filter_scores.numpy(), z["post_nms_scores"])
    assert np.array_equal(sel.keep.numpy(), z["post_nms_keep"])
    assert np.array_equal(sel.boxes_cxcywh.numpy(), z["post_boxes_cxcywh"])
    assert np.array_equal(sel.keypoints.reshape(len(sel.keep), -1).numpy(), z["post_keypoints_xy"])
    assert np.array_equal(sel.query_index.numpy(), z["post_filter_query_index"][z["post_nms_keep"]])


def test_coco_person_to_pixels_matches_official_plot():
    meta, z = load("coco_person")
    w, h = meta["image_original_wh"]
    logits, boxes, kpts = from_official_layout(z["out_pred_logits"], z["out_pred_boxes"],
                                               z["out_pred_keypoints"], 1, 17)
    sel = select_queries(logits[0], boxes[0], kpts[0])
    det = to_pixels(sel, h, w, clip_boxes=False)
    cx, cy, bw, bh = z["post_boxes_cxcywh"].astype(np.float64).T
    expected = np.stack([cx * w - bw * w / 2, cy * h - bh * h / 2,
                         cx * w + bw * w / 2, cy * h + bh * h / 2], 1)
    assert np.allclose(det.boxes, expected, atol=1e-3)
    xy = z["post_keypoints_xy"].reshape(-1, 17, 2).astype(np.float64) * [w, h]
    assert np.allclose(det.keypoints, xy, atol=1e-3)
    assert len(det) == 48  # one NMS suppression in this fixture
    clipped = to_pixels(sel, h, w)
    assert (clipped.boxes[:, [0, 2]] >= 0).all() and (clipped.boxes[:, [0, 2]] <= w).all()
    assert (clipped.boxes[:, [1, 3]] >= 0).all() and (clipped.boxes[:, [1, 3]] <= h).all()


def _toy(scores, boxes):
    logits = torch.logit(torch.tensor(scores, dtype=torch.float32))[:, None]
    return logits, torch.tensor(boxes, dtype=torch.float32), torch.rand(len(scores), 3, 2)


def test_threshold_is_strict_and_label_is_argmax():
    logits = torch.tensor([[0.0, 3.0], [-5.0, -4.0], [2.0, 1.0]])
    boxes = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]])
    thr = float(torch.sigmoid(torch.tensor(-4.0)))  # query 1 scores exactly this: not kept
    sel = select_queries(logits, boxes, torch.zeros(3, 1, 2), box_threshold=thr)
    assert sel.filter_index.tolist() == [0, 2]
    assert sel.labels.tolist() == [1, 0]
    sel = select_queries(logits, boxes, torch.zeros(3, 1, 2), box_threshold=thr, allowed_classes=[0])
    assert sel.query_index.tolist() == [2]


def test_nms_suppresses_overlap_above_threshold_and_max_instances():
    logits, boxes, kpts = _toy([0.9, 0.8, 0.7], [[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.19],
                                                   [0.1, 0.1, 0.1, 0.1]])
    sel = select_queries(logits, boxes, kpts, iou_threshold=0.9)
    assert sel.query_index.tolist() == [0, 2]  # IoU 0.95 > 0.9: query 1 suppressed
    sel = select_queries(logits, boxes, kpts, iou_threshold=0.96)
    assert sel.query_index.tolist() == [0, 1, 2]
    det = to_pixels(sel, 100, 200, max_instances=2)
    assert len(det) == 2 and det.keypoints.shape == (2, 3, 2)
    assert np.allclose(det.boxes[0], [80, 40, 120, 60])


def test_merge_selections_across_groups():
    a = select_queries(*_toy([0.9, 0.3], [[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]))
    b = select_queries(*_toy([0.8, 0.6], [[0.5, 0.5, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1]]))
    owners, rows = merge_selections([a, b], 0.9)
    assert list(zip(owners, rows)) == [(0, 0), (1, 1), (0, 1)]  # duplicate box of b dropped
    assert merge_selections([a], 0.9) == ([0, 0], [0, 1])


def test_box_conversion():
    assert torch.allclose(box_cxcywh_to_xyxy(torch.tensor([0.5, 0.5, 0.2, 0.4])),
                          torch.tensor([0.4, 0.3, 0.6, 0.7]))
