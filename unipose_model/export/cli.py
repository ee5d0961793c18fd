"""`unipose export onnx|tensorrt`: the add-arguments / run pair registered in unipose_model.cli.

Kept free of torch at import time so that `unipose --help` stays fast.
"""
from __future__ import annotations

import argparse
import sys

from ..configs import MAX_KEYPOINTS, MAX_TEXT_SLOTS

HELP = "export the detector: ONNX graph or TensorRT engine"


def _size(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be HxW, e.g. 800x1333, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"image size {text} is too small (>= 32x32)")
    return h, w


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="unipose_swint", help="configuration (default unipose_swint)")
    p.add_argument("--checkpoint", "-c", required=True,
                   help="official-format checkpoint, or 'reference' (deterministic test weights)")
    p.add_argument("--image-size", type=_size, default=(800, 1333), metavar="HxW",
                   help="model input size after preprocessing (static in the graph; default 800x1333)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default and minimum 18)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="export_format", metavar="FORMAT", title="formats")
    sub.required = True
    onnx = sub.add_parser("onnx", help="ONNX graph: image + prompt features in, logits/boxes/keypoints out")
    _common(onnx)
    onnx.add_argument("--out", "-o", required=True, help="output .onnx file")
    onnx.add_argument("--num-classes", type=int, default=2,
                      help=f"example prompt classes; the graph takes any number 1..{MAX_TEXT_SLOTS - 1} unless "
                           "--static-prompt")
    onnx.add_argument("--num-keypoints", type=int, default=17,
                      help=f"example prompt keypoints; the graph takes any number 1..{MAX_KEYPOINTS} unless "
                           "--static-prompt")
    onnx.add_argument("--static-prompt", action="store_true",
                      help="fix N and K to --num-classes / --num-keypoints")
    onnx.add_argument("--deform-attn", choices=["grid_sample", "trt_plugin"], default="grid_sample",
                      help="standard GridSample ops (default) or TensorRT's deformable-attention plugin node")
    onnx.set_defaults(_export=_run_onnx)
    trt = sub.add_parser("tensorrt", help="TensorRT engine (needs TensorRT and an NVIDIA GPU)")
    _common(trt)
    trt.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    trt.add_argument("--deform-attn", choices=["grid_sample", "trt_plugin"], default="trt_plugin")
    trt.add_argument("--max-classes", type=int, default=16, help="largest prompt (classes) of the profile")
    trt.add_argument("--cache-dir", default=None, help="engine cache (default ~/.cache/unipose/tensorrt)")
    trt.add_argument("--force-rebuild", action="store_true", help="rebuild even if a matching engine is cached")
    trt.set_defaults(_export=_run_tensorrt)


def _model(args):
    from ..loading import REFERENCE_CHECKPOINT, load_model, resolve_checkpoint

    checkpoint = resolve_checkpoint(args.model, args.checkpoint)
    model = load_model(args.model, checkpoint)[0]
    if str(checkpoint) == REFERENCE_CHECKPOINT:
        print("unipose export: warning: reference weights (meaningless detections)", file=sys.stderr)
    return model.eval()


def _run_onnx(args) -> int:
    from ..export.onnx_export import export_onnx

    model = _model(args)
    path = export_onnx(model, args.out, args.image_size, num_classes=args.num_classes,
                       num_keypoints=args.num_keypoints, opset=args.opset, deform_attn=args.deform_attn,
                       dynamic_prompt=not args.static_prompt)
    print(f"unipose export: wrote {path}", file=sys.stderr)
    return 0


def _run_tensorrt(args) -> int:
    from ..backends.tensorrt_backend import PromptProfile, TensorRTBackend

    backend = TensorRTBackend(_model(args), cache_dir=args.cache_dir, precision=args.precision,
                              deform_attn=args.deform_attn, force_rebuild=args.force_rebuild,
                              opset=args.opset,
                              profile=PromptProfile(classes=(1, 1, args.max_classes)))
    backend._context(args.image_size)
    print(f"unipose export: engine {backend.engine_path(args.image_size)}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """ExportError and BackendError are user errors: `unipose` prints them in one line."""
    return args._export(args)
