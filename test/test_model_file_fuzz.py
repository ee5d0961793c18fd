"""Damaged model files: every one is refused with one CheckpointError naming the file (issue 19,
item 4). A seeded fuzz over a tiny but complete model file (weights, prompt features, vocabulary,
input size, threshold, heatmap refiner): truncations, byte flips (in the pickle, the zip
directory and anywhere) and wrong containers, each loaded through ``Predictor``."""
from __future__ import annotations

import gzip
import io
import json
import pickle
import random
import zipfile

import numpy as np
import pytest
import torch

import unipose_model
from unipose_model.checkpoint import CheckpointError, fill_reference_weights
from unipose_model.model_file import save_model_file
from unipose_model.predictor import Predictor

# The smallest model the configurations build: ~290 tensors, a 0.6 MB file.
TINY_OVERRIDES = dict(enc_layers=1, dec_layers=2, num_box_decoder_layers=1, hidden_dim=32, nheads=2,
                      dim_feedforward=16, fusion_dim=16, text_ffn=16, num_queries=20, num_select=5,
                      dn_labelbook_size=4,
                      backbone_kwargs=dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window=7))
KEYPOINTS = ["head", "thorax", "abdomen"]
SPEC = {"category": "fly", "keypoints": KEYPOINTS, "align": ["thorax", "head"], "input_size": 32,
        "context": 1.5, "widths": [2, 2, 2, 2, 2], "flip_pairs": []}


def write_tiny_model_file(path, **changes):
    """A complete model file of the tiny configuration; `changes` replace entries of the saved
    object (for crafted bad metadata)."""
    from unipose_model.heatmap_refiner import HeatmapRefiner, HeatmapRefinerSpec
    from unipose_model.text_encoder import instance_prompt, keypoint_prompt

    model = fill_reference_weights(unipose_model.build_model("unipose_tiny", **TINY_OVERRIDES))
    texts = [instance_prompt("fly")] + [keypoint_prompt(k) for k in KEYPOINTS]
    features = torch.nn.functional.normalize(torch.randn(len(texts), 512, generator=torch.Generator().manual_seed(0)), dim=1)
    refiner = HeatmapRefiner(HeatmapRefinerSpec.from_dict(SPEC))
    save_model_file(path, model.state_dict(), model_name="unipose_tiny", overrides=TINY_OVERRIDES, texts=texts,
                    features=features, text_encoder="test", half=True,
                    vocabulary=[{"id": "fly", "categories": ["fly"], "keypoints": KEYPOINTS, "skeleton": [[0, 1]]}],
                    input_size={"short_side": 64, "max_size": 64}, postprocess={"box_threshold": 0.2},
                    info={"note": "fuzz"}, heatmap_refiner={"model": refiner.state_dict(), "spec": SPEC})
    if changes:
        obj = torch.load(path, weights_only=True)
        for key, value in changes.items():
            if value is None:
                obj.pop(key, None)
            else:
                obj[key] = value
        torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return write_tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.pth")


@pytest.fixture
def cached_build(monkeypatch):
    """Build each configuration once: the fuzz is about reading files, not building networks."""
    built = {}
    original = unipose_model.build_model

    def build(name="unipose_swint", **overrides):
        key = (name, repr(sorted(overrides.items())))
        if key not in built:
            built[key] = original(name, **overrides)
        return built[key]

    monkeypatch.setattr(unipose_model, "build_model", build)


def wrong_containers(good: bytes) -> list[tuple[str, bytes]]:
    def saved(obj):
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    def zipped(entries):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in entries.items():
                z.writestr(name, data)
        return buf.getvalue()

    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb") as f:
        f.write(good)
    npy = io.BytesIO()
    np.save(npy, np.zeros((3, 3)))
    return [
        ("6-byte text", b"hello\n"), ("json", json.dumps({"model": {}}).encode()), ("one byte", b"\x80"),
        ("empty zip", zipped({})), ("zip of text", zipped({"a/data.pkl": b"not a pickle"})),
        ("zip of a pickle", zipped({"a/data.pkl": pickle.dumps({"model": {"x": 1}})})),
        ("plain pickle", pickle.dumps({"model": {"x": 1}})), ("gzip", gz.getvalue()), ("npy", npy.getvalue()),
        ("list", saved([1, 2, 3])), ("tensor", saved(torch.zeros(3))), ("string", saved("model")),
        ("int", saved(7)), ("empty dict", saved({})), ("empty state", saved({"model": {}})),
        ("non-tensor state", saved({"model": {"a": 1}})), ("tuple state", saved({"model": {"a": (1, 2)}})),
        ("foreign state", saved({"model": {"a": torch.zeros(2)}})), ("twice", good + good),
        ("zip appended", good + zipped({"x": b"y"})), ("legacy format", _legacy(saved)),
        ("config not a dict", saved({"model": {"a": torch.zeros(2)}, "model_config": "unipose_tiny"})),
        ("int keys", saved({"model": {1: torch.zeros(2)}})),
    ]


