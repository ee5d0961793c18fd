"""The CUDA path audited without a GPU: every configuration, prompt kind, speed profile and half
precision, and one training step, run on fake CUDA tensors (see fake_cuda.py).

A tensor created on the wrong device, a CPU index into a CUDA tensor or a dtype the next op does
not take ends the run here with FakeTensorDeviceMismatchError / a dtype error, as it would on the
first frame of a GPU user. Fake tensors carry no values, so the checks are about placement and
types, not numbers. Steps that need real values are listed by `test_report_what_was_not_audited`
(shown with `pytest -s` and in the test's output on failure).
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from fake_cuda import CUDA, FakeCuda, on_host, real_like

# (step, why it is not audited on fake CUDA): printed by test_report_what_was_not_audited.
NOT_AUDITED = [
    ("numbers", "fake tensors carry no values: NaN/overflow in half precision, kernel accuracy and "
                "speed need a real GPU (scripts/gpu_check.py)"),
    ("Triton kernel bodies", "the launches are checked (devices, contiguity, dtypes of every argument); "
                             "the kernels themselves run in Triton's interpreter in test_triton_deform_attn.py"),
    ("autograd's backward engine", "it asks the CUDA driver for a context even for fake tensors; the "
        "backward pass of the Triton kernel is audited by calling it directly, the training step's "
        "optimizer and gradient scaler on fake CUDA gradients"),
    ("half precision on Swin-T and R-50", "bf16/fp16 autocast is audited on the tiny configurations: "
        "the layers are the same modules, only sizes differ (Swin-T fp32 runs here, slow-marked)"),
    ("post-processing values (threshold + NMS, torchvision)", "runs on CPU copies of the outputs: "
        "the audit checks what arrives (device, dtype, shape), then feeds it real tensors of those shapes "
        "with one detection per image, so the crop pass and the heatmap refiner downstream run too"),
    ("heatmap peak decoding values", "CPU code after .cpu(): checked for its input's device and dtype, "
             "then run on real zeros of that shape"),
    ("Hungarian assignment (scipy)", "CPU numpy on the cost matrix: the cost matrix is built on fake "
             "CUDA; the assignment is the identity of the right size"),
    ("torch.compile on CUDA (inductor, Triton codegen)", "needs a GPU: gpu_check.py times it"),
    ("TensorRT / ONNX Runtime CUDA providers", "not installed here; their CPU-side code is tested in "
                                                "test_tensorrt_backend.py / test_export_onnx.py"),
]
STAND_INS: dict = {}  # data-dependent sites met across the module (file:line -> value used)


def _record(fc: FakeCuda) -> None:
    STAND_INS.update(fc.stand_ins)


def _on_cuda(out, what: str) -> None:
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            assert value.device.type == "cuda", f"{what}: {key} on {value.device}"


# ------------------------------------------------------------------ the audit itself can fail
class _Planted(torch.nn.Module):
    """The mix-ups the audit exists to catch, one per `kind`."""

    def __init__(self, kind):
        super().__init__()
        self.kind, self.linear = kind, torch.nn.Linear(4, 4)

    def forward(self, x):
        y = self.linear(x)
        if self.kind == "factory without device":
            return y + torch.arange(4)
        if self.kind == "tensor constant":
            return y * torch.tensor([1.0, 2.0, 3.0, 4.0])
        if self.kind == "cpu mask":
            return y.masked_fill(torch.zeros(4, dtype=torch.bool), 0.0)
        if self.kind == "mixed dtypes":
            return torch.mm(y.half(), self.linear.weight)  # fp16 @ fp32 outside autocast's casts
        return y


@pytest.mark.parametrize("kind", ["factory without device", "tensor constant", "cpu mask", "mixed dtypes"])
def test_the_audit_catches_planted_mix_ups(kind):
    fc = FakeCuda()
    model = fc.module(_Planted(kind))
    with fc, pytest.raises((RuntimeError, TypeError)) as err:
        model(torch.randn(2, 4, device="cuda"))
    assert ("device" in str(err.value)) or ("dtype" in str(err.value)) or ("Half" in str(err.value))


def test_the_audit_catches_a_triton_launch_with_a_cpu_table(monkeypatch):
    from unipose_model.ops import triton_deform_attn as tda

    monkeypatch.setattr(tda, "_shape_tensors", lambda shapes, device: (
        torch.tensor([[int(h), int(w)] for h, w in shapes], dtype=torch.int32),
        torch.zeros(len(shapes), dtype=torch.int32)))
    with FakeCuda(), pytest.raises(AssertionError, match="several devices"):
        tda.ms_deform_attn_triton(torch.randn(1, 5, 1, 4, device="cuda"), [(1, 5)],
                                  torch.rand(1, 3, 1, 1, 2, 2, device="cuda"), torch.rand(1, 3, 1, 1, 2, device="cuda"))


# ------------------------------------------------------------------ the network, per configuration
CONFIGS = ["unipose_tiny", "unipose_tiny_visual", "unipose_r50",
           pytest.param("unipose_swint", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def built():
    from unipose_model.model import build_model

    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            fc = FakeCuda()
            cache[name] = (fc.module(build_model(name)), fc)
        return cache[name]
    return get


def _run_model(model, fc, dtype, size=(96, 128)):
    """encode once, decode two keypoint sets (the second with padded slots), visual prompt if any."""
    with fc, torch.inference_mode(), (torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()):
        images = torch.randn(1, 3, *size, device="cuda")
        instance_text = torch.randn(2, 512, device="cuda")
        if model.visual_prompt_encoder is not None:
            s = model.visual_prompt_encoder.image_size
            instance_text, kpt = model.encode_visual_prompt(
                torch.randn(1, 3, s, s, device="cuda"), torch.rand(1, 5, 2, device="cuda"),
                torch.ones(1, 5, dtype=torch.bool, device="cuda"))
            assert kpt.device.type == "cuda"
            instance_text = torch.cat((instance_text, torch.randn(1, 512, device="cuda").to(instance_text)))
        state = model.encode(images, None, instance_text)
        first = model.decode(state, torch.randn(5, 512, device="cuda"))
        second = model.decode(state, torch.randn(4, 512, device="cuda"),
                              torch.tensor([True, True, True, False], device="cuda"))
    for out, what in ((first, "first keypoint set"), (second, "second keypoint set")):
        _on_cuda(out, what)
    assert second["pred_keypoints"].shape[-2:] == (4, 2)
    return first


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_on_fake_cuda(built, name):
    model, fc = built(name)
    out = _run_model(model, fc, None)
    assert out["pred_boxes"].dtype == torch.float32
    if name == "unipose_tiny":  # the official output layout (parity tests, ONNX export)
        with fc, torch.inference_mode():
            raw = model.forward_raw(torch.randn(1, 3, 64, 96, device="cuda"),
                                    torch.zeros(1, 64, 96, dtype=torch.bool, device="cuda"),
                                    torch.randn(2, 512, device="cuda"), torch.randn(100, 512, device="cuda"),
                                    torch.ones(100, device="cuda"))
        _on_cuda(raw, "forward_raw")
    _record(fc)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["unipose_tiny_visual"])
def test_half_precision_forward_on_fake_cuda(built, name, dtype):
    model, fc = built(name)
    out = _run_model(model, fc, dtype)
    assert out["pred_logits"].dtype == dtype  # autocast took the CUDA path
    assert out["pred_keypoints"].dtype == torch.float32  # sampling positions stay float32
    _record(fc)


def test_both_deformable_attention_cores_on_fake_cuda(built):
    """CUDA picks the Triton kernel (launches checked); without triton it falls back to the
    PyTorch reference: both must keep every tensor on the device."""
    from unipose_model.ops import use_deform_attn_impl

    model, fc = built("unipose_tiny")
    for impl in ("triton", "pytorch"):
        before = len(fc.kernel_launches)
        with use_deform_attn_impl(impl), fc, torch.no_grad():
            out = model(torch.randn(1, 3, 64, 96, device="cuda"), None, torch.randn(2, 512, device="cuda"),
                        torch.randn(3, 512, device="cuda"))
        _on_cuda(out, impl)
        kinds = {name for name, _ in fc.kernel_launches[before:]}
        assert kinds == ({"forward kernel"} if impl == "triton" else set())
    _record(fc)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_triton_backward_wrapper_on_fake_cuda(dtype):
    """The Triton backward's buffers and casts (autograd's engine cannot run on fake CUDA, so its
    backward is called directly with the tensors the forward saved)."""
    from unipose_model.ops import triton_deform_attn as tda

    fc = FakeCuda()
    with fc:
        shapes = [(6, 8), (3, 4)]
        value = torch.randn(2, 60, 2, 8, device="cuda", dtype=dtype)
        loc = torch.rand(2, 5, 2, 2, 3, 2, device="cuda")
        weights = torch.rand(2, 5, 2, 2, 3, device="cuda")
        ctx = type("Ctx", (), {})()
        ctx.save_for_backward = lambda *t: setattr(ctx, "saved_tensors", t)
        out = tda._MSDeformAttnFunction.forward(ctx, value, shapes, loc, weights)
        grads = tda._MSDeformAttnFunction.backward(ctx, torch.randn_like(out).transpose(0, 1).contiguous()
                                                   .transpose(0, 1))
    assert out.device.type == "cuda" and out.dtype == dtype
    assert [g.dtype for g in grads if g is not None] == [dtype, torch.float32, torch.float32]
    assert all(g.device.type == "cuda" for g in grads if g is not None)
    assert [n for n, _ in fc.kernel_launches] == ["forward kernel", "backward kernel"]


# ------------------------------------------------------------------ the Predictor, end to end
@pytest.fixture(scope="module")
def fake_predictor():
    """The bundled fly model (tiny_visual + heatmap refiner) with crop refinement on, moved to
    fake CUDA after loading (a real load on the CPU: checkpoint reading is not device code)."""
    from unipose_model.predictor import Predictor

    fc = FakeCuda()
    predictor = Predictor(device="cpu", refine=2.0, refine_size=96)
    fc.module(predictor.model)
    fc.module(predictor.heatmap_refiner_network)
    predictor.device = CUDA
    return predictor, fc


def _one_detection(out):
    """Real CPU outputs shaped like `out`: query 0 a confident box of a fifth of the image."""
    logits = real_like(out["pred_logits"]).float() - 5.0
    logits[:, 0, 0] = 5.0
    boxes = real_like(out["pred_boxes"], lambda s: torch.full(s, 0.5)).float()
    boxes[..., 2:] = 0.2
    kpts = real_like(out["pred_keypoints"], lambda s: 0.45 + 0.1 * torch.rand(s)).float()
    return {"pred_logits": logits, "pred_boxes": boxes, "pred_keypoints": kpts}


@pytest.fixture()
def checked_boundaries(monkeypatch):
    """Cut the value-dependent CPU steps (see NOT_AUDITED): check what reaches them, hand them
    real tensors of the same shapes (one detection per image), record what was seen."""
    from unipose_model import heatmap_refiner as hr
    from unipose_model import inference as predictor_module  # where the Predictor pre- and post-processes

    seen = {"outputs": [], "heatmaps": []}
    postprocess, decode = predictor_module.instances_of, hr.decode_heatmaps

    def fake_postprocess(outputs, b, size, prepared, *args):
        real = []
        for out in outputs:
            seen["outputs"].append({k: (v.device.type, v.dtype) for k, v in out.items()
                                    if isinstance(v, torch.Tensor)})
            real.append(on_host(_one_detection)(out))
        return on_host(postprocess)(real, b, size, prepared, *args)

    def checked_decode(heatmaps, input_size, *args, **kwargs):
        seen["heatmaps"].append((heatmaps.device.type, heatmaps.dtype))
        return on_host(decode)(real_like(heatmaps, lambda s: torch.rand(s)), input_size, *args, **kwargs)

    from unipose_model import visual_prompt

    # host code (numpy in, CPU tensors out) runs for real; its outputs then go to the device
    monkeypatch.setattr(predictor_module, "preprocess_image", on_host(predictor_module.preprocess_image))
    monkeypatch.setattr(visual_prompt, "prepare_support", on_host(visual_prompt.prepare_support))
    monkeypatch.setattr(predictor_module, "instances_of", fake_postprocess)
    monkeypatch.setattr(hr, "decode_heatmaps", checked_decode)
    return seen


@pytest.fixture(scope="module")
def frame():
    import cv2
    from unipose_model.model_file import BUNDLED_VIDEO

    cap = cv2.VideoCapture(str(BUNDLED_VIDEO))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    return np.ascontiguousarray(bgr[:, :, ::-1])


@pytest.mark.parametrize("profile", ["accurate", "fast", "fastest", "realtime"])
def test_predictor_speed_profiles_on_fake_cuda(fake_predictor, checked_boundaries, frame, profile):
    """Each speed profile through Predictor.predict on a real frame: preprocessing, prompt
    features, the model (bf16 autocast in "realtime"), the crop pass ("accurate") and the heatmap
    refiner ("accurate", "fast")."""
    from unipose_model.speed import apply_profile, get_profile

    predictor, fc = fake_predictor
    apply_profile(predictor, profile, 160, 160)
    with fc:
        results = predictor.predict(frame, "fly")
    _record(fc)
    p = get_profile(profile)
    assert len(results) == 1 and results[0].label == "fly"
    outs = checked_boundaries["outputs"]
    assert outs and all(dev == "cuda" for o in outs for dev, _ in o.values())
    expected = torch.bfloat16 if p.bfloat16 else torch.float32
    assert {o["pred_logits"][1] for o in outs} == {expected}
    assert len(outs) == (2 if p.refine else 1)  # the crop pass ran on the detection's crop
    assert checked_boundaries["heatmaps"] == ([("cpu", torch.float32)] if p.heatmap_refine else [])


def _two_keypoint_sets(prepared):
    """The fly prompt split into two keypoint groups of the same class: one encode, two decodes
    (what "person, face"-style prompts do with a multi-category model)."""
    from unipose_model.prompt_features import GroupFeatures, PreparedPrompt

    g = prepared.groups[0]
    half = len(g.keypoint_names) // 2
    groups = [GroupFeatures(g.class_indices, g.keypoint_names[a:b], (), g.features[a:b])
              for a, b in ((0, half), (half, len(g.keypoint_names)))]
    return PreparedPrompt(prepared.text + " (two keypoint sets)", prepared.classes, prepared.instance_features, groups)


@pytest.mark.parametrize("dtype", [torch.float16], ids=["fp16"])  # bf16: the "realtime" profile above
def test_predictor_half_precision_visual_prompt_and_two_keypoint_sets_on_fake_cuda(
        fake_predictor, checked_boundaries, frame, dtype):
    """A visual prompt (the bundled support frame) and a prompt whose keypoints form two groups
    (one encode, two decodes), under autocast."""
    from unipose_model.model_file import BUNDLED_SUPPORT_IMAGE, BUNDLED_SUPPORT_KEYPOINTS
    from unipose_model.speed import apply_profile
    from unipose_model.visual_prompt import load_visual_prompt

    predictor, fc = fake_predictor
    apply_profile(predictor, "fast", 160, 160)  # the heatmap refiner, no crop pass (audited above)
    predictor.dtype = dtype
    try:
        with fc:
            support = load_visual_prompt(BUNDLED_SUPPORT_IMAGE, BUNDLED_SUPPORT_KEYPOINTS, class_name="fly")
            visual = predictor.predict(frame, visual_prompt=support)
            two_sets = predictor.predict(frame, _two_keypoint_sets(predictor.prepare_prompt("fly")))
    finally:
        predictor.dtype = predictor.initial_settings.dtype
    _record(fc)
    assert len(visual) == 1 and len(two_sets) >= 1
    outs = checked_boundaries["outputs"]
    assert len(outs) == 1 + 2  # visual prompt: one decode; two sets: two decodes
    assert {o["pred_logits"][1] for o in outs} == {dtype}
    assert all(dev == "cuda" for o in outs for dev, _ in o.values())


# ------------------------------------------------------------------ one training step
@pytest.mark.parametrize("amp", ["fp16"])  # the scaler's path; bf16 autocast: the forward tests above
def test_training_step_on_fake_cuda(tmp_path, monkeypatch, amp):
    """Trainer.train_step on fake CUDA: batch transfer, denoising queries, the forward under
    autocast, matcher cost matrices, losses (main, auxiliary, two-stage, keypoint, denoising),
    the gradient scaler (fp16: enabled), gradient clipping and the AdamW step. The backward pass
    is cut (see NOT_AUDITED): it sets fake CUDA gradients of each parameter's shape and dtype."""
    import importlib.util

    from shared_paths import REPO
    from unipose_train import matcher as matcher_module
    from unipose_train.config import load_config
    from unipose_train.trainer import Trainer

    spec = importlib.util.spec_from_file_location("trainer_tests", REPO / "test" / "train" / "test_trainer.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    ann = helpers.make_fly_subset(tmp_path / "fly", frames=(0, 1100), size=96)
    cfg = helpers.base_config(ann, tmp_path / "run", run={"amp": amp},
                              data={"augment": {"scales": [96], "max_size": 96, "eval_size": 96}})
    cfg.setdefault("denoising", {})["number"] = 4
    trainer = Trainer(load_config(data=cfg))
    batch = next(iter(trainer.loader()))

    fc = FakeCuda()
    fc.module(trainer.model)
    trainer.device = CUDA
    trainer.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    matched, seen = matcher_module.HungarianMatcher.__call__, {"costs": [], "loss": []}

    def identity_match(self, outputs, targets):
        result = []
        for b, target in enumerate(targets):
            cost = self.cost_matrix(outputs, target, b)
            seen["costs"].append((cost.device.type, cost.dtype))
            n = min(cost.shape)
            result.append(on_host(lambda: (torch.arange(n), torch.arange(n)))())
        return result

    def backward_stand_in(loss, *args, **kwargs):
        seen["loss"].append((loss.device.type, loss.dtype))
        for p in trainer.model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)

    monkeypatch.setattr(matcher_module.HungarianMatcher, "__call__", identity_match)
    monkeypatch.setattr(torch.Tensor, "backward", backward_stand_in)
    with fc:
        table = trainer.text_table  # built on the training device
        table.device, table.table = CUDA, table.table.to(CUDA)
        trainer.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        trainer._build_optim()  # over the fake CUDA parameters
        terms = trainer.train_step(batch)
    _record(fc)
    assert matched is not identity_match
    assert seen["costs"] and all(c == ("cuda", torch.float32) for c in seen["costs"])
    assert seen["loss"] == [("cuda", torch.float32)]
    assert "loss" in terms and any(k.startswith("dn_") or "dn" in k for k in terms)
    state = trainer.optimizer.state
    assert state and all(v.device.type == "cuda" for s in state.values() for v in s.values()
                         if isinstance(v, torch.Tensor) and v.dim())


