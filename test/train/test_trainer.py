"""Trainer: overfitting 4 real images, DDP equivalence, SIGKILL + resume, fine-tuning from the
official checkpoint format, config handling. Data: 4 frames of the fly clip (shared data),
cropped around the two flies and shrunk to 192 px so the tiny model trains on 2 CPU cores."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from shared_paths import DATA, REPO

FLY = DATA / "lab" / "fly_clip"
ARTIFACTS = Path(os.environ.get("UNIPOSE_TEST_ARTIFACTS", REPO / "outputs" / "test_artifacts"))
FRAMES = (0, 1100, 1200, 1400)


def make_fly_subset(out: Path, frames=FRAMES, crop: int = 384, size: int = 192) -> Path:
    """COCO json + PNGs: each frame cropped to `crop` px around both flies, resized to `size`."""
    out.mkdir(parents=True, exist_ok=True)
    coco = json.loads((FLY / "clip_keypoints_coco.json").read_text())
    cap = cv2.VideoCapture(str(FLY / "clip.mp4"))
    images, anns, s = [], [], size / crop
    for f in frames:
        cap.set(cv2.CAP_PROP_POS_FRAMES, f)
        ok, img = cap.read()
        assert ok, f"cannot decode frame {f}"
        objs = [a for a in coco["annotations"] if a["image_id"] == f]
        x0 = min(a["bbox"][0] for a in objs)
        y0 = min(a["bbox"][1] for a in objs)
        x1 = max(a["bbox"][0] + a["bbox"][2] for a in objs)
        y1 = max(a["bbox"][1] + a["bbox"][3] for a in objs)
        left = int(np.clip((x0 + x1 - crop) / 2, 0, img.shape[1] - crop))
        top = int(np.clip((y0 + y1 - crop) / 2, 0, img.shape[0] - crop))
        small = cv2.resize(img[top:top + crop, left:left + crop], (size, size), interpolation=cv2.INTER_AREA)
        name = f"frame_{f:04d}.png"
        cv2.imwrite(str(out / name), small)
        images.append({"id": f, "file_name": name, "width": size, "height": size})
        for a in objs:
            k = np.asarray(a["keypoints"], float).reshape(-1, 3)
            k[:, 0] = (k[:, 0] - left) * s
            k[:, 1] = (k[:, 1] - top) * s
            b = a["bbox"]
            anns.append({"id": a["id"], "image_id": f, "category_id": a["category_id"], "iscrowd": 0,
                         "bbox": [(b[0] - left) * s, (b[1] - top) * s, b[2] * s, b[3] * s],
                         "area": b[2] * b[3] * s * s, "keypoints": k.reshape(-1).tolist(),
                         "num_keypoints": int((k[:, 2] > 0).sum())})
    path = out / "fly4.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": coco["categories"]}))
    return path


@pytest.fixture(scope="module")
def fly4(tmp_path_factory):
    return make_fly_subset(tmp_path_factory.mktemp("fly4"))


def base_config(ann: Path, out_dir: Path, **sections) -> dict:
    """Tiny model, hash text features, fixed 192-px input; `sections` update the defaults."""
    cfg = {
        "model": {"name": "unipose_tiny"},
        "data": {"train": [{"ann": str(ann), "images": str(ann.parent)}],
                 "augment": {"scales": [192], "max_size": 192, "flip_prob": 0.0, "crop_prob": 0.0, "eval_size": 192},
                 "prompts": {"fixed": True}, "batch_size": 2, "num_workers": 0},
        "text": {"encoder": "hash"},
        "optim": {"lr": 1e-3, "max_steps": 4, "schedule": "constant", "backbone_lr_mult": 1.0},
        "run": {"out_dir": str(out_dir), "device": "cpu", "checkpoint_every": 0, "log_every": 1,
                "progress": False, "seed": 7, "threads": 1},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {})
        for k, v in values.items():
            if isinstance(v, dict) and isinstance(cfg[section].get(k), dict):
                cfg[section][k].update(v)
            else:
                cfg[section][k] = v
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(args, env_extra=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def params(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


# ---------------------------------------------------------------------------- config
def test_config_yaml_overrides_and_unknown_keys(tmp_path, fly4):
    from unipose_train.config import load_config
    path = write_config(base_config(fly4, tmp_path / "run"), tmp_path / "c.yaml")
    cfg = load_config(str(path), ["optim.lr=2e-4", "data.augment.scales=[160,192]", "model.freeze=[backbone]"])
    assert cfg.optim.lr == 2e-4 and cfg.data.augment.scales == [160, 192] and cfg.model.freeze == ["backbone"]
    assert cfg.data.train[0].ann == str(fly4)
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(str(path), ["optim.learning_rate=1"])
    for name in ("tiny_overfit", "swint_finetune", "fly_tiny"):
        shipped = load_config(str(REPO / "unipose_train" / "configs" / f"{name}.yaml"))
        assert shipped.model.name in ("unipose_tiny", "unipose_swint")


def test_param_groups_and_schedule():
    from unipose_train.config import OptimConfig
    from unipose_train.optimisation import freeze, lr_lambda, param_groups
    from unipose_model import build_model
    model = build_model("unipose_tiny")
    frozen = freeze(model, ["encoder"])
    assert frozen and all(n.startswith("transformer.encoder") or n == "transformer.level_embed" for n in frozen)
    groups = {g["name"]: g for g in param_groups(model, OptimConfig(lr=1e-4, backbone_lr_mult=0.1))}
    assert groups["backbone"]["lr"] == pytest.approx(1e-5) and groups["base"]["lr"] == 1e-4
    n_trainable = len({id(p) for p in model.parameters() if p.requires_grad})
    assert sum(len(g["params"]) for g in groups.values()) == n_trainable
    f = lr_lambda(OptimConfig(warmup_steps=10, warmup_factor=0.0, schedule="step", milestones=[20, 30]))
    assert [f(0), f(5), f(10), f(25), f(35)] == pytest.approx([0.0, 0.5, 1.0, 0.1, 0.01])
    g = lr_lambda(OptimConfig(max_steps=100, schedule="cosine", min_lr_ratio=0.0))
    assert g(0) == pytest.approx(1.0) and g(50) == pytest.approx(0.5) and g(100) == pytest.approx(0.0, abs=1e-12)


def test_dataset_batches(fly4):
    from unipose_train.augment import AugmentConfig, Augmenter
    from unipose_train.dataset import KeypointDataset, collate, load_source, SourceConfig
    from unipose_train.prompts import PromptBuilder, PromptConfig
    src = load_source(SourceConfig(ann=str(fly4), images=str(fly4.parent)))
    cat = src.categories[0]
    assert cat.keypoints[3:5] == ["left wing", "right wing"] and (3, 4) in cat.flip_pairs
    ds = KeypointDataset([src], Augmenter(AugmentConfig(scales=[96, 128], max_size=160, crop_min=100, crop_max=150)),
                         PromptBuilder(PromptConfig(num_negatives=3), negative_pool=["fly", "cat", "person", "hand"]))
    assert len(ds) == 4
    a, b = ds[(1, 123)], ds[(1, 123)]
    assert torch.equal(a["image"], b["image"]) and a["instance_texts"] == b["instance_texts"]
    batch = collate([ds[(i, 10 + i)] for i in range(3)])
    B, _, H, W = batch["images"].shape
    assert B == 3 and batch["masks"].shape == (3, H, W)
    for i, t in enumerate(batch["targets"]):
        h, w = t["size"].tolist()
        assert not batch["masks"][i, :h, :w].any() and batch["masks"][i].sum() == H * W - h * w
        assert len(batch["instance_texts"][i]) == 4            # fly + 3 negatives
        classes = batch["meta"][i]["classes"]
        assert all(classes[l] == "fly" for l in t["labels"].tolist())
        assert ((t["boxes"] > 0) & (t["boxes"] <= 1)).all()
        vis = t["visibility"] > 0
        assert ((t["keypoints"][vis] >= 0) & (t["keypoints"][vis] <= 1)).all()


# ---------------------------------------------------------------------------- overfit
@pytest.mark.slow
def test_tiny_overfits_four_fly_frames(tmp_path, fly4):
    """Done-when: PCK@0.2 >= 0.95 on the 4 training images within a CPU budget; loss curve PNG."""
    from unipose_train.config import load_config
    from unipose_train.plotting import save_loss_curve
    from unipose_train.trainer import Trainer
    cfg = load_config(str(REPO / "unipose_train" / "configs" / "tiny_overfit.yaml"),
                      [f"run.out_dir={tmp_path / 'run'}", "run.progress=false"],
                      data={"data": {"train": [{"ann": str(fly4), "images": str(fly4.parent)}],
                                     "val": [{"ann": str(fly4), "images": str(fly4.parent)}]}})
    t0 = time.time()
    trainer = Trainer(cfg)
    result = trainer.fit()
    elapsed = time.time() - t0
    # the fly labels have no OKS sigmas: also report OKS AP with the uniform default (0.05)
    from unipose_train.evaluation.coco_eval import evaluate_keypoints
    from unipose_train.validation import ground_truth_subsets, predict_results
    results = predict_results(trainer.model, trainer.val_set, trainer.text_table, trainer.device, batch_size=4)
    gt = next(ground_truth_subsets(trainer.val_set))
    ap = evaluate_keypoints(gt, results[0], sigmas=[0.05] * 13)["AP"]
    png = save_loss_curve(trainer.history, ARTIFACTS / "tiny_overfit_loss.png",
                          keys=("loss", "keypoint", "oks", "bbox", "cls"),
                          title=f"tiny overfit, 4 fly frames: PCK@0.2 {result['metrics']['pck']:.3f}, "
                                f"OKS AP (sigma 0.05) {ap:.3f}")
    (ARTIFACTS / "tiny_overfit.json").write_text(json.dumps({"seconds": elapsed, "oks_ap_sigma_0.05": ap,
                                                            **result}, indent=1))
    assert png.stat().st_size > 1000
    assert result["metrics"]["pck"] >= 0.95, result
    losses = [r["loss"] for r in trainer.history if "loss" in r]
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10])


def test_denoising_queries_train_with_the_matching_queries(tmp_path, fly4):
    """DN on (the official recipe): dn_* losses are logged and added to the loss, and the label
    embedding that only DN queries use learns; DN off leaves it frozen."""
    from unipose_train.config import load_config
    from unipose_train.trainer import Trainer
    on = Trainer(load_config(data=base_config(fly4, tmp_path / "on", optim={"max_steps": 2},
                                              denoising={"number": 8})))
    before = on.model.label_enc.weight.detach().clone()
    on.fit()
    logged = [r for r in on.history if "loss" in r]
    assert logged and all(r["dn_cls"] > 0 and r["dn_bbox"] > 0 and r["dn_giou"] > 0 for r in logged)
    other = sum(v for k, v in logged[0].items() if k not in ("loss", "grad_norm", "step", "epoch", "lr",
                                                             "images_per_s") and not k.startswith("dn_"))
    dn = sum(v for k, v in logged[0].items() if k.startswith("dn_"))
    assert logged[0]["loss"] == pytest.approx(other + dn, rel=1e-4)
    assert not torch.equal(on.model.label_enc.weight.detach(), before)
    off = Trainer(load_config(data=base_config(fly4, tmp_path / "off", optim={"max_steps": 1},
                                               denoising={"number": 0})))
    before = off.model.label_enc.weight.detach().clone()
    off.fit()
    assert not any(k.startswith("dn_") for r in off.history for k in r)
    assert torch.equal(off.model.label_enc.weight.detach(), before)


def test_visual_prompt_supports_come_from_another_instance(tmp_path, fly4):
    """Data pipeline: with visual prompts on, a sample's support is another fly (from another
    frame), cropped around it with its 13 keypoints in the sample's keypoint order; the class
    column is the fly's; with prob 0 no sample has one; batches carry them through collate."""
    from unipose_train.dataset import KeypointDataset, VisualPromptSampling, collate, load_source, SourceConfig
    from unipose_train.augment import Augmenter, AugmentConfig
    from unipose_train.prompts import PromptBuilder, PromptConfig
    from unipose_model.visual_prompt import prepare_support, VisualPrompt
    src = load_source(SourceConfig(ann=str(fly4), images=str(fly4.parent)))
    aug = Augmenter(AugmentConfig(scales=[192], max_size=192, flip_prob=0.0, crop_prob=0.0), train=True)
    prompts = PromptBuilder(PromptConfig(num_negatives=2), ["cat", "dog", "person"])
    ds = KeypointDataset([src], aug, prompts, visual=VisualPromptSampling(prob=1.0, size=96))
    coco = json.loads(fly4.read_text())
    for seed in range(6):
        sample = ds[(seed % 4, seed)]
        sup = sample["support"]
        assert sup["image"].shape == (3, 96, 96) and sup["keypoints"].shape == (13, 2)
        assert sample["meta"]["classes"][sup["class_index"]] == "fly"
        # it is one of the flies of another frame: the same crop and keypoints prepare_support gives
        others = [a for a in coco["annotations"] if a["image_id"] != sample["meta"]["image_id"]]
        matches = []
        for a in others:
            x, y, w, h = a["bbox"]
            img = cv2.cvtColor(cv2.imread(str(fly4.parent / f"frame_{a['image_id']:04d}.png")), cv2.COLOR_BGR2RGB)
            _, xy, vis = prepare_support(VisualPrompt(img, np.reshape(a["keypoints"], (-1, 3)),
                                                      box=(x, y, x + w, y + h)), 96)
            matches.append(bool(torch.allclose(xy, sup["keypoints"])) and bool(torch.equal(vis, sup["visible"])))
        assert sum(matches) == 1
    batch = collate([ds[(0, 1)], ds[(1, 2)]])
    assert len(batch["supports"]) == 2 and all(s is not None for s in batch["supports"])
    plain = KeypointDataset([src], aug, prompts, visual=VisualPromptSampling(prob=0.0))
    assert "support" not in plain[(0, 1)]
    assert collate([plain[(0, 1)]])["supports"] == [None]


