"""Training checkpoint files: every RNG state, atomic writes, reading a file to resume from, and
cleaning up after a killed run.

The layout of a checkpoint (Trainer.state) is read back by --resume, model_export and the
Predictor (its model-file entries): its keys and the stored config names do not change
(test/train/test_checkpoint_compat.py loads files in the layout written before the split).
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

log = logging.getLogger("unipose.train")


def rng_state() -> Dict:
    """All RNG states, as tensors/ints so the checkpoint loads with weights_only=True."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": _py_state_to_list(random.getstate()),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_py_state_from_list(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_list(s):
    return [s[0], list(s[1]), s[2]]


def _py_state_from_list(s):
    return (s[0], tuple(s[1]), s[2])


def atomic_save(obj: Dict, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "step", "epoch", "batch_in_epoch", "sampler", "rng")


def read_resume_checkpoint(path: Path) -> Dict:
    """A training checkpoint (Trainer.state), or ValueError saying what the file is instead and
    what --resume needs."""
    from unipose_model.checkpoint import CheckpointError, load_checkpoint_file

    older = sorted(p.name for p in path.parent.glob("checkpoint_*.pth") if p != path)
    elsewhere = f" Earlier checkpoints of the run: {', '.join(older[-3:])}." if older else ""
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointError as e:
        raise ValueError(f"cannot resume: {e}{elsewhere}") from None
    missing = [k for k in RESUME_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        weights = isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict)
        what = ("a weights-only file (model weights" + (" and metrics, like best.pth)" if "metrics" in ckpt else ")")
                if weights else "not a training checkpoint")
        raise ValueError(f"cannot resume from {path}: it is {what}, without the training state ({', '.join(missing)}). "
                         f"--resume needs a checkpoint_NNNNNNNN.pth of a run, or the run folder (its newest one);"
                         f"{elsewhere} To start a new run from these weights, use model.init={path}")
    return ckpt


def remove_unfinished_saves(out_dir: Path) -> None:
    """Temp files of a save the process was killed during (atomic_save's '.NAME.tmpPID')."""
    for tmp in out_dir.glob(".*.tmp*"):
        if tmp.is_file():
            log.warning("removing %s: an unfinished save of a run that was stopped while writing it", tmp)
            tmp.unlink(missing_ok=True)


def latest_checkpoint(path: str | os.PathLike) -> Optional[Path]:
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.glob("checkpoint_*.pth"))
    return found[-1] if found else None


def save_training_checkpoint(out_dir: Path, step: int, state: Dict, keep_last: int) -> Path:
    """checkpoint_<step>.pth (atomically), keeping the newest `keep_last` of the run."""
    path = out_dir / f"checkpoint_{step:08d}.pth"
    atomic_save(state, path)
    old = sorted(out_dir.glob("checkpoint_*.pth"))
    for p in old[:max(0, len(old) - keep_last)]:
        p.unlink(missing_ok=True)
    return path

