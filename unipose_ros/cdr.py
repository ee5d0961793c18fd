"""The node's busiest messages written straight to their serialised form (CDR), from arrays.

rclpy serialises a message object field by field in C, but reaches every nested message through
Python attribute lookups: ~15 us per Marker and ~0.7 us per Point or ColorRGBA, half of the node's
per-frame overhead with tracking and 3-D on (docs/BENCHMARKS.md, "ROS node"). A publisher also
takes the serialised bytes themselves (rclpy's publish_raw, which rosbag2's writer takes too), so
the keypoint array and the markers are written here: numpy arrays for the point, colour and
keypoint values, cached bytes for the constant parts. rclpy reads the bytes back as the same
message, field for field, and they are as long as rclpy's own serialisation (test/ros/test_cdr.py;
the bytes themselves differ only in alignment padding, which is zero here and uninitialised in
rmw's). The node and `unipose bag` check the read-back once (`matches_rclpy`) and fall back to
message objects where an installation's message definitions differ.

CDR as rmw writes it for ROS 2 (XCDR1, little-endian): a 4-byte encapsulation header, then every
primitive aligned to its own size counted from the end of that header; a string is a uint32
length (counting its terminating NUL), the UTF-8 bytes and the NUL; a sequence is a uint32 count
and the elements.
"""
from __future__ import annotations

import struct
from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np

ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR, little-endian
_PAD = tuple(bytes(n) for n in range(8))
_U32 = struct.Struct("<I")
_I32X3 = struct.Struct("<iii")
_STAMP = struct.Struct("<iI")
# Marker: pose (position, orientation), scale, colour, lifetime (sec, nanosec), frame_locked
_MARKER_FIXED = struct.Struct("<10d4fiI?")
# KeypointInstance after its label: class_index, score, track_id, box
_INSTANCE_FIXED = struct.Struct("<Ifi4f")


def _align(buf: bytearray, n: int) -> None:
    """Pad the payload (`buf` holds it without the encapsulation header) to a multiple of n."""
    rest = len(buf) % n
    if rest:
        buf += _PAD[n - rest]


@lru_cache(maxsize=4096)
def cdr_string(text: str) -> bytes:
    data = text.encode()
    return _U32.pack(len(data) + 1) + data + b"\0"


def _string(buf: bytearray, text: str) -> None:
    _align(buf, 4)
    buf += cdr_string(text)


def header_bytes(header, frame_id: str = "") -> bytes:
    """std_msgs/Header (stamp, frame_id; `frame_id` replaces the header's own when given), to be
    written at a 4-aligned offset."""
    return _STAMP.pack(header.stamp.sec, header.stamp.nanosec) + cdr_string(frame_id or header.frame_id)


# --------------------------------------------------------------------------------------- markers
class MarkerSpec(NamedTuple):
    """What varies between the node's markers; everything else is the template's (identity
    orientation, the frame's header, the lifetime, empty texture and mesh)."""

    ns: str = ""
    id: int = 0
    type: int = 0
    action: int = 0
    position: tuple = (0.0, 0.0, 0.0)
    scale: tuple = (0.0, 0.0, 0.0)
    color: tuple = (0.0, 0.0, 0.0, 0.0)
    points: np.ndarray | None = None   # (N, 3) float64
    colors: np.ndarray | None = None   # (N, 4) r, g, b, a in [0, 1]
    text: str = ""


def _constant_part(write, start: int) -> tuple[bytes, ...]:
    """Bytes `write(buf)` appends, for each residue of the start offset modulo `start`."""
    out = []
    for residue in range(start):
        buf = bytearray(residue)
        write(buf)
        out.append(bytes(buf[residue:]))
    return tuple(out)


def _texture_and_uv(buf: bytearray) -> None:
    _string(buf, "")                        # texture_resource
    _align(buf, 4)
    buf += _STAMP.pack(0, 0)                # texture: sensor_msgs/CompressedImage
    _string(buf, "")                        #   header.frame_id
    _string(buf, "")                        #   format
    _align(buf, 4)
    buf += _U32.pack(0)                     #   data
    buf += _U32.pack(0)                     # uv_coordinates


def _mesh(buf: bytearray) -> None:
    _string(buf, "")                        # mesh_resource
    _string(buf, "")                        # mesh_file.filename
    _align(buf, 4)
    buf += _U32.pack(0)                     # mesh_file.data
    buf += b"\0"                            # mesh_use_embedded_materials


