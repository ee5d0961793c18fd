#!/usr/bin/env python3
"""Benchmark of the ROS 2 side: per-frame overhead of the node and end-to-end figures.

    .venv/bin/python scripts/bench_ros.py [--seconds 10] [--no-write]

1. Overhead per frame, excluding the model and the transport: Image -> numpy conversion, building
   the KeypointInstanceArray and MarkerArray from detections, and rclpy publish (serialisation),
   for 640x480 and 1280x720 input; the annotated overlay (drawn only while subscribed) apart; and
   the same with tracking (track ids) and 3-D keypoints on (an aligned 16UC1 depth image paired by
   stamp, positions in the keypoint array, ~/markers_3d). --overhead-only measures just this and
   replaces only that table in docs/BENCHMARKS.md. (scripts/bench_ros_messages.py compares the
   message building of this checkout with an earlier revision in one run, which a shared machine's
   load affects alike.)
2. End to end with the test model (unipose_tiny, reference weights) in a detector process: a camera
   publishing at 30 Hz, the stamp -> keypoints latency and the achieved processing rate.
3. The demo's pipeline as separate processes: the image source playing the bundled clip (1024x1024,
   25 Hz) and the detector with the bundled fly model, spun once by rclpy's SingleThreadedExecutor
   (what unipose-detector uses) and once by its MultiThreadedExecutor, for comparison: the model's
   time per processed frame (inference_time of /unipose/keypoints) and the processing rate.
Results go to stdout and to the "ROS node" section of docs/BENCHMARKS.md (replaced on re-run;
other sections are kept).
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(30, 200)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from unipose_model.predictor import Instance  # noqa: E402
from unipose_ros import cdr  # noqa: E402
from unipose_ros.detection_messages import (ActivePrompt, ClassLayout, PixelProjector,  # noqa: E402
                                            keypoint_array, keypoint_array_serialised, marker_array,
                                            marker_array_serialised)
from unipose_ros.image_conversion import array_to_image, image_to_color  # noqa: E402
from unipose_ros.msg import KeypointInstanceArray  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from unipose_ros.depth_3d import marker_array_3d, marker_array_3d_serialised  # noqa: E402
from unipose_ros.tracks_and_depth import TracksAndDepth  # noqa: E402

SIZES = [(640, 480), (1280, 720)]
BEGIN, END = "<!-- bench_ros.py: begin -->", "<!-- bench_ros.py: end -->"
COCO = ("nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder",
        "left elbow", "right elbow", "left wrist", "right wrist", "left hip", "right hip", "left knee",
        "right knee", "left ankle", "right ankle")
SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
            (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))


def sample_frame(width: int, height: int) -> np.ndarray:
    path = next((ROOT.parent / "shared" / "data" / "samples" / "coco").glob("*.jpg"), None)
    image = cv2.imread(str(path)) if path else None
    if image is None:
        image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.resize(image, (width, height))


def fake_instances(width: int, height: int, n: int = 5) -> list[Instance]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        kpts = np.column_stack([rng.uniform(0, width, 17), rng.uniform(0, height, 17), np.full(17, 0.8)])
        out.append(Instance("person", 0, 0.9 - 0.1 * i, (10.0, 20.0, width / 2, height / 2), kpts, COCO,
                            SKELETON))
    return out


def timeit(fn, repeat: int, clock=time.perf_counter) -> float:
    """Median time of fn() in milliseconds: wall time, or with clock=time.thread_time the CPU time
    of this thread (on a machine shared with other jobs, the wall time also counts the time the
    thread waits for a core; its CPU time does not)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times) * 1e3


