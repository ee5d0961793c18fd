"""The one config loader (unipose_train/config_loader.py): every shipped config loads and resolves
to the values it had before the loader was shared and the stage configs inherited from each other
(data/configs_before.json, written by the earlier loader), `_base_` inheritance, shipped configs
by name, the data root, and the refiner's config converting numbers like the trainer's."""
import dataclasses
import json
from pathlib import Path

import pytest

from shared_paths import REPO, SHARED
from unipose_train import config_loader
from unipose_train.config import load_config
from unipose_train.heatmap_refiner_train import load_refiner_config

CONFIGS = REPO / "unipose_train" / "configs"
BEFORE = json.loads((Path(__file__).parent / "data" / "configs_before.json").read_text())
REFINER_CONFIGS = ("fly_demo_heatmap.yaml", "fly_demo_heatmap_dev.yaml")


def resolved(name: str, **kw) -> dict:
    loader = load_refiner_config if name in REFINER_CONFIGS else load_config
    cfg = loader(str(CONFIGS / name), data_root=str(SHARED), **kw)
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def test_every_shipped_config_is_listed_and_loads():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert len(names) == 16 and set(BEFORE) | {"fly_demo_stage1.yaml"} == set(names)
    for name in names:
        resolved(name)
    # stage 1 did not parse before (a key after the denoising section); it is the run the model card describes
    stage1 = resolved("fly_demo_stage1.yaml")
    assert stage1["denoising"]["number"] == 0 and stage1["run"]["seed"] == 7
    assert stage1["run"]["checkpoint_every"] == 100 and stage1["optim"]["lr"] == 5.0e-4


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_shipped_config_resolves_as_before(name):
    text = json.dumps(BEFORE[name]).replace("<repo>/", f"{REPO}/").replace("<data_root>/", f"{SHARED.resolve()}/")
    want = json.loads(text)
    assert resolved(name) == want


def test_stage_configs_inherit(tmp_path):
    text = (CONFIGS / "fly_demo_stage7.yaml").read_text()
    assert "_base_: fly_demo.yaml" in text and "samples_per_epoch" not in text
    assert len([line for line in text.splitlines() if line and not line.startswith("#")]) < 20


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_base_merge_rules(tmp_path):
    write(tmp_path / "base.yaml", "optim: {lr: 1.0e-3, max_steps: 10}\n"
          "data:\n  augment: {scales: [192], flip_prob: 0.0}\n  train: [{ann: a.json}, {ann: b.json}]\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\noptim: {max_steps: '20'}\n"
                  "data:\n  augment: {_delete_: true, max_size: 256}\n  train: [{ann: sub/c.json}]\n")
    cfg = load_config(str(child), ["optim.lr=2e-4"])
    assert cfg.optim.max_steps == 20 and isinstance(cfg.optim.max_steps, int)   # '20' converted
    assert cfg.optim.lr == 2e-4
    assert cfg.data.augment.max_size == 256 and cfg.data.augment.scales == list(range(480, 801, 32))  # replaced whole
    assert [s.ann for s in cfg.data.train] == [str(tmp_path / "sub" / "c.json")]   # lists replace
    write(tmp_path / "loop.yaml", "_base_: loop2.yaml\n")
    write(tmp_path / "loop2.yaml", "_base_: loop.yaml\n")
    with pytest.raises(ValueError, match="loops"):
        load_config(str(tmp_path / "loop.yaml"))
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(str(write(tmp_path / "bad.yaml", "run:\n  seed: 1\nx: {a: 1}\n  y: 2\n")))


def test_base_paths_resolve_against_their_own_file(tmp_path):
    (tmp_path / "a").mkdir()
    write(tmp_path / "a" / "base.yaml", "data:\n  train: [{ann: labels.json, images: imgs}]\n")
    child = write(tmp_path / "child.yaml", "_base_: a/base.yaml\nrun: {seed: 3}\n")
    src = load_config(str(child)).data.train[0]
    assert (src.ann, src.images) == (str(tmp_path / "a" / "labels.json"), str(tmp_path / "a" / "imgs"))


def test_shipped_config_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: found by name among the shipped configs
    assert load_config("own_labels") == load_config(str(CONFIGS / "own_labels.yaml"))
    assert load_config("own_labels.yaml") == load_config("own_labels")
    with pytest.raises(FileNotFoundError, match="own_labels"):
        load_config("no_such_config")
    # a user config building on a shipped one
    mine = write(tmp_path / "mine.yaml", "_base_: fly_tiny.yaml\noptim: {max_steps: 7}\n")
    cfg = load_config(str(mine), data_root=str(SHARED))
    assert cfg.optim.max_steps == 7
    assert cfg.data.train[0].ann == str(SHARED.resolve() / "data/lab/fly_clip/clip_keypoints_coco.json")


def test_data_root_option_variable_and_default(tmp_path, monkeypatch):
    monkeypatch.delenv(config_loader.DATA_ROOT_VAR, raising=False)
    ann = "data/lab/fly_clip/clip_keypoints_coco.json"
    default = load_config("fly_tiny").data.train[0].ann
    assert default == str(config_loader.CHECKOUT_DATA_ROOT / ann)
    monkeypatch.setenv(config_loader.DATA_ROOT_VAR, str(tmp_path / "env"))
    assert load_config("fly_tiny").data.train[0].ann == str(tmp_path / "env" / ann)
    assert load_config("fly_tiny", data_root=str(tmp_path / "opt")).data.train[0].ann == str(tmp_path / "opt" / ann)
    monkeypatch.delenv(config_loader.DATA_ROOT_VAR)
    monkeypatch.setattr(config_loader, "CHECKOUT_DATA_ROOT", tmp_path / "absent")   # an install: no checkout
    with pytest.raises(ValueError, match="--data-root"):
        load_config("fly_tiny")


@pytest.mark.parametrize("cli", ["train", "refiner"])
def test_missing_data_is_one_line_naming_the_option(tmp_path, capsys, cli):
    from unipose_train.heatmap_refiner_train import main as refiner_main
    from unipose_train.train_cli import main as train_main
    main, config = (train_main, "fly_tiny") if cli == "train" else (refiner_main, "fly_demo_heatmap")
    assert main([config, "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err and "--data-root" in err and str(tmp_path) in err


def test_refiner_config_converts_numbers(tmp_path):
    """The refiner's copy of the loader converted float fields only: '300' stayed a string."""
    path = write(tmp_path / "r.yaml", f"data:\n  train: [{{ann: {tmp_path}/x.json}}]\n"
                 "optim: {steps: '300', lr: '1e-3'}\nmodel: {input_size: '96'}\n")
    cfg = load_refiner_config(str(path))
    assert (cfg.optim.steps, cfg.optim.lr, cfg.model.input_size) == (300, 1e-3, 96)
    assert isinstance(cfg.optim.steps, int) and isinstance(cfg.model.input_size, int)
    with pytest.raises(ValueError, match="unknown config key"):
        load_refiner_config(str(path), ["optim.step=3"])
