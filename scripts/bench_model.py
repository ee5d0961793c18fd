#!/usr/bin/env python3
"""Time the UniPose forward pass per stage and measure peak memory, optionally against the
official X-Pose code in the same run.

    python scripts/bench_model.py                         # this project's model only
    python scripts/bench_model.py --official-src ~/X-Pose [--official-python ~/xpose-venv/bin/python]
                                                          # plus the official code (a checkout you provide)

Every measurement runs in a fresh subprocess (clean peak-RSS numbers) with the same input image,
the same prompt features and the same weights (the reference weight-fill rule), so outputs can
be compared. Stages: backbone (incl. position embeddings), encoder (fusion + text + deformable
layers), decoder, other (input projections, two-stage selection, heads), postprocess.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("backbone", "encoder", "decoder")
VARIANTS = {
    "official": "official X-Pose code (pure-PyTorch deformable attention)",
    "ours_raw": "unipose_model, official I/O (68 keypoint slots), reference sampling core",
    "ours": "unipose_model, plain path (prompt's 17 keypoint slots), reference sampling core (grid_sample)",
    "ours_fast": "unipose_model, plain path with the CPU fast sampling core (one weighted gather)",
}


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class StageTimer:
    """Wall time of named submodules via forward pre/post hooks."""

    def __init__(self, modules):
        self.times = {name: 0.0 for name in modules}
        self._start = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda m, a, n=name: self._start.__setitem__(n, time.perf_counter()))
            module.register_forward_hook(lambda m, a, o, n=name: self._add(n))

    def _add(self, name):
        self.times[name] += time.perf_counter() - self._start[name]

    def reset(self):
        for k in self.times:
            self.times[k] = 0.0


def make_inputs(height: int, width: int, path: Path):
    import cv2
    import numpy as np
    import torch
    candidates = [REPO.parent / "shared/data/samples/coco/000000000785.jpg", REPO / "unipose_model/data/sample_fly.jpg"]
    src = next((p for p in candidates if p.exists()), None)
    img = cv2.imread(str(src))[:, :, ::-1] if src else np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    img = cv2.resize(np.ascontiguousarray(img), (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    img = (img - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    g = torch.Generator().manual_seed(0)
    np.savez(path, image=img.transpose(2, 0, 1)[None].astype(np.float32),
             instance=(torch.randn(1, 512, generator=g) * 0.4).numpy(),
             keypoints=(torch.randn(17, 512, generator=g) * 0.4).numpy())


def postprocess(logits, boxes, keypoints, k, threshold=0.1, iou=0.9):
    from torchvision.ops import nms, box_convert
    scores = logits.sigmoid()[0].max(-1)[0]
    keep = scores > threshold
    b = boxes[0][keep]
    order = nms(box_convert(b, "cxcywh", "xyxy"), scores[keep], iou)
    return b[order], keypoints[0][keep][order][:, :2 * k]


def build_official(src: Path):
    """Import the official model from a checkout, with CPU stand-ins for its CUDA-only pieces."""
    import torch
    sys.path.insert(0, str(src))
    # The official constructor loads OpenAI CLIP (a download) that its forward never uses.
    clip_stub = types.ModuleType("clip")
    clip_stub.load = lambda *a, **k: (types.SimpleNamespace(visual=torch.nn.Linear(1, 1)), None)
    sys.modules["clip"] = clip_stub
    sys.modules["MultiScaleDeformableAttention"] = types.ModuleType("MultiScaleDeformableAttention")
    from models.UniPose.ops.functions import ms_deform_attn_func as fn
    from models.UniPose.ops.modules import ms_deform_attn as mod
    from models.UniPose import unipose, mask_generate

    class PytorchCore:  # the official module's own pure-PyTorch reference core
        @staticmethod
        def apply(value, shapes, level_start, locations, weights, step):
            return fn.ms_deform_attn_core_pytorch(value, shapes, locations, weights)

    mod.MSDeformAttnFunction = PytorchCore
    original = mask_generate.prepare_for_mask

    def prepare_on_cpu(kpt_mask):  # the official mask builder hard-codes .to('cuda')
        to = torch.Tensor.to
        torch.Tensor.to = lambda self, *a, **k: to(self, *[("cpu" if x == "cuda" else x) for x in a], **k)
        try:
            return original(kpt_mask)
        finally:
            torch.Tensor.to = to

    unipose.prepare_for_mask = prepare_on_cpu
    import runpy
    cfg = {}
    for f in ("config_model/coco_transformer.py", "config_model/UniPose_SwinT.py"):
        cfg.update({k: v for k, v in runpy.run_path(str(src / f)).items() if not k.startswith("_")})
    cfg["device"] = "cpu"
    model = unipose.build_unipose(types.SimpleNamespace(**cfg))
    # same weights as ours: the reference fill rule over the official state-dict keys
    sys.path.insert(0, str(REPO))
    from unipose_model.checkpoint import fill_reference_weights
    model.clip_model = None
    fill_reference_weights(model)
    return model.eval()


def worker(args) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    data = np.load(args.inputs)
    image = torch.from_numpy(data["image"])
    mask = torch.zeros(image.shape[0], *image.shape[-2:], dtype=torch.bool)
    inst, kpts = torch.from_numpy(data["instance"]), torch.from_numpy(data["keypoints"])
    k = kpts.shape[0]
    kpts100 = torch.cat((kpts, torch.zeros(100 - k, 512)))
    vis100 = torch.cat((torch.ones(k), torch.zeros(100 - k)))
    t0 = time.perf_counter()
    if args.worker == "official":
        model = build_official(Path(args.official_src))
        target = {"instance_text_prompt": ["x"], "object_embeddings_text": inst, "kpts_embeddings_text": kpts100,
                  "kpt_vis_text": vis100}
        run = lambda: model(image, [target])
    else:
        sys.path.insert(0, str(REPO))
        from unipose_model import build_model
        from unipose_model.checkpoint import fill_reference_weights
        from unipose_model.ops import use_deform_attn_impl
        # the whole worker runs with one sampling core (held until the worker returns)
        core = use_deform_attn_impl("gather" if args.worker == "ours_fast" else "pytorch")
        core.__enter__()
        model = fill_reference_weights(build_model("unipose_swint"))
        if args.worker == "ours_raw":
            run = lambda: model.forward_raw(image, mask, inst, kpts100, vis100)
        else:
            def run():
                out = model(image, mask, inst, kpts)
                kp = out["pred_keypoints"].flatten(2)
                return {"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"], "pred_keypoints": kp}
    build_s = time.perf_counter() - t0
    timer = StageTimer({"backbone": model.backbone, "encoder": model.transformer.encoder,
                        "decoder": model.transformer.decoder})
    rss_before = rss_mib()
    rows = []
    with torch.inference_mode():
        for i in range(args.repeats + 1):  # the first call is a warm-up
            timer.reset()
            t0 = time.perf_counter()
            out = run()
            t1 = time.perf_counter()
            post = postprocess(out["pred_logits"][..., :1], out["pred_boxes"], out["pred_keypoints"], k)
            t2 = time.perf_counter()
            if i:
                row = dict(timer.times)
                row["other"] = (t1 - t0) - sum(timer.times.values())
                row["postprocess"] = t2 - t1
                row["forward"] = t1 - t0
                rows.append(row)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez(args.outputs, logits=out["pred_logits"][..., :1].numpy(), boxes=out["pred_boxes"].numpy(),
             keypoints=out["pred_keypoints"][..., :2 * k].numpy(), post_boxes=post[0].numpy())
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    return {"variant": args.worker, "build_s": build_s, "median_s": med, "all_forward_s": [r["forward"] for r in rows],
            "rss_before_mib": rss_before, "peak_rss_mib": peak}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="800x1333,480x640", help="comma-separated HxW input sizes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    p.add_argument("--official-src", help="checkout of IDEA-Research/X-Pose to compare against")
    p.add_argument("--official-python", default=sys.executable,
                   help="interpreter for the official code (needs its extra packages, e.g. transformers, "
                        "timm; same torch version for a fair comparison)")
    p.add_argument("--variants", default=None, help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--json", help="write all results here")
    p.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    p.add_argument("--outputs", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    import numpy as np
    variants = args.variants.split(",") if args.variants else [v for v in VARIANTS if v != "official" or args.official_src]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            h, w = map(int, size.lower().split("x"))
            inputs = Path(tmp) / f"in_{h}x{w}.npz"
            make_inputs(h, w, inputs)
            outs = {}
            for v in variants:
                outp = Path(tmp) / f"out_{v}_{h}x{w}.npz"
                python = args.official_python if v == "official" else sys.executable
                cmd = [python, __file__, "--worker", v, "--inputs", str(inputs), "--outputs", str(outp),
                       "--threads", str(args.threads), "--repeats", str(args.repeats)]
                if args.official_src:
                    cmd += ["--official-src", args.official_src]
                print(f"[{h}x{w}] {v} ...", file=sys.stderr, flush=True)
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"worker {v} failed")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                res["size"] = f"{h}x{w}"
                outs[v] = np.load(outp)
                base = outs.get("official") or outs.get("ours_raw")
                if base is not None and base is not outs[v]:
                    res["max_abs_diff_vs_" + ("official" if "official" in outs else "ours_raw")] = {
                        key: float(np.abs(outs[v][key] - base[key]).max()) for key in ("logits", "boxes", "keypoints")}
                results.append(res)
    print(markdown(results, args.threads))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def markdown(results, threads) -> str:
    lines = ["| input | variant | backbone | encoder | decoder | other | forward | postprocess | peak RSS (MiB) | max abs diff (logits / boxes / kpts) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["median_s"]
        diff = next((v for k, v in r.items() if k.startswith("max_abs_diff")), None)
        d = f"{diff['logits']:.1e} / {diff['boxes']:.1e} / {diff['keypoints']:.1e}" if diff else "(reference)"
        lines.append(f"| {r['size']} | {r['variant']} | {m['backbone']:.2f} s | {m['encoder']:.2f} s | {m['decoder']:.2f} s | "
                     f"{m['other']:.2f} s | **{m['forward']:.2f} s** | {m['postprocess'] * 1000:.1f} ms | "
                     f"{r['peak_rss_mib']:.0f} (+{r['peak_rss_mib'] - r['rss_before_mib']:.0f}) | {d} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
