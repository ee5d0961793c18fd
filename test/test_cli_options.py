"""`unipose predict` options and the command registry: --max-frames, the model file read once,
commands from other packages (entry points) and a one-line answer when their package is missing."""
import json

import cv2
import numpy as np
import pytest
import torch

from unipose_model import cli
from unipose_model.cli import main
from unipose_model.model_file import BUNDLED_CHECKPOINT


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "noise.mp4"
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for _ in range(6):
        writer.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    writer.release()
    return path


def _run(video, out, *extra):
    return main(["predict", str(video), "--model", "unipose_tiny", "--checkpoint", "reference", "--text-encoder",
                 "hash", "-p", "person", "--no-overlay", "--box-threshold", "0", "--short-side", "64",
                 "--max-size", "96", "--out", str(out), *extra])


def test_max_frames_takes_the_first_frames_of_a_video(video, tmp_path, capsys):
    assert _run(video, tmp_path / "all", "--quiet") == 0
    assert _run(video, tmp_path / "two", "--max-frames", "2", "--quiet") == 0
    frames = lambda d: [im["frame_index"] for im in json.loads((d / "images.json").read_text())["images"]]  # noqa: E731
    assert frames(tmp_path / "all") == list(range(6)) and frames(tmp_path / "two") == [0, 1]
    results = lambda d: json.loads((d / "results.json").read_text())  # noqa: E731
    assert results(tmp_path / "two") == [r for r in results(tmp_path / "all") if r["image_id"] < 2]
    assert "instance(s)" not in capsys.readouterr().err  # --quiet: no status lines
    assert _run(video, tmp_path / "bad", "--max-frames", "0") == 2
    assert "--max-frames must be at least 1" in capsys.readouterr().err


def test_the_model_file_is_unpickled_once(tmp_path, monkeypatch):
    """The CLI checks the file before CLIP loads, reads its entries and builds the Predictor: one
    torch.load of the (bundled) file in all."""
    loads = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loads.append(str(f)) or real(f, *a, **k))
    image = tmp_path / "frame.png"
    cap = cv2.VideoCapture(str(BUNDLED_CHECKPOINT.with_name("sample_fly.mp4")))
    ok, frame = cap.read()
    cap.release()
    cv2.imwrite(str(image), cv2.resize(frame, (160, 120)))
    assert main(["predict", str(image), "--model", "fly", "-p", "fly", "--no-overlay", "--quiet",
                 "--out", str(tmp_path / "out")]) == 0
    assert loads.count(str(BUNDLED_CHECKPOINT)) == 1, loads


def test_a_command_whose_package_is_missing_answers_in_one_line(monkeypatch, capsys):
    def missing():
        raise ModuleNotFoundError("No module named 'rosbags'")
    monkeypatch.setattr(cli, "_plugin_modules", lambda: {"bag": missing})
    monkeypatch.delitem(cli.COMMANDS, "bag", raising=False)
    try:
        for argv in (["bag", "--help"], ["bag", "in_bag", "--output", "out", "-p", "fly"]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "unipose bag" in err and "not installed" in err and "rosbags" in err
    finally:
        cli.COMMANDS.pop("bag", None)
        cli.MISSING.pop("bag", None)


def test_commands_come_from_the_entry_point_group(monkeypatch):
    import types

    module = types.SimpleNamespace(HELP="say hello", add_arguments=lambda p: p.add_argument("--name"),
                                   run=lambda args: 0 if args.name == "fly" else 1)
    monkeypatch.setattr(cli, "_plugin_modules", lambda: {"hello": lambda: module})
    try:
        assert main(["hello", "--name", "fly"]) == 0
    finally:
        cli.COMMANDS.pop("hello", None)
