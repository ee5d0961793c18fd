"""What the detector node adds to each frame's detections: track ids and 3-D keypoint positions.

Kept out of detector_node.py so the node only wires it up:
  * tracking: one unipose_model Tracker per prompt (a new prompt, or switching `tracking`, starts
    new tracks); while tracking, the predictor also returns detections down to
    `tracking_low_threshold` for the tracker's second pass;
  * depth: depth images are buffered and paired with each colour frame by stamp (StampPairer,
    ApproximateTime's rule); the keypoints' 3-D positions come from unipose_ros.depth_3d; with
    `target_frame` and tf2_ros installed they are transformed there.
"""
from __future__ import annotations

import threading

import numpy as np

from unipose_model.depth import DepthError
from unipose_model.tracking import Tracker
from unipose_ros.depth_3d import camera_from_info, depth_image_array, instance_positions
from unipose_ros.depth_pairing import StampPairer

try:  # tf2 is optional: without it, positions stay in the camera optical frame
    import tf2_ros
except ImportError:  # pragma: no cover - depends on the installation
    tf2_ros = None


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class TracksAndDepth:
    def __init__(self) -> None:
        self._tracker: Tracker | None = None
        self._tracked_prompt = None
        self._lock = threading.Lock()
        self.depth = StampPairer()
        self.depth_errors = 0
        self.tf_buffer = None
        self._tf_listener = None

    # ------------------------------------------------------------------ tracking
    @staticmethod
    def detect(predictor, prompt, image, color: str, tracking: bool, low_threshold: float):
        """One inference -> (instances, the user's threshold). With tracking, the predictor also
        returns the low-score detections the tracker's second pass needs (a per-call score floor:
        its settings are not touched); only those at the threshold are published or start tracks."""
        threshold = predictor.settings.box_threshold
        source = prompt.prepared if prompt.prepared is not None else prompt.text
        instances = predictor.predict(image, source, color=color, score_floor=low_threshold if tracking else None)
        return instances, threshold

    def track(self, instances, prompt, tracking: bool, high_threshold: float, low_threshold: float):
        """The instances to publish: tracked (with track_id) or, with tracking off, as they are."""
        with self._lock:
            if not tracking:
                self._tracker = None
                return [i for i in instances if i.score >= high_threshold]
            if self._tracker is None or prompt is not self._tracked_prompt:
                self._tracker = Tracker(high_threshold=high_threshold,
                                        low_threshold=min(low_threshold, high_threshold))
                self._tracked_prompt = prompt
            cfg = self._tracker.config
            cfg.high_threshold, cfg.low_threshold = high_threshold, min(low_threshold, high_threshold)
            return self._tracker.update(instances)

    def reset_tracks(self) -> None:
        with self._lock:
            self._tracker = None

    @property
    def active_tracks(self) -> int:
        tracker = self._tracker
        return len(tracker.active_tracks) if tracker is not None else 0

    # ------------------------------------------------------------------ depth
    def on_depth(self, msg) -> None:
        self.depth.add(stamp_ns(msg.header.stamp), msg)

    def start_tf(self, node) -> None:
        """A tf2 listener for `target_frame` (only when tf2_ros is installed)."""
        if tf2_ros is not None and self.tf_buffer is None:
            self.tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self.tf_buffer, node)

    def positions(self, instances, header, image_size, camera_info, window: int, target_frame: str = ""):
        """(per-instance positions or None, their frame id, a problem or ""). None: no depth frame
        within the tolerance (counted by the pairer) or an unusable one (the problem says why)."""
        depth_msg = self.depth.pair(stamp_ns(header.stamp))
        if depth_msg is None:
            return None, "", ""
        try:
            camera = camera_from_info(camera_info)
            depth, encoding = depth_image_array(depth_msg)
        except DepthError as exc:
            self.depth_errors += 1
            return None, "", str(exc)
        positions = instance_positions(instances, depth, camera, image_size, int(window), encoding)
        frame = header.frame_id
        if target_frame and target_frame != frame:
            moved, problem = self._transform(positions, frame, target_frame, header.stamp)
            if moved is None:
                return positions, frame, problem
            positions, frame = moved, target_frame
        return positions, frame, ""

    def _transform(self, positions, source: str, target: str, stamp):
        if self.tf_buffer is None:
            return None, f"target_frame {target!r} needs tf2_ros, which is not installed; positions stay in {source!r}"
        try:
            from rclpy.time import Time

            t = self.tf_buffer.lookup_transform(target, source, Time.from_msg(stamp))
        except Exception as exc:  # noqa: BLE001 - any tf2 lookup failure: keep the camera frame
            return None, f"no transform {source} -> {target}: {exc}"
        q, p = t.transform.rotation, t.transform.translation
        R = quaternion_matrix(q.x, q.y, q.z, q.w)
        shift = np.array([p.x, p.y, p.z])
        return [(pts @ R.T + shift, valid) for pts, valid in positions], ""

    def diagnostics(self) -> dict:
        pairer = self.depth
        return {"tracks_active": str(self.active_tracks),
                "depth_paired": str(pairer.paired), "depth_unpaired": str(pairer.unpaired),
                "depth_rejected": str(self.depth_errors),
                "depth_stamp_offset_ms": f"{pairer.last_offset_s * 1e3:.1f}"}


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Rotation matrix of a unit quaternion (geometry_msgs order x, y, z, w)."""
    n = np.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