def bench_overhead(node, repeat: int) -> list[dict]:
    from unipose_model.visualize import draw_instances

    keypoints_pub = node.create_publisher(KeypointInstanceArray, "/bench/keypoints", 10)
    markers_pub = node.create_publisher(MarkerArray, "/bench/markers", 10)
    annotated_pub = node.create_publisher(Image, "/bench/image_annotated", 10)
    markers_3d_pub = node.create_publisher(MarkerArray, "/bench/markers_3d", 10)
    prompt = ActivePrompt("person", (ClassLayout("person", COCO, SKELETON),))
    # as the node: outputs written in their serialised form where rclpy reads them back alike (the
    # message objects of before, measured in the same run for comparison)
    objects = (keypoint_array, marker_array, marker_array_3d)
    written = (keypoint_array_serialised, marker_array_serialised, marker_array_3d_serialised)
    make_keypoints, make_markers, make_markers_3d = written if cdr.matches_rclpy() else objects
    rows = []
    for width, height in SIZES:
        msg = array_to_image(sample_frame(width, height), "bgr8",
                             Header(frame_id="camera", stamp=node.get_clock().now().to_msg()))
        instances = fake_instances(width, height)
        projector = PixelProjector(2.0, 0.002, None)

        def convert():
            return image_to_color(msg)

        def keypoints():
            keypoints_pub.publish(make_keypoints(instances, msg.header, (width, height), prompt, "bench", 0.0))

        def markers():
            markers_pub.publish(make_markers(instances, msg.header, projector, (width, height)))

        def per_frame():
            convert()
            keypoints()
            markers()

        def overlay():
            image, order = convert()
            canvas = draw_instances(np.array(image, order="C"), instances, color=order, copy=False)
            annotated_pub.publish(array_to_image(canvas, f"{order}8", msg.header))

        # tracking and 3-D as the node does them: a depth frame arrives with each colour frame
        extras = TracksAndDepth()
        extras.depth.wait = 0.0
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        info.k = [600.0, 0.0, width / 2 - 0.5, 0.0, 600.0, height / 2 - 0.5, 0.0, 0.0, 1.0]
        info.d = [-0.2, 0.05, 0.001, -0.001, 0.0]
        depth = np.random.default_rng(2).integers(500, 3000, (height, width)).astype(np.uint16)
        depth_msg = Image(header=msg.header, height=height, width=width, encoding="16UC1", step=2 * width,
                          data=depth.tobytes())

        def tracked_3d(make_keypoints, make_markers, make_markers_3d):
            def per_frame():
                extras.on_depth(depth_msg)
                convert()
                tracked = extras.track(instances, prompt, True, 0.3, 0.1)
                positions, frame, _ = extras.positions(tracked, msg.header, (width, height), info, 5)
                keypoints_pub.publish(make_keypoints(tracked, msg.header, (width, height), prompt, "bench", 0.0,
                                                     positions, frame))
                markers_pub.publish(make_markers(tracked, msg.header, projector, (width, height)))
                markers_3d_pub.publish(make_markers_3d(tracked, positions, msg.header, frame))
            return per_frame

        per_frame_tracked_3d = tracked_3d(make_keypoints, make_markers, make_markers_3d)

        rows.append({"size": f"{width}x{height}", "convert_ms": timeit(convert, repeat),
                     "keypoints_ms": timeit(keypoints, repeat), "markers_ms": timeit(markers, repeat),
                     "total_ms": timeit(per_frame, repeat), "overlay_ms": timeit(overlay, max(5, repeat // 4)),
                     "total_tracked_3d_ms": timeit(per_frame_tracked_3d, repeat),
                     "total_tracked_3d_cpu_ms": timeit(per_frame_tracked_3d, repeat, time.thread_time),
                     "total_tracked_3d_objects_ms": timeit(tracked_3d(*objects), repeat),
                     "load": os.getloadavg()[0]})
    return rows


def bench_end_to_end(node, seconds: float, rate: float = 30.0) -> list[dict]:
    params = {"model": "unipose_tiny", "checkpoint": "reference", "text_encoder": "hash", "device": "cpu",
              "prompt": "person"}
    args = [sys.executable, "-m", "unipose_ros.detector_node", "--ros-args"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    args += ["-r", "image:=/bench/image"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    camera = node.create_publisher(Image, "/bench/image", 10)
    arrivals: list[tuple[float, object]] = []
    lock = threading.Lock()

    def on_keypoints(msg):
        with lock:
            arrivals.append((time.time(), msg))

    node.create_subscription(KeypointInstanceArray, "/unipose/keypoints", on_keypoints, 10)
    rows = []
    try:
        for width, height in SIZES:
            frame = array_to_image(sample_frame(width, height), "bgr8")

            def publish():
                frame.header.stamp = node.get_clock().now().to_msg()
                camera.publish(frame)

            deadline = time.monotonic() + 180
            while True:  # warm-up: model loaded, discovery done, first frame of this size through
                publish()
                time.sleep(0.2)
                with lock:
                    if any(m.image_width == width for _, m in arrivals):
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the detector did not answer")
            with lock:
                arrivals.clear()
            start, sent = time.monotonic(), 0
            while time.monotonic() - start < seconds:
                publish()
                sent += 1
                time.sleep(max(0.0, start + sent / rate - time.monotonic()))
            time.sleep(1.0)  # let the last frame finish
            with lock:
                got = [(t, m) for t, m in arrivals if m.image_width == width]
            latencies = [t - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9) for t, m in got]
            model = [m.inference_time for _, m in got]
            rows.append({"size": f"{width}x{height}", "sent_hz": sent / seconds, "processed_hz": len(got) / seconds,
                         "latency_median_ms": statistics.median(latencies) * 1e3,
                         "latency_p95_ms": float(np.percentile(latencies, 95)) * 1e3,
                         "model_ms": statistics.median(model) * 1e3})
    finally:
        proc.send_signal(2)
        proc.wait(20)
    return rows


# unipose-detector's own main, spun by a chosen rclpy executor: argv[1] is "single" (what the
# command uses) or "multi"; the rest are ROS arguments.
DETECTOR_WITH_EXECUTOR = """
import sys
import rclpy.executors as ex
from unipose_ros.detector_node import main
multi = sys.argv[1] == "multi"
sys.exit(main(sys.argv[2:], make_executor=(lambda: ex.MultiThreadedExecutor(num_threads=3)) if multi else None))
"""


def bench_bundled_pipeline(node, seconds: float) -> list[dict]:
    from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_VIDEO, read_model_file_info

    rows = []
    for executor in ("single", "multi"):
        detector = [sys.executable, "-c", DETECTOR_WITH_EXECUTOR, executor, "--ros-args"]
        for k, v in {"model": read_model_file_info(BUNDLED_CHECKPOINT).model_name,
                     "checkpoint": str(BUNDLED_CHECKPOINT), "text_encoder": "auto", "device": "cpu",
                     "prompt": "fly", "autostart": "true"}.items():
            detector += ["-p", f"{k}:={v}"]
        source = [sys.executable, "-m", "unipose_ros.image_source", "--ros-args", "-p", f"source:={BUNDLED_VIDEO}",
                  "-p", "rate:=25.0", "-p", "loop:=true"]
        times: list[float] = []
        lock = threading.Lock()

        def on_keypoints(msg):
            with lock:
                times.append(msg.inference_time)

        sub = node.create_subscription(KeypointInstanceArray, "/unipose/keypoints", on_keypoints, 10)
        procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for cmd in (detector, source)]
        try:
            deadline = time.monotonic() + 180
            while True:  # warm-up: model loaded, discovery done, two frames through
                time.sleep(0.2)
                with lock:
                    if len(times) >= 2:
                        times.clear()
                        break
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError("the bundled pipeline did not answer")
            time.sleep(seconds)
            with lock:
                got = list(times)
        finally:
            for proc in procs:
                proc.send_signal(2)
            for proc in procs:
                proc.wait(20)
            node.destroy_subscription(sub)
        rows.append({"executor": executor, "processed_hz": len(got) / seconds, "frames": len(got),
                     "model_median_ms": statistics.median(got) * 1e3 if got else float("nan"),
                     "model_p95_ms": float(np.percentile(got, 95)) * 1e3 if got else float("nan"),
                     "model_max_ms": max(got) * 1e3 if got else float("nan")})
    return rows


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__} "
            f"(CPU), ROS 2 Jazzy wheels (rclpy, Fast DDS defaults), {time.strftime('%Y-%m-%d')}")