# ---------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process(tmp_path, fly4):
    """2 gloo ranks with batch 1 each == 1 process with batch 2 (DDP averages gradients; losses
    are normalised by the all-reduced object count), parameters within 1e-5 after 3 steps.

    AdamW and clipping hide a wrong gradient scale, so the gradient norm of every step (taken
    after DDP's all-reduce, before clipping) is compared too. float64 keeps reduction-order noise
    far below the tolerances."""
    steps = 3
    # Denoising off: its groups depend on the largest object count of the per-process batch, so
    # a batch of 2 and two batches of 1 build different DN queries by design.
    # The visual-prompt model with supports on half the samples: the encoder runs outside the
    # DDP forward and its gradients must still be reduced.
    visual = {"visual_prompts": {"prob": 0.5, "with_text_prob": 0.5}}
    model = {"dtype": "float64", "name": "unipose_tiny_visual"}
    one = base_config(fly4, tmp_path / "one", optim={"max_steps": steps}, data={"batch_size": 2, **visual},
                      model=model, denoising={"number": 0})
    two = base_config(fly4, tmp_path / "two", optim={"max_steps": steps}, data={"batch_size": 1, **visual},
                      model=model, denoising={"number": 0})
    r = run_cli(["-m", "unipose_train.train_cli", str(write_config(one, tmp_path / "one.yaml"))])
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                 "--master_port", str(_free_port()), "-m", "unipose_train.train_cli",
                 str(write_config(two, tmp_path / "two.yaml"))])
    assert r.returncode == 0, r.stderr[-3000:]
    a = params(tmp_path / "one" / f"checkpoint_{steps:08d}.pth")
    b = params(tmp_path / "two" / f"checkpoint_{steps:08d}.pth")
    start = torch.load(tmp_path / "one" / f"checkpoint_{steps:08d}.pth", weights_only=True)
    assert start["step"] == steps
    diff = max_diff(a, b)
    initial = {k: v.double() for k, v in _initial_params(seed=7, name="unipose_tiny_visual").items()}
    moved = max_diff(a, initial)
    assert moved > 1e-3          # training did change the weights
    vpe = {k: v for k, v in a.items() if k.startswith("visual_prompt_encoder.")}
    assert vpe and max_diff(vpe, {k: initial[k] for k in vpe}) > 1e-4   # and the support encoder's
    assert diff <= 1e-5, diff
    norms = [[json.loads(l)["grad_norm"] for l in (tmp_path / d / "log.jsonl").read_text().splitlines()
              if "grad_norm" in l] for d in ("one", "two")]
    assert len(norms[0]) == len(norms[1]) == steps
    assert norms[0] == pytest.approx(norms[1], rel=1e-6)


