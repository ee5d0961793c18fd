#!/usr/bin/env python3
"""One command for a CUDA machine: does the GPU path work, and how fast is it?

    python scripts/gpu_check.py [--out outputs/gpu_check] [--budget-s 480] [--sections a,b,...]

Sections (each with its own time budget; a failure is recorded and the next section runs):
  tests      the GPU-marked tests (pytest -m gpu on the files that use the marker), in a subprocess
  triton     the Triton deformable-attention kernel vs the PyTorch reference at Swin-T encoder
             shapes: forward and backward errors, and the time of both
  swint      the Swin-T forward at 800x1333 and 640x480, fp32 / bf16 / fp16, eager and compiled
             (torch.compile, inductor; compile time reported apart)
  train      20 training steps of the tiny configuration with AMP (fp16 + gradient scaler)
  predictor  the Predictor (bundled fly model) on real frames of the bundled clip, per speed
             profile, and its CUDA keypoints against the CPU's on the first frame
  tensorrt   / ros: skipped with the reason (not in the stock CUDA image this targets)

Writes gpu_check.json and gpu_check.md (one table, naming the GPU, driver, torch, CUDA and
Triton versions) under --out. No network: weights are the bundled model's or the deterministic
reference fill. Without CUDA every GPU section is skipped with its reason (the CPU-side logic is
tested in test/test_gpu_check.py). Exit status: 0, or 1 when a section failed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOTAL_BUDGET_S = 480.0  # the whole run fits 8 minutes
# seconds per section, scaled down together when --budget-s is smaller
BUDGETS = {"tests": 90.0, "triton": 40.0, "swint": 200.0, "train": 50.0, "predictor": 80.0,
           "tensorrt": 1.0, "ros": 1.0}
SECTIONS = tuple(BUDGETS)
SWINT_SIZES = ((800, 1333), (480, 640))   # (H, W)
DTYPES = ("float32", "bfloat16", "float16")
PROFILES = ("accurate", "fast", "fastest", "realtime")


class Skip(Exception):
    """A section that cannot run here; the message is the reason recorded."""


@dataclass
class Budget:
    """A section's time allowance; loops ask `left()` and stop early, noting what they dropped."""
    seconds: float
    start: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def expired(self) -> bool:
        return self.left() <= 0


@dataclass
class SectionResult:
    name: str
    status: str = "ok"            # ok | partial (budget ran out) | skipped | failed
    reason: str = ""              # skipped / failed / partial: why
    seconds: float = 0.0
    rows: List[Dict] = field(default_factory=list)   # measurements, one dict per table row
    info: Dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- environment
def torch_at_least(version: str, current: Optional[str] = None) -> bool:
    """True when torch (or `current`) is at least `version` (major.minor[.patch], local tags ignored)."""
    import torch

    def parts(v: str):
        out = []
        for p in v.split("+")[0].split(".")[:3]:
            digits = "".join(ch for ch in p if ch.isdigit())
            out.append(int(digits) if digits else 0)
        return tuple(out + [0] * (3 - len(out)))
    return parts(current or torch.__version__) >= parts(version)


def environment() -> Dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda_runtime": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
           "gpu": None, "gpu_memory_gib": None, "driver": None, "triton": None,
           "host": platform.node(), "cpu": platform.processor() or platform.machine()}
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        env["triton"] = f"unavailable ({type(e).__name__})"
    if env["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2 ** 30, 1)
        env["compute_capability"] = f"{props.major}.{props.minor}"
    env["driver"] = driver_version()
    return env


def driver_version() -> Optional[str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def require_cuda(args) -> str:
    """The device of the GPU sections: "cuda", or "cpu" with --device cpu (a dry run that checks
    this script's own code; its timings mean nothing). Skip without CUDA."""
    import torch
    if args.device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise Skip("no CUDA device (torch.cuda.is_available() is False)")
    return "cuda"


def sync(device: str) -> None:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def device_time(fn: Callable, repeats: int, budget: Budget, device: str = "cuda", warmup: int = 1) -> Dict:
    """Median and min seconds of `fn` over up to `repeats` runs, within `budget` (CUDA: events)."""
    import torch

    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if times and budget.expired():
            break
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times)}