def overhead_table(overhead: list[dict], where: str) -> list[str]:
    lines = [f"Per-frame overhead measured on {where}:", "",
             "Per-frame overhead of the node outside the model and the transport (median; bgr8 input, "
             "5 instances x 17 keypoints): Image to numpy, building the keypoint array and the markers "
             "as the node does (written in serialised form, unipose_ros/cdr.py), and rclpy publish (no "
             "subscriber, so no transport). Markers are built only while `~/markers` has subscribers; the "
             "annotated overlay is drawn only while `~/image_annotated` has subscribers and is listed "
             "apart. The 'tracking + 3-D' columns are the whole per-frame work with tracking and 3-D "
             "keypoints on: the tracker, pairing an aligned 16UC1 depth image, 3-D positions of all 85 "
             "keypoints (plumb_bob undistortion, 5x5 median), the keypoint array with positions, the "
             "markers and the 3-D markers (both as if subscribed). Target: 3 ms or less. The machine is "
             "shared with other jobs; figures are medians and vary by tens of percent between runs; "
             "beside the wall time, the same work's CPU time (this thread's, which does not count waiting "
             "for a core) with the 1-minute load average, and the same work with message objects built "
             "and published by rclpy (the node's fallback, and its only path before) in the same run.", "",
             "| input | conversion | keypoint array + publish | markers + publish | total | "
             "overlay (when subscribed) | total, tracking + 3-D on | same, CPU time (load) | "
             "same, message objects |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in overhead:
        lines.append(f"| {r['size']} | {r['convert_ms']:.3f} ms | {r['keypoints_ms']:.2f} ms | "
                     f"{r['markers_ms']:.2f} ms | **{r['total_ms']:.2f} ms** | {r['overlay_ms']:.1f} ms | "
                     f"**{r['total_tracked_3d_ms']:.2f} ms** | {r['total_tracked_3d_cpu_ms']:.2f} ms "
                     f"({r['load']:.1f}) | {r['total_tracked_3d_objects_ms']:.2f} ms |")
    return lines + [OVERHEAD_END]


OVERHEAD_END = "<!-- bench_ros.py: overhead end -->"


def markdown(overhead: list[dict], e2e: list[dict], bundled: list[dict], where: str) -> str:
    lines = [BEGIN, "## ROS node", "", f"Measured with `scripts/bench_ros.py` on {where}.", ""]
    lines += overhead_table(overhead, where)
    lines += ["", "End to end with the test model (`unipose_tiny`, reference weights, CPU, default input "
              "resize 800/1333) in a detector process, camera at 30 Hz from another process: latency is "
              "image stamp to keypoints received; frames arriving while the model is busy are dropped, "
              "so latency stays about one model time.", "",
              "| input | camera | processed | latency median | latency p95 | model time |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in e2e:
        lines.append(f"| {r['size']} | {r['sent_hz']:.0f} Hz | {r['processed_hz']:.1f} Hz | "
                     f"{r['latency_median_ms']:.0f} ms | {r['latency_p95_ms']:.0f} ms | {r['model_ms']:.0f} ms |")
    if bundled:
        lines += ["", "The demo's pipeline as separate processes (as `detect.launch.py` runs it): the image "
                  "source playing the bundled clip (1024x1024) at 25 Hz, the detector with the bundled fly "
                  "model (crop refinement on), prompt `fly`. Model time per processed frame "
                  "(`inference_time`), with the executor `unipose-detector` uses and, for comparison, "
                  "rclpy's multi-threaded one (its spin thread busy-waits holding the GIL while a callback "
                  "of a mutually exclusive group runs, and the model's thread waits for the GIL).", "",
                  "| executor | processed | frames | model time median | p95 | max |",
                  "| --- | --- | --- | --- | --- | --- |"]
        names = {"single": "SingleThreadedExecutor (unipose-detector)", "multi": "MultiThreadedExecutor(3)"}
        for r in bundled:
            lines.append(f"| {names[r['executor']]} | {r['processed_hz']:.2f} Hz | {r['frames']} | "
                         f"{r['model_median_ms']:.0f} ms | {r['model_p95_ms']:.0f} ms | {r['model_max_ms']:.0f} ms |")
    lines += [END]
    return "\n".join(lines)


def write_section(section: str) -> Path:
    path = ROOT / "docs" / "BENCHMARKS.md"
    path.parent.mkdir(exist_ok=True)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
    return path


def replace_overhead(table: list[str]) -> Path:
    """Only the overhead table of the ROS node section (--overhead-only)."""
    path = ROOT / "docs" / "BENCHMARKS.md"
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    section, tail = rest.split(END, 1)
    start = section.index("Per-frame overhead")
    stop = section.index(OVERHEAD_END) + len(OVERHEAD_END) if OVERHEAD_END in section else section.index("\n\nEnd to end")
    path.write_text(head + BEGIN + section[:start] + "\n".join(table) + section[stop:] + END + tail)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="end-to-end run per size")
    parser.add_argument("--repeat", type=int, default=200, help="overhead repetitions")
    parser.add_argument("--bundled-seconds", type=float, default=30.0,
                        help="bundled-clip pipeline run per executor (0: skip)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/BENCHMARKS.md")
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the per-frame overhead table (replaces just that table in docs/BENCHMARKS.md)")
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("unipose_bench")
    if args.overhead_only:
        try:
            table = overhead_table(bench_overhead(node, args.repeat), machine())
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
        print("\n".join(table))
        if not args.no_write:
            print(f"written to {replace_overhead(table)}")
        return 0
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    try:
        overhead = bench_overhead(node, args.repeat)  # before spinning: no GIL contention from it
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        e2e = bench_end_to_end(node, args.seconds)
        bundled = bench_bundled_pipeline(node, args.bundled_seconds) if args.bundled_seconds > 0 else []
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    section = markdown(overhead, e2e, bundled, machine())
    print(section)
    if not args.no_write:
        print(f"written to {write_section(section)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
