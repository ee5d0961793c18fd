"""Model behaviour beyond the fixtures: op math, batching, the prompt-size fast paths, configs."""
import numpy as np
import pytest
import torch

from unipose_model import build_model, get_config
from unipose_model.checkpoint import fill_reference_weights
from unipose_model.ops import (ms_deform_attn_pytorch, get_deform_attn_impl, register_deform_attn_impl,
                               use_deform_attn_impl, MSDeformAttn)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return fill_reference_weights(build_model("unipose_tiny"))


def features(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 512, generator=g) * 0.4


def naive_deform_attn(value, shapes, locations, weights):
    """Bilinear sampling written out point by point (zero outside, pixel centres at +0.5)."""
    B, S, M, D = value.shape
    _, Q, _, L, P, _ = locations.shape
    out = torch.zeros(B, Q, M, D, dtype=value.dtype)
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    for b in range(B):
        for q in range(Q):
            for m in range(M):
                for l, (h, w) in enumerate(shapes):
                    v = value[b, starts[l]:starts[l + 1], m].view(h, w, D)
                    for p in range(P):
                        x = locations[b, q, m, l, p, 0] * w - 0.5
                        y = locations[b, q, m, l, p, 1] * h - 0.5
                        x0, y0 = int(np.floor(float(x))), int(np.floor(float(y)))
                        acc = torch.zeros(D, dtype=value.dtype)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    acc += wy * wx * v[yy, xx]
                        out[b, q, m] += weights[b, q, m, l, p] * acc
    return out.flatten(2)


