"""Command line interface: ``unipose <command> ...``.

Each subcommand is one ``add_<name>_arguments`` / ``run_<name>`` pair registered in COMMANDS.
User errors (missing file, bad prompt, missing weights) print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Callable

from .errors import UserError
from .export import cli as export_cli  # argument definitions only; no torch import
from .settings import (AUTO, DEFAULT_BOX_THRESHOLD, DEFAULT_IOU_THRESHOLD, DEFAULT_MAX_SIZE,
                       DEFAULT_SHORT_SIDE)

EXIT_USAGE = 2


class CliError(UserError):
    """A user-facing error: printed as one line, exit code 2."""


# --------------------------------------------------------------------------------------- predict




def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("exit status: 0 every input gave a result; 1 some inputs gave none (each is named, the "
                "others' results are written); 2 the run could not start or stopped on an error (bad "
                "arguments, prompt, model file). Unusual inputs (thin, 16-bit, EXIF-rotated images, "
                "undecodable videos): docs/BAD_INPUTS.md")
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIR_OR_VIDEO",
                   help="image files, directories of images/videos, or video files")
    p.add_argument("--prompt", "-p", default=None,
                   help="what to detect, e.g. 'person', 'person, face' or 'cat: left eye, nose' (with "
                        "--support-image: optional, averaged with the visual prompt)")
    p.add_argument("--support-image", default=None,
                   help="visual prompt: an example image of the object, or a video frame as VIDEO#frame=N "
                        "(needs --support-keypoints)")
    p.add_argument("--support-keypoints", default=None,
                   help="the example's keypoints: a COCO keypoints json, or a text file with lines "
                        "'name: x y' (pixels of the support image; 'name: -' = not visible)")
    p.add_argument("--support-class", default=None,
                   help="name for the example's class in the results (default: the COCO category, else 'object')")
    p.add_argument("--support-instance", type=int, default=0,
                   help="which annotated instance of the support image to use (COCO file; default 0)")
    p.add_argument("--checkpoint", "-c", default=None,
                   help="checkpoint (.pth); default ~/.cache/unipose/<model>.pth, and without --model "
                        "the bundled fly model when that file is absent; 'reference' = deterministic "
                        "test weights (meaningless detections)")
    p.add_argument("--out", "-o", required=True, help="output directory")
    p.add_argument("--model", default=None,
                   help="model configuration (default: the one the checkpoint names, else unipose_swint), "
                        "or 'fly': the bundled fly model (unipose_model/data/fly_demo.pth), no checkpoint needed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="inference precision; float16 needs CUDA, bfloat16 CUDA or a CPU with native bf16 "
                        "(AVX512-BF16 / AMX); auto (default): bfloat16 on a CPU with native bf16, else "
                        "float32 (docs/BENCHMARKS.md: its accuracy cost)")
    p.add_argument("--box-threshold", type=float, default=None,
                   help=f"minimum score (default: the checkpoint's recommended one, else {DEFAULT_BOX_THRESHOLD})")
    p.add_argument("--iou-threshold", type=float, default=DEFAULT_IOU_THRESHOLD,
                   help=f"NMS IoU threshold (default {DEFAULT_IOU_THRESHOLD})")
    p.add_argument("--short-side", type=int, default=None,
                   help=f"resize the short image side to this (default: the checkpoint's training "
                        f"size, else {DEFAULT_SHORT_SIDE})")
    p.add_argument("--max-size", type=int, default=None,
                   help=f"cap of the long side after resizing (default: the checkpoint's, else "
                        f"{DEFAULT_MAX_SIZE})")
    p.add_argument("--max-instances", type=int, default=None,
                   help="keep at most N detections per image, best first (default all)")
    p.add_argument("--compile", action="store_true",
                   help="run the model through torch.compile (faster after a one-time compile of minutes "
                        "per input size; see docs/BENCHMARKS.md)")
    p.add_argument("--refine", type=float, default=None,
                   help="crop refinement: a second pass on a crop of F x each detection's box for finer "
                        "keypoints (0: off; default: the checkpoint's recommended F, else off)")
    p.add_argument("--refine-size", type=int, default=None,
                   help="input size (pixels per side) of the crop-refinement pass (default: the checkpoint's, "
                        "else the first pass's)")
    p.add_argument("--no-heatmap-refiner", action="store_true",
                   help="keep UniPose's keypoints: skip the heatmap refiner stored in the checkpoint, if any")
    p.add_argument("--text-encoder", default="auto",
                   help="auto (default: the prompt features stored in the checkpoint, else clip), clip "
                        "(OpenAI CLIP ViT-B/32), hash (meaningless stand-in, no weights), or a "
                        "precomputed feature file (.npz/.json/.pt)")
    p.add_argument("--clip-weights", default=None,
                   help="CLIP ViT-B/32 weights file or directory (for offline machines)")
    p.add_argument("--exif-orientation", action="store_true",
                   help="apply the images' EXIF orientation tag (phone photos): results and overlays are "
                        "then in the image as viewers display it. Default: the tag is ignored, as in the "
                        "official demo, and coordinates refer to the stored pixel grid (docs/BAD_INPUTS.md)")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay images / videos")
    p.add_argument("--no-track", action="store_true",
                   help="videos: do not track (by default each detection gets a track_id, the same for "
                        "the same object in every frame; see unipose_model/tracking.py)")
    p.add_argument("--track-low-threshold", type=float, default=None,
                   help="videos: detections down to this score may keep a track alive (ByteTrack's second "
                        "pass; default 0.1); only those at --box-threshold or above are written or start tracks")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="videos: process only the first N frames of each (default: all)")
    p.add_argument("--verbose", "-v", action="store_true", help="print one summary line per image / frame")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar and no status lines (warnings and errors still print); the bar "
                        "otherwise shows when stderr is a terminal")


def run_predict(args: argparse.Namespace) -> int:
    from .checkpoint import reading_each_file_once

    visual = _read_visual_prompt(args)  # cheap checks first: files, prompt, checkpoint; then CLIP and the model
    if visual is None and args.prompt is None:
        raise CliError("give a text prompt (--prompt 'person') or a visual prompt "
                       "(--support-image S.jpg --support-keypoints S.json)")
    if args.max_frames is not None and args.max_frames < 1:
        raise CliError(f"--max-frames must be at least 1, got {args.max_frames}")
    files = _collect_inputs(args.inputs)
    with reading_each_file_once():  # the model file is unpickled once, however many parts read it
        predictor, prompt, checkpoint, stamp = _load_for_predict(args, visual)
    if args.compile:
        print("unipose: --compile: the first image of each size compiles the model (minutes on a small "
              "CPU); the rest run faster", file=sys.stderr)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from .media import is_video_path
    writer = _ResultWriter(out_dir, prompt, single_video=len(files) == 1 and is_video_path(files[0]),
                           protected=files)
    try:
        failed = _predict_all(files, predictor, prompt, args, writer, stamp)
    finally:  # also on Ctrl-C: keep what was already computed
        writer.finish(meta={"model": getattr(predictor.config, "name", args.model), "checkpoint": str(checkpoint),
                            "text_encoder": predictor.text_encoder.name, "meaningless": bool(stamp)})
    _say(args, f"unipose: {writer.num_images} image(s), {writer.num_instances} instance(s); "
               f"results in {out_dir / 'results.json'}")
    if failed:
        # exit 1: some inputs gave no result (the others' results are written); docs/BAD_INPUTS.md
        print(f"unipose: {len(failed)} input(s) gave no result: {', '.join(str(p) for p in failed)}",
              file=sys.stderr)
        return 1
    return 0


def _collect_inputs(inputs):
    from .media import collect_inputs
    return collect_inputs(inputs)


def _say(args, line: str) -> None:
    """A progress line on stderr, unless --quiet."""
    if not getattr(args, "quiet", False):
        print(line, file=sys.stderr)


def _load_for_predict(args, visual):
    """(predictor, prompt, checkpoint, meaningless-stamp): the checkpoint and prompt checked
    before CLIP loads, then the model; errors name the problem in one line."""
    from .checkpoint import read_state_dict
    from .errors import UnknownPromptError
    from .loading import (DEFAULT_MODEL, REFERENCE_CHECKPOINT, default_checkpoint, download_hint,
                          resolve_bundled_model, resolve_checkpoint, resolve_device)
    from .model_file import BUNDLED_CHECKPOINT, read_model_file_info
    from .predictor import Predictor
    from .prompt import PromptError, parse_prompt
    from .text_encoder import build_text_encoder

    model, checkpoint = resolve_bundled_model(args.model, args.checkpoint)  # --model fly: the bundled file
    if checkpoint is None and model is None:
        checkpoint = default_checkpoint()  # the official file, else the bundled fly model
    else:
        checkpoint = resolve_checkpoint(model or DEFAULT_MODEL, checkpoint)
    bundled_fallback = args.checkpoint is None and args.model is None and Path(checkpoint) == BUNDLED_CHECKPOINT
    reference = str(checkpoint) == REFERENCE_CHECKPOINT
    if not reference:
        read_state_dict(checkpoint, mmap=True)  # a missing or corrupt file is named before CLIP loads
    if not (not reference and read_model_file_info(checkpoint).vocabulary) and args.prompt is not None:
        parse_prompt(args.prompt)  # a model with its own vocabulary parses the prompt itself, below
    resolve_device(args.device)
    encoder = build_text_encoder(args.text_encoder, clip_weights=args.clip_weights, device=args.device,
                                 checkpoint=checkpoint)
    if hasattr(encoder, "load"):
        encoder.load()  # missing CLIP weights: fail now, not after the model is built
    predictor = Predictor(model, checkpoint, device=args.device, text_encoder=encoder, compile=args.compile,
                          settings=_settings_from_args(args))
    try:
        if visual is not None:
            prompt = _VisualQuery(visual, args.prompt, predictor.prepare_visual_prompt(visual, args.prompt))
        else:
            prompt = predictor.parse(args.prompt)
            predictor.prepare_prompt(prompt)  # unknown to a fixed-vocabulary model: say so before any work
    except (UnknownPromptError, PromptError) as e:
        if not bundled_fallback or "unknown" not in str(e):
            raise
        raise CliError(f"{e} No official checkpoint was found, so the bundled fly model "
                       f"({BUNDLED_CHECKPOINT.name}) was used; for other objects {download_hint()}") from None
    if bundled_fallback:
        _say(args, f"unipose: using the bundled fly model {checkpoint} (no official checkpoint at the "
                   f"default location)")
    warnings = (["reference weights"] if reference else []) + ([] if encoder.meaningful else ["hash text features"])
    stamp = f"MEANINGLESS ({' + '.join(warnings)})" if warnings else None
    if stamp:
        print(f"unipose: warning: detections are meaningless: {' and '.join(warnings)} "
              "(for trying the pipeline only)", file=sys.stderr)
    return predictor, prompt, checkpoint, stamp


def _settings_from_args(args):
    """The CLI's settings: an option left out is AUTO, the model file's value."""
    from .settings import Settings

    given = lambda value: AUTO if value is None else value  # noqa: E731
    return Settings(box_threshold=given(args.box_threshold), iou_threshold=args.iou_threshold,
                    short_side=given(args.short_side), max_size=given(args.max_size),
                    max_instances=args.max_instances, refine=given(args.refine),
                    refine_size=given(args.refine_size), heatmap_refiner=not args.no_heatmap_refiner,
                    dtype=args.dtype)


def _predict_all(files, predictor, prompt, args, writer, stamp) -> list:
    """Every input in turn; one bad input is named and skipped, the others' results are kept."""
    from tqdm import tqdm

    from .media import MediaError
    from .preprocess import ImageError

    failed = []
    for path in tqdm(files, desc="inputs", unit="file", disable=_no_bar(args), file=sys.stderr):
        try:
            _predict_file(path, predictor, prompt, args, writer, stamp)
        except (MediaError, ImageError) as exc:
            failed.append(path)
            tqdm.write(f"unipose: skipped {path}: {exc}", file=sys.stderr)
    return failed


