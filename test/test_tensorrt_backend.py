"""TensorRT backend paths that need no GPU: cache keys, errors without TensorRT/GPU, ONNX interface."""
import sys
from dataclasses import replace

import pytest
import torch

from unipose_model import build_model
from unipose_model.backends import BackendError, build_backend
from unipose_model.backends import tensorrt_backend as trtb
from unipose_model.checkpoint import fill_reference_weights


def base_key():
    return trtb.EngineKey("unipose_swint", "a" * 64, "10.9.0", "NVIDIA H100", "fp16", (800, 1333),
                          trtb.PromptProfile(), "trt_plugin", 18)


@pytest.mark.parametrize("field,value", [
    ("weights_sha256", "b" * 64), ("tensorrt_version", "10.9.1"), ("gpu_name", "NVIDIA A100"),
    ("precision", "fp32"), ("image_size", (480, 640)),
    ("profile", trtb.PromptProfile(classes=(1, 2, 16))), ("profile", trtb.PromptProfile(keypoints=(1, 17, 20))),
    ("deform_attn", "grid_sample"), ("opset", 19), ("model", "unipose_tiny")])
def test_cache_key_changes_exactly_when_a_component_changes(field, value):
    key = base_key()
    assert key.digest() == base_key().digest()  # deterministic
    changed = replace(key, **{field: value})
    assert changed.digest() != key.digest()
    assert changed.file_name() != key.file_name()


def test_profile_validation():
    trtb.PromptProfile().validate(349, 68)
    with pytest.raises(BackendError, match="keypoints"):
        trtb.PromptProfile(keypoints=(1, 17, 100)).validate(349, 68)
    with pytest.raises(BackendError, match="classes"):
        trtb.PromptProfile(classes=(2, 1, 4)).validate(349, 68)


def test_clear_error_without_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as if not installed
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        trtb.require_tensorrt()
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        build_backend("tensorrt", build_model("unipose_tiny"))


def test_clear_error_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        trtb.require_gpu()
    monkeypatch.setitem(sys.modules, "tensorrt", type(sys)("tensorrt"))  # "installed", still no GPU
    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        build_backend("tensorrt", build_model("unipose_tiny"))


def test_exported_onnx_has_the_interface_the_engine_builder_expects(tmp_path):
    pytest.importorskip("onnxscript")
    from unipose_model.export import export_onnx

    # a cut-down tiny model keeps the export quick; the interface does not depend on depth
    model = fill_reference_weights(build_model(
        "unipose_tiny", enc_layers=1, dec_layers=2, num_box_decoder_layers=1,
        backbone_kwargs=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window=7)))
    path = export_onnx(model, tmp_path / "m.onnx", (64, 96), deform_attn="trt_plugin")
    d = trtb.check_onnx_interface(path)
    assert d["metadata"]["unipose.deform_attn"] == "trt_plugin"
    assert "trt.plugins::MultiscaleDeformableAttnPlugin_TRT" in d["ops"]
    import onnx
    proto = onnx.load(str(path))
    nodes = [n for n in proto.graph.node if n.op_type == "MultiscaleDeformableAttnPlugin_TRT"]
    assert len(nodes) == 1 + 2 and all(n.domain == "trt.plugins" and len(n.input) == 5 for n in nodes)
    assert {a.name: a.s.decode() for a in nodes[0].attribute} == {"plugin_version": "1", "plugin_namespace": ""}
    assert "ai.onnx::GridSample" not in d["ops"]
    proto.graph.input[3].name = "kpt"
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(BackendError, match="expected"):
        trtb.check_onnx_interface(tmp_path / "bad.onnx")


def test_build_engine_rejects_bad_precision(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", type(sys)("tensorrt"))
    with pytest.raises(BackendError, match="precision"):
        trtb.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "int8", trtb.PromptProfile())


def test_cli_export_errors_are_one_line(capsys, monkeypatch):
    from unipose_model.cli import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["export", "tensorrt", "--model", "unipose_tiny", "-c", "reference", "--image-size", "64x96"]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert main(["export", "onnx", "--model", "unipose_tiny", "-c", "reference", "--opset", "16",
                 "--out", "/nonexistent/x.onnx"]) == 2
    assert "opset 16 is not supported" in capsys.readouterr().err
