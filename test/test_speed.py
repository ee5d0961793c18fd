"""Speed profiles (unipose_model/speed.py) and the CPU fast paths behind them."""
import numpy as np
import pytest
import torch

from unipose_model.ops import MSDeformAttn, ms_deform_attn_pytorch, register_deform_attn_impl, use_deform_attn_impl
from unipose_model.predictor import Predictor, PredictorError, cpu_supports_bf16
from unipose_model.speed import PROFILES, apply_profile

BF16 = cpu_supports_bf16()


@pytest.fixture(scope="module")
def predictor():
    return Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", short_side=256, max_size=384)


def test_profiles_scale_input_and_queries_and_accurate_restores(predictor):
    cfg = predictor.model.config
    apply_profile(predictor, "fastest", 256, 384)
    assert (predictor.short_side, predictor.max_size) == (102, 154)
    assert predictor.settings.num_queries == round(cfg.num_queries / 9)
    assert predictor.settings.num_select == 2
    # per call: the model (which other predictors may share) keeps its configuration
    assert predictor.model.transformer.num_queries == cfg.num_queries
    assert predictor.dtype == torch.float32
    apply_profile(predictor, "realtime", 256, 384)
    assert predictor.dtype == (torch.bfloat16 if BF16 else torch.float32)
    apply_profile(predictor, "accurate", 256, 384)
    assert (predictor.short_side, predictor.max_size) == (256, 384)
    assert predictor.settings.num_queries == cfg.num_queries
    assert predictor.dtype == torch.float32
    with pytest.raises(ValueError, match="one of accurate, fast, fastest, realtime"):
        apply_profile(predictor, "ludicrous", 256, 384)
    assert set(PROFILES) == {"accurate", "fast", "fastest", "realtime"}


@pytest.mark.skipif(not BF16, reason="this CPU has no native bfloat16")
def test_realtime_profile_runs_in_bfloat16_with_float32_sampling_positions(predictor):
    image = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
    apply_profile(predictor, "realtime", 256, 384)
    try:
        out = predictor.predict(image, "person")
    finally:
        apply_profile(predictor, "accurate", 256, 384)
    assert all(np.isfinite(i.keypoints).all() for i in out)

    # under bf16 autocast the sampling core gets float32 positions, weights and values
    seen = []

    def spy(value, shapes, locations, weights):
        seen.append((value.dtype, locations.dtype, weights.dtype))
        return ms_deform_attn_pytorch(value, shapes, locations, weights)

    register_deform_attn_impl("dtype_spy", spy)
    torch.manual_seed(0)
    attn = MSDeformAttn(64, n_levels=2, n_heads=4, n_points=2)
    q, mem, ref = torch.randn(1, 30, 64), torch.randn(1, 20 * 30 + 10 * 15, 64), torch.rand(1, 30, 2, 2)
    exact = attn(q, ref, mem, [(20, 30), (10, 15)])
    with torch.autocast("cpu", dtype=torch.bfloat16), use_deform_attn_impl("dtype_spy"):
        fast = attn(q, ref, mem, [(20, 30), (10, 15)])
    assert seen == [(torch.float32,) * 3]
    assert fast.dtype == torch.bfloat16  # the projections around it do run in bf16
    assert (fast.float() - exact).abs().max() < 0.05 * exact.abs().max()


def test_bfloat16_on_the_cpu_needs_native_support():
    if BF16:
        p = Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", dtype="bfloat16")
        assert p.dtype == torch.bfloat16
    else:
        with pytest.raises(PredictorError, match="native bf16"):
            Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", dtype="bfloat16")
    with pytest.raises(PredictorError, match="needs a CUDA device"):
        Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", dtype="float16")
