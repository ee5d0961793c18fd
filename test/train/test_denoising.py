"""Denoising queries: construction, the decoder's attention isolation, and their losses."""
import torch

from unipose_train.denoising import DenoisingConfig, build_denoising_queries, denoising_losses
from unipose_train.losses import LossWeights
from unipose_model import build_model
from unipose_model.checkpoint import fill_reference_weights


def targets():
    return [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
            {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]


def test_queries_layout_and_noise_ranges():
    cfg = DenoisingConfig(number=12, label_noise_ratio=0.0, box_noise_scale=1.0)
    q = build_denoising_queries(targets(), [2, 2], cfg, torch.Generator().manual_seed(0))
    assert q.group_size == 4 and q.labels.shape == (2, 12)       # 3 groups of (2 positives + 2 negatives)
    assert q.valid[0].all() and q.valid[1].sum() == 6             # image 1 has one object: half the slots
    assert (q.labels[0][q.positive[0]] == torch.tensor([0, 1] * 3)).all()
    t = targets()[0]["boxes"]
    err = (q.boxes[0] - t[q.target[0]]).abs()
    # positives stay within half a box size per corner; negatives move further (at least on some corner)
    assert (err[q.positive[0]][:, :2] <= t[q.target[0][q.positive[0]]][:, 2:] * 0.5 + 1e-6).all()
    assert build_denoising_queries([{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}],
                                   [1], cfg) is None


def test_denoising_queries_leave_the_matching_outputs_unchanged():
    """Matching queries never attend to the (ground-truth carrying) denoising queries."""
    torch.manual_seed(0)
    model = fill_reference_weights(build_model("unipose_tiny"))
    images, text, kpts = torch.randn(2, 3, 96, 128), torch.randn(2, 512) * 0.4, torch.randn(3, 512) * 0.4
    plain = model(images, None, text, kpts, aux=True)
    q = build_denoising_queries(targets(), [2, 2], DenoisingConfig(number=8), torch.Generator().manual_seed(1))
    with_dn = model(images, None, text, kpts, aux=True, denoising=q.model_input())
    for key in ("pred_logits", "pred_boxes", "pred_keypoints"):
        assert torch.allclose(plain[key], with_dn[key], atol=1e-5), key
    assert len(with_dn["dn_outputs"]) == model.config.dec_layers
    assert with_dn["dn_outputs"][-1]["pred_boxes"].shape == (2, 8, 4)
    # the denoising groups are isolated from each other too: changing group 1 leaves group 0 alone
    q.boxes[:, q.group_size:] = 0.5
    moved = model(images, None, text, kpts, aux=True, denoising=q.model_input())
    gs = q.group_size
    assert torch.allclose(moved["dn_outputs"][-1]["pred_boxes"][:, :gs], with_dn["dn_outputs"][-1]["pred_boxes"][:, :gs],
                          atol=1e-5)
    losses = denoising_losses(with_dn["dn_outputs"], q, targets(), 3.0, LossWeights())
    assert set(losses) == {"dn_cls", "dn_bbox", "dn_giou"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.label_enc.weight.grad is not None and model.label_enc.weight.grad.abs().sum() > 0


def test_denoising_losses_match_a_per_query_computation():
    """Positive queries learn their own object's class and box, negatives no class: the losses
    equal a query-by-query evaluation of the same terms (images with 2 and 1 objects)."""
    import torch.nn.functional as F
    from torchvision.ops import generalized_box_iou

    from unipose_train.losses import sigmoid_focal_loss
    from unipose_train.matcher import box_cxcywh_to_xyxy

    cfg = DenoisingConfig(number=12, label_noise_ratio=0.0, box_noise_scale=1.0)
    tg = targets()
    q = build_denoising_queries(tg, [2, 2], cfg, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    outs = [{"pred_logits": torch.randn(2, 12, 2, generator=g), "pred_boxes": torch.rand(2, 12, 4, generator=g)}
            for _ in range(2)]
    w = LossWeights()
    got = denoising_losses(outs, q, tg, 3.0, w)
    norm = 3.0 * 3  # num_boxes x groups
    want = {"dn_cls": 0.0, "dn_bbox": 0.0, "dn_giou": 0.0}
    for out in outs:
        cls_target = torch.zeros(2, 12, 2)
        pred, gt = [], []
        for b in range(2):
            for i in range(12):
                if q.positive[b, i] and q.valid[b, i]:
                    j = int(q.target[b, i])
                    cls_target[b, i, int(tg[b]["labels"][j])] = 1.0
                    pred.append(out["pred_boxes"][b, i])
                    gt.append(tg[b]["boxes"][j])
        valid = torch.isfinite(out["pred_logits"]) & q.valid[:, :, None]
        want["dn_cls"] += w.cls * float(sigmoid_focal_loss(out["pred_logits"], cls_target, valid,
                                                           w.focal_alpha, w.focal_gamma)) / norm
        pred, gt = torch.stack(pred), torch.stack(gt)
        want["dn_bbox"] += w.bbox * float(F.l1_loss(pred, gt, reduction="sum")) / norm
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt)))
        want["dn_giou"] += w.giou * float((1 - giou).sum()) / norm
    for name, value in want.items():
        assert abs(float(got[name]) - value) <= 1e-5 * max(1.0, abs(value)), name