def test_denoising_losses_read_nothing_back_from_the_device():
    """The audit listed denoising.py reading each positive query's target index back to the host
    (`targets[b][...]` with device scalars): two GPU syncs per positive query per decoder layer.
    The targets are now gathered in one indexing op; only `nonzero` sizes its output."""
    from unipose_train.denoising import DenoisingQueries, denoising_losses
    from unipose_train.losses import LossWeights

    fc = FakeCuda()
    with fc:
        B, D, N = 2, 12, 3
        targets = [{"labels": torch.tensor([0, 2], device="cuda"), "boxes": torch.rand(2, 4, device="cuda")},
                   {"labels": torch.tensor([1, 0], device="cuda"), "boxes": torch.rand(2, 4, device="cuda")}]
        queries = DenoisingQueries(torch.zeros(B, D, dtype=torch.long, device="cuda"),
                                   torch.rand(B, D, 4, device="cuda"), 6,
                                   torch.zeros(B, D, dtype=torch.long, device="cuda"),
                                   torch.ones(B, D, dtype=torch.bool, device="cuda"),
                                   torch.ones(B, D, dtype=torch.bool, device="cuda"))
        outs = [{"pred_logits": torch.randn(B, D, N, device="cuda"), "pred_boxes": torch.rand(B, D, 4, device="cuda")}
                for _ in range(3)]
        reads = fc.mode.scalar_reads
        terms = denoising_losses(outs, queries, targets, 3.0, LossWeights())
        assert fc.mode.scalar_reads == reads
    assert set(terms) == {"dn_cls", "dn_bbox", "dn_giou"} and all(v.device.type == "cuda" for v in terms.values())


def test_report_what_was_not_audited(capsys):
    """Lists the steps the fake-CUDA audit could not check, and the data-dependent sites that ran
    on a stand-in value. Runs last in this module; the list is in the test output (-s / -rA)."""
    lines = ["fake-CUDA audit: not audited (and why):"]
    lines += [f"  - {step}: {why}" for step, why in NOT_AUDITED]
    lines.append("data-dependent steps that ran on a stand-in value (placement checked, value not):")
    lines += [f"  - {site} -> {value!r}" for site, value in sorted(STAND_INS.items())] or ["  (none)"]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert all(why for _, why in NOT_AUDITED)
