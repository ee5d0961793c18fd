#!/usr/bin/env python3
"""Same-run comparison of the node's message building: this checkout against a git revision.

    .venv/bin/python scripts/bench_ros_messages.py [--against REV] [--repeat 300]

On a machine shared with other jobs, bench_ros.py's absolute figures move by tens of percent
from one run to the next; this script loads unipose_ros/detection_messages.py and depth_3d.py and
unipose_model/tracking.py and depth.py as they are at REV (default: the commit before the cheaper
message construction) next to the current ones, and times both on the same 640x480 frame (5
tracked instances x 17 keypoints, 3-D positions from an aligned 16UC1 depth image, as
bench_ros.py's last column), alternating old and new each repetition, so load affects both alike.
Each row is the median of build + rclpy publish (no subscriber: serialisation only), wall and
this thread's CPU time; the last row is bench_ros.py's whole tracked + 3-D frame, with each
version's tracker and depth lookup as well.
Prints a table; writes nothing.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(30, 200)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

import bench_ros  # noqa: E402
from unipose_model import tracking  # noqa: E402
from unipose_ros import depth_3d, detection_messages  # noqa: E402
from unipose_ros.depth_pairing import StampPairer  # noqa: E402
from unipose_ros.image_conversion import array_to_image, image_to_color  # noqa: E402
from unipose_ros.msg import KeypointInstanceArray  # noqa: E402
from unipose_ros.tracks_and_depth import TracksAndDepth  # noqa: E402

BEFORE = "70bc17e"  # the last commit with one Marker per instance part and constructor-built messages


def module_at(revision: str, path: str, name: str, imports: dict[str, str] | None = None):
    """`path` as it is at `revision`, imported as module `name`; `imports` renames the modules it
    imports (so that it uses other modules of the same revision)."""
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    for old, new in (imports or {}).items():
        source = source.replace(f"from {old} import", f"from {new} import")
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def frame_inputs(width: int = 640, height: int = 480):
    """Tracked instances and their 3-D positions for one frame, as the node has them, and what the
    node started from (the colour and depth images, CameraInfo, the tracker and depth pairer)."""
    header = Header(frame_id="camera")
    header.stamp.sec = 1
    msg = array_to_image(bench_ros.sample_frame(width, height), "bgr8", header)
    prompt = detection_messages.ActivePrompt("person", (detection_messages.ClassLayout(
        "person", bench_ros.COCO, bench_ros.SKELETON),))
    extras = TracksAndDepth()
    extras.depth.wait = 0.0
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.k = [600.0, 0.0, width / 2 - 0.5, 0.0, 600.0, height / 2 - 0.5, 0.0, 0.0, 1.0]
    info.d = [-0.2, 0.05, 0.001, -0.001, 0.0]
    depth = np.random.default_rng(2).integers(500, 3000, (height, width)).astype(np.uint16)
    depth_msg = Image(header=header, height=height, width=width, encoding="16UC1", step=2 * width,
                      data=depth.tobytes())
    extras.on_depth(depth_msg)
    instances = bench_ros.fake_instances(width, height)
    tracked = extras.track(instances, prompt, True, 0.3, 0.1)
    positions, frame, _ = extras.positions(tracked, msg.header, (width, height), info, 5)
    start = argparse.Namespace(msg=msg, depth_msg=depth_msg, info=info, instances=instances, extras=extras)
    return msg.header, (width, height), prompt, tracked, positions, frame, start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default=BEFORE, help="git revision to compare with")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    old_messages = module_at(args.against, "unipose_ros/detection_messages.py", "old_detection_messages")
    module_at(args.against, "unipose_model/depth.py", "old_depth_geometry")
    old_depth = module_at(args.against, "unipose_ros/depth_3d.py", "old_depth_3d",
                          {"unipose_model.depth": "old_depth_geometry"})
    old_tracking = module_at(args.against, "unipose_model/tracking.py", "old_tracking")

    rclpy.init()
    node = rclpy.create_node("unipose_bench_messages")
    try:
        keypoints_pub = node.create_publisher(KeypointInstanceArray, "/bench/keypoints", 10)
        markers_pub = node.create_publisher(MarkerArray, "/bench/markers", 10)
        markers_3d_pub = node.create_publisher(MarkerArray, "/bench/markers_3d", 10)
        header, size, prompt, tracked, positions, frame, start = frame_inputs()

        def parts(messages, depth, tracking):
            projector = messages.PixelProjector(2.0, 0.002, None)  # each version's own projection
            tracker = tracking.Tracker(high_threshold=0.3, low_threshold=0.1)
            pairer = StampPairer(wait=0.0)
            stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec

            def whole_frame():  # bench_ros.py's last column (TracksAndDepth's steps) with this version's code
                pairer.add(stamp, start.depth_msg)
                image_to_color(start.msg)
                now = tracker.update(start.instances)
                raw, encoding = depth.depth_image_array(pairer.pair(stamp))
                where = depth.instance_positions(now, raw, depth.camera_from_info(start.info), size, 5, encoding)
                keypoints_pub.publish(messages.keypoint_array(now, header, size, prompt, "bench", 0.0, where,
                                                              header.frame_id))
                markers_pub.publish(messages.marker_array(now, header, projector, size))
                markers_3d_pub.publish(depth.marker_array_3d(now, where, header, header.frame_id))

            return {
                "keypoint array": lambda: keypoints_pub.publish(messages.keypoint_array(
                    tracked, header, size, prompt, "bench", 0.0, positions, frame)),
                "markers": lambda: markers_pub.publish(messages.marker_array(tracked, header, projector, size)),
                "3-D markers": lambda: markers_3d_pub.publish(depth.marker_array_3d(tracked, positions, header, frame)),
                "whole frame, tracking + 3-D": whole_frame,
            }

        versions = {"before": parts(old_messages, old_depth, old_tracking),
                    "now": parts(detection_messages, depth_3d, tracking)}
        times = {(v, p): [] for v in versions for p in versions[v]}
        cpu = {(v, p): [] for v in versions for p in versions[v]}
        for _ in range(args.repeat + 5):
            for version, fns in versions.items():
                for part, fn in fns.items():
                    t0, c0 = time.perf_counter(), time.thread_time()
                    fn()
                    cpu[version, part].append(time.thread_time() - c0)
                    times[version, part].append(time.perf_counter() - t0)
        median = {k: statistics.median(v[5:]) * 1e3 for k, v in times.items()}
        median_cpu = {k: statistics.median(v[5:]) * 1e3 for k, v in cpu.items()}
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"640x480, 5 tracked instances x 17 keypoints with 3-D positions; build + publish, median of "
          f"{args.repeat}, {args.against} vs this checkout, alternating; load average {os.getloadavg()[0]:.1f}")
    print("| part | before | now | ratio | CPU time before | now | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for part in versions["now"]:
        b, n = median["before", part], median["now", part]
        cb, cn = median_cpu["before", part], median_cpu["now", part]
        print(f"| {part} | {b:.2f} ms | {n:.2f} ms | {n / b:.2f} | {cb:.2f} ms | {cn:.2f} ms | {cn / cb:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