def _no_bar(args):
    """tqdm's `disable`: always off with --quiet, else on only when stderr is a terminal (None:
    tqdm decides; a log file gets no bar), as the MMPose and SLEAP command lines do."""
    return True if getattr(args, "quiet", False) else None


def _predict_file(path, predictor, prompt, args, writer, stamp) -> None:
    from tqdm import tqdm

    from .media import is_video_path, read_image

    if is_video_path(path):
        _predict_video(path, predictor, prompt, args, writer, stamp)
        return
    image = read_image(path, exif_orientation=args.exif_orientation)
    t0 = time.perf_counter()
    instances = _run_query(predictor, image, prompt)
    seconds = time.perf_counter() - t0
    writer.add(path.name, image.shape, instances)
    if not args.no_overlay:
        _write_overlay(writer.unique_name(path.stem, ".png"), image, instances, stamp)
    if args.verbose:
        tqdm.write(_summary(path.name, instances, seconds), file=sys.stderr)


def _predict_video(path, predictor, prompt, args, writer, stamp) -> None:
    from tqdm import tqdm

    from .media import MediaError, VideoReader, VideoWriter
    from .tracking import Tracker, TrackerConfig

    video_out = writer.unique_name(f"{path.stem}_annotated", ".mp4")
    decoded = 0
    track = not getattr(args, "no_track", False)
    low = getattr(args, "track_low_threshold", None)
    low = TrackerConfig.low_threshold if low is None else low
    own_threshold = predictor.settings.box_threshold
    floor = low if track else None  # the tracker's second pass sees detections down to `low`
    with VideoReader(path) as reader, VideoWriter(video_out, fps=reader.fps) as vw:
        tracker = Tracker(high_threshold=own_threshold, low_threshold=min(low, own_threshold)) if track else None
        limit = getattr(args, "max_frames", None)  # the first N frames only
        known = [n for n in (reader.frame_count, limit) if n]
        total = min(known) if known else None
        bar = tqdm(itertools.islice(reader, limit), total=total, desc=path.name, unit="frame",
                   disable=_no_bar(args), leave=False, file=sys.stderr)
        for index, frame in enumerate(bar):
            decoded += 1
            t0 = time.perf_counter()
            instances = _run_query(predictor, frame, prompt, floor)
            if tracker is not None:
                instances = tracker.update(instances)
            seconds = time.perf_counter() - t0
            writer.add(f"{path.name}#frame={index}", frame.shape, instances, frame_index=index)
            if not args.no_overlay:
                vw.write(_annotate(frame, instances, stamp))
            if args.verbose:
                tqdm.write(_summary(f"{path.name}#frame={index}", instances, seconds), file=sys.stderr)
    if decoded == 0:  # opened, but nothing decodes: a per-input failure, like an unreadable image
        raise MediaError(f"no frames could be decoded from video {path} (empty, truncated, or a codec "
                         f"this OpenCV build cannot decode; try re-encoding it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")