# ---------------------------------------------------------------------------- sections
def section_tests(result: SectionResult, budget: Budget, args) -> None:
    if require_cuda(args) != "cuda":
        raise Skip("the GPU-marked tests need CUDA")
    files = gpu_test_files()
    if not files:
        raise Skip("no test file carries the gpu marker")
    # only the marked files: collecting the whole suite would need the shared data and ROS
    # on CUDA the Triton checks run compiled; their CPU-interpreter rerun is the CPU suite's job
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-k", "not test_in_interpreter",
           "-p", "no:cacheprovider", *files]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(5.0, budget.left()),
                              env=dict(os.environ, HF_HUB_OFFLINE="1"))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pytest -m gpu did not finish within {budget.seconds:.0f} s") from None
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    result.rows.append({"what": "pytest -m gpu", "result": summary, "returncode": proc.returncode})
    if proc.returncode not in (0, 5):  # 5: nothing collected
        result.info["output_tail"] = proc.stdout[-3000:] + proc.stderr[-1000:]
        raise RuntimeError(f"GPU-marked tests failed: {summary}")


def gpu_test_files() -> List[str]:
    """Test files that mark tests with pytest.mark.gpu, relative to the repository."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "test").rglob("test_*.py")
                  if "pytest.mark.gpu" in p.read_text(encoding="utf-8", errors="replace"))


def _deform_inputs(device, dtype, levels, B=1, M=8, D=32, P=4, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    S, L = sum(h * w for h, w in levels), len(levels)
    Q = S  # the encoder: one query per token
    value = torch.randn(B, S, M, D, generator=g).to(device, dtype)
    loc = (torch.rand(B, Q, M, L, P, 2, generator=g) * 1.2 - 0.1).to(device)
    attn = torch.rand(B, Q, M, L, P, generator=g).softmax(-1).to(device)
    return value, loc, attn


def section_triton(result: SectionResult, budget: Budget, args) -> None:
    if require_cuda(args) != "cuda":
        raise Skip("the Triton kernel runs on CUDA (on the CPU only in its interpreter: test_triton_deform_attn.py)")
    import torch

    from unipose_model.ops import ms_deform_attn_pytorch
    try:
        from unipose_model.ops import triton_deform_attn
    except Exception as e:  # noqa: BLE001
        raise Skip(f"triton cannot be imported: {type(e).__name__}: {e}") from None
    # Swin-T encoder levels at 800x1333: strides 8, 16, 32, 64
    levels = [(100, 167), (50, 84), (25, 42), (13, 21)]
    value, loc, attn = _deform_inputs("cuda", torch.float32, levels)
    tensors = [t.requires_grad_() for t in (value, loc, attn)]
    grad = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3], device="cuda")
    outs, grads = {}, {}
    for name, fn in (("triton", triton_deform_attn.ms_deform_attn_triton), ("pytorch", ms_deform_attn_pytorch)):
        out = fn(tensors[0], levels, tensors[1], tensors[2])
        outs[name] = out.detach()
        grads[name] = torch.autograd.grad(out, tensors, grad)
    ref_scale = outs["pytorch"].abs().max().clamp(min=1e-12)
    result.info["forward_rel_err"] = float((outs["triton"] - outs["pytorch"]).abs().max() / ref_scale)
    for name, a, b in zip(("value", "locations", "weights"), grads["triton"], grads["pytorch"]):
        result.info[f"backward_rel_err_{name}"] = float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
    for name, fn in (("triton", triton_deform_attn.ms_deform_attn_triton), ("pytorch", ms_deform_attn_pytorch)):
        with torch.no_grad():
            fwd = device_time(lambda: fn(value.detach(), levels, loc.detach(), attn.detach()), 10, budget)
        def fwd_bwd():
            out = fn(tensors[0], levels, tensors[1], tensors[2])
            torch.autograd.grad(out, tensors, grad)
        both = device_time(fwd_bwd, 5, budget)
        result.rows.append({"what": f"deformable attention, {name}", "shape": "800x1333 encoder, fp32",
                            "forward_ms": round(fwd["median_s"] * 1e3, 3),
                            "forward_backward_ms": round(both["median_s"] * 1e3, 3)})
    worst = max(v for k, v in result.info.items() if k.endswith("_err") or "_err_" in k)
    if worst > 1e-4:
        raise RuntimeError(f"Triton kernel differs from the reference: worst relative error {worst:.2e} > 1e-4")


def _swint_model(device: str, name: str = "unipose_swint"):
    import torch

    from unipose_model import build_model, fill_reference_weights

    model = fill_reference_weights(build_model(name)).to(device).eval()
    g = torch.Generator().manual_seed(0)
    inst = (torch.randn(1, 512, generator=g) * 0.4).to(device)
    kpts = (torch.randn(17, 512, generator=g) * 0.4).to(device)
    return model, inst, kpts


def section_swint(result: SectionResult, budget: Budget, args) -> None:
    device = require_cuda(args)
    import torch

    # the CPU dry run uses the tiny model at small sizes (the code path, not the numbers)
    model, inst, kpts = _swint_model(device, "unipose_swint" if device == "cuda" else "unipose_tiny")
    sizes = SWINT_SIZES if device == "cuda" else ((64, 96),)
    dtypes = DTYPES if device == "cuda" else ("float32",)
    modes = ["eager"] + (["compiled"] if not args.no_compile else [])
    if "compiled" in modes and not torch_at_least("2.2"):
        modes.remove("compiled")
        result.info["compiled"] = f"skipped: torch.compile of this model needs torch >= 2.2, have {torch.__version__}"
    dropped = []
    for mode in modes:
        for (h, w) in sizes:
            image = torch.randn(1, 3, h, w, device=device)
            for dtype_name in dtypes:
                if budget.left() < (40 if mode == "compiled" else 5):
                    dropped.append(f"{mode} {h}x{w} {dtype_name}")
                    continue
                dtype = getattr(torch, dtype_name)
                run = model if mode == "eager" else torch.compile(model, dynamic=False)

                def forward():
                    with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
                        return run(image, None, inst, kpts)
                t0 = time.perf_counter()
                first = forward()
                sync(device)
                first_s = time.perf_counter() - t0
                timing = device_time(forward, 10, budget, device, warmup=1)
                finite = bool(torch.isfinite(first["pred_boxes"]).all() and torch.isfinite(first["pred_keypoints"]).all())
                result.rows.append({"what": f"Swin-T forward, {mode}", "shape": f"{h}x{w}", "dtype": dtype_name,
                                    "median_ms": round(timing["median_s"] * 1e3, 2),
                                    "first_call_s": round(first_s, 2), "finite": finite,
                                    "peak_mem_gib": _peak_memory_gib(device)})
                if not finite:
                    result.status, result.reason = "failed", f"non-finite outputs at {h}x{w} {dtype_name} {mode}"
    if dropped:
        result.status = "partial" if result.status == "ok" else result.status
        result.reason = (result.reason + "; " if result.reason else "") + "budget ran out before: " + ", ".join(dropped)


def _peak_memory_gib(device: str) -> Optional[float]:
    import torch
    if device != "cuda":
        return None
    peak = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    torch.cuda.reset_peak_memory_stats()
    return peak


def _synthetic_batch(B: int, size: int, K: int, device):
    """Images and targets of the training step's format: two objects per image."""
    import torch

    g = torch.Generator().manual_seed(1)
    images = torch.randn(B, 3, size, size, generator=g).to(device)
    targets = []
    for _ in range(B):
        boxes = torch.tensor([[0.3, 0.3, 0.2, 0.25], [0.7, 0.6, 0.25, 0.2]])
        kp = boxes[:, None, :2] + (torch.rand(2, K, 2, generator=g) - 0.5) * boxes[:, None, 2:]
        targets.append({"labels": torch.tensor([0, 0]), "boxes": boxes, "keypoints": kp,
                        "visibility": torch.ones(2, K), "areas": (boxes[:, 2] * boxes[:, 3]) * size * size,
                        "sigmas": torch.full((K,), 0.05), "size": torch.tensor([size, size])})
    return images, [{k: v.to(device) for k, v in t.items()} for t in targets]