@pytest.mark.parametrize("impl", ["pytorch", "gather"])
def test_deformable_attention_matches_pointwise_definition(impl):
    g = torch.Generator().manual_seed(1)
    shapes = [(5, 7), (3, 4)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 2, 3, generator=g, dtype=torch.float64)
    locations = torch.rand(2, 4, 2, 2, 3, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2  # some outside
    locations[0, 0, 0, 0, 0] = torch.tensor([-3.0, 0.5])   # far outside: zero padding on every corner
    locations[0, 1, 0, 0, 0] = torch.tensor([1.0, 1.0])    # exactly on the far border
    locations[1, 2, 1, 1, 2] = torch.tensor([0.0, 7.5])
    weights = torch.rand(2, 4, 2, 2, 3, generator=g, dtype=torch.float64).softmax(-1)
    ours = get_deform_attn_impl(impl)(value, shapes, locations, weights)
    assert torch.allclose(ours, naive_deform_attn(value, shapes, locations, weights), atol=1e-12)


def test_gather_core_equals_reference_values_and_gradients():
    """The CPU fast path (one weighted gather) is the reference function: float32 values within
    1e-5 relative, float64 gradients for value, locations and weights to rounding."""
    from unipose_model.ops.gather_deform_attn import ms_deform_attn_gather

    g = torch.Generator().manual_seed(3)
    shapes = [(12, 17), (6, 9), (3, 5), (2, 3)]
    S, B, Q, M, D, L, P = sum(h * w for h, w in shapes), 2, 50, 4, 8, 4, 3
    value = torch.randn(B, S, M, D, generator=g)
    locations = torch.rand(B, Q, M, L, P, 2, generator=g) * 1.6 - 0.3
    weights = torch.rand(B, Q, M, L, P, generator=g).softmax(-1)
    ref = ms_deform_attn_pytorch(value, shapes, locations, weights)
    fast = ms_deform_attn_gather(value, shapes, locations, weights)
    assert fast.shape == ref.shape == (B, Q, M * D)
    assert (fast - ref).abs().max() <= 1e-5 * ref.abs().max()
    inputs = [t.double().requires_grad_() for t in (value, locations, weights)]
    grad_out = torch.randn(B, Q, M * D, generator=g, dtype=torch.float64)
    grads_ref = torch.autograd.grad(ms_deform_attn_pytorch(inputs[0], shapes, *inputs[1:]), inputs, grad_out)
    grads_fast = torch.autograd.grad(ms_deform_attn_gather(inputs[0], shapes, *inputs[1:]), inputs, grad_out)
    for name, a, b in zip(("value", "locations", "weights"), grads_ref, grads_fast):
        assert (a - b).abs().max() <= 1e-10 * a.abs().max(), name


def test_gather_core_wide_index_path(monkeypatch):
    """Huge value tables build their row indices in float64 / int64: same result."""
    from unipose_model.ops import gather_deform_attn

    g = torch.Generator().manual_seed(5)
    shapes = [(9, 11), (5, 6)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 2, 4, generator=g)
    locations = torch.rand(2, 7, 2, 2, 3, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(2, 7, 2, 2, 3, generator=g).softmax(-1)
    narrow = gather_deform_attn.ms_deform_attn_gather(value, shapes, locations, weights)
    monkeypatch.setattr(gather_deform_attn, "FLOAT32_EXACT_ROWS", 0)
    wide = gather_deform_attn.ms_deform_attn_gather(value, shapes, locations, weights)
    assert torch.equal(narrow, wide)
    assert torch.allclose(wide, ms_deform_attn_pytorch(value, shapes, locations, weights), atol=1e-5)


def test_cpu_default_is_the_gather_core_and_the_model_output_is_unchanged(tiny):
    from unipose_model.ops.gather_deform_attn import ms_deform_attn_gather

    assert get_deform_attn_impl(device=torch.device("cpu")) is ms_deform_attn_gather
    image = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(4))
    fast = tiny(image, None, features(2, 0), features(5, 1))
    with use_deform_attn_impl("pytorch"):
        ref = tiny(image, None, features(2, 0), features(5, 1))
    for key in ("pred_logits", "pred_boxes", "pred_keypoints"):
        assert torch.allclose(fast[key], ref[key], rtol=1e-4, atol=1e-5), key


def test_deformable_attention_implementation_is_swappable():
    calls = []

    def spy(*args):
        calls.append(1)
        return ms_deform_attn_pytorch(*args)

    register_deform_attn_impl("spy", spy)
    attn = MSDeformAttn(32, n_levels=2, n_heads=4, n_points=2)
    q, mem = torch.randn(1, 5, 32), torch.randn(1, 20 + 6, 32)
    ref = torch.rand(1, 5, 2, 2)
    with use_deform_attn_impl("pytorch"):
        base = attn(q, ref, mem, [(4, 5), (2, 3)])
    with use_deform_attn_impl("spy"):
        swapped = attn(q, ref, mem, [(4, 5), (2, 3)])
    assert calls and torch.equal(base, swapped)
    with pytest.raises(KeyError, match="available"):
        with use_deform_attn_impl("nope"):
            pass


def test_output_shapes_and_ranges(tiny):
    images = torch.randn(2, 3, 128, 160)
    out = tiny(images, None, features(3, 0), features(5, 1))
    S = tiny.config.num_select
    assert out["pred_logits"].shape == (2, S, 3)
    assert out["pred_boxes"].shape == (2, S, 4) and out["pred_keypoints"].shape == (2, S, 5, 2)
    for key in ("pred_logits", "pred_boxes", "pred_keypoints"):
        assert torch.isfinite(out[key]).all()
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()


def test_batch_equals_single_images(tiny):
    images = torch.randn(2, 3, 96, 128)
    text, kpts = features(2, 2), features(4, 3)
    batched = tiny(images, None, text, kpts)
    for i in range(2):
        single = tiny(images[i:i + 1], None, text, kpts)
        for key in ("pred_logits", "pred_boxes", "pred_keypoints"):
            assert torch.allclose(batched[key][i], single[key][0], atol=1e-4), key


def test_padded_keypoint_slots_do_not_change_real_outputs(tiny):
    """K real keypoints alone == the same K plus masked padding slots (the official 68-slot layout)."""
    images, text = torch.randn(1, 3, 96, 128), features(2, 4)
    kpts = features(6, 5)
    compact = tiny(images, None, text, kpts)
    padded_kpts = torch.cat((kpts, torch.zeros(10, 512)))
    valid = torch.cat((torch.ones(6), torch.zeros(10)))
    full = tiny(images, None, text, padded_kpts, valid)
    assert torch.allclose(compact["pred_logits"], full["pred_logits"], atol=1e-5)
    assert torch.allclose(compact["pred_boxes"], full["pred_boxes"], atol=1e-6)
    assert torch.allclose(compact["pred_keypoints"], full["pred_keypoints"][:, :, :6], atol=1e-6)


def test_encode_once_decode_per_keypoint_group(tiny):
    images, text = torch.randn(1, 3, 96, 128), features(2, 6)
    state = tiny.encode(images, None, text)
    for seed, k in ((7, 3), (8, 9)):
        kpts = features(k, seed)
        assert torch.equal(tiny.decode(state, kpts)["pred_keypoints"], tiny(images, None, text, kpts)["pred_keypoints"])


def test_padding_mask_is_respected(tiny):
    """A padded image in a batch gets boxes normalised to its own (unpadded) size, inside [0, 1]."""
    images = torch.randn(2, 3, 128, 160)
    masks = torch.zeros(2, 128, 160, dtype=torch.bool)
    masks[1, 96:, :] = True
    masks[1, :, 128:] = True
    out = tiny(images, masks, features(1, 9), features(4, 10))
    assert torch.isfinite(out["pred_boxes"]).all() and ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()


def test_input_validation(tiny):
    with pytest.raises(ValueError, match="1..68 keypoints"):
        tiny(torch.randn(1, 3, 64, 64), None, features(1, 0), features(69, 1))
    # fewer image tokens than proposals (a 32x32 image): still works
    assert tiny(torch.randn(1, 3, 32, 32), None, features(1, 0), features(2, 1))["pred_boxes"].shape[1] <= 10
    with pytest.raises(ValueError, match=r"text features must be \(N, 512\)"):
        tiny(torch.randn(1, 3, 64, 64), None, torch.randn(2, 256), features(2, 1))
    with pytest.raises(KeyError, match="available: unipose_r50, unipose_swint, unipose_tiny"):
        build_model("unipose_huge")


def test_aux_outputs_for_training(tiny):
    out = tiny(torch.randn(1, 3, 96, 128), None, features(1, 0), features(3, 1), aux=True)
    assert len(out["aux_outputs"]) == tiny.config.dec_layers - 1
    assert all("pred_keypoints" not in aux for aux in out["aux_outputs"])  # box-only layers
    model = fill_reference_weights(build_model("unipose_tiny", dec_layers=4))
    out = model(torch.randn(1, 3, 96, 128), None, features(1, 0), features(3, 1), aux=True)
    assert out["aux_outputs"][-1]["pred_keypoints"].shape[-2:] == (3, 2)  # an earlier keypoint layer
    S = model.config.num_select
    assert out["pred_keypoint_logits"].shape == (1, S, 3, 3)
    assert out["enc_outputs"]["pred_logits"].shape == (1, model.config.num_queries, 1)
    assert out["enc_outputs"]["pred_boxes"].requires_grad


def test_r50_config_builds_and_runs():
    model = build_model("unipose_r50", enc_layers=1, dec_layers=3, num_queries=50, num_select=5)
    out = model(torch.randn(1, 3, 64, 96), None, features(1, 0), features(2, 1))
    assert out["pred_keypoints"].shape == (1, 5, 2, 2)
    assert get_config("unipose_r50").backbone == "resnet50"


def test_gradients_flow(tiny):
    """Training path: every head and the prompt projections receive gradients."""
    model = fill_reference_weights(build_model("unipose_tiny")).train()
    out = model(torch.randn(1, 3, 96, 128), None, features(2, 0), features(3, 1))
    (out["pred_logits"].sum() + out["pred_boxes"].sum() + out["pred_keypoints"].sum()).backward()
    for name in ("projection.layers.0.weight", "projection_kpt.layers.0.weight", "transformer.decoder.pose_embed.0.layers.0.weight",
                 "backbone.0.patch_embed.proj.weight", "transformer.encoder.fusion_layers.0.gamma_l"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_per_image_prompt_lengths_in_one_batch(tiny):
    """Training batches: image 0 has 3 classes, image 1 only 1 (rows masked) == run alone."""
    images, text = torch.randn(2, 3, 96, 128), features(3, 11)
    valid = torch.tensor([[True, True, True], [True, False, False]])
    kpts = features(4, 12)
    out = tiny(images, None, text, kpts, instance_valid=valid)
    assert torch.isneginf(out["pred_logits"][1, :, 1:]).all() and torch.isfinite(out["pred_logits"][0]).all()
    alone = tiny(images[1:], None, text[:1], kpts)
    assert torch.allclose(out["pred_boxes"][1], alone["pred_boxes"][0], atol=1e-4)


def test_deepen_copies_the_deepest_trained_layer(tmp_path):
    """A deeper decoder initialised from a shallower checkpoint: new layers are copies of its last one."""
    from unipose_model.checkpoint import load_official_checkpoint, CheckpointError

    shallow = fill_reference_weights(build_model("unipose_tiny"))
    path = tmp_path / "shallow.pth"
    torch.save({"model": shallow.state_dict()}, path)
    deep = build_model("unipose_tiny", dec_layers=5)
    with pytest.raises(CheckpointError, match="missing: transformer.decoder.layers.3"):
        load_official_checkpoint(deep, path)
    report = load_official_checkpoint(deep, path, deepen=True)
    assert not report.missing and "copied from shallower layers" in str(report)
    assert any(k.startswith("transformer.decoder.layers.4.") for k in report.copied)
    new, last = deep.transformer.decoder.layers[4], shallow.transformer.decoder.layers[2]
    for (name, a), (_, b) in zip(new.state_dict().items(), last.state_dict().items()):
        assert torch.equal(a, b), name
    # the copies are independent tensors: training one layer leaves the others alone
    assert deep.transformer.decoder.layers[3].norm1.weight.data_ptr() != new.norm1.weight.data_ptr()
    for key, value in shallow.state_dict().items():  # everything the checkpoint has is loaded as is
        assert torch.equal(deep.state_dict()[key], value), key
    out = deep(torch.randn(1, 3, 96, 128), None, features(1, 0), features(3, 1))
    assert torch.isfinite(out["pred_keypoints"]).all()


def test_cpu_training_uses_the_reference_core():
    """The gather core's backward is slower than grid_sample's: training keeps the reference."""
    from unipose_model.ops.gather_deform_attn import ms_deform_attn_gather

    assert get_deform_attn_impl(device=torch.device("cpu"), needs_grad=True) is ms_deform_attn_pytorch
    assert get_deform_attn_impl(device=torch.device("cpu"), needs_grad=False) is ms_deform_attn_gather