class _VisualQuery:
    """A visual prompt (with an optional text prompt) as the CLI's prompt: `classes`/`groups`
    describe the results' category, `text` names it in images.json, `prepared` holds its
    features (encoded once for all inputs)."""

    def __init__(self, visual, text, prepared):
        from .prompt import KeypointGroup
        self.prepared = prepared
        self.classes = prepared.classes
        self.groups = (KeypointGroup((0,), tuple(visual.keypoint_names), tuple(visual.skeleton), None),)
        self.text = prepared.text + (f" + text {text!r}" if text else "")


def _run_query(predictor, image, prompt, score_floor=None):
    query = prompt.prepared if isinstance(prompt, _VisualQuery) else prompt
    return predictor.predict(image, query, color="bgr", score_floor=score_floor)


def _read_visual_prompt(args):
    if args.support_image is None and args.support_keypoints is None:
        return None
    if args.support_image is None or args.support_keypoints is None:
        raise CliError("a visual prompt needs both --support-image and --support-keypoints")
    from .visual_prompt import load_visual_prompt
    return load_visual_prompt(args.support_image, args.support_keypoints, class_name=args.support_class,
                              instance=args.support_instance)


def _annotate(image, instances, stamp):
    from .visualize import draw_instances, draw_summary

    canvas = draw_instances(image, instances, color="bgr")
    return draw_summary(canvas, stamp) if stamp else canvas


