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


def marker_specs_3d(instances: Sequence, positions, sphere_m: float = 0.015, line_m: float = 0.005) -> list:
    """The markers of marker_array_3d, as unipose_ros.cdr.MarkerSpec (one layout for the message
    objects and the bytes)."""
    from visualization_msgs.msg import Marker

    from unipose_ros.cdr import MarkerSpec
    from unipose_ros.detection_messages import WHITE, bone_indices, instance_rgba

    specs = [MarkerSpec(action=Marker.DELETEALL)]
    positions = list(positions)[:len(instances)]
    if not positions:
        return specs
    xyz = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3) for p, _ in positions])
    valid = np.concatenate([np.asarray(v, dtype=bool).reshape(-1) for _, v in positions])
    sphere_idx, sphere_colours, skeletons, labels = [], [], [], []
    start = 0
    for i, inst in enumerate(instances[:len(positions)]):
        n = len(np.asarray(positions[i][1]).reshape(-1))
        block, valid_i = xyz[start:start + n], valid[start:start + n]
        shown = start + np.flatnonzero(valid_i)
        start += n
        if not len(shown):
            continue  # invalid keypoints are never drawn
        colour = instance_rgba(inst, i)
        sphere_idx.append(shown)
        sphere_colours += [colour] * len(shown)
        bones = bone_indices(inst.skeleton, valid_i.tolist())
        if len(bones):
            skeletons.append(MarkerSpec("skeleton_3d", i, Marker.LINE_LIST, Marker.ADD, scale=(line_m, 0.0, 0.0),
                                        color=colour, points=block[bones]))
        track = getattr(inst, "track_id", None)
        # above the instance: mean x and z, highest point (smallest y) of its valid keypoints
        rows = block[valid_i]
        anchor = (float(rows[:, 0].mean()), float(rows[:, 1].min() - 4 * sphere_m), float(rows[:, 2].mean()))
        labels.append(MarkerSpec("label_3d", i, Marker.TEXT_VIEW_FACING, Marker.ADD, position=anchor,
                                 scale=(0.0, 0.0, 3 * sphere_m), color=colour,
                                 text=f"{inst.label}" + (f" #{track}" if track is not None and track > 0 else "")))
    if sphere_idx:
        specs.append(MarkerSpec("keypoints_3d", 0, Marker.SPHERE_LIST, Marker.ADD, scale=(sphere_m,) * 3,
                                color=WHITE, points=xyz[np.concatenate(sphere_idx)],
                                colors=np.asarray(sphere_colours)))
    return specs + skeletons + labels


def marker_array_3d(instances: Sequence, positions, header, frame_id: str = "", lifetime_s: float = 0.5,
                    sphere_m: float = 0.015, line_m: float = 0.005):
    """RViz markers of the 3-D keypoints: one sphere list of every valid keypoint (coloured per
    point by track id), and per instance a line list of the skeleton links whose two ends are
    valid and a text label (class and track id) above it, coloured by track id; the first marker
    clears the previous frame's. Invalid keypoints are never drawn. The layout is the cheapest to
    publish (see detection_messages.marker_array). The markers share nested messages (header,
    lifetime, colours): publish the array, do not modify it in place."""
    from unipose_ros.detection_messages import markers_from_specs

    return markers_from_specs(marker_specs_3d(instances, positions, sphere_m, line_m), header, frame_id, lifetime_s)


def marker_array_3d_serialised(instances: Sequence, positions, header, frame_id: str = "", lifetime_s: float = 0.5,
                               sphere_m: float = 0.015, line_m: float = 0.005) -> bytes:
    """marker_array_3d(...), serialised (unipose_ros.cdr)."""
    from unipose_ros.cdr import marker_array_bytes
    from unipose_ros.detection_messages import lifetime_parts

    return marker_array_bytes(marker_specs_3d(instances, positions, sphere_m, line_m), header, frame_id,
                              lifetime_parts(lifetime_s))
