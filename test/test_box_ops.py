"""One box-ops module: conversions (torch and numpy) and IoU (xyxy, COCO xywh, crowd rule)."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as torchvision_iou

from unipose_model.box_ops import box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh


def test_conversions_round_trip_in_torch_and_numpy():
    cxcywh = np.array([[0.5, 0.4, 0.2, 0.6], [10.0, 20.0, 4.0, 8.0]])
    xyxy = box_cxcywh_to_xyxy(cxcywh)
    assert isinstance(xyxy, np.ndarray)
    np.testing.assert_allclose(xyxy, [[0.4, 0.1, 0.6, 0.7], [8.0, 16.0, 12.0, 24.0]])
    np.testing.assert_allclose(box_xyxy_to_cxcywh(xyxy), cxcywh)
    t = box_cxcywh_to_xyxy(torch.tensor(cxcywh, dtype=torch.float32))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert torch.allclose(box_xyxy_to_cxcywh(t), torch.tensor(cxcywh, dtype=torch.float32))
    assert box_cxcywh_to_xyxy(torch.zeros(2, 3, 4)).shape == (2, 3, 4)  # any leading dimensions


def test_iou_of_known_boxes_and_agreement_with_torchvision():
    a = [[0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 6, 6]]
    b = [[1, 1, 3, 3], [10, 10, 11, 11]]
    iou = box_iou(a, b)
    assert iou.shape == (3, 2)
    assert iou[0, 0] == pytest.approx(1 / 7) and iou[1, 0] == 1.0 and iou[2].tolist() == [0.0, 0.0]
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (20, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], 1)
    np.testing.assert_allclose(box_iou(boxes, boxes[:7]),
                               torchvision_iou(torch.tensor(boxes), torch.tensor(boxes[:7])).numpy(), atol=1e-12)
    assert box_iou(np.zeros((0, 4)), boxes).shape == (0, 20)


def test_coco_xywh_and_crowd_rule():
    dt, gt = [[0, 0, 2, 2]], [[1, 1, 2, 2], [0, 0, 4, 4]]
    np.testing.assert_allclose(box_iou(dt, gt, fmt="xywh"), [[1 / 7, 4 / 16]])
    # a crowd region: the union is the detection's own area (pycocotools' iscrowd rule)
    np.testing.assert_allclose(box_iou(dt, gt, fmt="xywh", crowd=[False, True]), [[1 / 7, 1.0]])
    with pytest.raises(ValueError, match="box format"):
        box_iou(dt, gt, fmt="cxcywh")