def _write_overlay(path, image, instances, stamp) -> None:
    from .media import write_image

    write_image(path, _annotate(image, instances, stamp))


def _summary(name, instances, seconds) -> str:
    if not instances:
        return f"{name}: no detections ({seconds:.2f} s)"
    counts: dict[str, int] = {}
    for inst in instances:
        counts[inst.label] = counts.get(inst.label, 0) + 1
    what = ", ".join(f"{n} x {label}" for label, n in counts.items())
    best = max(inst.score for inst in instances)
    return f"{name}: {what} (best {best:.2f}, {seconds:.2f} s)"


class _ResultWriter:
    """Collects COCO results and image records; writes results.json and images.json."""

    def __init__(self, out_dir: Path, prompt, single_video: bool, protected=()):
        self.out_dir = out_dir
        self._protected = {Path(p).resolve() for p in protected}  # never overwrite an input
        self.prompt = prompt
        self.single_video = single_video  # frame index = image id, as in COCO-converted clips
        self.results: list[dict] = []
        self.images: list[dict] = []
        self._used_ids: set[int] = set()
        self._next_id = 0
        self._names: set[str] = set()

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def num_instances(self) -> int:
        return len(self.results)

    def unique_name(self, stem: str, suffix: str) -> Path:
        name, n = stem + suffix, 1
        while name in self._names or (self.out_dir / name).resolve() in self._protected:
            name, n = f"{stem}_{n}{suffix}", n + 1
        self._names.add(name)
        return self.out_dir / name

    def _image_id(self, file_name: str, frame_index: int | None) -> int:
        stem = Path(file_name.split("#")[0]).stem
        if frame_index is not None and self.single_video:
            wanted = frame_index
        elif frame_index is None and stem.isdigit():
            wanted = int(stem)  # COCO-style file names carry their image id
        else:
            wanted = None
        if wanted is None or wanted in self._used_ids:
            while self._next_id in self._used_ids:
                self._next_id += 1
            wanted = self._next_id
        self._used_ids.add(wanted)
        return wanted

    def add(self, file_name: str, shape, instances, frame_index: int | None = None) -> None:
        image_id = self._image_id(file_name, frame_index)
        record = {"id": image_id, "file_name": file_name, "height": int(shape[0]), "width": int(shape[1])}
        if frame_index is not None:
            record["frame_index"] = frame_index
        self.images.append(record)
        for inst in instances:
            entry = inst.to_coco(image_id)
            entry["label"] = inst.label  # extra key: harmless for COCO tools, handy for humans
            self.results.append(entry)

    def finish(self, meta: dict) -> None:
        (self.out_dir / "results.json").write_text(json.dumps(self.results))
        categories = []
        for index, name in enumerate(self.prompt.classes):
            group = next((g for g in self.prompt.groups if index in tuple(g.class_indices)), None)
            categories.append({"id": index + 1, "name": name,
                               "keypoints": list(group.keypoints) if group else [],
                               "skeleton": [list(map(int, s)) for s in group.skeleton] if group else []})
        doc = {"prompt": getattr(self.prompt, "text", None) or str(self.prompt),
               "skeleton_is_zero_based": True, **meta,
               "images": self.images, "categories": categories}
        (self.out_dir / "images.json").write_text(json.dumps(doc, indent=1))


