"""ONNX export + the onnxruntime backend against the PyTorch model, on real images (two input sizes).

Tolerances (float32, the same limits as the official-parity fixtures): logits 1e-3 absolute,
boxes and keypoints 1e-5 absolute (normalised coordinates). Observed: ~1e-5 / ~2e-7.
"""
import os

import cv2
import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from unipose_model import build_model  # noqa: E402
from unipose_model.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from unipose_model.checkpoint import fill_reference_weights  # noqa: E402
from unipose_model.export import ExportError, describe, export_onnx, read_metadata, weights_hash  # noqa: E402
from unipose_model.predictor import Predictor  # noqa: E402
from unipose_model.preprocess import preprocess_image  # noqa: E402
from unipose_model.text_encoder import HashTextEncoder  # noqa: E402

from shared_paths import DATA  # noqa: E402

SAMPLES = DATA / "samples"
# real photos whose tiny-model inputs (short side 256, long side <= 384) differ
IMAGES = [SAMPLES / "coco" / "000000000785.jpg", SAMPLES / "fly" / "1400.jpg",
          SAMPLES / "ap10k" / "000000000004.jpg"]
LOGITS_TOL, COORD_TOL = 1e-3, 1e-5


def rgb(path):
    return cv2.imread(str(path))[:, :, ::-1].copy()


@pytest.fixture(scope="module")
def tiny():
    return fill_reference_weights(build_model("unipose_tiny"))


@pytest.fixture(scope="module")
def backend(tiny, tmp_path_factory):
    return OnnxRuntimeBackend(tiny, cache_dir=tmp_path_factory.mktemp("onnx"), threads=2)


def prompt_features(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 512, generator=g) * 0.4, torch.randn(k, 512, generator=g) * 0.4


@pytest.mark.slow
def test_onnxruntime_matches_pytorch_on_three_real_images(tiny, backend):
    sizes = set()
    first = rgb(IMAGES[0])
    for i, path in enumerate(IMAGES):
        photo = rgb(path)
        if i == 2:  # the third photo at the first one's size: its graph is reused with other N and K
            photo = cv2.resize(photo, first.shape[1::-1], interpolation=cv2.INTER_AREA)
        image = preprocess_image(photo, short_side=256, max_size=384)[None]
        mask = torch.zeros(1, *image.shape[-2:], dtype=torch.bool)
        sizes.add(tuple(image.shape[-2:]))
        # a different prompt size per image: the graph's N and K are dynamic
        inst, kpt = prompt_features(1 + i, (17, 5, 68)[i], seed=i)
        with torch.no_grad():
            ref = tiny(image, mask, inst, kpt)
        out = backend(image, mask, inst, kpt)
        assert out["pred_logits"].shape == ref["pred_logits"].shape
        assert out["pred_keypoints"].shape == ref["pred_keypoints"].shape
        assert (out["pred_logits"] - ref["pred_logits"]).abs().max() <= LOGITS_TOL, path.name
        assert (out["pred_boxes"] - ref["pred_boxes"]).abs().max() <= COORD_TOL, path.name
        assert (out["pred_keypoints"] - ref["pred_keypoints"]).abs().max() <= COORD_TOL, path.name
    assert len(sizes) == 2  # two exports (about 35 s each on a 2-core CPU), three prompt sizes
    # one exported file per input size, reused (not re-exported) by a second backend
    files = sorted(backend.cache_dir.glob("*.onnx"))
    assert len(files) == 2
    stamp = [f.stat().st_mtime_ns for f in files]
    again = OnnxRuntimeBackend(tiny, cache_dir=backend.cache_dir)
    again.session(tuple(sizes)[0])
    assert [f.stat().st_mtime_ns for f in files] == stamp


