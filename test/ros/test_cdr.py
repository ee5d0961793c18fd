"""The serialised outputs (unipose_ros/cdr.py) are what rclpy reads back as the message objects of
the same detections: keypoint arrays, image-plane markers and 3-D markers, over scenes chosen to
move every string and sequence through each alignment residue."""
from __future__ import annotations

import math

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from unipose_model.predictor import Instance
from unipose_ros import cdr
from unipose_ros.depth_3d import marker_array_3d, marker_array_3d_serialised
from unipose_ros.detection_messages import (ActivePrompt, ClassLayout, PixelProjector, keypoint_array,
                                            keypoint_array_serialised, marker_array, marker_array_serialised)
from unipose_ros.msg import KeypointInstanceArray

NAMES = ("nose", "left eye", "r", "tail tip", "ä", "antenna_left_base")
SKELETON = ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 5), (1, 9))  # (1, 9): out of range, skipped


def header(frame_id: str, sec: int = 1700000000, nanosec: int = 123456789) -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def scene(seed: int, n: int):
    """n instances with random keypoints (some hidden, some names missing), tracks and depth."""
    rng = np.random.default_rng(seed)
    label = "thing" + "x" * (seed % 4)   # label lengths through every residue
    out, positions = [], []
    for i in range(n):
        k = int(rng.integers(1, len(NAMES) + 1))
        kpts = np.column_stack([rng.uniform(0, 640, k), rng.uniform(0, 480, k), rng.uniform(0, 1, k)])
        names = NAMES[:max(0, k - int(rng.integers(0, 2)))]  # sometimes one name short: its index is the name
        inst = Instance(label, i % 2, float(rng.uniform(0.3, 1.0)), tuple(rng.uniform(0, 400, 4)), kpts, names,
                        SKELETON)
        inst.track_id = None if i % 3 == 2 else int(rng.integers(1, 40))
        out.append(inst)
        valid = rng.uniform(size=k) > 0.3
        positions.append((rng.uniform(-1, 3, (k, 3)), valid))
    return out, positions


PROMPT = ActivePrompt("thing, thingx: nose, left eye", (ClassLayout("thing", NAMES, SKELETON),
                                                        ClassLayout("thingx", NAMES[:2], ((0, 1),))))


@pytest.mark.parametrize("seed", range(8))
def test_keypoint_arrays_read_back_as_the_message_objects(seed):
    instances, positions = scene(seed, seed % 5)
    frame = "cam" + "_" * seed
    for where in (positions, None):  # with and without depth
        args = (instances, header(frame), (640, 480), PROMPT, "model " * (seed % 3), 0.01 * seed, where,
                "optical" * (seed % 2))
        data = keypoint_array_serialised(*args)
        reference = keypoint_array(*args)
        assert cdr.same_as_serialised(data, reference)
        assert len(data) == len(serialize_message(reference))  # the same padding, too


@pytest.mark.parametrize("seed", range(8))
def test_marker_arrays_read_back_as_the_message_objects(seed):
    from visualization_msgs.msg import MarkerArray

    instances, positions = scene(seed, seed % 5)
    projector = (PixelProjector(2.0, 0.002, None) if seed % 2
                 else PixelProjector(1.5, 0.0, (600.0, 600.0, 320.0, 240.0)))
    for args in [(instances, header("c" * seed), projector, (640, 480), 0.25 * seed, "map" * (seed % 2), 0.5)]:
        data = marker_array_serialised(*args)
        reference = marker_array(*args)
        assert cdr.same_as_serialised(data, reference)
        assert len(data) == len(serialize_message(reference))
        assert len(deserialize_message(data, MarkerArray).markers) == len(reference.markers)
    args = (instances, positions, header("c" * seed), "frame" * (seed % 3), 0.1 * seed)
    assert cdr.same_as_serialised(marker_array_3d_serialised(*args), marker_array_3d(*args))


def test_missing_positions_read_back_as_nan_and_invalid():
    instances, positions = scene(3, 2)
    data = keypoint_array_serialised(instances, header("cam"), (640, 480), PROMPT, "m", 0.0, positions, "cam")
    msg = deserialize_message(data, KeypointInstanceArray)
    for inst, (xyz, valid) in zip(msg.instances, positions):
        for kp, p, ok in zip(inst.keypoints, xyz, valid):
            assert kp.position_valid == bool(ok)
            got = (kp.position.x, kp.position.y, kp.position.z)
            assert got == tuple(p) if ok else all(math.isnan(v) for v in got)
    assert [i.track_id for i in msg.instances] == [-1 if i.track_id is None else i.track_id for i in instances]


def test_the_comparison_sees_a_changed_field():
    # the check the node relies on must not pass everything
    instances, positions = scene(5, 3)
    args = (instances, header("cam"), (640, 480), PROMPT, "m", 0.0, positions, "cam")
    data = keypoint_array_serialised(*args)
    other = keypoint_array(*args)
    other.instances[1].keypoints[0].x += 1.0
    assert not cdr.same_as_serialised(data, other)
    nan_made_valid = keypoint_array(*args)
    invalid = next(kp for inst in nan_made_valid.instances for kp in inst.keypoints if not kp.position_valid)
    invalid.position.x = 0.0
    assert not cdr.same_as_serialised(data, nan_made_valid)


def test_padding_is_zero_and_the_installed_definitions_are_the_known_ones():
    assert cdr.matches_rclpy()
    # a label of length 1 leaves 3 padding bytes before class_index: written as zeros
    inst = Instance("a", 0, 0.5, (0.0, 0.0, 1.0, 1.0), np.zeros((1, 3)), ("n",), ())
    data = keypoint_array_serialised([inst], header(""), (1, 1), ActivePrompt("a", ()), "", 0.0)
    at = data.index(b"a\x00") + 2
    assert data[at:at + 2] == b"\x00\x00"