def _initial_params(seed: int, name: str = "unipose_tiny") -> dict:
    from unipose_train.trainer import Trainer
    from unipose_model import build_model
    Trainer._seed_everything(seed)
    return build_model(name).state_dict()


# ---------------------------------------------------------------------------- resume
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, fly4):
    """Random augmentation and prompts, 1 loader worker, checkpoints every 3 steps, epochs of 4
    batches: kill -9 after the first checkpoint, resume, compare with an uninterrupted run."""
    steps = 12
    sections = dict(optim={"max_steps": steps, "schedule": "cosine", "warmup_steps": 2},
                    data={"batch_size": 2, "num_workers": 1, "samples_per_epoch": 8,
                          "prompts": {"fixed": False, "num_negatives": 2},
                          "augment": {"scales": [128, 160], "max_size": 192, "flip_prob": 0.5, "crop_prob": 0.5,
                                      "crop_resize_scales": [192], "crop_min": 120, "crop_max": 180}},
                    run={"checkpoint_every": 3, "keep_last": 10, "threads": 1})
    full = base_config(fly4, tmp_path / "full", **sections)
    r = run_cli(["-m", "unipose_train.train_cli", str(write_config(full, tmp_path / "full.yaml"))])
    assert r.returncode == 0, r.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    cfg_path = write_config(base_config(fly4, killed_dir, **sections), tmp_path / "killed.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "unipose_train.train_cli", str(cfg_path)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list(killed_dir.glob("checkpoint_*.pth")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    present = sorted(killed_dir.glob("checkpoint_*.pth"))
    assert present, "no checkpoint was written before the kill"
    last = torch.load(present[-1], weights_only=True)
    assert last["step"] < steps, "the run finished before it was killed; the test proves nothing"
    assert last["batch_in_epoch"] != 0 or last["step"] % 4 != 0

    r = run_cli(["-m", "unipose_train.train_cli", str(cfg_path), "--resume", str(killed_dir)])
    assert r.returncode == 0, r.stderr[-3000:]
    a = params(tmp_path / "full" / f"checkpoint_{steps:08d}.pth")
    b = params(killed_dir / f"checkpoint_{steps:08d}.pth")
    diff = max_diff(a, b)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "resume.json").write_text(json.dumps({"killed_after_checkpoint_step": last["step"],
                                                       "batch_in_epoch": last["batch_in_epoch"],
                                                       "max_abs_param_diff": diff}))
    assert diff <= 1e-6, diff
    full_opt = torch.load(tmp_path / "full" / f"checkpoint_{steps:08d}.pth", weights_only=True)
    res_opt = torch.load(killed_dir / f"checkpoint_{steps:08d}.pth", weights_only=True)
    assert full_opt["epoch"] == res_opt["epoch"] == 3
    # the logs agree on every step's loss after the resume point
    log_a = [json.loads(l) for l in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(l) for l in (killed_dir / "log.jsonl").read_text().splitlines()]
    la = {r["step"]: r["loss"] for r in log_a if "loss" in r}
    lb = {r["step"]: r["loss"] for r in log_b if "loss" in r}
    assert all(abs(la[s] - lb[s]) <= 1e-5 * max(1, abs(la[s])) for s in lb if s > last["step"])


