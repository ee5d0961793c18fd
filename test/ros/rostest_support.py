"""Support for the ROS 2 tests: an isolated DDS domain, node processes, and a probe node.

Rules kept here so every test follows them: discovery stays on this host
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in a random ROS_DOMAIN_ID; tests wait for the graph or
for messages with timeouts, never for fixed times; node processes are stopped with SIGINT (a
SIGKILLed Fast DDS process leaves /dev/shm files, and only those of this domain are removed).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("UNIPOSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
# One domain per test session; set before rclpy is initialised anywhere in this process.
DOMAIN_ID = int(os.environ.get("UNIPOSE_TEST_DOMAIN_ID", random.randint(30, 200)))
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("unipose_ros.msg", reason="messages not built (scripts/build_msgs.sh)")

# The test model: small config, deterministic reference weights, hash text features.
TEST_MODEL_PARAMS = {
    # the tiny model with a visual prompt encoder: text and visual prompts both run
    "model": "unipose_tiny_visual", "checkpoint": "reference", "text_encoder": "hash", "device": "cpu",
    "short_side": 320, "max_size": 480,
}


def sample_images(count: int = 3) -> list[Path]:
    """Real photos from ../shared/data/samples (COCO people first)."""
    found = sorted((SHARED_DATA / "samples" / "coco").glob("*.jpg"))
    found += sorted((SHARED_DATA / "samples").rglob("*.jpg"))
    if not found:
        pytest.skip(f"no sample images under {SHARED_DATA}")
    return found[:count]


def ros_args(params: dict | None = None, remaps: dict | None = None) -> list[str]:
    args = ["--ros-args"]
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, str):
            value = json.dumps(value)  # -p values are YAML: quote, or "person: nose" is a mapping
        args += ["-p", f"{key}:={value}"]
    for src, dst in (remaps or {}).items():
        args += ["-r", f"{src}:={dst}"]
    return args


class NodeProcess:
    """A node in its own process (python -m MODULE --ros-args ...), stopped with SIGINT."""

    def __init__(self, module: str, args: list[str], log_dir: Path, name: str | None = None,
                 env: dict | None = None):
        self.name = name or module.rsplit(".", 1)[-1]
        self.log_path = log_dir / f"{self.name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                _remove_domain_shm_files()
        self._log.close()
        return self.proc.returncode


def _remove_domain_shm_files() -> None:
    """Fast DDS port files of this test domain (only after a process had to be killed)."""
    base = 7400 + 250 * DOMAIN_ID
    shm = Path("/dev/shm")
    for path in shm.glob("*fastrtps_port*"):
        digits = "".join(ch for ch in path.name.split("port", 1)[1] if ch.isdigit())
        if digits and base <= int(digits) < base + 250:
            path.unlink(missing_ok=True)


class Probe:
    """A test-side node: subscribe, publish, call services, and wait for conditions."""

    def __init__(self) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.node = rclpy.create_node(f"unipose_test_probe_{os.getpid()}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._cond = threading.Condition()
        self.received: dict[str, list] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._running = True
        self._thread.start()

    def _spin(self) -> None:
        while self._running and rclpy.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def subscribe(self, msg_type, topic: str, qos=10, raw: bool = False) -> list:
        box = self.received.setdefault(topic, [])

        def callback(msg):
            with self._cond:
                box.append((time.monotonic(), msg))
                self._cond.notify_all()

        self.node.create_subscription(msg_type, topic, callback, qos, raw=raw)
        return box

    def messages(self, topic: str) -> list:
        with self._cond:
            return [m for _, m in self.received.get(topic, [])]

    def wait_until(self, predicate, timeout: float = 30.0, what: str = "condition", node=None):
        """Wait for predicate() (re-checked on every message and every 50 ms) or fail."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log = f"\n--- node log ---\n{node.log()[-4000:]}" if node is not None else ""
                    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{log}")
                self._cond.wait(min(remaining, 0.05))

    def wait_for_message(self, topic: str, predicate=lambda m: True, timeout: float = 30.0,
                         after: int = 0, node=None):
        def found():
            for m in self.messages(topic)[after:]:
                if predicate(m):
                    return m
            return None
        return self.wait_until(found, timeout, f"a message on {topic}", node=node)

    def wait_for_subscriber(self, publisher, timeout: float = 30.0, node=None):
        self.wait_until(lambda: publisher.get_subscription_count() > 0, timeout,
                        f"a subscriber on {publisher.topic_name}", node=node)

    def close(self) -> None:
        self._running = False
        self._thread.join(2.0)
        self.executor.shutdown()
        self.node.destroy_node()


# ------------------------------------------------------------------ detector test helpers
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

# The detector under test (a test may point it at another module with the same main()).
DETECTOR = os.environ.get("UNIPOSE_ROS_TEST_DETECTOR_MODULE", "unipose_ros.detector_node")
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
CAMERA = "/camera/image_raw"


def load_bgr(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


def header(i: int, frame: str = "camera_optical") -> Header:
    return Header(stamp=Time(sec=1000 + i, nanosec=123_000_000 + i), frame_id=f"{frame}_{i}")


def same_stamp(a, b) -> bool:
    return a.stamp.sec == b.stamp.sec and a.stamp.nanosec == b.stamp.nanosec and a.frame_id == b.frame_id


def publish_until(probe, publisher, msg, topic, match, timeout=60.0, period=0.5, node=None):
    """Publish `msg` every `period` s until a message on `topic` satisfies `match`.

    Best-effort image QoS may lose the first messages right after discovery: repeat, don't sleep.
    """
    probe.wait_for_subscriber(publisher, timeout, node=node)
    deadline = time.monotonic() + timeout
    start = len(probe.messages(topic))
    while True:
        publisher.publish(msg)
        try:
            return probe.wait_for_message(topic, match, timeout=period, after=start)
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer on {topic} within {timeout}s\n--- node log ---\n"
                                     f"{node.log()[-4000:] if node else ''}") from None
            if node is not None and not node.alive():
                raise AssertionError(f"node died:\n{node.log()[-4000:]}") from None