def _legacy(saved):
    buf = io.BytesIO()
    torch.save({"model": {"a": torch.zeros(2)}}, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def mutations(good: bytes, seed: int = 19) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        pkl = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
        pkl_start = pkl.header_offset + 30 + len(pkl.filename)  # local header, then the pickle
        pkl_end = pkl_start + pkl.compress_size
    directory = good.rfind(b"PK\x01\x02", 0, len(good))  # last central-directory entry and the end record
    regions = {"pickle": (pkl_start, pkl_end), "zip directory": (directory - 4096, len(good)),
               "anywhere": (0, len(good))}
    cases = [(f"truncated to {n} bytes", good[:n]) for n in sorted(rng.sample(range(1, len(good)), 70))]
    for region, (a, b), count in [("pickle", regions["pickle"], 110), ("zip directory", regions["zip directory"], 70),
                                  ("anywhere", regions["anywhere"], 35)]:
        for _ in range(count):
            data = bytearray(good)
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(max(0, a), b)] ^= 1 << rng.randrange(8)
            cases.append((f"bytes flipped in the {region}", bytes(data)))
    return cases + wrong_containers(good)


@pytest.mark.slow  # ~300 loads of a tiny file: 11 s on a quiet 2-core machine, up to 30 s busy
def test_fuzzed_model_files_raise_one_named_error(tmp_path, tiny_file, cached_build):
    good = tiny_file.read_bytes()
    Predictor(checkpoint=tiny_file, device="cpu")  # the intact file loads
    cases = mutations(good)
    assert len(cases) >= 300
    path = tmp_path / "mutated.pth"
    outcomes = {"loaded": 0, "refused": 0}
    raw = []
    for what, data in cases:
        path.write_bytes(data)
        try:
            Predictor(checkpoint=path, device="cpu")
            outcomes["loaded"] += 1
        except CheckpointError as e:
            message = str(e)
            assert str(path) in message and "\n" not in message, (what, message)
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001 - what this test looks for
            raw.append(f"{what}: {type(e).__name__}: {str(e)[:200]}")
    assert not raw, f"{len(raw)} of {len(cases)} leaked a raw exception:\n" + "\n".join(raw[:20])
    assert outcomes["refused"] > 150  # most mutations break the file; flips in the weights may not


def _refusal(path, capsys):
    """The Predictor's error and the CLI's one line for the model file at `path`."""
    from unipose_model.cli import main

    with pytest.raises(CheckpointError) as info:
        Predictor(checkpoint=path, device="cpu")
    rc = main(["predict", str(SAMPLE), "--prompt", "fly", "--out", str(path.parent / "out"), "--checkpoint", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert str(path) in str(info.value) and str(path) in err
    return str(info.value)


from unipose_model.model_file import BUNDLED_VIDEO  # noqa: E402

SAMPLE = BUNDLED_VIDEO.with_name("sample_fly.jpg")

BAD_METADATA = {
    "vocabulary": ([{"categories": "fly", "keypoints": KEYPOINTS}], "'categories' must be a list"),
    "model_config": ({"name": "unipose_tiny", "overrides": {"hidden_dim": "wide"}}, "hidden_dim=wide"),
    "input_size": ({"short_side": 0, "max_size": 64}, "short_side=0"),
    "text_features": ({"texts": ["fly"], "features": torch.zeros(1, 77)}, "found (1, 77)"),
    "postprocess": ({"box_threshold": float("nan")}, "box_threshold = nan"),
}


@pytest.mark.parametrize("entry", sorted(BAD_METADATA))
def test_crafted_bad_metadata_is_one_line_naming_file_and_entry(tmp_path, entry, capsys):
    value, expected = BAD_METADATA[entry]
    path = write_tiny_model_file(tmp_path / f"bad_{entry}.pth", **{entry: value})
    message = _refusal(path, capsys)
    assert f"bad '{entry}' entry" in message and expected in message, message


def test_text_file_and_folder_as_checkpoint(tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("hello\n")
    assert "truncated, corrupt or not a PyTorch checkpoint" in _refusal(text, capsys)  # was KeyError: 101
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "best.pth").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a folder, not a model file.*best.pth"):
        Predictor(checkpoint=folder, device="cpu")
