"""The UniPose trainer: one process (CPU or GPU) or torchrun + DDP, resumable at any step.

Resumability: the data order is a pure function of (seed, epoch, position) (dataset.py), and a
checkpoint holds model, optimizer, scheduler, grad scaler, step, epoch, position in the epoch
and every RNG state. A run killed at any moment (even SIGKILL; checkpoints are written to a
temp file and renamed) and resumed from its last checkpoint reaches the same parameters as an
uninterrupted run.

The parts: config.py (the schema and loader), optimisation.py (optimiser and schedule),
checkpointing.py (RNG state, checkpoint files), validation.py (validation metrics), run_log.py
(log.jsonl + TensorBoard), plotting.py (curves). This file sets a run up and runs the loop.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from unipose_model import build_model
from unipose_model.checkpoint import load_official_checkpoint

from .augment import Augmenter
from .checkpointing import (atomic_save, latest_checkpoint, read_resume_checkpoint, remove_unfinished_saves,
                            rng_state, save_training_checkpoint, set_rng_state)
from .config import TrainConfig
from .dataset import BalancedSampler, KeypointDataset, collate, load_source
from .sources import expand_index_sources
from .denoising import denoising_losses, step_denoising_queries
from .label_checks import check_training_labels
from .losses import SetCriterion, global_num_boxes
from .matcher import HungarianMatcher
from .model_export import model_file_entries
from .optimisation import build_optimizer, freeze
from .prompts import PromptBuilder, mix_visual_prompts, negative_pool
from .run_log import RunLog, trim_log
from .text_features import build_table
from .validation import validation_metrics

log = logging.getLogger("unipose.train")


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: Optional[str] = None):
        self.cfg = cfg
        self.resume_path = resume
        self._setup_distributed()
        rc = cfg.run
        if rc.threads:
            torch.set_num_threads(rc.threads)
        # Near-converged focal terms drive tiny values into denormal floats, which are ~100x slower
        # on x86 CPUs (seen: 18 -> 0.7 images/s mid-run). Flushing them changes nothing that matters.
        torch.set_flush_denormal(True)
        # OpenCV's thread pool does not survive fork: a DataLoader worker forked after evaluation
        # (which resizes images here) hung in cv2.setNumThreads. Without a pool there is no lock.
        import cv2
        cv2.setNumThreads(1)
        self.out_dir = Path(rc.out_dir)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_unfinished_saves(self.out_dir)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.model.dtype]
        self._seed_everything(rc.seed + self.rank)
        self._build_model()
        self._build_data()
        self._build_optim()
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: Optional[float] = None
        self.run_log = RunLog(self.out_dir, enabled=self.is_main)
        if resume:
            self._resume(resume)

    @property
    def history(self) -> List[Dict]:
        """The records logged by this process (log.jsonl's lines of this run)."""
        return self.run_log.history

    # .................................................................. setup
    def _setup_distributed(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = self.cfg.run.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev == "cuda":
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device(dev)
        self.distributed = self.world_size > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.is_main = self.rank == 0

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)

    def _build_model(self) -> None:
        mc = self.cfg.model
        model = build_model(mc.name, **mc.overrides)
        if mc.init:
            report = load_official_checkpoint(model, os.path.expanduser(mc.init), strict=mc.init_strict,
                                              deepen=mc.init_deepen)
            if self.is_main:
                log.info("initialised from %s", report)
        self.frozen = freeze(model, mc.freeze)
        if self.cfg.denoising.number <= 0:
            model.label_enc.weight.requires_grad_(False)  # denoising label queries: unused without DN
        elif model.config.dn_labelbook_size < 1:
            raise ValueError("denoising needs a model with dn_labelbook_size >= 1")
        model.to(self.device, self.dtype).train()
        self.model = model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.local_rank] if self.device.type == "cuda" else None
            self.ddp = DDP(model, device_ids=ids, find_unused_parameters=self.cfg.run.find_unused_parameters)
        else:
            self.ddp = model
        self.criterion = SetCriterion(self.cfg.loss, HungarianMatcher(self.cfg.matcher))
        amp = self.cfg.run.amp if self.device.type == "cuda" else "none"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _build_data(self) -> None:
        dc = self.cfg.data
        if not dc.train:
            raise ValueError("config has no data.train sources")
        dc.train, dc.val = expand_index_sources(dc.train), expand_index_sources(dc.val)
        train_sources = [load_source(s) for s in dc.train]
        val_sources = [load_source(s) for s in dc.val]
        # every label and image file, before the first step: a bad entry is named now, not in a
        # DataLoader worker or as a non-finite loss at step 0 (unipose_train/label_checks.py)
        check_training_labels(train_sources + val_sources, [s.image_ids for s in dc.train + dc.val],
                              log_warnings=self.is_main)
        pool = negative_pool(dc.negative_pool, train_sources)
        self.prompts = PromptBuilder(dc.prompts, pool)
        max_k = self.model.config.max_keypoints
        visual = dc.visual_prompts
        if visual.prob > 0:
            encoder = self.model.visual_prompt_encoder
            if encoder is None:
                raise ValueError(f"data.visual_prompts.prob > 0 needs a model with a visual prompt encoder; "
                                 f"'{self.cfg.model.name}' has none (e.g. use unipose_tiny_visual)")
            visual = dataclasses.replace(visual, size=int(encoder.image_size))
        self.train_set = KeypointDataset(train_sources, Augmenter(dc.augment, train=True), self.prompts, max_k,
                                         image_ids=[s.image_ids for s in dc.train],
                                         max_images=[s.max_images for s in dc.train], visual=visual)
        self.sampler = BalancedSampler(self.train_set.source_sizes(), dc.batch_size, [s.weight for s in dc.train],
                                       dc.samples_per_epoch, self.cfg.run.seed, self.rank, self.world_size)
        self.val_set = None
        if dc.val:
            fixed = dataclasses.replace(dc.prompts, fixed=True)
            self.val_set = KeypointDataset(val_sources, Augmenter(dc.augment, train=False), PromptBuilder(fixed),
                                           max_k, image_ids=[s.image_ids for s in dc.val],
                                           max_images=[s.max_images for s in dc.val])
        cats, styles = self.train_set.all_prompt_inputs()
        if self.val_set is not None:
            vc, vs = self.val_set.all_prompt_inputs()
            cats, styles = cats + vc, styles + vs
        texts = self.prompts.all_texts(cats, styles) if self.cfg.text.precompute else []
        cache = self.cfg.text.cache or str(self.out_dir / "text_features.pt")
        t0 = time.time()
        # rank 0 encodes and writes the cache; the other ranks then only read it
        if self.distributed and not self.is_main:
            dist.barrier()
        self.text_table = build_table(self.cfg.text.encoder, texts, self.device, cache, self.cfg.text.clip_weights,
                                      write_cache=self.is_main)
        if self.distributed and self.is_main:
            dist.barrier()
        if self.is_main:
            log.info("text features: %d prompts in %.1fs", len(self.text_table), time.time() - t0)
        # config, vocabulary and prompt features go into every checkpoint: it runs on its own
        self.model_file_entries = model_file_entries(self.cfg, train_sources, pool, self.text_table)

    def _build_optim(self) -> None:
        self.optimizer, self.scheduler = build_optimizer(self.model, self.cfg.optim)

    # .................................................................. checkpoints
    def state(self) -> Dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "sampler": {"epoch": self.epoch, "start_batch": self.batch_in_epoch, "seed": self.cfg.run.seed,
                            "world_size": self.world_size, "batch_size": self.cfg.data.batch_size},
                "rng": rng_state(), "best": self.best, "config": json.dumps(self.cfg.to_dict()),
                "model_name": self.model.config.name, **self.model_file_entries}

    def save_checkpoint(self) -> Optional[Path]:
        # Every rank's RNG state would differ; rank 0's file is the run's checkpoint (data RNG
        # is position-derived, and the model has no dropout, so the ranks need nothing else).
        if not self.is_main:
            return None
        return save_training_checkpoint(self.out_dir, self.step, self.state(), self.cfg.run.keep_last)

    def _resume(self, path: str) -> None:
        ckpt_path = latest_checkpoint(path)
        if ckpt_path is None:
            raise FileNotFoundError(f"no checkpoint to resume from at {path}")
        ckpt = read_resume_checkpoint(ckpt_path)
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise ValueError(f"cannot resume from {ckpt_path}: its weights do not fit this config's model "
                             f"({str(e).splitlines()[0][:200]}); resume with the run's own config") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        if self.batch_in_epoch >= self.sampler.batches_per_epoch:  # shorter epochs now: the next one
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        s = ckpt["sampler"]
        if s["world_size"] * s["batch_size"] != self.world_size * self.cfg.data.batch_size:
            log.warning("global batch changed since the checkpoint (%d -> %d): data order will differ",
                        s["world_size"] * s["batch_size"], self.world_size * self.cfg.data.batch_size)
        self.best = ckpt.get("best")
        if self.world_size == s["world_size"] and self.rank == 0:
            set_rng_state(ckpt["rng"])
        if self.is_main:
            trim_log(self.out_dir / "log.jsonl", self.step)
            log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_path, self.step, self.epoch,
                     self.batch_in_epoch)

    def _log(self, record: Dict) -> None:
        self.run_log.write(record)

    def close(self) -> None:
        self.run_log.close()

    # .................................................................. training
    def train_step(self, batch: Dict) -> Dict[str, float]:
        inst, inst_valid = self.text_table.batch(batch["instance_texts"])
        kpt, kpt_valid = self.text_table.batch(batch["keypoint_texts"])
        images = batch["images"].to(self.device, self.dtype, non_blocking=True)
        masks = batch["masks"].to(self.device, non_blocking=True)
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in batch["targets"]]
        inst, kpt = mix_visual_prompts(self.model, batch.get("supports"), inst, kpt, self.device, self.dtype)
        dn = step_denoising_queries(self.cfg.denoising, targets, inst_valid, self.model.config.dn_labelbook_size,
                                    self.cfg.run.seed, self.step, self.rank)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.ddp(images, masks, inst.to(self.dtype), kpt.to(self.dtype), kpt_valid, aux=True,
                           instance_valid=inst_valid, denoising=None if dn is None else dn.model_input())
        loss, terms = self.criterion(out, targets, inst_valid, kpt_valid)
        if dn is not None:
            dn_terms = denoising_losses(out["dn_outputs"], dn, targets, global_num_boxes(targets, self.device),
                                        self.cfg.loss, inst_valid)
            scale = self.cfg.denoising.weight
            for name, value in dn_terms.items():
                loss = loss + scale * value
                terms[name] = float(value.detach())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step}: {terms}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
        else:
            grad_norm = torch.zeros(())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        terms["loss"] = float(loss.detach())
        terms["grad_norm"] = float(grad_norm)
        return terms

    def loader(self) -> DataLoader:
        self.sampler.set_state(self.epoch, self.batch_in_epoch)
        nw = self.cfg.data.num_workers
        return DataLoader(self.train_set, batch_size=self.cfg.data.batch_size, sampler=self.sampler,
                          collate_fn=collate, num_workers=nw, drop_last=True,
                          pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init,
                          persistent_workers=False, prefetch_factor=2 if nw > 0 else None)

    def evaluate(self) -> Dict[str, float]:
        """Validation metrics (validation.py): `pck` (and `AP` where the data has sigmas)."""
        if self.val_set is None or not self.is_main:
            return {}
        return validation_metrics(self.model, self.val_set, self.text_table, self.device, self.dtype, self.cfg.eval)

    def fit(self) -> Dict:
        rc, oc = self.cfg.run, self.cfg.optim
        bar = None
        if self.is_main and rc.progress:
            from tqdm import tqdm
            bar = tqdm(total=oc.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        global_batch = self.cfg.data.batch_size * self.world_size
        t_last, n_last = time.time(), 0
        metrics: Dict[str, float] = {}
        try:
            while self.step < oc.max_steps:
                for batch in self.loader():
                    terms = self.train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    n_last += global_batch
                    if self.batch_in_epoch >= self.sampler.batches_per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if self.step % rc.log_every == 0 or self.step == oc.max_steps:
                        now = time.time()
                        ips = n_last / max(now - t_last, 1e-9)
                        t_last, n_last = now, 0
                        rec = {"step": self.step, "epoch": self.epoch, "lr": self.scheduler.get_last_lr()[0],
                               "images_per_s": ips, **terms}
                        self._log(rec)
                        if bar is not None:
                            bar.set_postfix(loss=f"{terms['loss']:.3f}", img_s=f"{ips:.1f}")
                    if bar is not None:
                        bar.update(1)
                    last = self.step >= oc.max_steps
                    if rc.eval_every and self.step % rc.eval_every == 0 and not last:
                        metrics = self._eval_and_track()
                    if rc.checkpoint_every and self.step % rc.checkpoint_every == 0 and not last:
                        self.save_checkpoint()
                    if last or self.batch_in_epoch == 0:
                        break   # epoch boundary: a fresh loader for the next epoch's order
            metrics = self._eval_and_track()
            self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            self.close()
        if self.distributed:
            dist.barrier()
        return {"step": self.step, "metrics": metrics, "best": self.best}

    def _eval_and_track(self) -> Dict[str, float]:
        metrics = self.evaluate()
        if metrics and self.is_main:
            self._log({"step": self.step, **{f"val/{k}": v for k, v in metrics.items()}})
            score = metrics.get("AP", metrics["pck"])
            if self.best is None or score > self.best:
                self.best = score
                atomic_save({"model": self.model.state_dict(), "step": self.step, "metrics": metrics,
                             "model_name": self.model.config.name, **self.model_file_entries},
                            self.out_dir / "best.pth")
        if self.distributed:
            dist.barrier()
        return metrics


def _worker_init(_: int) -> None:
    import cv2
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def train(cfg: TrainConfig, resume: Optional[str] = None) -> Dict:
    trainer = Trainer(cfg, resume)
    return trainer.fit()
