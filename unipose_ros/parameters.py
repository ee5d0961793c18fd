"""The detector's parameters: one table for declarations, validation and the docs.

`runtime` parameters take effect while the node runs; the others are read at `configure`
(a lifecycle cleanup + configure applies a change, e.g. another model or device).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    runtime: bool = False
    range: tuple[float, float] | None = None  # inclusive; int or float bounds by the default's type
    choices: tuple[str, ...] | None = None


DETECTOR_PARAMETERS: tuple[Param, ...] = (
    # model
    Param("model", "unipose_swint", "Model configuration: unipose_swint (official weights), "
          "unipose_r50, unipose_tiny (small test model); or fly: the bundled fly model (no checkpoint "
          "needed)."),
    Param("checkpoint", "", "Checkpoint file (official .pth). Empty: ~/.cache/unipose/<model>.pth; "
          "'reference': deterministic random weights for testing."),
    Param("text_encoder", "auto", "Prompt text encoder: 'auto' (the checkpoint's own prompt features if it carries them, else CLIP), 'clip' (CLIP ViT-B/32), 'hash' (testing, "
          "no weights), or a precomputed feature file."),
    Param("clip_weights", "", "CLIP weights file or directory for offline machines (empty: the "
          "open_clip cache)."),
    Param("device", "auto", "Inference device: auto (CUDA when available), cpu, cuda, cuda:N."),
    Param("backend", "pytorch", "Inference backend: pytorch (the PyTorch model; 'torch' is its old "
          "name, still accepted), onnxruntime (an ONNX "
          "export of it, built on first use per input size and cached), tensorrt (a TensorRT engine, "
          "CUDA GPU and the tensorrt package needed; cached by weights, TensorRT version, GPU, "
          "precision and input size).", choices=("pytorch", "onnxruntime", "tensorrt", "torch")),
    Param("backend_cache_dir", "", "Where exported ONNX graphs / TensorRT engines are cached "
          "(empty: ~/.cache/unipose/engines)."),
    Param("force_rebuild", False, "Rebuild the ONNX graph / TensorRT engine even when the cache "
          "has one for this key."),
    Param("compile", False, "Run the model through torch.compile (inductor, weights frozen; pytorch "
          "backend): faster after a one-time compilation per input size and speed profile (minutes "
          "on a small CPU, at the first frame); falls back to the plain model if compiling fails. "
          "Measured: docs/BENCHMARKS.md."),
    Param("precision", "auto", "Numeric precision: auto (bfloat16 on a CPU with native bf16, AMX / AVX512-BF16, "
          "else float32), float32, or float16 (CUDA) / bfloat16 (CUDA, or a CPU with native bf16).",
          choices=("auto", "float32", "float16", "bfloat16")),
    # detection
    Param("prompt", "", "Initial prompt, e.g. 'person', 'cat, dog', 'person: nose, left eye', "
          "'hand: wrist, thumb root' or the JSON form; predefined sets by their official names "
          "('swivelchair', 'short_sleeved_shirt', 'animal_in_AP10K', ...: docs/PROMPTS.md). "
          "Empty: what the model file knows (the bundled fly model: 'fly'), else 'person'. "
          "Topic ~/prompt changes it at run time.", runtime=True),
    Param("support_image", "", "Initial visual prompt instead of the text prompt: a support image "
          "file, or a video frame as VIDEO#frame=N (needs support_keypoints). It is tried first; a "
          "support that cannot be used is reported on ~/active_prompt and the text prompt is used "
          "instead. Topic ~/visual_prompt and service ~/capture_visual_prompt change it at run time."),
    Param("support_keypoints", "", "Keypoints of support_image: a COCO keypoints json (e.g. from "
          "unipose-rank-supports) or 'name: x y' lines."),
    Param("support_class", "", "Class name of the support (empty: the keypoints file's, else 'object')."),
    Param("box_threshold", -1.0, "Minimum detection score. Negative: the threshold the model file "
          "recommends (0.1 when it names none).", runtime=True, range=(-1.0, 1.0)),
    Param("iou_threshold", 0.9, "Non-maximum suppression IoU threshold (1: no suppression).",
          runtime=True, range=(0.0, 1.0)),
    Param("max_instances", 0, "Keep at most this many detections per image, best first (0: all).",
          runtime=True, range=(0, 1000)),
    Param("short_side", -1, "Input resize: short side in pixels. Negative (or 0, the old spelling): "
          "the size the model file was trained for (800 when it names none).", runtime=True, range=(-1, 4096)),
    Param("max_size", -1, "Input resize: long side limit in pixels. 0: none; -1: the model "
          "file's (1333 when it names none).", runtime=True, range=(-1, 8192)),
    Param("refine", -1.0, "Crop refinement: a second pass on a square crop of this many times each "
          "detection's longer box side, for finer keypoints (one extra model pass per detection). "
          "0: off; negative: the model file's recommended factor (off when it names none). Only "
          "the accurate speed profile uses it.", runtime=True, range=(-1.0, 20.0)),
    Param("speed_profile", "accurate", "Speed/accuracy trade-off: accurate (the model as trained, at "
          "short_side/max_size), fast (input x0.6, a third of the proposals, 40 % of the keypoint "
          "instances), fastest (input x0.4, proposals / 9, instances x0.2) or realtime (input x0.35, "
          "proposals / 9, instances x0.2, bfloat16 matrix products where the CPU/GPU has native bf16); "
          "all but accurate skip crop refinement, fastest and realtime also the model file's heatmap "
          "refiner. Measured cost: docs/BENCHMARKS.md.", runtime=True, choices=("accurate", "fast", "fastest", "realtime")),
    Param("max_rate", 0.0, "Maximum processing rate in Hz (0: as fast as frames and the model "
          "allow). Frames in between are dropped.", runtime=True, range=(0.0, 1000.0)),
    # input
    Param("use_compressed", False, "Subscribe to image/compressed (sensor_msgs/CompressedImage, "
          "jpeg/png) instead of image (sensor_msgs/Image)."),
    Param("image_qos", "sensor_data", "QoS of the image subscription: sensor_data (best effort), "
          "reliable, or best_effort.", choices=("sensor_data", "reliable", "best_effort")),
    Param("image_qos_depth", 1, "History depth of the image subscription.", range=(1, 100)),
    # output
    Param("publish_annotated", True, "Publish ~/image_annotated (drawn only while it has "
          "subscribers).", runtime=True),
    Param("publish_markers", True, "Publish ~/markers (built only while it has subscribers).",
          runtime=True),
    Param("marker_depth", 2.0, "With camera_info: distance in metres along the viewing rays at "
          "which markers are placed.", runtime=True, range=(0.01, 1000.0)),
    Param("marker_scale", 0.002, "Without camera_info: metres per pixel of the image-plane "
          "markers.", runtime=True, range=(1e-6, 10.0)),
    Param("marker_lifetime", 0.5, "Marker lifetime in seconds, so stale markers vanish.",
          runtime=True, range=(0.0, 60.0)),
    Param("marker_frame_id", "", "Frame of the markers (empty: the image's frame_id).", runtime=True),
    # identities and 3-D
    Param("tracking", True, "Give each instance a track_id that stays with the object from frame to "
          "frame (unipose_model/tracking.py); the tracks restart on a prompt change or when this is "
          "switched.", runtime=True),
    Param("tracking_low_threshold", 0.1, "Tracking: detections down to this score may keep an "
          "existing track alive (ByteTrack's second pass) without being published; only detections "
          "at box_threshold or above are published or start tracks. Equal to box_threshold or above: "
          "no second pass.",
          runtime=True, range=(0.0, 1.0)),
    Param("use_depth", False, "Subscribe to depth_image (aligned to the colour image; 16UC1 mm or "
          "32FC1 m) and give each keypoint its 3-D position in the camera optical frame "
          "(Keypoint.position, position_valid); also publishes ~/markers_3d."),
    Param("depth_tolerance", 0.02, "Depth: largest stamp difference, seconds, between a colour image "
          "and the depth image paired with it; frames without one are counted in /diagnostics.",
          runtime=True, range=(0.0, 1.0)),
    Param("depth_window", 5, "Depth: side in pixels of the window whose median depth (on the "
          "keypoint's surface, holes ignored) is the keypoint's depth.", runtime=True, range=(1, 31)),
    Param("target_frame", "", "Depth: transform the 3-D positions to this frame with tf2 (when "
          "tf2_ros is installed; empty: keep the camera optical frame).", runtime=True),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages (published from start-up, "
          "so a failed configure shows as ERROR).", range=(0.1, 60.0)),
    Param("autostart", True, "Configure and activate at start-up (plain `ros2 run`). False: wait "
          "for lifecycle transitions."),
)

BY_NAME = {p.name: p for p in DETECTOR_PARAMETERS}

# image_source is a plain node: every parameter is read once, at start-up.
IMAGE_SOURCE_PARAMETERS: tuple[Param, ...] = (
    Param("source", "", "Video file, image folder or image. Empty: the bundled sample."),
    Param("rate", 10.0, "Frames per second.", range=(0.1, 1000.0)),
    Param("loop", True, "Start again at the end."),
    Param("frame_id", "camera_optical_frame", "header.frame_id"),
    Param("width", 0, "Resize to this width (0: keep)."),
    Param("height", 0, "Resize to this height (0: keep)."),
    Param("fov_deg", 60.0, "Horizontal field of view of the published CameraInfo."),
    Param("publish_compressed", False, "Also publish image/compressed (jpeg)."),
)


def descriptor(param: Param, lifecycle: bool = True):
    """An rcl_interfaces ParameterDescriptor with description and range (`lifecycle`: say which
    parameters are read only at configure)."""
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    ParameterType)

    kinds = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
    text = param.description
    if param.choices:
        text += f" One of: {', '.join(param.choices)}."
    if lifecycle and not param.runtime:
        text += " (Read at configure.)"
    d = ParameterDescriptor(name=param.name, type=kinds[type(param.default)], description=text)
    if param.range is not None:
        if isinstance(param.default, float):
            d.floating_point_range = [FloatingPointRange(
                from_value=float(param.range[0]), to_value=float(param.range[1]), step=0.0)]
        else:
            d.integer_range = [IntegerRange(
                from_value=int(param.range[0]), to_value=int(param.range[1]), step=1)]
    return d


def check_choice(name: str, value) -> str | None:
    """A reason when `value` is not among the parameter's choices (or not a usable value where
    a range cannot say it), else None."""
    param = BY_NAME.get(name)
    if param and param.choices and value not in param.choices:
        return f"{name} must be one of {', '.join(param.choices)}, got '{value}'"
    if name == "refine" and 0.0 < value < 1.0:  # a crop smaller than the box it refines
        return f"refine must be 0 (off), negative (the model file's) or a crop factor >= 1, got {value}"
    return None


def markdown_table() -> str:
    """The parameter reference for docs/ROS.md."""
    rows = ["| parameter | default | run time | description |", "| --- | --- | --- | --- |"]
    for p in DETECTOR_PARAMETERS:
        rng = f" Range {p.range[0]}..{p.range[1]}." if p.range else ""
        choices = f" One of: {', '.join(p.choices)}." if p.choices else ""
        rows.append(f"| `{p.name}` | `{p.default!r}` | {'yes' if p.runtime else 'configure'} | "
                    f"{p.description}{choices}{rng} |")
    return "\n".join(rows)


def update_docs(path) -> bool:
    """Rewrite the parameter table in a markdown file (docs/ROS.md); True when it changed."""
    from pathlib import Path

    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("| parameter | default |"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    new = lines[:start] + markdown_table().split("\n") + lines[end:]
    if new == lines:
        return False
    path.write_text("\n".join(new), encoding="utf-8")
    return True


if __name__ == "__main__":  # python -m unipose_ros.parameters docs/ROS.md
    import sys

    for target in sys.argv[1:] or ["docs/ROS.md"]:
        print(f"{target}: {'updated' if update_docs(target) else 'already current'}")
