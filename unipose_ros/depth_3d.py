"""ROS side of 3-D keypoints: sensor_msgs depth Image + CameraInfo -> 3-D positions of each
instance's keypoints (geometry in unipose_model/depth.py), and an RViz MarkerArray of them.

Shared by the live node and `unipose bag`, so both give the same positions for the same frames.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from unipose_model.depth import DEPTH_ENCODINGS, DepthError, PinholeCamera, depth_in_metres, keypoints_3d

_DTYPES = {"16UC1": np.uint16, "mono16": np.uint16, "32FC1": np.float32}


def depth_image_to_metres(msg) -> np.ndarray:
    """A sensor_msgs/Image depth image (REP 118: 16UC1 millimetres or 32FC1 metres) as float32
    metres with NaN holes. Raises DepthError with the reason for anything else."""
    depth, encoding = depth_image_array(msg)
    return depth_in_metres(depth, encoding)


def depth_image_array(msg) -> tuple[np.ndarray, str]:
    """A depth Image as its raw (H, W) array (a view of the message data where it can be) and its
    encoding; only the windows around keypoints are converted to metres later."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"depth image encoding {msg.encoding!r} is not a depth encoding; expected 16UC1 "
                         "(millimetres) or 32FC1 (metres) as REP 118 says (is the colour topic remapped "
                         "to the depth input?)")
    dtype = np.dtype(_DTYPES[msg.encoding]).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = msg.width * dtype.itemsize
    if msg.height == 0 or msg.width == 0 or msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise DepthError(f"depth image {msg.width}x{msg.height} (step {msg.step}) holds {len(msg.data)} bytes")
    try:  # rclpy keeps uint8[] as array.array: read it in place, no copy of the image
        raw = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height)
    except TypeError:  # a plain list
        raw = np.frombuffer(bytes(msg.data), dtype=np.uint8, count=msg.step * msg.height)
    rows = raw.reshape(msg.height, msg.step)[:, :row_bytes]
    if msg.step == row_bytes:
        depth = raw.view(dtype).reshape(msg.height, msg.width)
    else:
        depth = np.ascontiguousarray(rows).view(dtype).reshape(msg.height, msg.width)
    if dtype.byteorder not in ("=", "|") and dtype.byteorder != np.dtype(_DTYPES[msg.encoding]).byteorder:
        depth = depth.astype(dtype.newbyteorder("="))
    return depth, msg.encoding


def camera_from_info(camera_info) -> PinholeCamera:
    """The colour camera's model from its CameraInfo (K and, for plumb_bob /
    rational_polynomial, D). Raises DepthError when it is missing or uncalibrated."""
    if camera_info is None:
        raise DepthError("no CameraInfo received yet on camera_info (3-D keypoints need the colour camera's K)")
    return PinholeCamera(np.asarray(camera_info.k, float), np.asarray(camera_info.d, float),
                         camera_info.distortion_model or "plumb_bob")


def instance_positions(instances: Sequence, depth: np.ndarray, camera: PinholeCamera,
                       image_size: tuple[int, int], window: int = 5,
                       encoding: str = "metres") -> list[tuple[np.ndarray, np.ndarray]]:
    """Per instance: (points (K, 3) metres in the optical frame, valid (K,)) - one call for all.
    `depth`: metres with NaN holes, or the raw image in `encoding` (depth_image_array)."""
    uv = [np.asarray(inst.keypoints, float).reshape(-1, 3)[:, :2] for inst in instances]
    if not uv:
        return []
    points, valid = keypoints_3d(np.concatenate(uv), depth, encoding, camera, image_size, window)
    out, start = [], 0
    for k in uv:
        out.append((points[start:start + len(k)], valid[start:start + len(k)]))
        start += len(k)
    return out


def marker_array_3d(instances: Sequence, positions, header, frame_id: str = "", lifetime_s: float = 0.5,
                    sphere_m: float = 0.015, line_m: float = 0.005):
    """RViz markers of the 3-D keypoints: one sphere list of every valid keypoint and one line list
    of every skeleton link whose two ends are valid (both coloured per point by track id, so a
    frame costs three markers plus a label per instance), and a text label (class and track id)
    above each instance; the first marker clears the previous frame's."""
    from builtin_interfaces.msg import Duration
    from geometry_msgs.msg import Point
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker, MarkerArray

    from unipose_ros.detection_messages import _rgba, instance_colour

    marker_header = Header(stamp=header.stamp, frame_id=frame_id or header.frame_id)
    out = MarkerArray()
    clear = Marker(action=Marker.DELETEALL)
    clear.header = marker_header
    out.markers.append(clear)
    sec = int(lifetime_s)
    lifetime = Duration(sec=sec, nanosec=int(round((lifetime_s - sec) * 1e9)))

    def new_marker(ns, ident, kind, scale, colour=(255, 255, 255)):
        m = Marker(ns=ns, id=ident, type=kind, action=Marker.ADD, lifetime=lifetime)
        m.header = marker_header
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = scale
        m.color = _rgba(colour)
        return m

    sphere_points, sphere_colours, line_points, line_colours, labels = [], [], [], [], []
    for i, (inst, (points, valid)) in enumerate(zip(instances, positions)):
        if not np.any(valid):
            continue
        colour = _rgba(instance_colour(inst, i))
        pts = [Point(x=float(x), y=float(y), z=float(z)) if ok else None
               for (x, y, z), ok in zip(points.tolist(), valid.tolist())]
        shown = [p for p in pts if p is not None]
        sphere_points += shown
        sphere_colours += [colour] * len(shown)
        n = len(pts)
        for a, b in inst.skeleton:
            if a < n and b < n and pts[a] is not None and pts[b] is not None:
                line_points += (pts[a], pts[b])
                line_colours += (colour, colour)
        label = new_marker("label_3d", i, Marker.TEXT_VIEW_FACING, 3 * sphere_m, instance_colour(inst, i))
        label.scale.x = label.scale.y = 0.0
        track = getattr(inst, "track_id", None)
        label.text = f"{inst.label}" + (f" #{track}" if track is not None and track > 0 else "")
        top = points[valid]
        label.pose.position = Point(x=float(top[:, 0].mean()), y=float(top[:, 1].min() - 4 * sphere_m),
                                    z=float(top[:, 2].mean()))
        labels.append(label)
    if sphere_points:
        spheres = new_marker("keypoints_3d", 0, Marker.SPHERE_LIST, sphere_m)
        spheres.points, spheres.colors = sphere_points, sphere_colours
        bones = new_marker("skeleton_3d", 0, Marker.LINE_LIST, line_m)
        bones.scale.y = bones.scale.z = 0.0
        bones.points, bones.colors = line_points, line_colours
        out.markers += [spheres, bones]
    out.markers += labels
    return out