# --------------------------------------------------------------------------------------- driver

# name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "predict": ("detect objects and keypoints in images, folders or videos",
                add_predict_arguments, run_predict),
    "export": (export_cli.HELP, export_cli.add_arguments, export_cli.run),
}
PLUGIN_GROUP = "unipose.commands"  # entry points: name = module with HELP, add_arguments(parser), run(args)
# Commands other parts of the project register through PLUGIN_GROUP, found by module name when
# the package metadata does not list them (a checkout run without installing): name -> (module, what is missing)
KNOWN_PLUGINS = {"bag": ("unipose_ros.bag", "the ROS part of unipose (unipose_ros: rclpy, rosbags and the "
                                            "built messages; docs/ROS.md)")}


def _plugin_modules() -> dict[str, object]:
    """Plugin name -> loader (entry points first, then KNOWN_PLUGINS by module name)."""
    from importlib import import_module
    from importlib.metadata import entry_points

    loaders: dict[str, object] = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        loaders.setdefault(ep.name, ep.load)
    for name, (module, _) in KNOWN_PLUGINS.items():
        loaders.setdefault(name, lambda module=module: import_module(module))
    return loaders


MISSING: dict[str, str] = {}  # command -> why it cannot run here (its package is not installed)


def _missing_command(name: str, reason: str):
    """A stand-in for a command whose package is not installed: listed in `unipose --help`;
    `unipose NAME ...` (any arguments, --help too) answers in one line (see main)."""
    what = KNOWN_PLUGINS.get(name, (None, f"the package that provides 'unipose {name}'"))[1]
    MISSING[name] = f"'unipose {name}' needs {what}, which is not installed here ({reason})"

    def run(args) -> int:
        raise CliError(MISSING[name])
    return f"(not installed: needs {what})", lambda p: None, run


def _register_plugin_commands() -> None:
    """Add the commands of the PLUGIN_GROUP entry points (once; when the parser is built)."""
    for name, load in _plugin_modules().items():
        if name in COMMANDS:
            continue
        try:
            module = load()
            COMMANDS[name] = (module.HELP, module.add_arguments, module.run)
        except ImportError as e:  # installed without that part
            COMMANDS[name] = _missing_command(name, str(e))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unipose", description="UniPose (X-Pose): detect any object's keypoints from a text prompt.")
    _register_plugin_commands()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's to fix (one line, exit 2), imported once one is raised."""
    from .backends import BackendError
    from .checkpoint import CheckpointError
    from .errors import CheckpointNotFoundError, PredictorError
    from .export.onnx_export import ExportError
    from .media import MediaError
    from .preprocess import ImageError
    from .prompt import PromptError
    from .text_encoder import TextEncoderError
    from .visual_prompt import VisualPromptError

    return (UserError, MediaError, ImageError, PredictorError, CheckpointNotFoundError, TextEncoderError,
            VisualPromptError, CheckpointError, PromptError, ExportError, BackendError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in MISSING:  # whatever follows, even --help: one line
        print(f"unipose {argv[0]}: error: {MISSING[argv[0]]}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    try:
        return args._run(args)
    except KeyboardInterrupt:
        print("unipose: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - filtered just below
        if isinstance(e, _user_errors()):
            message = " ".join(str(e).split())  # one line, however the message was wrapped
            print(f"unipose {args.command}: error: {message}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