# ---------------------------------------------------------------------------- fine-tuning
def _official_format(model, path: Path) -> Path:
    """{"model": state_dict} with the DDP 'module.' prefix and CLIP keys, as the released file."""
    state = {"module." + k: v for k, v in model.state_dict().items()}
    state["module.clip_model.positional_embedding"] = torch.zeros(77, 512, dtype=torch.float16)
    torch.save({"model": state}, path)
    return path


def test_finetune_from_official_format_checkpoint(tmp_path, fly4):
    from unipose_train.config import load_config
    from unipose_train.trainer import Trainer
    from unipose_model import build_model, fill_reference_weights, load_official_checkpoint
    ref = fill_reference_weights(build_model("unipose_tiny"))
    init = _official_format(ref, tmp_path / "official.pth")
    cfg = load_config(None, data=base_config(fly4, tmp_path / "ft", model={"init": str(init), "freeze": ["backbone"]},
                                             optim={"max_steps": 2, "lr": 1e-4}))
    trainer = Trainer(cfg)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert max_diff(start, ref.state_dict()) == 0.0
    trainer.fit()
    end = trainer.model.state_dict()
    assert all(torch.equal(end[k], start[k]) for k in end if k.startswith("backbone."))
    assert any(not torch.equal(end[k], start[k]) for k in end if k.startswith("transformer.decoder."))
    # the run's checkpoint is itself in the official format: the model loader reads it
    fresh = build_model("unipose_tiny")
    report = load_official_checkpoint(fresh, tmp_path / "ft" / "checkpoint_00000002.pth")
    assert report.loaded == len(fresh.state_dict()) and not report.missing
    assert max_diff(fresh.state_dict(), end) == 0.0


@pytest.mark.slow
def test_finetune_swint_from_official_format(tmp_path, fly4):
    """The released model's layout (Swin-T), reference-filled, one training step at 128 px."""
    from unipose_train.config import load_config
    from unipose_train.trainer import Trainer
    from unipose_model import build_model, fill_reference_weights
    ref = fill_reference_weights(build_model("unipose_swint"))
    init = _official_format(ref, tmp_path / "official_swint.pth")
    del ref
    cfg = load_config(str(REPO / "unipose_train" / "configs" / "swint_finetune.yaml"),
                      [f"run.out_dir={tmp_path / 'ft'}", "run.progress=false", "optim.max_steps=1",
                       f"model.init={init}", "text.encoder=hash", "data.augment.scales=[128]",
                       "data.augment.max_size=128", "data.batch_size=1", "data.num_workers=0", "run.device=cpu",
                       "run.checkpoint_every=0", "run.log_every=1"],
                      data={"data": {"train": [{"ann": str(fly4), "images": str(fly4.parent)}], "val": []}})
    trainer = Trainer(cfg)
    result = trainer.fit()
    assert result["step"] == 1 and np.isfinite(trainer.history[0]["loss"])