_TEXTURE_AND_UV = _constant_part(_texture_and_uv, 4)
_MESH = _constant_part(_mesh, 4)


def marker_array_bytes(specs: Sequence[MarkerSpec], header, frame_id: str = "",
                       lifetime: tuple[int, int] = (0, 0)) -> bytes:
    """visualization_msgs/MarkerArray of `specs`, serialised. `lifetime`: (sec, nanosec)."""
    head = header_bytes(header, frame_id)
    buf = bytearray(_U32.pack(len(specs)))
    for spec in specs:
        _align(buf, 4)
        buf += head
        _string(buf, spec.ns)
        _align(buf, 4)
        buf += _I32X3.pack(spec.id, spec.type, spec.action)
        _align(buf, 8)
        buf += _MARKER_FIXED.pack(*spec.position, 0.0, 0.0, 0.0, 1.0, *spec.scale, *spec.color, *lifetime, False)
        _align(buf, 4)
        points = spec.points
        if points is None or not len(points):
            buf += _U32.pack(0)
        else:
            buf += _U32.pack(len(points))
            _align(buf, 8)
            buf += np.ascontiguousarray(points, dtype="<f8").tobytes()
        colors = spec.colors
        if colors is None or not len(colors):
            buf += _U32.pack(0)
        else:
            buf += _U32.pack(len(colors))
            buf += np.ascontiguousarray(colors, dtype="<f4").tobytes()
        buf += _TEXTURE_AND_UV[0]  # (aligned to 4 after the colours)
        buf += cdr_string(spec.text)
        buf += _MESH[len(buf) % 4]
    return ENCAPSULATION + bytes(buf)


# -------------------------------------------------------------------------------- keypoint array
class InstanceRow(NamedTuple):
    """One KeypointInstance's values: the keypoints as arrays, everything else as Python values."""

    label: str
    class_index: int
    score: float
    track_id: int
    box: tuple
    names: tuple
    keypoints: np.ndarray   # (K, 3) x, y, score
    positions: np.ndarray   # (K, 3) metres, NaN where invalid
    valid: np.ndarray       # (K,) bool


@lru_cache(maxsize=256)
def _keypoint_list_layout(names: tuple, residue: int):
    """A KeypointInstance's `keypoints` sequence for these names, written from an offset with
    this residue modulo 8: (the bytes with zero values, byte positions of x/y/score, of the
    position's x/y/z, of position_valid)."""
    buf = bytearray(residue)
    buf += _U32.pack(len(names))
    f32_at, f64_at, bool_at = [], [], []
    for k, name in enumerate(names):
        _string(buf, name)
        _align(buf, 4)
        buf += _U32.pack(k)
        f32_at.append(len(buf) - residue)
        buf += _PAD[4] * 3
        _align(buf, 8)
        f64_at.append(len(buf) - residue)
        buf += _PAD[4] * 6
        bool_at.append(len(buf) - residue)
        buf += b"\0"
    template = np.frombuffer(bytes(buf[residue:]), dtype=np.uint8)
    f32_idx = (np.asarray(f32_at, dtype=np.intp)[:, None] + np.arange(12)).ravel()
    f64_idx = (np.asarray(f64_at, dtype=np.intp)[:, None] + np.arange(24)).ravel()
    return template, f32_idx, f64_idx, np.asarray(bool_at, dtype=np.intp)


@lru_cache(maxsize=64)
def _classes_and_strings(classes: tuple, prompt: str, model: str) -> bytes:
    """The classes sequence and the prompt and model strings, from a 4-aligned offset (nothing in
    them is 8-aligned, so their bytes are the same from any such offset)."""
    buf = bytearray()
    buf += _U32.pack(len(classes))
    for layout in classes:
        _string(buf, layout.name)
        _align(buf, 4)
        buf += _U32.pack(len(layout.keypoint_names))
        for name in layout.keypoint_names:
            _string(buf, name)
        flat = [int(i) for pair in layout.skeleton for i in pair]
        _align(buf, 4)
        buf += _U32.pack(len(flat)) + np.asarray(flat, dtype="<u4").tobytes()
    _string(buf, prompt)
    _string(buf, model)
    return bytes(buf)


