"""Training checkpoints written before the trainer was split into modules still resume and export.

The layout below is frozen as the pre-split trainer wrote it (git 70bc17e, Trainer.state): its
keys, the RNG state's encoding (tensors and ints, so weights_only=True loads it) and the config's
section and field names (from data/configs_before.json, written by the pre-split loader). A file
in that layout is assembled here from a short run, and the current trainer must resume from it
exactly; the current trainer must also still write that layout.
"""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from test_trainer import base_config, make_fly_subset

BEFORE = json.loads((Path(__file__).parent / "data" / "configs_before.json").read_text())
CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "scaler", "step", "epoch", "batch_in_epoch", "sampler", "rng",
                   "best", "config", "model_name", "model_config", "text_features", "vocabulary", "input_size"}
SAMPLER_KEYS = {"epoch", "start_batch", "seed", "world_size", "batch_size"}


@pytest.fixture(scope="module")
def fly4(tmp_path_factory):
    return make_fly_subset(tmp_path_factory.mktemp("fly4"))


def names(tree, where=""):
    """Section/field names of a config dict (model.overrides: free-form, a value)."""
    if isinstance(tree, dict) and where != ".model.overrides":
        return {k: names(v, f"{where}.{k}") for k, v in tree.items()}
    return None


def pre_split_state(trainer) -> dict:
    """A checkpoint as the pre-split Trainer.state() assembled it (frozen copy, do not update)."""
    np_state = np.random.get_state()
    py = random.getstate()
    return {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(), "scaler": trainer.scaler.state_dict(),
            "step": trainer.step, "epoch": trainer.epoch, "batch_in_epoch": trainer.batch_in_epoch,
            "sampler": {"epoch": trainer.epoch, "start_batch": trainer.batch_in_epoch, "seed": trainer.cfg.run.seed,
                        "world_size": 1, "batch_size": trainer.cfg.data.batch_size},
            "rng": {"torch": torch.get_rng_state(), "python": [py[0], list(py[1]), py[2]],
                    "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                              "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}},
            "best": 0.25, "config": json.dumps(trainer.cfg.to_dict()), "model_name": trainer.model.config.name,
            **trainer.model_file_entries}


def small_run(fly4, out_dir, steps):
    from unipose_train.config import load_config
    from unipose_train.trainer import Trainer
    cfg = base_config(fly4, out_dir, optim={"max_steps": steps, "schedule": "cosine", "warmup_steps": 1},
                      data={"samples_per_epoch": 8})   # 4 batches an epoch: step 2 is mid-epoch
    return Trainer(load_config(data=cfg)), cfg


def test_the_trainer_writes_the_pre_split_layout(tmp_path, fly4):
    trainer, _ = small_run(fly4, tmp_path / "run", 1)
    ckpt = torch.load(trainer.save_checkpoint(), map_location="cpu", weights_only=True)
    assert set(ckpt) == CHECKPOINT_KEYS and set(ckpt["sampler"]) == SAMPLER_KEYS
    assert set(ckpt["rng"]) >= {"torch", "python", "numpy"}
    assert set(ckpt["rng"]["numpy"]) == {"keys", "pos", "has_gauss", "gauss"}
    # every config section and field name as the pre-split code stored them
    stored = json.loads(ckpt["config"])
    assert names(stored) == names(BEFORE["fly_demo.yaml"])
    assert set(stored["data"]["train"][0]) == set(BEFORE["fly_demo.yaml"]["data"]["train"][0])


def test_resume_from_a_pre_split_checkpoint(tmp_path, fly4):
    from unipose_train.config import load_config
    from unipose_train.trainer import Trainer
    trainer, cfg = small_run(fly4, tmp_path / "old", 4)
    for batch in trainer.loader():
        trainer.train_step(batch)
        trainer.step += 1
        trainer.batch_in_epoch += 1
        if trainer.step == 2:
            break
    path = tmp_path / "old" / "checkpoint_00000002.pth"
    torch.save(pre_split_state(trainer), path)
    expected_draw = torch.rand(3)          # what the resumed run's RNG must draw next
    expected_py = random.random()

    torch.manual_seed(123)                 # disturb every RNG: resuming must restore them
    random.seed(5)
    resumed = Trainer(load_config(data=cfg), resume=str(path))
    assert (resumed.step, resumed.epoch, resumed.batch_in_epoch, resumed.best) == (2, 0, 2, 0.25)
    assert torch.equal(torch.rand(3), expected_draw) and random.random() == expected_py
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    assert resumed.scheduler.last_epoch == 2 and resumed.scheduler.get_last_lr() == trainer.scheduler.get_last_lr()
    a, b = trainer.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)
    assert resumed.fit()["step"] == 4


def test_a_config_stored_by_the_pre_split_code_builds(tmp_path):
    """model_export rebuilds entries from the config a checkpoint carries (config_from_dict)."""
    from unipose_train.config import TrainConfig, config_from_dict
    stored = BEFORE["fly_demo.yaml"]               # the pre-split loader's asdict of the bundled model's config
    cfg = config_from_dict(json.loads(json.dumps(stored)))
    assert isinstance(cfg, TrainConfig) and cfg.model.overrides == {"dec_layers": 5}
    assert cfg.data.train[1].name == "fly_clip_walking" and cfg.data.train[1].weight == 3.0
    assert json.loads(json.dumps(cfg.to_dict())) == stored
