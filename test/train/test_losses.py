"""Loss terms of equation (1) with hand-computed values, masking, aux layers and gradients."""
import math

import pytest
import torch

from unipose_train.losses import LossWeights, SetCriterion, oks_per_instance, sigmoid_focal_loss


def focal(x, t, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-x))
    if t:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p ** gamma * math.log(1 - p)


def test_sigmoid_focal_loss_values():
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    got = sigmoid_focal_loss(logits, targets, torch.ones_like(logits, dtype=torch.bool))
    assert got.item() == pytest.approx(focal(0, 1) + focal(2, 0) + focal(-1, 1), rel=1e-5)
    # logit 0, positive: 0.25 * 0.25 * ln 2
    assert focal(0, 1) == pytest.approx(0.25 * 0.25 * math.log(2))


def test_focal_loss_ignores_masked_minus_inf_columns_without_nan():
    logits = torch.tensor([[0.0, float("-inf")]], requires_grad=True)
    valid = torch.isfinite(logits.detach())
    loss = sigmoid_focal_loss(logits, torch.tensor([[1.0, 0.0]]), valid)
    loss.backward()
    assert loss.item() == pytest.approx(focal(0, 1), rel=1e-5)
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 1] == 0


def test_oks_for_known_offset():
    # offset d = 3 px, area 100 px^2, sigma 0.05: OKS = exp(-9 / (2 * 100 * 0.01)) = exp(-4.5)
    pred = torch.tensor([[[0.53, 0.5]]])
    gt = torch.tensor([[[0.5, 0.5]]])
    oks = oks_per_instance(pred, gt, torch.ones(1, 1), torch.tensor([100.0]), torch.tensor([0.05]),
                           torch.tensor([100, 100]))
    assert oks.item() == pytest.approx(math.exp(-4.5), rel=1e-4)
    # invisible keypoints do not count: a second, far-off but unlabelled point leaves OKS unchanged
    pred2 = torch.tensor([[[0.53, 0.5], [0.0, 0.0]]])
    gt2 = torch.tensor([[[0.5, 0.5], [0.9, 0.9]]])
    oks2 = oks_per_instance(pred2, gt2, torch.tensor([[1.0, 0.0]]), torch.tensor([100.0]),
                            torch.tensor([0.05, 0.05]), torch.tensor([100, 100]))
    assert oks2.item() == pytest.approx(math.exp(-4.5), rel=1e-4)


def _target(K=2):
    return {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]),
            "keypoints": torch.tensor([[[0.45, 0.5], [0.55, 0.5]]])[:, :K],
            "visibility": torch.tensor([[1.0, 0.0]])[:, :K], "areas": torch.tensor([400.0]),
            "sigmas": torch.full((K,), 0.05), "size": torch.tensor([100, 100])}


def _outputs(K=2):
    return {"pred_logits": torch.tensor([[[-2.0, 1.0], [0.0, -1.0]]]),
            "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]]),
            "pred_keypoints": torch.tensor([[[[0.47, 0.5], [0.2, 0.2]], [[0.0, 0.0], [0.0, 0.0]]]]),
            "pred_keypoint_logits": torch.zeros(1, 2, K, K)}


def test_single_layer_terms_hand_computed():
    crit = SetCriterion(LossWeights(cls=1, kpt_cls=1, bbox=1, giou=1, keypoint=1, oks=1))
    losses = crit.layer_losses(_outputs(), [_target()], num_boxes=1.0)
    # query 0 matches (perfect box, class column 1 scores 1.0)
    cls = focal(-2, 0) + focal(1, 1) + focal(0, 0) + focal(-1, 0)
    assert losses["cls"].item() == pytest.approx(cls, rel=1e-5)
    assert losses["bbox"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["giou"].item() == pytest.approx(0.0, abs=1e-6)
    # only keypoint 0 is labelled: |0.47 - 0.45| = 0.02
    assert losses["keypoint"].item() == pytest.approx(0.02, rel=1e-4)
    # OKS of 2 px at area 400, sigma 0.05: exp(-4 / (2 * 400 * 0.01))
    assert losses["oks"].item() == pytest.approx(1 - math.exp(-0.5), rel=1e-4)
    # prompt-to-keypoint: one labelled row (keypoint 0), two prompt columns, logits 0: target [1, 0]
    assert losses["kpt_cls"].item() == pytest.approx(focal(0, 1) + focal(0, 0), rel=1e-5)


def test_padded_keypoint_prompt_columns_are_ignored():
    crit = SetCriterion(LossWeights(cls=1, kpt_cls=1, bbox=1, giou=1, keypoint=1, oks=1))
    out = _outputs()
    out["pred_keypoint_logits"] = torch.zeros(1, 2, 2, 2)
    out["pred_keypoint_logits"][..., 1] = 50.0   # a padded column: would cost a lot if counted
    t = _target(K=1)                               # the image has 1 keypoint; the batch pads to 2
    losses = crit.layer_losses(out, [t], 1.0, keypoint_valid=torch.tensor([[True, False]]))
    assert losses["kpt_cls"].item() == pytest.approx(focal(0, 1), rel=1e-5)


def test_all_layers_weighted_and_differentiable():
    out = _outputs()
    for v in out.values():
        v.requires_grad_(True)
    box_layer = {"pred_logits": out["pred_logits"] * 1.0, "pred_boxes": out["pred_boxes"] * 1.0}
    full = dict(out, aux_outputs=[box_layer], enc_outputs=dict(box_layer))
    crit = SetCriterion()
    total, terms = crit(full, [_target()])
    assert {"cls", "kpt_cls", "bbox", "giou", "keypoint", "oks", "cls_0", "bbox_0", "giou_0",
            "cls_enc", "bbox_enc", "giou_enc"} == set(terms)
    assert "keypoint_0" not in terms   # box-only layers have no keypoint losses
    assert total.item() == pytest.approx(sum(terms.values()), rel=1e-5)
    single = crit.layer_losses(out, [_target()], 1.0)
    assert terms["keypoint"] == pytest.approx(10.0 * single["keypoint"].item(), rel=1e-5)
    total.backward()
    assert out["pred_keypoints"].grad.abs().sum() > 0


def test_num_boxes_normalisation():
    crit = SetCriterion()
    a, _ = crit(_outputs(), [_target()], num_boxes=1.0)
    b, _ = crit(_outputs(), [_target()], num_boxes=2.0)
    assert a.item() == pytest.approx(2 * b.item(), rel=1e-6)
