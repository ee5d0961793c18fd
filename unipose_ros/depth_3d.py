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
    if not dtype.isnative:  # (numpy 2 spells a native little-endian dtype '<', not '=': no copy then)
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
    """RViz markers of the 3-D keypoints: one sphere list of every valid keypoint (coloured per
    point by track id), and per instance a line list of the skeleton links whose two ends are
    valid and a text label (class and track id) above it, coloured by track id; the first marker
    clears the previous frame's. Invalid keypoints are never drawn. The layout is the cheapest to
    publish (see detection_messages.marker_array). The markers share nested messages (header,
    lifetime, colours): publish the array, do not modify it in place."""
    from visualization_msgs.msg import Marker, MarkerArray

    from unipose_ros.detection_messages import _marker_template, _pose_at, _rgba, _scale, instance_colour
    from unipose_ros.message_construction import like, point, valid_points

    base = _marker_template(header, frame_id, lifetime_s)
    out = MarkerArray(markers=[like(base, action=Marker.DELETEALL)])
    line_scale = _scale(line_m, 0.0, 0.0)
    sphere_points, sphere_colours, skeletons, labels = [], [], [], []
    positions = list(positions)[:len(instances)]
    if not positions:
        return out
    # every instance's valid points at once; None where invalid (never drawn)
    xyz = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3) for p, _ in positions]).tolist()
    valid = np.concatenate([np.asarray(v, dtype=bool).reshape(-1) for _, v in positions]).tolist()
    all_pts = valid_points(xyz, valid)
    start = 0
    for i, (inst, (_, valid_i)) in enumerate(zip(instances, positions)):
        end = start + len(valid_i)
        pts = all_pts[start:end]
        rows = [r for r, ok in zip(xyz[start:end], valid[start:end]) if ok]
        start = end
        shown = [p for p in pts if p is not None]
        if not shown:
            continue
        colour = _rgba(instance_colour(inst, i))
        sphere_points += shown
        sphere_colours += [colour] * len(shown)
        n = len(pts)
        bones = [pts[j] for a, b in inst.skeleton
                 if a < n and b < n and pts[a] is not None and pts[b] is not None for j in (a, b)]
        if bones:
            skeletons.append(like(base, ns="skeleton_3d", id=i, type=Marker.LINE_LIST, scale=line_scale,
                                  color=colour, points=bones))
        track = getattr(inst, "track_id", None)
        # above the instance: mean x and z, highest point (smallest y) of its valid keypoints
        anchor = point(sum(r[0] for r in rows) / len(rows), min(r[1] for r in rows) - 4 * sphere_m,
                       sum(r[2] for r in rows) / len(rows))
        labels.append(like(base, ns="label_3d", id=i, type=Marker.TEXT_VIEW_FACING,
                           scale=_scale(0.0, 0.0, 3 * sphere_m), color=colour, pose=_pose_at(anchor),
                           text=f"{inst.label}" + (f" #{track}" if track is not None and track > 0 else "")))
    if sphere_points:
        out.markers.append(like(base, ns="keypoints_3d", type=Marker.SPHERE_LIST,
                                scale=_scale(sphere_m, sphere_m, sphere_m), color=_rgba((255, 255, 255)),
                                points=sphere_points, colors=sphere_colours))
    out.markers += skeletons + labels
    return out
