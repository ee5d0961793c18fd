"""`unipose-demo`: the whole ROS 2 pipeline on the bundled fly clip, no camera, no downloads.

    image_source (plays sample_fly.mp4) --/image--> unipose detector (bundled fly_demo.pth)
        --> /unipose/keypoints, /unipose/markers, /unipose/image_annotated --> this runner

The three nodes run in one process (there is no `ros2 launch` in a pip install) but talk over
real ROS topics, exactly as separate processes would. The runner prints one line per processed
frame and writes the annotated images it receives into a video at the clip's rate (each
annotated frame held until the next, as a live viewer sees it). The source plays at the clip's
own rate; the detector takes the newest frame and drops the rest (as with a real camera), so
how many frames get processed depends on the CPU (--rate lower processes more of them). It
stops after one pass of the clip, or after --frames processed frames.

Other terminals can watch the graph: the runner prints its ROS_DOMAIN_ID.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_VIDEO

    p = argparse.ArgumentParser(prog="unipose-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(BUNDLED_VIDEO), help="video, image folder or image (default: the bundled clip)")
    p.add_argument("--checkpoint", default=str(BUNDLED_CHECKPOINT), help="model file (default: the bundled fly model)")
    p.add_argument("--prompt", default="fly", help="prompt (default: fly)")
    p.add_argument("--visual", action="store_true",
                   help="prompt with the bundled 1-shot support (a labelled fly of the clip's frame 1000) "
                        "instead of the text")
    p.add_argument("--support-image", default="", help="visual prompt: support image or VIDEO#frame=N "
                                                       "(with --support-keypoints)")
    p.add_argument("--support-keypoints", default="", help="keypoints of --support-image (COCO json or 'name: x y')")
    p.add_argument("--rate", type=float, default=0.0, help="source frames per second (default: the video's own rate)")
    p.add_argument("--frames", type=int, default=0, help="stop after this many processed frames (0: one pass)")
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--video", default="fly_demo_annotated.mp4", help="annotated video name in --out")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID (default: $ROS_DOMAIN_ID, else a random one so demos do not mix)")
    return p.parse_args(argv)


def _setup_ros_environment(domain_id) -> int:
    """Localhost-only discovery in one domain: must happen before rclpy starts."""
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(30, 200))
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain_id


def _video_rate(source: str) -> float:
    import cv2

    cap = cv2.VideoCapture(source)
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return fps if 1.0 <= fps <= 240.0 else 10.0


class _StampLog:
    """Wraps the source's image publisher: remembers which frame number each stamp carried."""

    def __init__(self, publisher, frames: dict):
        self._pub, self._frames = publisher, frames

    def publish(self, msg) -> None:
        self._frames[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = len(self._frames)
        self._pub.publish(msg)

    def __getattr__(self, name):
        return getattr(self._pub, name)


def _keypoint_summary(msg) -> str:
    if not msg.instances:
        return "no detections"
    parts = []
    for inst in msg.instances:
        kp = inst.keypoints[0] if len(inst.keypoints) else None
        where = f" {kp.name} ({kp.x:.0f}, {kp.y:.0f})" if kp is not None else ""
        ident = f" #{inst.track_id}" if inst.track_id > 0 else " #-"  # -1: a new track, not yet confirmed
        parts.append(f"{inst.label}{ident} {inst.score:.2f}{where}")
    return f"{len(msg.instances)} x {msg.instances[0].label}: " + "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    domain = _setup_ros_environment(args.domain_id)
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from visualization_msgs.msg import MarkerArray

    from unipose_model.media import VideoWriter
    from unipose_model.model_file import read_model_file_info
    from unipose_ros.detector_node import DetectorNode
    from unipose_ros.image_conversion import image_to_color
    from unipose_ros.image_source import ImageSourceNode
    from unipose_ros.msg import KeypointInstanceArray

    source = str(Path(args.source).expanduser())
    rate = args.rate or _video_rate(source)
    from unipose_model.checkpoint import CheckpointError
    try:
        info = read_model_file_info(args.checkpoint)
    except CheckpointError as e:  # missing, damaged or hand-edited: one line naming the file
        print(f"unipose-demo: {e}", file=sys.stderr)
        return 2
    if not info.model_name:
        print(f"unipose-demo: {args.checkpoint} names no model configuration; use a checkpoint "
              "written by unipose-train (or run unipose-detector with model:=...)", file=sys.stderr)
        return 2
    support_image, support_keypoints = args.support_image, args.support_keypoints
    if args.visual:
        from unipose_model.model_file import BUNDLED_SUPPORT_IMAGE, BUNDLED_SUPPORT_KEYPOINTS
        support_image, support_keypoints = BUNDLED_SUPPORT_IMAGE, str(BUNDLED_SUPPORT_KEYPOINTS)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path = out_dir / args.video

    rclpy.init(args=[])
    # One executor thread, as in unipose-detector: with rclpy's MultiThreadedExecutor the spin
    # loop busy-waits (holding the GIL) while a sink callback writes video, and the detector's
    # inference took 2.9-15.4 s per frame instead of 0.35-0.63 s (docs/BENCHMARKS.md).
    executor = SingleThreadedExecutor()
    nodes = []
    writer = VideoWriter(video_path, fps=rate)
    try:
        detector = DetectorNode(parameter_overrides=[
            Parameter("model", value=info.model_name), Parameter("checkpoint", value=str(args.checkpoint)),
            Parameter("text_encoder", value="auto"), Parameter("device", value=args.device),
            Parameter("prompt", value=args.prompt), Parameter("autostart", value=True),
            Parameter("support_image", value=support_image), Parameter("support_keypoints", value=support_keypoints)])
        # box_threshold, short_side and max_size keep their defaults: the model file's values
        nodes.append(detector)
        print(f"[demo] ROS_DOMAIN_ID={domain}; loading {args.checkpoint} ({info.model_name}) ...", flush=True)
        if detector.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            print("unipose-demo: the detector could not load the model (see the log above)", file=sys.stderr)
            return 1
        if (support_image or support_keypoints) and not detector.prompt.text.startswith("<visual prompt"):
            print("unipose-demo: the visual prompt was refused (see the log above)", file=sys.stderr)
            return 1
        detector.trigger_activate()

        sink = rclpy.create_node("unipose_demo_sink")
        nodes.append(sink)
        lock = threading.Condition()
        state = {"processed": 0, "instances": 0, "markers": 0, "annotated": 0, "last": time.time()}
        frames: dict = {}

        def on_keypoints(msg) -> None:
            with lock:
                state["processed"] += 1
                state["instances"] += len(msg.instances)
                state["last"] = time.time()
                index = frames.get((msg.header.stamp.sec, msg.header.stamp.nanosec), -1)
                print(f"frame {index:4d}: {_keypoint_summary(msg)} "
                      f"({msg.inference_time * 1000:.0f} ms)", flush=True)
                lock.notify_all()

        held = {"frame": None, "index": 0, "open": True}
        video_lock = threading.Lock()   # the writer must not be closed under a running write

        def on_annotated(msg) -> None:
            # The video keeps the clip's timing: each annotated frame is shown until the next
            # one, as a live viewer would have seen it (frames in between were dropped).
            array, order = image_to_color(msg)
            frame = np.ascontiguousarray(array if order == "bgr" else array[..., ::-1])
            index = frames.get((msg.header.stamp.sec, msg.header.stamp.nanosec), held["index"])
            with video_lock:
                if not held["open"]:
                    return
                if held["frame"] is not None:
                    for _ in range(max(1, index - held["index"])):
                        writer.write(held["frame"])
                held["frame"], held["index"] = frame, index
            with lock:
                state["annotated"] += 1

        def on_markers(msg) -> None:
            with lock:
                state["markers"] += 1

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        sink.create_subscription(KeypointInstanceArray, "/unipose/keypoints", on_keypoints, reliable)
        sink.create_subscription(Image, "/unipose/image_annotated", on_annotated, reliable)
        sink.create_subscription(MarkerArray, "/unipose/markers", on_markers, reliable)

        src = ImageSourceNode(parameter_overrides=[
            Parameter("source", value=source), Parameter("rate", value=float(rate)),
            Parameter("loop", value=False)])
        src.image_pub = _StampLog(src.image_pub, frames)
        nodes.append(src)
        for node in nodes:
            executor.add_node(node)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        print(f"[demo] playing {source} at {rate:g} Hz; prompt {detector.prompt.text!r}; one line per processed frame",
              flush=True)
        deadline = time.time() + args.timeout
        with lock:
            while time.time() < deadline:
                if args.frames and state["processed"] >= args.frames:
                    break
                source_done = src.timer.is_canceled()
                # one pass: the source ended and the detector has had time to publish its last frame
                if source_done and time.time() - state["last"] > 3.0:
                    break
                lock.wait(timeout=0.2)
            else:
                print(f"[demo] stopped after the {args.timeout:g} s timeout", flush=True)
        time.sleep(0.5)  # let the last annotated image arrive
        published = len(frames)
        print(f"[demo] {published} frames published, {state['processed']} processed "
              f"({published - state['processed']} dropped while the model was busy), "
              f"{state['instances']} detections, {state['markers']} marker arrays, "
              f"{state['annotated']} annotated images", flush=True)
        with video_lock:
            held["open"] = False
            if held["frame"] is not None:
                writer.write(held["frame"])
    finally:
        executor.shutdown(timeout_sec=2.0)
        for node in nodes:
            if hasattr(node, "_stop_processing"):
                node._stop_processing()
            node.destroy_node()
        rclpy.try_shutdown()
        writer.close()
    if state["annotated"] == 0:
        print("unipose-demo: no annotated image arrived; nothing written", file=sys.stderr)
        return 1
    print(f"[demo] annotated video: {video_path} ({writer.frames_written} frames)", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