def section_train(result: SectionResult, budget: Budget, args) -> None:
    device = require_cuda(args)
    import torch

    from unipose_train.losses import SetCriterion
    from unipose_train.matcher import HungarianMatcher
    from unipose_model import build_model

    torch.manual_seed(0)
    model = build_model("unipose_tiny").to(device).train()
    criterion = SetCriterion(matcher=HungarianMatcher())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    amp = device == "cuda"  # the CPU dry run: float32, scaler disabled
    scaler = torch.amp.GradScaler(device, enabled=amp)
    K, B = 5, 2
    images, targets = _synthetic_batch(B, 256 if amp else 96, K, device)
    inst = torch.randn(B, 2, 512, device=device) * 0.4
    kpt = torch.randn(B, K, 512, device=device) * 0.4
    losses, times = [], []
    for step in range(args.train_steps):
        if step and budget.expired():
            result.status, result.reason = "partial", f"budget ran out after {step} steps"
            break
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.float16, enabled=amp):
            out = model(images, None, inst, kpt, aux=True)
        loss, _ = criterion(out, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        scaler.step(optimizer)
        scaler.update()
        sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    finite = all(v == v and abs(v) != float("inf") for v in losses)
    result.rows.append({"what": "tiny training step, AMP fp16 + scaler", "steps": len(losses),
                        "median_ms": round(statistics.median(times[1:] or times) * 1e3, 1),
                        "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
                        "finite": finite, "final_scale": float(scaler.get_scale())})
    if not finite:
        raise RuntimeError(f"non-finite training loss: {losses}")


def _clip_frames(n: int):
    import cv2

    from unipose_model.model_file import BUNDLED_VIDEO
    cap = cv2.VideoCapture(str(BUNDLED_VIDEO))
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[:, :, ::-1].copy())
    cap.release()
    if not frames:
        raise RuntimeError(f"cannot decode {BUNDLED_VIDEO}")
    return frames


