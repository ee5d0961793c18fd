#!/usr/bin/env python3
"""Where one forward's CPU time goes, by op class, beside the machine's own matrix-product limit.

    python scripts/profile_ops.py                                # 480x640 and 800x1333, fp32 and bf16
    python scripts/profile_ops.py --sizes 480x640 --dtypes fp32 --repeats 1   # quick look (~1 min)
    python scripts/profile_ops.py --markdown /tmp/profile.md --json /tmp/profile.json

For each input size and dtype (fp32, or bf16 under CPU autocast) it times `--repeats` forwards of
the model (config `unipose_swint`, weights from the reference fill rule: no download) after one
warm-up, then profiles one more with torch.profiler and sums each op's self time into classes:
matrix products (addmm / mm / bmm / conv), deformable sampling (everything inside the sampling
core), softmax and norms, element-wise, copies and casts, other (other ops and Python between ops).
FLOPs come from torch.utils.flop_counter.FlopCounterMode (matrix products only, as torch counts
them); the attained GFLOP/s is set against the best of a few large torch.mm runs in the same dtype
on this machine, so the distance to the matrix units' limit reads the same on any CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLASSES = ("matmul", "sampling", "softmax_norm", "elementwise", "copy_cast", "other")
LABELS = {"matmul": "matrix products", "sampling": "deformable sampling", "softmax_norm": "softmax, norms",
          "elementwise": "element-wise", "copy_cast": "copies, casts", "other": "other"}
SAMPLING_SCOPE = "unipose::deform_sampling"
FORWARD_SCOPE = "unipose::forward"

# names after "aten::" with any trailing "_" (in-place variant) removed
MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "addmv", "mv", "matmul", "linear", "_addmm_activation",
              "conv1d", "conv2d", "convolution", "_convolution", "mkldnn_convolution", "mkldnn_linear",
              "_mkldnn_linear", "einsum", "dot", "_scaled_dot_product_flash_attention_for_cpu",
              "scaled_dot_product_attention"}
SAMPLING_OPS = {"grid_sampler", "grid_sampler_2d", "_grid_sampler_2d_cpu_fallback"}
SOFTMAX_NORM_OPS = {"softmax", "_softmax", "_safe_softmax", "log_softmax", "_log_softmax", "layer_norm",
                    "native_layer_norm", "group_norm", "native_group_norm", "batch_norm", "native_batch_norm",
                    "_native_batch_norm_legit_no_training", "_batch_norm_impl_index", "rms_norm", "_fused_rms_norm",
                    "norm", "linalg_vector_norm"}
ELEMENTWISE_OPS = {"add", "sub", "rsub", "mul", "div", "neg", "abs", "reciprocal", "pow", "sqrt", "rsqrt", "exp",
                   "log", "log1p", "sigmoid", "logit", "tanh", "relu", "gelu", "silu", "hardtanh", "threshold",
                   "clamp", "clamp_min", "clamp_max", "clip", "maximum", "minimum", "where", "masked_fill", "fill",
                   "zero", "sin", "cos", "atan2", "floor", "ceil", "round", "sign", "erf", "addcmul", "addcdiv",
                   "lerp", "square", "lt", "le", "gt", "ge", "eq", "ne", "logical_and", "logical_or", "logical_not",
                   "bitwise_and", "bitwise_or", "bitwise_not", "zeros_like", "ones_like", "full_like", "zeros",
                   "ones", "full", "empty_like", "floor_divide", "remainder", "fmod"}
COPY_CAST_OPS = {"copy", "to", "_to_copy", "_copy_from", "_copy_from_and_resize", "contiguous", "clone", "cat",
                 "stack", "roll", "constant_pad_nd", "pad", "reflection_pad2d", "index", "index_select", "gather",
                 "take_along_dim", "masked_select", "flip", "repeat", "repeat_interleave", "unfold_copy",
                 "_unsafe_view", "reshape_copy", "type_as", "float", "bfloat16"}


def op_base(name: str) -> str:
    """'aten::add_' -> 'add'; names from other namespaces keep theirs ('unipose::x')."""
    base = name[6:] if name.startswith("aten::") else name
    return base[:-1] if base.endswith("_") and not base.endswith("__") else base


def classify_op(name: str, in_sampling: bool = False) -> str:
    """The op class of one profiler event name; everything inside the sampling core is sampling."""
    if in_sampling or name == SAMPLING_SCOPE:
        return "sampling"
    base = op_base(name)
    if base in MATMUL_OPS or base.startswith(("mkldnn_conv", "_mkldnn_conv", "cudnn_conv")):
        return "matmul"
    if base in SAMPLING_OPS:
        return "sampling"
    if base in SOFTMAX_NORM_OPS:
        return "softmax_norm"
    if base in ELEMENTWISE_OPS:
        return "elementwise"
    if base in COPY_CAST_OPS:
        return "copy_cast"
    return "other"


def _inside(event, scope: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == scope:
            return True
        parent = parent.cpu_parent
    return False


def _copy_caller(event) -> str:
    """Who asked for a copy: "cast" when a dtype conversion (_to_copy) is on the way up, else the
    first op above the chain of copy ops (reshape, cat's caller, ...), or "(top level)"."""
    node = event
    while node is not None and classify_op(node.name) == "copy_cast":
        if op_base(node.name) in ("_to_copy", "to"):
            return "cast"
        node = node.cpu_parent
    return "(top level)" if node is None or node.name == FORWARD_SCOPE else op_base(node.name)


def summarize_events(events) -> dict:
    """Self CPU time (seconds) per class and per op name from profiler FunctionEvents (anything
    with name, self_cpu_time_total in µs and cpu_parent). The forward scope's own self time is
    Python between ops: counted as "other" and reported as `python_s`. A copy made by a matrix
    product itself (addmm's bias broadcast) counts as matrix product."""
    by_class = dict.fromkeys(CLASSES, 0.0)
    by_op = defaultdict(float)
    copy_callers = defaultdict(float)  # what asked for the copy_ (contiguous, reshape, _to_copy: a cast, ...)
    python_s = 0.0
    for ev in events:
        seconds = ev.self_cpu_time_total / 1e6
        if ev.name == FORWARD_SCOPE:
            python_s += seconds
            by_class["other"] += seconds
            continue
        cls = classify_op(ev.name, _inside(ev, SAMPLING_SCOPE))
        if cls == "copy_cast" and ev.cpu_parent is not None and classify_op(ev.cpu_parent.name) == "matmul":
            # addmm's copy of the bias into its fresh output: the output's first touch, which a
            # bias-free mm pays inside the GEMM (same time with or without bias): matrix-product time
            cls = "matmul"
        by_class[cls] += seconds
        by_op[("sampling: " if cls == "sampling" and ev.name != SAMPLING_SCOPE else "") + ev.name] += seconds
        if cls == "copy_cast":
            copy_callers[_copy_caller(ev)] += seconds
    return {"by_class_s": by_class, "by_op_s": dict(by_op), "copy_callers_s": dict(copy_callers), "python_s": python_s,
            "profiled_total_s": sum(by_class.values())}


# ----------------------------------------------------------------------------- measuring

def matmul_peak(dtype, sizes=(1024, 2048), repeats: int = 3, max_s: float = 2.0) -> float:
    """The best GFLOP/s of square torch.mm products in `dtype` (the machine's practical limit).
    Sizes go in ascending order and stop once one product takes over `max_s` (emulated bf16 runs
    at well under 1 GFLOP/s: a 2048 product would take a minute)."""
    import torch
    best = 0.0
    g = torch.Generator().manual_seed(0)
    for n in sorted(sizes):
        a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
        t0 = time.perf_counter()
        torch.mm(a, b)  # warm-up: oneDNN / BLAS picks and packs its kernel
        if time.perf_counter() - t0 > max_s:
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
            break
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def _sampling_core_in_scope(core: str):
    """Register a sampling core that runs `core` inside a profiler scope, and return its name."""
    import torch
    from unipose_model.ops import get_deform_attn_impl, register_deform_attn_impl
    inner = get_deform_attn_impl(core)

    def scoped(*args):
        with torch.profiler.record_function(SAMPLING_SCOPE):
            return inner(*args)

    name = f"profiled_{core}"
    register_deform_attn_impl(name, scoped)
    return name


def make_model_inputs(height: int, width: int, keypoints: int = 17):
    """A normalised random image (mean 0, std 1, as after preprocessing), its mask and prompt features."""
    import torch
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, height, width, generator=g)
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    return image, mask, torch.randn(1, 512, generator=g) * 0.4, torch.randn(keypoints, 512, generator=g) * 0.4


