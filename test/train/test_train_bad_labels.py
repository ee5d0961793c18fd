"""unipose-train with bad labels, bad --resume files and the leftovers of a kill (issue 19,
item 5): named before the first step, in one line; reported, not silently dropped; cleaned up."""
import json
import logging

import pytest

from unipose_train.train_cli import main as train_main

from test_trainer import base_config, make_fly_subset, write_config


@pytest.fixture(scope="module")
def fly4(tmp_path_factory):
    return make_fly_subset(tmp_path_factory.mktemp("fly4"))


def _labels(fly4, tmp_path, edit):
    data = json.loads(fly4.read_text())
    edit(data)
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    return path


def _train(tmp_path, labels, *extra, images=None, val=False, **sections):
    cfg = base_config(labels, tmp_path / "run", **sections)
    cfg["data"]["train"][0]["images"] = str(images or labels.parent)
    if val:  # evaluation writes best.pth
        cfg["data"]["val"] = [dict(cfg["data"]["train"][0])]
    return train_main([str(write_config(cfg, tmp_path / "cfg.yaml")), *extra])


def test_missing_images_and_non_finite_labels_stop_before_the_first_step(tmp_path, fly4, capsys):
    def missing(data):
        data["images"][1]["file_name"] = "gone.png"

    labels = _labels(fly4, tmp_path, missing)
    assert _train(tmp_path, labels, images=fly4.parent) == 2  # was: a crash in a DataLoader worker
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("unipose-train: the training labels cannot be used: 1 missing image files:")
    assert "gone.png" in err and "image 1100" in err
    assert not list((tmp_path / "run").glob("*.pth"))

    def non_finite(data):
        data["annotations"][0]["keypoints"][0] = float("nan")
        data["annotations"][2]["bbox"][2] = float("inf")

    labels = _labels(fly4, tmp_path, non_finite)
    assert _train(tmp_path, labels, images=fly4.parent) == 2  # was: non-finite loss at step 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    ids = json.loads(fly4.read_text())["annotations"]
    assert f"1 annotations with NaN or infinite keypoints: {labels} annotation {ids[0]['id']}" in err
    assert f"1 annotations with a NaN or infinite box: {labels} annotation {ids[2]['id']}" in err


def test_dropped_entries_are_reported_and_resume_files_explained(tmp_path, fly4, capsys, caplog):
    def questionable(data):
        data["annotations"][0]["bbox"][2] = -5.0
        data["annotations"][1]["image_id"] = 999
        data["annotations"][2]["category_id"] = 77
        data["images"][3]["width"] = 500

    labels = _labels(fly4, tmp_path, questionable)
    run = tmp_path / "run"
    common = dict(optim={"max_steps": 2}, run={"checkpoint_every": 1}, val=True)
    with caplog.at_level(logging.WARNING, logger="unipose.train"):
        assert _train(tmp_path, labels, images=fly4.parent, **common) == 0
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    ann = json.loads(fly4.read_text())["annotations"]
    assert f"empty or negative box (left out): {labels} annotation {ann[0]['id']}" in warnings
    assert f"image id the file does not list (left out): {labels} annotation {ann[1]['id']} (image 999)" in warnings
    assert f"unknown category id (left out): {labels} annotation {ann[2]['id']}" in warnings
    assert "labels 500x192, file 192x192" in warnings
    capsys.readouterr()

    # --resume on a weights-only file and on a truncated checkpoint: what it is, what resume needs
    assert _train(tmp_path, labels, "--resume", str(run / "best.pth"), images=fly4.parent, **common) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is a weights-only file (model weights and metrics, like best.pth)" in err
    assert "checkpoint_NNNNNNNN.pth" in err and f"model.init={run / 'best.pth'}" in err
    newest = run / "checkpoint_00000002.pth"
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(newest.read_bytes()[:5000])
    assert _train(tmp_path, labels, "--resume", str(truncated), images=fly4.parent, **common) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot resume: cannot read checkpoint" in err and "truncated" in err

    # a kill during the save of step 2: a 0-byte temp file, and step 2 logged before the save
    newest.unlink()
    (run / f".{newest.name}.tmp4242").write_bytes(b"")
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 2, "loss": 1.0')  # a line cut short
    assert _train(tmp_path, labels, "--resume", str(run), images=fly4.parent, **common) == 0
    assert not list(run.glob(".*.tmp*"))
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2]  # step 2 once, as logged by the resumed run