def section_predictor(result: SectionResult, budget: Budget, args) -> None:
    device = require_cuda(args)
    import numpy as np

    from unipose_model.predictor import Predictor
    from unipose_model.speed import apply_profile

    frames = _clip_frames(args.frames)
    cpu = Predictor(device="cpu")
    gpu = Predictor(device=device)
    base = (gpu.short_side, gpu.max_size)
    ref = cpu.predict(frames[0], "fly")
    got = gpu.predict(frames[0], "fly")
    diffs = [float(np.abs(a.keypoints[:, :2] - b.keypoints[:, :2]).max()) for a, b in zip(ref, got)]
    result.info["cpu_vs_cuda"] = {"detections_cpu": len(ref), "detections_cuda": len(got),
                                  "max_keypoint_diff_px": max(diffs) if diffs else None}
    runs = (("float32", PROFILES), ("float16", ("accurate",))) if device == "cuda" else (("float32", PROFILES),)
    for dtype_name, profiles in runs:
        gpu.initial_settings = gpu.settings = gpu.settings.replace(dtype=dtype_name)
        for profile in profiles:
            if budget.left() < 5:
                result.status, result.reason = "partial", f"budget ran out before {profile} {dtype_name}"
                return
            apply_profile(gpu, profile, *base)
            gpu.predict(frames[0], "fly")  # warm-up
            times, counts = [], []
            for frame in frames:
                t0 = time.perf_counter()
                counts.append(len(gpu.predict(frame, "fly")))
                times.append(time.perf_counter() - t0)
                if budget.expired():
                    break
            result.rows.append({"what": f"Predictor, fly model, profile {profile}", "dtype": dtype_name,
                                "frames": len(times), "median_ms": round(statistics.median(times) * 1e3, 1),
                                "frames_per_s": round(1 / statistics.median(times), 2),
                                "mean_detections": round(sum(counts) / len(counts), 2)})
    if len(ref) != len(got) or (diffs and max(diffs) > 2.0):
        raise RuntimeError(f"CUDA and CPU disagree on frame 0: {result.info['cpu_vs_cuda']}")


def section_tensorrt(result: SectionResult, budget: Budget, args) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise Skip("TensorRT is not installed (the stock CUDA image has none); its code paths are "
                   "tested on the CPU side only (cache keys, errors, the ONNX interface)") from None
    raise Skip("TensorRT is installed but this script does not build engines (minutes per input size); "
               "run `unipose predict --backend tensorrt` by hand")


def section_ros(result: SectionResult, budget: Budget, args) -> None:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        raise Skip("ROS 2 (rclpy) is not installed (no ROS wheels in the stock CUDA image); "
                   "the node's timing is scripts/bench_ros.py") from None
    raise Skip("the ROS node is not timed here; use scripts/bench_ros.py --device cuda")


