"""`unipose bag`: rosbag2 in (mcap or sqlite3), keypoints out, no running ROS graph needed.

    unipose bag INPUT_BAG --prompt "person" --output OUT_BAG [--image-topic /camera/image_raw]
                [--annotate] [--model unipose_swint --checkpoint PATH --device auto]
                [--depth-topic /camera/aligned_depth_to_color/image_raw
                 --camera-info-topic /camera/color/camera_info]

The output bag holds every topic of the input unchanged plus `/unipose/keypoints`
(unipose_ros/msg/KeypointInstanceArray, header copied from each image, written at the image's
bag time) and, with --annotate, `/unipose/image_annotated`. The keypoint messages are built by the
same code as the live node's, so they are the same bytes for the same frames and model. Instances
carry track ids (as the node's `tracking`; --no-track: off). With --depth-topic, each keypoint
gets its 3-D position from the depth image paired by stamp (as the node's `use_depth`) and
`/unipose/markers_3d` is written; a colour frame waits for the depth frames after it in the bag
(at most --depth-tolerance later in stamp), so only a few frames are held at a time.

Bags are read and written with `rosbags` (pure Python); messages are (de)serialised with rclpy.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from unipose_model.errors import UserError

HELP = "run the detector on the images of a rosbag2 and write a bag with keypoints added"
KEYPOINTS_TOPIC = "/unipose/keypoints"
MARKERS_3D_TOPIC = "/unipose/markers_3d"
ANNOTATED_TOPIC = "/unipose/image_annotated"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def _serialised(write, build, *args) -> bytes:
    """A message's bytes for the bag: written directly (unipose_ros.cdr) where rclpy reads them
    back as the message, else the message object serialised by rclpy."""
    from rclpy.serialization import serialize_message

    from unipose_ros import cdr

    return write(*args) if cdr.matches_rclpy() else serialize_message(build(*args))


class BagError(UserError, ValueError):
    """A problem with the bag arguments or contents, told to the user in one line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="rosbag2 directory (mcap or sqlite3)")
    parser.add_argument("--output", "-o", type=Path, required=True, help="output bag directory")
    parser.add_argument("--prompt", "-p", required=True, help="prompt, e.g. 'person' or 'cat: nose'")
    parser.add_argument("--image-topic", help="image topic (default: the bag's only image topic)")
    parser.add_argument("--annotate", action="store_true", help=f"also write {ANNOTATED_TOPIC}")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default=None,
                        help="output storage (default: that of the input)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="unipose_swint",
                       help="model configuration (default unipose_swint), or fly: the bundled fly model")
    model.add_argument("--checkpoint", default="", help="checkpoint (default: ~/.cache/unipose/<model>.pth)")
    model.add_argument("--text-encoder", default="auto",
                       help="auto (default: the checkpoint's own prompt features, else CLIP), clip, hash, or a feature file")
    model.add_argument("--clip-weights", default="")
    model.add_argument("--device", default="auto")
    model.add_argument("--precision", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    # as the node's parameters: "auto" or a negative number = the model file's value
    model.add_argument("--box-threshold", type=_auto_number(float), default=AUTO_NUMBER,
                       help="minimum score (auto, default: the model file's recommended threshold, else 0.1)")
    model.add_argument("--iou-threshold", type=float, default=0.9)
    model.add_argument("--max-instances", type=int, default=0, help="0: all")
    model.add_argument("--short-side", type=_auto_number(int), default=AUTO_NUMBER,
                       help="input short side (auto, default: the model file's training size, else 800)")
    model.add_argument("--max-size", type=_auto_number(int), default=AUTO_NUMBER,
                       help="input long side limit (0: none; auto, default: the model file's, else 1333)")
    model.add_argument("--refine", type=_auto_number(float), default=AUTO_NUMBER,
                       help="crop refinement factor (0: off; auto, default: the model file's, else off)")
    parser.add_argument("--no-track", action="store_true", help="no track ids (default: tracked, as the node)")
    parser.add_argument("--track-low-threshold", type=float, default=0.1,
                        help="detections down to this score may keep a track alive, unpublished (default 0.1)")
    depth = parser.add_argument_group("3-D keypoints")
    depth.add_argument("--depth-topic", help="depth image aligned to the colour image (16UC1 mm or 32FC1 m)")
    depth.add_argument("--camera-info-topic",
                       help="CameraInfo of the colour camera (default: camera_info next to --image-topic)")
    depth.add_argument("--depth-tolerance", type=float, default=0.02,
                       help="largest colour/depth stamp difference, seconds (default 0.02)")
    depth.add_argument("--depth-window", type=int, default=5, help="depth window side, pixels (default 5)")
    parser.add_argument("--max-frames", type=int, default=0,
                        help="process only the first N frames of the image topic; the output bag ends "
                             "there (default 0: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


AUTO_NUMBER = -1  # "auto" as the node's numeric parameters spell it (model_loader.settings_from_parameters)


def _auto_number(kind):
    """An argparse type: "auto" (the model file's value) or a number of `kind`."""
    def parse(text: str):
        return AUTO_NUMBER if text.strip().lower() == "auto" else kind(text)
    parse.__name__ = kind.__name__
    return parse


def message_typestore():
    """A rosbags Jazzy typestore that also knows the unipose_ros messages."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    msg_dir = _msg_dir()
    for path in sorted(msg_dir.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"unipose_ros/msg/{path.stem}"))
    store.register(types)
    return store


def _msg_dir() -> Path:
    """The .msg files: source tree, the pip route's prefix, or a colcon install's share/."""
    import unipose_ros

    here = Path(unipose_ros.__file__).resolve().parent
    candidates = [here.parent / "msg", Path(sys.prefix) / "share" / "unipose_ros" / "msg"]
    candidates += [here.parents[3] / "share" / "unipose_ros" / "msg"] if len(here.parents) > 3 else []
    candidates += [Path(p) / "share" / "unipose_ros" / "msg"
                   for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for candidate in candidates:
        if (candidate / "KeypointInstanceArray.msg").is_file():
            return candidate
    raise BagError("cannot find the unipose_ros .msg files (looked in "
                   + ", ".join(str(c) for c in candidates) + ")")


def _storage_of(bag: Path) -> str:
    return "mcap" if any(bag.glob("*.mcap")) else "sqlite3"


def _pick_image_topic(connections, wanted: str | None) -> str:
    images = sorted({c.topic for c in connections if c.msgtype in IMAGE_TYPES})
    if wanted:
        if wanted not in {c.topic for c in connections}:
            raise BagError(f"topic {wanted} is not in the bag (image topics: {', '.join(images) or 'none'})")
        return wanted
    if len(images) != 1:
        raise BagError(f"the bag has {len(images)} image topics ({', '.join(images) or 'none'}); "
                       "choose one with --image-topic")
    return images[0]


def _pick_camera_info_topic(connections, wanted: str | None, image_topic: str) -> str:
    infos = sorted({c.topic for c in connections if c.msgtype == "sensor_msgs/msg/CameraInfo"})
    if wanted:
        if wanted not in infos:
            raise BagError(f"CameraInfo topic {wanted} is not in the bag (CameraInfo topics: {', '.join(infos) or 'none'})")
        return wanted
    sibling = image_topic.rsplit("/", 1)[0] + "/camera_info"
    if sibling in infos:
        return sibling
    if len(infos) == 1:
        return infos[0]
    raise BagError(f"3-D keypoints need the colour camera's CameraInfo: the bag has {len(infos)} CameraInfo "
                   f"topics ({', '.join(infos) or 'none'}); choose one with --camera-info-topic")


def _load(args: argparse.Namespace):
    """The predictor, the prompt and the model's label for the messages, as the node builds them."""
    from unipose_ros.model_loader import load_predictor, model_label, resolve_prompt

    predictor = load_predictor({
        "backend": "pytorch", "model": args.model, "checkpoint": args.checkpoint, "device": args.device,
        "precision": args.precision, "text_encoder": args.text_encoder, "clip_weights": args.clip_weights,
        "box_threshold": args.box_threshold, "iou_threshold": args.iou_threshold,
        "short_side": args.short_side, "max_size": args.max_size, "max_instances": args.max_instances,
        "refine": args.refine})
    return predictor, resolve_prompt(predictor, args.prompt), model_label(args.model, args.checkpoint)


class _Outputs:
    """The output bag's connections: every input topic copied, plus the ones this tool writes."""

    def __init__(self, writer, reader, args: argparse.Namespace, depth_topic: str | None):
        store = message_typestore()
        self.writer = writer
        self.copied = {}
        for conn in reader.connections:
            self.copied[conn.id] = writer.add_connection(
                conn.topic, conn.msgtype, msgdef=conn.msgdef.data, rihs01=conn.digest,
                serialization_format=conn.ext.serialization_format,
                offered_qos_profiles=conn.ext.offered_qos_profiles)
        self.keypoints = writer.add_connection(KEYPOINTS_TOPIC, "unipose_ros/msg/KeypointInstanceArray",
                                               typestore=store)
        self.annotated = (writer.add_connection(ANNOTATED_TOPIC, "sensor_msgs/msg/Image", typestore=store)
                          if args.annotate else None)
        self.markers = (writer.add_connection(MARKERS_3D_TOPIC, "visualization_msgs/msg/MarkerArray",
                                              typestore=store) if depth_topic else None)


class _FrameProcessor:
    """Detection, tracking and 3-D positions for each colour frame, in bag order; a colour frame
    waits (in `pending`) until the depth frames that could pair with it have been read."""

    def __init__(self, args: argparse.Namespace, outputs: _Outputs, depth_topic: str | None):
        from unipose_model.tracking import Tracker
        from unipose_ros.depth_pairing import StampPairer

        self.args, self.out, self.depth_topic = args, outputs, depth_topic
        self.predictor, self.prompt, self.model_name = _load(args)
        own_threshold = self.predictor.settings.box_threshold
        track = not args.no_track
        self.floor = args.track_low_threshold if track else None  # the tracker's second pass, per call
        self.tracker = (Tracker(high_threshold=own_threshold,
                                low_threshold=min(args.track_low_threshold, own_threshold)) if track else None)
        self.pairer = StampPairer(args.depth_tolerance, capacity=60, wait=0.0)
        self.camera_info = None
        self.pending: list = []
        self.counts = {"frames": 0, "instances": 0, "skipped": 0, "depth_paired": 0, "depth_unpaired": 0}

    def flush(self, final: bool = False) -> None:
        """Process the colour frames whose depth partner can be decided (in order)."""
        from unipose_ros.tracks_and_depth import stamp_ns

        while self.pending:
            stamp = stamp_ns(self.pending[0][1].header.stamp)
            if not (final or self.depth_topic is None or self.pairer.has_after(stamp + self.pairer.tolerance_ns)):
                return
            self.process(*self.pending.pop(0))

    def taken(self) -> int:
        """Colour frames processed, skipped or waiting: what --max-frames counts."""
        return self.counts["frames"] + self.counts["skipped"] + len(self.pending)

    def process(self, timestamp: int, msg, compressed: bool) -> None:
        from unipose_ros.depth_3d import marker_array_3d, marker_array_3d_serialised
        from unipose_ros.detection_messages import keypoint_array, keypoint_array_serialised
        from unipose_ros.image_conversion import ImageConversionError, compressed_to_color, image_to_color

        try:
            image, order = compressed_to_color(msg) if compressed else image_to_color(msg)
        except ImageConversionError as exc:
            self.counts["skipped"] += 1
            print(f"unipose bag: skipped a frame at {timestamp} ns: {exc}", file=sys.stderr)
            return
        started = time.perf_counter()
        instances = self.predictor.predict(image, self.prompt.prepared, color=order, score_floor=self.floor)
        model_time = time.perf_counter() - started
        if self.tracker is not None:
            instances = self.tracker.update(instances)
        height, width = image.shape[:2]
        positions = self._positions(timestamp, msg, instances, (width, height))
        self.out.writer.write(self.out.keypoints, timestamp, _serialised(
            keypoint_array_serialised, keypoint_array, instances, msg.header, (width, height), self.prompt,
            self.model_name, model_time, positions, msg.header.frame_id))
        if positions is not None:
            self.out.writer.write(self.out.markers, timestamp, _serialised(
                marker_array_3d_serialised, marker_array_3d, instances, positions, msg.header))
        if self.out.annotated is not None:
            self._annotate(timestamp, msg, image, order, instances)
        self.counts["frames"] += 1
        self.counts["instances"] += len(instances)

    def _positions(self, timestamp: int, msg, instances, size):
        if self.depth_topic is None:
            return None
        from unipose_ros.depth_3d import camera_from_info, depth_image_array, instance_positions
        from unipose_ros.tracks_and_depth import stamp_ns

        depth_msg = self.pairer.pair(stamp_ns(msg.header.stamp), wait=0.0)
        if depth_msg is None:
            return None
        try:
            depth, encoding = depth_image_array(depth_msg)
            return instance_positions(instances, depth, camera_from_info(self.camera_info), size,
                                      self.args.depth_window, encoding)
        except ValueError as exc:
            print(f"unipose bag: no 3-D keypoints at {timestamp} ns: {exc}", file=sys.stderr)
            return None

    def _annotate(self, timestamp: int, msg, image, order: str, instances) -> None:
        import numpy as np
        from rclpy.serialization import serialize_message

        from unipose_model.visualize import draw_instances
        from unipose_ros.image_conversion import array_to_image

        canvas = draw_instances(np.array(image, order="C"), instances, color=order, copy=False)
        self.out.writer.write(self.out.annotated, timestamp,
                              serialize_message(array_to_image(canvas, f"{order}8", msg.header)))


def _topics(reader, args: argparse.Namespace) -> tuple[str, str | None, str | None]:
    """The image topic to detect on, and the depth and CameraInfo topics (None without --depth-topic)."""
    # the depth topic is an image topic too, but never the one to detect on
    topic = _pick_image_topic([c for c in reader.connections if c.topic != args.depth_topic], args.image_topic)
    if not args.depth_topic:
        return topic, None, None
    if args.depth_topic not in {c.topic for c in reader.connections}:
        raise BagError(f"depth topic {args.depth_topic} is not in the bag")
    return topic, args.depth_topic, _pick_camera_info_topic(reader.connections, args.camera_info_topic, topic)


def process_bag(args: argparse.Namespace) -> dict:
    """Run the detector over the bag; returns counts (frames, instances, skipped, depth pairing)."""
    import shutil

    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from tqdm import tqdm

    from unipose_ros.tracks_and_depth import stamp_ns

    if not (args.input / "metadata.yaml").is_file():
        raise BagError(f"{args.input} is not a rosbag2 directory (no metadata.yaml)")
    if args.output.exists():
        if not args.overwrite:
            raise BagError(f"{args.output} exists; use --overwrite to replace it")
        shutil.rmtree(args.output)
    storage = args.storage or _storage_of(args.input)
    limit = getattr(args, "max_frames", 0) or 0
    with Reader(args.input) as reader:
        topic, depth_topic, info_topic = _topics(reader, args)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        with Writer(args.output, version=9, storage_plugin=plugin) as writer:
            frames = _FrameProcessor(args, _Outputs(writer, reader, args, depth_topic), depth_topic)
            total = sum(c.msgcount for c in reader.connections)
            for conn, timestamp, raw in tqdm(reader.messages(), total=total, unit="msg",
                                             disable=args.no_progress, desc="unipose bag"):
                if conn.topic == topic and limit and frames.taken() >= limit:
                    break  # --max-frames: the output bag ends before the first frame not processed
                writer.write(frames.out.copied[conn.id], timestamp, raw)
                if conn.topic == depth_topic:
                    depth_msg = deserialize_message(bytes(raw), Image)
                    frames.pairer.add(stamp_ns(depth_msg.header.stamp), depth_msg)
                elif conn.topic == info_topic:
                    frames.camera_info = deserialize_message(bytes(raw), CameraInfo)
                elif conn.topic == topic:
                    compressed = conn.msgtype.endswith("CompressedImage")
                    msg = deserialize_message(bytes(raw), CompressedImage if compressed else Image)
                    frames.pending.append((timestamp, msg, compressed))
                frames.flush()
            frames.flush(final=True)
    counts = frames.counts
    counts["depth_paired"], counts["depth_unpaired"] = frames.pairer.paired, frames.pairer.unpaired
    return counts


def run(args: argparse.Namespace) -> int:
    counts = process_bag(args)
    depth = (f", 3-D for {counts['depth_paired']} (no depth within {args.depth_tolerance:g} s: "
             f"{counts['depth_unpaired']})" if args.depth_topic else "")
    print(f"unipose bag: {counts['frames']} frames, {counts['instances']} instances, "
          f"{counts['skipped']} skipped{depth} -> {args.output}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unipose bag", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BagError as exc:
        print(f"unipose bag: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
