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


def _model_info(args: argparse.Namespace):
    """The checkpoint's model file info, or None after one line saying why it cannot be used."""
    from unipose_model.checkpoint import CheckpointError
    from unipose_model.model_file import read_model_file_info

    try:
        info = read_model_file_info(args.checkpoint)
    except CheckpointError as e:  # missing, damaged or hand-edited: one line naming the file
        print(f"unipose-demo: {e}", file=sys.stderr)
        return None
    if not info.model_name:
        print(f"unipose-demo: {args.checkpoint} names no model configuration; use a checkpoint "
              "written by unipose-train (or run unipose-detector with model:=...)", file=sys.stderr)
        return None
    return info


def _support(args: argparse.Namespace) -> tuple[str, str]:
    if args.visual:
        from unipose_model.model_file import BUNDLED_SUPPORT_IMAGE, BUNDLED_SUPPORT_KEYPOINTS
        return BUNDLED_SUPPORT_IMAGE, str(BUNDLED_SUPPORT_KEYPOINTS)
    return args.support_image, args.support_keypoints


def _start_detector(args: argparse.Namespace, info, support: tuple[str, str], domain: int):
    """The detector node, configured and active; None after one line when it cannot start."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from unipose_ros.detector_node import DetectorNode

    support_image, support_keypoints = support
    detector = DetectorNode(parameter_overrides=[
        Parameter("model", value=info.model_name), Parameter("checkpoint", value=str(args.checkpoint)),
        Parameter("text_encoder", value="auto"), Parameter("device", value=args.device),
        Parameter("prompt", value=args.prompt), Parameter("autostart", value=True),
        Parameter("support_image", value=support_image), Parameter("support_keypoints", value=support_keypoints)])
    # box_threshold, short_side and max_size keep their defaults: the model file's values
    print(f"[demo] ROS_DOMAIN_ID={domain}; loading {args.checkpoint} ({info.model_name}) ...", flush=True)
    if detector.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        print("unipose-demo: the detector could not load the model (see the log above)", file=sys.stderr)
        return detector, False
    if (support_image or support_keypoints) and not detector.prompt.text.startswith("<visual prompt"):
        print("unipose-demo: the visual prompt was refused (see the log above)", file=sys.stderr)
        return detector, False
    detector.trigger_activate()
    return detector, True


class _DemoSink:
    """The runner's side of the graph: one printed line per keypoint message, the annotated
    images into the video (each held until the next, as a live viewer sees them), counts."""

    def __init__(self, writer, frames: dict):
        self.writer, self.frames = writer, frames
        self.lock = threading.Condition()
        self.state = {"processed": 0, "instances": 0, "markers": 0, "annotated": 0, "last": time.time()}
        self.held = {"frame": None, "index": 0, "open": True}
        self.video_lock = threading.Lock()   # the writer must not be closed under a running write

    def subscribe(self, node) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from visualization_msgs.msg import MarkerArray

        from unipose_ros.msg import KeypointInstanceArray

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(KeypointInstanceArray, "/unipose/keypoints", self.on_keypoints, reliable)
        node.create_subscription(Image, "/unipose/image_annotated", self.on_annotated, reliable)
        node.create_subscription(MarkerArray, "/unipose/markers", self.on_markers, reliable)

    def _index(self, msg, default: int) -> int:
        return self.frames.get((msg.header.stamp.sec, msg.header.stamp.nanosec), default)

    def on_keypoints(self, msg) -> None:
        with self.lock:
            self.state["processed"] += 1
            self.state["instances"] += len(msg.instances)
            self.state["last"] = time.time()
            print(f"frame {self._index(msg, -1):4d}: {_keypoint_summary(msg)} "
                  f"({msg.inference_time * 1000:.0f} ms)", flush=True)
            self.lock.notify_all()

    def on_annotated(self, msg) -> None:
        # The video keeps the clip's timing: each annotated frame is shown until the next
        # one, as a live viewer would have seen it (frames in between were dropped).
        import numpy as np

        from unipose_ros.image_conversion import image_to_color

        array, order = image_to_color(msg)
        frame = np.ascontiguousarray(array if order == "bgr" else array[..., ::-1])
        index = self._index(msg, self.held["index"])
        with self.video_lock:
            if not self.held["open"]:
                return
            if self.held["frame"] is not None:
                for _ in range(max(1, index - self.held["index"])):
                    self.writer.write(self.held["frame"])
            self.held["frame"], self.held["index"] = frame, index
        with self.lock:
            self.state["annotated"] += 1

    def on_markers(self, msg) -> None:
        with self.lock:
            self.state["markers"] += 1

    def wait(self, source_timer, max_frames: int, timeout: float) -> None:
        """Until --frames are processed, or the source ended and the detector went quiet, or timeout."""
        deadline = time.time() + timeout
        with self.lock:
            while time.time() < deadline:
                if max_frames and self.state["processed"] >= max_frames:
                    break
                # one pass: the source ended and the detector has had time to publish its last frame
                if source_timer.is_canceled() and time.time() - self.state["last"] > 3.0:
                    break
                self.lock.wait(timeout=0.2)
            else:
                print(f"[demo] stopped after the {timeout:g} s timeout", flush=True)

    def finish(self) -> None:
        """Print the counts and write the last held frame; later images are ignored."""
        published, state = len(self.frames), self.state
        print(f"[demo] {published} frames published, {state['processed']} processed "
              f"({published - state['processed']} dropped while the model was busy), "
              f"{state['instances']} detections, {state['markers']} marker arrays, "
              f"{state['annotated']} annotated images", flush=True)
        with self.video_lock:
            self.held["open"] = False
            if self.held["frame"] is not None:
                self.writer.write(self.held["frame"])


def _play(args: argparse.Namespace, source: str, rate: float, sink: _DemoSink, nodes: list, executor) -> None:
    """Add the sink and the image source to the graph, spin, and wait for the run to end."""
    import rclpy
    from rclpy.parameter import Parameter

    from unipose_ros.image_source import ImageSourceNode

    sink_node = rclpy.create_node("unipose_demo_sink")
    nodes.append(sink_node)
    sink.subscribe(sink_node)
    src = ImageSourceNode(parameter_overrides=[
        Parameter("source", value=source), Parameter("rate", value=float(rate)), Parameter("loop", value=False)])
    src.image_pub = _StampLog(src.image_pub, sink.frames)
    nodes.append(src)
    for node in nodes:
        executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    print(f"[demo] playing {source} at {rate:g} Hz; prompt {nodes[0].prompt.text!r}; one line per processed frame",
          flush=True)
    sink.wait(src.timer, args.frames, args.timeout)
    time.sleep(0.5)  # let the last annotated image arrive
    sink.finish()


def run(args: argparse.Namespace) -> int:
    domain = _setup_ros_environment(args.domain_id)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from unipose_model.media import VideoWriter

    source = str(Path(args.source).expanduser())
    rate = args.rate or _video_rate(source)
    info = _model_info(args)
    if info is None:
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path = out_dir / args.video

    rclpy.init(args=[])
    # One executor thread, as in unipose-detector: with rclpy's MultiThreadedExecutor the spin
    # loop busy-waits (holding the GIL) while a sink callback writes video, and the detector's
    # inference took 2.9-15.4 s per frame instead of 0.35-0.63 s (docs/BENCHMARKS.md).
    executor = SingleThreadedExecutor()
    nodes: list = []
    writer = VideoWriter(video_path, fps=rate)
    sink = _DemoSink(writer, frames={})
    try:
        detector, started = _start_detector(args, info, _support(args), domain)
        nodes.append(detector)
        if not started:
            return 1
        _play(args, source, rate, sink, nodes, executor)
    finally:
        executor.shutdown(timeout_sec=2.0)
        for node in nodes:
            if hasattr(node, "_stop_processing"):
                node._stop_processing()
            node.destroy_node()
        rclpy.try_shutdown()
        writer.close()
    if sink.state["annotated"] == 0:
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
