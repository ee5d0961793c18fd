"""torch.compile'd inference (unipose_model/compiled.py): the same outputs as the plain model,
for one keypoint group (forward) and several (encode + decode); a failed compile falls back."""
import warnings

import numpy as np
import pytest
import torch

from unipose_model import build_model
from unipose_model.checkpoint import fill_reference_weights
from unipose_model.predictor import Predictor, PredictorError

KWARGS = dict(device="cpu", text_encoder="hash", box_threshold=0.0, short_side=96, max_size=128,
              iou_threshold=1.0)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)


def _same(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.label == y.label and x.score == pytest.approx(y.score, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(x.box, y.box, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(x.keypoints, y.keypoints, rtol=1e-4, atol=1e-3)


def slim_tiny():
    """unipose_tiny with one Swin block per stage and one encoder / box / keypoint layer each: every
    kind of layer once. Inductor writes and compiles (g++) one C++ kernel per distinct operation
    and shape, so this compiles far fewer kernels than the full tiny model, with the same code paths."""
    return fill_reference_weights(build_model(
        "unipose_tiny", enc_layers=1, dec_layers=2, num_box_decoder_layers=1,
        backbone_kwargs=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window=7)))


@pytest.mark.slow
def test_inductor_compiled_model_gives_the_plain_models_detections(image):
    """The real thing: inductor with frozen weights, one keypoint group."""
    plain = Predictor(slim_tiny(), **KWARGS)
    compiled = Predictor(plain.model, compile=True, **KWARGS)
    _same(plain.predict(image, "person"), compiled.predict(image, "person"))
    assert compiled.compiled.failed is None and compiled.compiled.backend == "inductor"
    assert list(compiled.compiled._functions) == ["forward"]


def test_several_keypoint_groups_go_through_compiled_encode_and_decode(image):
    """Traced by dynamo (the "eager" backend: the same graph capture, no code generation)."""
    plain = Predictor("unipose_tiny", "reference", **KWARGS)
    compiled = Predictor(plain.model, compile="eager", **KWARGS)
    _same(plain.predict(image, "person, face"), compiled.predict(image, "person, face"))
    assert compiled.compiled.failed is None and set(compiled.compiled._functions) == {"encode", "decode"}


def test_a_failed_compile_warns_and_runs_the_plain_model(image, monkeypatch):
    attempts = {"compile": 0, "run": 0}

    def broken(*args, **kwargs):
        attempts["compile"] += 1

        def run(*a, **k):
            attempts["run"] += 1
            raise torch._dynamo.exc.TorchDynamoException("no C++ compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    plain = Predictor("unipose_tiny", "reference", **KWARGS)
    compiled = Predictor(plain.model, compile=True, **KWARGS)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        result = compiled.predict(image, "person")
    _same(plain.predict(image, "person"), result)
    assert compiled.compiled.failed == "TorchDynamoException: no C++ compiler here"
    assert attempts["run"] == 1, attempts
    tried = dict(attempts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = compiled.predict(image, "person")
    # no second warning, no second attempt, and still the plain model's detections
    assert not [w for w in caught if "torch.compile" in str(w.message)], [str(w.message) for w in caught]
    assert attempts == tried
    _same(result, again)


def test_compile_is_for_the_pytorch_backend_only():
    with pytest.raises(PredictorError, match="compile applies to the pytorch backend"):
        Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", compile=True,
                  backend="onnxruntime")
