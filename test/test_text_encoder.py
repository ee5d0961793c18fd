"""Text encoders: official templates, the fixtures' hash features, caching, CLIP loading offline."""
import json

import numpy as np
import pytest
import torch

from unipose_model.text_encoder import (ClipTextEncoder, ClipWeightsMissingError, HashTextEncoder,
                                        PrecomputedTextEncoder, TextEncoderError, build_text_encoder,
                                        instance_prompt, keypoint_prompt)

from shared_paths import REFERENCE

FIXTURES = REFERENCE / "fixtures"


def test_templates():
    assert instance_prompt("Polar_Bear") == "a photo of polar bear"
    assert instance_prompt("t-shirt") == "a photo of t shirt"
    assert keypoint_prompt("Left_Eye") == "a photo of left eye"
    assert keypoint_prompt("right-ear") == "a photo of right-ear"  # '-' kept for keypoints


@pytest.mark.parametrize("name", ["coco_person", "multi_class"])
def test_hash_encoder_reproduces_fixture_features(name):
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    with np.load(FIXTURES / f"{name}.npz") as z:
        inst, kpts = z["in_object_embeddings_text"], z["in_kpts_embeddings_text"]
    enc = HashTextEncoder(salt=meta["text_salt"])
    k = len(meta["keypoints"])
    ours_inst = enc.encode_instances(meta["instances"])
    ours_kpts = enc.encode_keypoints(meta["keypoints"])
    assert ours_inst.dtype == torch.float32 and ours_inst.shape == (len(meta["instances"]), 512)
    assert np.array_equal(ours_inst.numpy(), inst)
    assert np.array_equal(ours_kpts.numpy(), kpts[:k])
    assert not enc.meaningful


class CountingEncoder(HashTextEncoder):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def _encode(self, texts):
        self.calls.append(list(texts))
        return super()._encode(texts)


def test_cache_encodes_each_prompt_once_and_is_lru():
    enc = CountingEncoder(cache_size=3)
    a = enc.encode_instances(["cat", "dog"])
    b = enc.encode_instances(["dog", "cat", "cat"])
    assert enc.calls == [["a photo of cat", "a photo of dog"]]
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    enc.encode_keypoints(["nose", "tail"])  # cache holds 3: "dog" (least recently used) goes
    enc.encode_instances(["dog"])  # re-encoded; evicts "cat"
    enc.encode_instances(["cat"])  # re-encoded; evicts "nose"
    enc.encode_keypoints(["tail"])  # still cached
    assert enc.calls[1:] == [["a photo of nose", "a photo of tail"], ["a photo of dog"], ["a photo of cat"]]
    assert enc.encode_keypoints([]).shape == (0, 512)


def test_precomputed_encoder(tmp_path):
    table = {"person": np.ones(512), "a photo of left eye": np.full(512, 2.0)}
    enc = PrecomputedTextEncoder(table)
    assert float(enc.encode_instances(["Person"])[0, 0]) == 1.0
    assert float(enc.encode_keypoints(["left_eye"])[0, 0]) == 2.0
    known = r"no precomputed text feature for 'cat'.*known: a photo of left eye, person"
    with pytest.raises(TextEncoderError, match=known):
        enc.encode_instances(["cat"])
    path = tmp_path / "feats.npz"
    np.savez(path, **{"person": np.arange(512, dtype=np.float32)})
    enc = build_text_encoder(str(path))
    assert torch.equal(enc.encode_instances(["person"])[0], torch.arange(512, dtype=torch.float32))
    with pytest.raises(TextEncoderError, match="expected 512"):
        PrecomputedTextEncoder({"x": np.zeros(3)})


# ------------------------------------------------------------------------- CLIP, tiny and offline

TINY_CLIP = "unipose-test-tiny-clip"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random open_clip model (real tokenizer vocabulary, 64-wide text tower)."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    cfg = {"embed_dim": 512, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 64},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP, pretrained=None).eval()
    tokens = open_clip.get_tokenizer(TINY_CLIP)(["a photo of person", "a photo of left eye"])
    with torch.no_grad():
        expected = model.encode_text(tokens)
    return model, expected, folder


def test_clip_encoder_loads_local_state_dict(tiny_clip, tmp_path):
    model, expected, _ = tiny_clip
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    enc = ClipTextEncoder(weights=path, model_name=TINY_CLIP, device="cpu")
    assert enc._model is None  # lazy
    out = torch.cat([enc.encode_instances(["person"]), enc.encode_keypoints(["left eye"])])
    assert out.dtype == torch.float32 and out.shape == (2, 512)
    assert torch.allclose(out, expected, atol=1e-6)  # raw encode_text output, not normalised
    assert enc._model.visual is None  # image tower dropped


def test_clip_encoder_wrapped_prefixed_and_directory(tiny_clip, tmp_path):
    model, expected, _ = tiny_clip
    wrapped = {"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(wrapped, folder / "open_clip_pytorch_model.bin")
    enc = ClipTextEncoder(weights=folder, model_name=TINY_CLIP, device="cpu")
    assert torch.allclose(enc.encode_instances(["person"]), expected[:1], atol=1e-6)


def test_clip_encoder_safetensors(tiny_clip, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    model, expected, _ = tiny_clip
    path = tmp_path / "tiny.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.save_file(state, str(path))
    enc = ClipTextEncoder(weights=path, model_name=TINY_CLIP, device="cpu")
    assert torch.allclose(enc.encode_keypoints(["left eye"]), expected[1:], atol=1e-6)


def test_clip_missing_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/clip/ViT-B-32.pt
    enc = ClipTextEncoder(device="cpu", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ClipWeightsMissingError) as err:
        enc.encode_instances(["person"])
    message = str(err.value)
    assert "not in the local cache" in message and "HF_HUB_OFFLINE" in message
    assert "open_clip.create_model('ViT-B-32-quickgelu', pretrained='openai')" in message
    assert "--clip-weights PATH" in message


def test_clip_bad_paths_and_files(tmp_path, tiny_clip):
    with pytest.raises(ClipWeightsMissingError, match="not found"):
        ClipTextEncoder(weights=tmp_path / "nope.pt", device="cpu").load()
    with pytest.raises(ClipWeightsMissingError, match="no CLIP weights file"):
        ClipTextEncoder(weights=tmp_path, device="cpu").load()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(TextEncoderError, match="cannot read CLIP weights"):
        ClipTextEncoder(weights=junk, model_name=TINY_CLIP, device="cpu").load()
    other = tmp_path / "other.pt"
    torch.save({"foo": torch.zeros(1)}, other)
    with pytest.raises(TextEncoderError, match="not a CLIP"):
        ClipTextEncoder(weights=other, model_name=TINY_CLIP, device="cpu").load()


def test_clip_half_precision_needs_cuda():
    with pytest.raises(TextEncoderError, match="needs CUDA"):
        ClipTextEncoder(device="cpu", dtype="float16")
    assert ClipTextEncoder(device="cpu").dtype == torch.float32  # auto on CPU


def test_build_text_encoder_kinds():
    assert isinstance(build_text_encoder("hash"), HashTextEncoder)
    assert isinstance(build_text_encoder("clip", device="cpu"), ClipTextEncoder)
    with pytest.raises(ValueError, match="unknown text encoder"):
        build_text_encoder("bert")