def profile_config(model, height: int, width: int, dtype_name: str, repeats: int, count_flops: bool) -> dict:
    import contextlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode
    inputs = make_model_inputs(height, width)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype_name == "bf16" else contextlib.nullcontext())

    def forward():
        with torch.profiler.record_function(FORWARD_SCOPE):
            return model(*inputs)

    result = {"size": f"{height}x{width}", "dtype": dtype_name}
    with torch.inference_mode(), autocast:
        t0 = time.perf_counter()
        if count_flops:  # the warm-up doubles as the FLOP count (the counter slows it; it is not timed)
            counter = FlopCounterMode(display=False)
            with counter:
                forward()
            result["flops"] = counter.get_total_flops()
        else:
            forward()
        result["warmup_s"] = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            forward()
            times.append(time.perf_counter() - t0)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            forward()
    # the best run, not the median: on a shared machine other jobs only ever add time
    result["forward_s"] = min(times)
    result["median_forward_s"] = statistics.median(times)
    result["all_forward_s"] = times
    result.update(summarize_events(prof.events()))
    return result


def machine_info(threads: int) -> dict:
    import torch
    from unipose_model.cpu_info import read_cpu_info
    cpu = read_cpu_info()
    return {"cpu": cpu.model_name, "cpu_described": cpu.describe(), "bf16_native": cpu.native_bf16,
            "flags": {f: f in cpu.flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")},
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": threads, "logical_cpus": os.cpu_count(), "load_average": list(os.getloadavg())}


# ----------------------------------------------------------------------------- reporting

def _num(x: float) -> str:
    """3 significant digits without an exponent: 0.46, 8.37, 54.2, 248, 2048."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _cell(seconds: float, total: float) -> str:
    return f"{seconds:.2f} s ({100 * seconds / total:.0f} %)" if total > 0 else "-"


def markdown(report: dict, top: int = 6) -> str:
    m = report["machine"]
    peak = report["matmul_gflops"]
    lines = [f"CPU: {m['cpu_described']} (torch CPU capability {m['cpu_capability']}); torch {m['torch']}, "
             f"{m['threads']} threads of {m['logical_cpus']} logical CPUs; load average "
             f"{' / '.join(f'{x:.1f}' for x in m['load_average'])} (1 / 5 / 15 min) at the start"
             + (f", {' / '.join(f'{x:.1f}' for x in report['load_average_end'])} at the end"
                if report.get("load_average_end") else "") + ".",
             "",
             "Machine's large-matrix-product throughput (best square `torch.mm`, before and after the forwards): "
             + ", ".join(f"{d} {_num(g)} GFLOP/s" for d, g in peak.items())
             + ("" if m["bf16_native"] else " (bf16 emulated: no avx512_bf16 / amx_bf16)") + ".",
             "",
             "| input | dtype | forward | GFLOP | GFLOP/s (% of mm limit) | "
             + " | ".join(LABELS[c] for c in CLASSES) + " |",
             "|---|---|---|---|---|" + "---|" * len(CLASSES)]
    for r in report["runs"]:
        gflop = r.get("flops", 0) / 1e9
        rate = gflop / r["forward_s"] if gflop else 0.0
        limit = peak.get(r["dtype"])
        attained = f"{_num(rate)} ({100 * rate / limit:.0f} %)" if gflop and limit else "-"
        total = r["profiled_total_s"]
        lines.append(f"| {r['size']} | {r['dtype']} | **{r['forward_s']:.2f} s** | "
                     f"{_num(gflop)} | {attained} | " + " | ".join(_cell(r['by_class_s'][c], total) for c in CLASSES) + " |")
    if report.get("skipped"):
        lines += ["", report["skipped"] + "."]
    lines += ["", "Class times are self CPU times of one profiled forward (the profiler adds overhead: their "
              "sum is the profiled forward, next to the unprofiled one in the forward column). "
              "The forward column is the best of the timed runs (other jobs only add time). "
              "\"other\" includes Python between ops. Largest ops by self time:", ""]
    for r in report["runs"]:
        total = r["profiled_total_s"]
        ops = sorted(r["by_op_s"].items(), key=lambda kv: -kv[1])[:top]
        lines.append(f"- {r['size']} {r['dtype']} (profiled {total:.2f} s, Python between ops {r['python_s']:.2f} s): "
                     + ", ".join(f"`{n.replace('aten::', '')}` {100 * s / total:.0f} %" for n, s in ops)
                     + ("; copies and casts by the op that asked for them: " + ", ".join(
                         f"`{n}` {100 * s / total:.0f} %" for n, s in sorted(
                             r["copy_callers_s"].items(), key=lambda kv: -kv[1])[:4]) if r.get("copy_callers_s") else ""))
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="unipose_swint", help="model configuration (default unipose_swint)")
    p.add_argument("--sizes", default="480x640,800x1333", help="comma-separated HxW input sizes")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16 (CPU autocast)")
    p.add_argument("--repeats", type=int, default=2,
                   help="timed forwards per size and dtype, after one warm-up; the best is reported")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--core", default="gather", help="sampling core (gather: the CPU inference default; pytorch)")
    p.add_argument("--mm-sizes", default="1024,2048", help="square sizes of the torch.mm throughput runs")
    p.add_argument("--emulated-bf16", action="store_true",
                   help="profile bf16 even where this CPU has no native bf16 (emulated: ~100x slower matrix products)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (saves one slow forward per size)")
    p.add_argument("--markdown", help="also write the markdown report here")
    p.add_argument("--json", help="write all figures here")
    p.add_argument("--from-json", help="measure nothing: merge these comma-separated --json reports (e.g. one per "
                                       "size, run one after the other) into one markdown report")
    args = p.parse_args(argv)
    try:
        args.size_list = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s.strip()]
        if not args.size_list or any(len(s) != 2 or min(s) < 32 for s in args.size_list):
            raise ValueError
    except ValueError:
        p.error(f"--sizes {args.sizes!r}: give HxW pairs of at least 32, e.g. 480x640,800x1333")
    args.dtype_list = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not args.dtype_list or any(d not in ("fp32", "bf16") for d in args.dtype_list):
        p.error(f"--dtypes {args.dtypes!r}: give fp32, bf16 or both")
    try:
        args.mm_size_list = tuple(int(n) for n in args.mm_sizes.split(","))
    except ValueError:
        p.error(f"--mm-sizes {args.mm_sizes!r}: give comma-separated integers")
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be at least 1")
    return args


def run(args) -> dict:
    import torch
    from unipose_model import build_model
    from unipose_model.checkpoint import fill_reference_weights
    from unipose_model.ops import use_deform_attn_impl
    torch.set_num_threads(args.threads)
    report = {"machine": machine_info(args.threads), "config": args.config, "core": args.core, "runs": []}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    print("measuring torch.mm throughput ...", file=sys.stderr, flush=True)
    report["matmul_gflops"] = {d: matmul_peak(dtypes[d], args.mm_size_list) for d in args.dtype_list}
    # no parameter needs grad: FlopCounterMode's module tracker hooks tensors that do, and fails on
    # inference-mode views of them
    dtypes_run = list(args.dtype_list)
    if "bf16" in dtypes_run and not report["machine"]["bf16_native"] and not args.emulated_bf16:
        dtypes_run.remove("bf16")
        report["skipped"] = ("bf16 forward not profiled: this CPU has no avx512_bf16 / amx_bf16, so bf16 matrix "
                             f"products are emulated ({_num(report['matmul_gflops']['bf16'])} GFLOP/s above; the "
                             "Predictor refuses bf16 here); --emulated-bf16 profiles it anyway")
        print(report["skipped"], file=sys.stderr)
    model = fill_reference_weights(build_model(args.config)).eval().requires_grad_(False)
    with use_deform_attn_impl(_sampling_core_in_scope(args.core)):
        for h, w in args.size_list:
            for i, d in enumerate(dtypes_run):
                print(f"[{h}x{w} {d}] ...", file=sys.stderr, flush=True)
                r = profile_config(model, h, w, d, args.repeats, count_flops=not args.no_flops and i == 0)
                if "flops" not in r:  # autocast does not change what is computed: same count per size
                    r["flops"] = next((x["flops"] for x in report["runs"] if x["size"] == r["size"] and "flops" in x), 0)
                report["runs"].append(r)
    # again at the end, keeping the better: on a shared machine the limit is what it reaches when quiet
    report["matmul_gflops_end"] = {d: matmul_peak(dtypes[d], args.mm_size_list) for d in args.dtype_list}
    report["matmul_gflops_start"] = dict(report["matmul_gflops"])
    report["matmul_gflops"] = {d: max(report["matmul_gflops_start"][d], report["matmul_gflops_end"][d])
                               for d in args.dtype_list}
    report["load_average_end"] = list(os.getloadavg())
    return report


def merge_reports(reports: list) -> dict:
    """One report from several runs on the same machine: all their rows, the best matrix-product
    throughput seen per dtype, the first run's starting load and the last run's final load."""
    merged = dict(reports[0], runs=[r for rep in reports for r in rep["runs"]])
    merged["matmul_gflops"] = {}
    for rep in reports:
        for d, g in rep["matmul_gflops"].items():
            merged["matmul_gflops"][d] = max(g, merged["matmul_gflops"].get(d, 0.0))
    merged["load_average_end"] = reports[-1].get("load_average_end")
    return merged


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        report = merge_reports([json.loads(Path(f).read_text()) for f in args.from_json.split(",")])
    else:
        report = run(args)
    text = markdown(report)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
