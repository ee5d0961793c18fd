"""Hungarian matcher: hand-computed costs and assignments."""
import math

import pytest
import torch

from unipose_train.matcher import (HungarianMatcher, MatcherWeights, box_cxcywh_to_xyxy, box_xyxy_to_cxcywh,
                              focal_class_cost)
from torchvision.ops import generalized_box_iou


def test_box_conversions_round_trip():
    b = torch.tensor([[0.5, 0.4, 0.2, 0.6]])
    xyxy = box_cxcywh_to_xyxy(b)
    assert torch.allclose(xyxy, torch.tensor([[0.4, 0.1, 0.6, 0.7]]))
    assert torch.allclose(box_xyxy_to_cxcywh(xyxy), b)


def test_giou_of_known_boxes():
    # A = [0,0,2,2], B = [1,1,3,3]: inter 1, union 7, hull 9 -> IoU 1/7, GIoU = 1/7 - 2/9
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    assert generalized_box_iou(a, b).item() == pytest.approx(1 / 7 - 2 / 9, abs=1e-6)
    # disjoint: [0,0,1,1] vs [2,0,3,1]: IoU 0, hull 3, union 2 -> -1/3
    assert generalized_box_iou(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[2.0, 0, 3, 1]])).item() == \
        pytest.approx(-1 / 3, abs=1e-6)


def test_focal_class_cost_value():
    # logit 0 -> p = 0.5: pos = 0.25 * 0.25 * ln 2, neg = 0.75 * 0.25 * ln 2
    cost = focal_class_cost(torch.zeros(1, 3), torch.tensor([1]))
    expected = 0.25 * 0.25 * math.log(2) - 0.75 * 0.25 * math.log(2)
    assert cost.shape == (1, 1)
    assert cost.item() == pytest.approx(expected, rel=1e-5)
    # a confident right class costs less than an unsure one
    assert focal_class_cost(torch.tensor([[5.0]]), torch.tensor([0])).item() < expected


def test_two_by_two_assignment_follows_boxes():
    # query 0 sits on target 1, query 1 on target 0; equal class scores -> the crossed assignment
    outputs = {"pred_logits": torch.zeros(1, 2, 1),
               "pred_boxes": torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]]])}
    targets = [{"labels": torch.tensor([0, 0]),
                "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])}]
    (rows, cols), = HungarianMatcher()(outputs, targets)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0}


def test_cost_matrix_hand_computed():
    w = MatcherWeights(cost_class=0.0, cost_bbox=5.0, cost_giou=0.0)
    outputs = {"pred_logits": torch.zeros(1, 1, 1), "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])}
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.6, 0.5, 0.2, 0.4]])}]
    cost = HungarianMatcher(w).cost_matrix(outputs, targets[0], 0)
    assert cost.item() == pytest.approx(5.0 * (0.1 + 0.2), rel=1e-5)


def test_class_cost_decides_between_equal_boxes():
    # two queries on the same box; query 1 scores the target's class (column 1) high
    outputs = {"pred_logits": torch.tensor([[[3.0, -3.0], [-3.0, 3.0]]]),
               "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2]] * 2])}
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    (rows, cols), = HungarianMatcher()(outputs, targets)
    assert rows.tolist() == [1] and cols.tolist() == [0]


def test_more_queries_than_targets_and_empty_image():
    outputs = {"pred_logits": torch.zeros(2, 5, 3), "pred_boxes": torch.rand(2, 5, 4) * 0.5 + 0.25}
    targets = [{"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1], [0.4, 0.4, 0.2, 0.2]])},
               {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    m = HungarianMatcher()(outputs, targets)
    assert len(m[0][0]) == 2 and len(set(m[0][0].tolist())) == 2
    assert len(m[1][0]) == 0


def test_invalid_prompt_columns_do_not_break_matching():
    logits = torch.tensor([[[0.0, float("-inf")], [1.0, float("-inf")]]])
    outputs = {"pred_logits": logits, "pred_boxes": torch.full((1, 2, 4), 0.3)}
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.3, 0.3, 0.3, 0.3]])}]
    (rows, cols), = HungarianMatcher()(outputs, targets)
    assert rows.tolist() == [1]   # the higher class score wins when boxes tie


def test_keypoint_cost_option():
    w = MatcherWeights(cost_class=0, cost_bbox=0, cost_giou=0, cost_keypoint=1.0)
    outputs = {"pred_logits": torch.zeros(1, 2, 1), "pred_boxes": torch.full((1, 2, 4), 0.5),
               "pred_keypoints": torch.tensor([[[[0.1, 0.1]], [[0.9, 0.9]]]])}
    t = {"labels": torch.tensor([0]), "boxes": torch.full((1, 4), 0.5), "keypoints": torch.tensor([[[0.9, 0.9]]]),
         "visibility": torch.ones(1, 1), "areas": torch.tensor([100.0]), "sigmas": torch.tensor([0.05]),
         "size": torch.tensor([100, 100])}
    (rows, cols), = HungarianMatcher(w)(outputs, [t])
    assert rows.tolist() == [1]