@pytest.mark.slow
def test_exported_graph_interface(backend):
    path = backend.onnx_path((256, 256))
    backend.session((256, 256))
    d = describe(path)
    ins = {i["name"]: i for i in d["inputs"]}
    outs = {o["name"]: o for o in d["outputs"]}
    assert list(ins) == ["image", "mask", "instance_text", "keypoint_text"]
    assert list(outs) == ["logits", "boxes", "keypoints"]
    assert ins["image"]["shape"] == [1, 3, 256, 256] and ins["mask"]["dtype"] == "BOOL"
    assert ins["instance_text"]["shape"] == ["num_classes", 512]
    assert ins["keypoint_text"]["shape"] == ["num_keypoints", 512]
    assert outs["logits"]["shape"] == [1, 10, "num_classes"]
    assert outs["keypoints"]["shape"] == [1, 10, "num_keypoints", 2]
    assert "ai.onnx::GridSample" in d["ops"] and d["opsets"]["ai.onnx"] >= 17
    meta = read_metadata(path)
    assert meta["unipose.model"] == "unipose_tiny" and meta["unipose.image_size"] == "256x256"
    assert meta["unipose.weights_sha256"] == backend.weights_sha256


@pytest.mark.slow
def test_predictor_onnxruntime_backend_gives_the_same_detections(tiny, backend):
    kwargs = dict(device="cpu", text_encoder=HashTextEncoder(), box_threshold=0.0, short_side=256, max_size=384)
    plain = Predictor(tiny, **kwargs)
    exported = Predictor(tiny, backend="onnxruntime", backend_options={"cache_dir": backend.cache_dir}, **kwargs)
    image = rgb(IMAGES[1])
    a = plain.predict(image, "fly: head, thorax, abdomen")
    b = exported.predict(image, "fly: head, thorax, abdomen")
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.label == y.label and abs(x.score - y.score) < 1e-4
        np.testing.assert_allclose(x.box, y.box, atol=1e-2)  # pixels
        np.testing.assert_allclose(x.keypoints, y.keypoints, atol=1e-2)


def test_trt_plugin_route_computes_the_same_function(tiny):
    from unipose_model.export import trt_plugin  # noqa: F401  (registers "trt_plugin")
    from unipose_model.ops import use_deform_attn_impl

    image = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    inst, kpt = prompt_features(2, 4)
    with torch.no_grad():
        with use_deform_attn_impl("pytorch"):  # the plugin route wraps the reference core
            ref = tiny(image, None, inst, kpt)
        with use_deform_attn_impl("trt_plugin"):
            out = tiny(image, None, inst, kpt)
    for key in ("pred_logits", "pred_boxes", "pred_keypoints"):
        assert torch.equal(out[key], ref[key])


def test_export_rejects_bad_options(tiny, tmp_path):
    with pytest.raises(ExportError, match="deform_attn"):
        export_onnx(tiny, tmp_path / "x.onnx", (64, 64), deform_attn="cuda")
    with pytest.raises(ExportError, match="opset 16"):
        export_onnx(tiny, tmp_path / "x.onnx", (64, 64), opset=16)


def test_weights_hash_changes_with_any_weight(tiny):
    model = build_model("unipose_tiny")
    fill_reference_weights(model)
    first = weights_hash(model)
    assert first == weights_hash(tiny)
    with torch.no_grad():
        model.transformer.level_embed[0, 0] += 1e-6
    assert weights_hash(model) != first


@pytest.mark.skipif(not os.environ.get("UNIPOSE_SLOW_EXPORT"), reason="Swin-T export takes minutes; "
                    "set UNIPOSE_SLOW_EXPORT=1")
def test_swint_export_matches_pytorch(tmp_path):
    model = fill_reference_weights(build_model("unipose_swint"))
    image = preprocess_image(rgb(IMAGES[1]), short_side=256, max_size=384)[None]
    mask = torch.zeros(1, *image.shape[-2:], dtype=torch.bool)
    inst, kpt = prompt_features(2, 17)
    with torch.no_grad():
        ref = model(image, mask, inst, kpt)
    out = OnnxRuntimeBackend(model, cache_dir=tmp_path)(image, mask, inst, kpt)
    assert (out["pred_logits"] - ref["pred_logits"]).abs().max() <= LOGITS_TOL
    assert (out["pred_boxes"] - ref["pred_boxes"]).abs().max() <= COORD_TOL
    assert (out["pred_keypoints"] - ref["pred_keypoints"]).abs().max() <= COORD_TOL