RUNNERS: Dict[str, Callable] = {"tests": section_tests, "triton": section_triton, "swint": section_swint,
                                "train": section_train, "predictor": section_predictor,
                                "tensorrt": section_tensorrt, "ros": section_ros}


# ---------------------------------------------------------------------------- running and reporting
def run_section(name: str, runner: Callable, seconds: float, args) -> SectionResult:
    """Run one section; a Skip or an exception is recorded in the result, never raised."""
    result = SectionResult(name)
    budget = Budget(seconds)
    try:
        runner(result, budget, args)
    except Skip as s:
        result.status, result.reason = "skipped", str(s)
    except Exception as e:  # noqa: BLE001 - recorded, the next section runs
        result.status = "failed"
        result.reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        result.info["traceback"] = traceback.format_exc()[-3000:]
    finally:
        result.seconds = round(time.perf_counter() - budget.start, 2)
        _free_cuda()
    return result


def _free_cuda() -> None:
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def section_budgets(names: List[str], total: float) -> Dict[str, float]:
    """Each section's seconds: the defaults, scaled down together to fit `total`."""
    wanted = {n: BUDGETS[n] for n in names}
    scale = min(1.0, total / max(sum(wanted.values()), 1e-9))
    return {n: s * scale for n, s in wanted.items()}


def markdown(env: Dict, results: List[SectionResult]) -> str:
    lines = ["# gpu_check", "",
             f"GPU: {env.get('gpu') or 'none (no CUDA device)'}"
             + (f", {env['gpu_memory_gib']} GiB" if env.get("gpu_memory_gib") else "")
             + f"; driver {env.get('driver') or 'unknown'}; torch {env.get('torch')} (CUDA {env.get('cuda_runtime')}); "
               f"Triton {env.get('triton')}; Python {env.get('python')}", "",
             "| section | status | what | measurement | s |", "|---|---|---|---|---|"]
    for r in results:
        if not r.rows:
            lines.append(f"| {r.name} | {r.status} | {_cell(r.reason) or '-'} | | {r.seconds} |")
            continue
        for i, row in enumerate(r.rows):
            what = row.get("what", "")
            rest = ", ".join(f"{k}={v}" for k, v in row.items() if k != "what")
            status = r.status if i == 0 else ""
            lines.append(f"| {r.name if i == 0 else ''} | {status} | {_cell(what)} | {_cell(rest)} | "
                         f"{r.seconds if i == 0 else ''} |")
        if r.reason:
            lines.append(f"| | | {_cell(r.reason)} | | |")
    notes = [f"- {r.name}: " + ", ".join(f"{k}={v}" for k, v in r.info.items() if k not in ("traceback", "output_tail"))
             for r in results if any(k not in ("traceback", "output_tail") for k in r.info)]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _cell(text) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "outputs" / "gpu_check"), help="report folder")
    parser.add_argument("--budget-s", type=float, default=TOTAL_BUDGET_S,
                        help=f"total seconds for all sections (default {TOTAL_BUDGET_S:.0f})")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    parser.add_argument("--frames", type=int, default=30, help="clip frames per speed profile (predictor)")
    parser.add_argument("--train-steps", type=int, default=20, help="tiny-config AMP training steps")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled Swin-T timings")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a dry run of the sections' code on the CPU (tiny model, tiny sizes; "
                             "timings meaningless); default cuda")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        parser.error(f"unknown section(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SECTIONS)}")
    if args.budget_s <= 0 or args.frames < 1 or args.train_steps < 1:
        parser.error("--budget-s, --frames and --train-steps must be positive")
    args.section_names = names
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    env = environment()
    results = []
    for name, seconds in section_budgets(args.section_names, args.budget_s).items():
        print(f"[gpu_check] {name} (budget {seconds:.0f} s) ...", flush=True)
        result = run_section(name, RUNNERS[name], seconds, args)
        print(f"[gpu_check] {name}: {result.status}{' - ' + result.reason if result.reason else ''} "
              f"({result.seconds:.1f} s)", flush=True)
        results.append(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"environment": env, "total_s": round(time.perf_counter() - started, 1),
              "sections": [r.__dict__ for r in results]}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(env, results))
    print(f"[gpu_check] wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} "
          f"({report['total_s']} s)", flush=True)
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