def keypoint_array_bytes(rows: Sequence[InstanceRow], header, image_size: tuple[int, int], classes: tuple,
                         prompt: str, model: str, inference_time: float, position_frame_id: str) -> bytes:
    """unipose_ros/KeypointInstanceArray, serialised (detection_messages.keypoint_array's fields)."""
    buf = bytearray(header_bytes(header))
    _align(buf, 4)
    buf += struct.pack("<II", int(image_size[0]), int(image_size[1]))
    _string(buf, position_frame_id)
    _align(buf, 4)
    buf += _U32.pack(len(rows))
    for row in rows:
        _string(buf, row.label)
        _align(buf, 4)
        buf += _INSTANCE_FIXED.pack(row.class_index, row.score, row.track_id, *row.box)
        template, f32_idx, f64_idx, bool_idx = _keypoint_list_layout(row.names, len(buf) % 8)
        block = template.copy()
        block[f32_idx] = np.ascontiguousarray(row.keypoints, dtype="<f4").view(np.uint8).ravel()
        block[f64_idx] = np.ascontiguousarray(row.positions, dtype="<f8").view(np.uint8).ravel()
        block[bool_idx] = row.valid
        buf += block.tobytes()
    _align(buf, 4)
    buf += _classes_and_strings(classes, prompt, model)
    _align(buf, 4)
    buf += struct.pack("<f", inference_time)
    return ENCAPSULATION + bytes(buf)


# ------------------------------------------------------------------------------------- the check


def same_as_serialised(data: bytes, message) -> bool:
    """Whether rclpy reads `data` as `message` (both read back from their serialised form, so that
    float32 fields are rounded alike)."""
    from rclpy.serialization import deserialize_message, serialize_message

    cls = type(message)
    return same_message(deserialize_message(data, cls), deserialize_message(serialize_message(message), cls))


def same_message(a, b) -> bool:
    """Field-by-field equality of two ROS messages in which NaN equals NaN (a missing 3-D position
    is NaN, and the messages' own == says NaN != NaN). (Their serialised bytes cannot be compared
    directly: rmw leaves alignment padding uninitialised.)"""
    if hasattr(a, "get_fields_and_field_types"):
        return type(a) is type(b) and all(same_message(getattr(a, f), getattr(b, f))
                                          for f in a.get_fields_and_field_types())
    if isinstance(a, float) or isinstance(b, float):
        return a == b or (a != a and b != b)
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        a, b = list(a), list(b)
    except TypeError:
        return a == b
    return len(a) == len(b) and all(same_message(x, y) for x, y in zip(a, b))


@lru_cache(maxsize=1)
def matches_rclpy() -> bool:
    """Whether rclpy reads this module's bytes back as the messages they stand for, with the
    installed message definitions (the ones it was written for). Checked once per process."""
    try:
        from std_msgs.msg import Header

        from unipose_ros.depth_3d import marker_array_3d, marker_array_3d_serialised
        from unipose_ros.detection_messages import (ActivePrompt, ClassLayout, PixelProjector, keypoint_array,
                                                    keypoint_array_serialised, marker_array,
                                                    marker_array_serialised)
    except ImportError:  # pragma: no cover - no ROS message packages
        return False

    class Probe(NamedTuple):
        label: str
        class_index: int
        score: float
        box: tuple
        keypoints: np.ndarray
        keypoint_names: tuple
        skeleton: tuple
        track_id: int | None

    header = Header(frame_id="probe_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    prompt = ActivePrompt("thing", (ClassLayout("thing", ("a", "bc"), ((0, 1),)),))
    kpts = np.array([[10.0, 20.0, 0.9], [30.5, 40.25, 0.1]])
    probes = [Probe("thing", 0, 0.8, (1.0, 2.0, 50.0, 60.0), kpts, ("a", "bc"), ((0, 1),), 3)]
    positions = [(np.array([[0.1, 0.2, 1.5], [0.0, 0.0, 0.0]]), np.array([True, False]))]
    projector = PixelProjector(2.0, 0.002, None)
    pairs = [(keypoint_array_serialised, keypoint_array, (probes, header, (64, 48), prompt, "m", 0.25, positions,
                                                           "cam")),
             (marker_array_serialised, marker_array, (probes, header, projector, (64, 48))),
             (marker_array_3d_serialised, marker_array_3d, (probes, positions, header))]
    try:
        return all(same_as_serialised(serialised(*args), message(*args)) for serialised, message, args in pairs)
    except Exception:  # pragma: no cover - a definition this module does not know
        return False
