"""The cheap message construction (unipose_ros/message_construction.py) gives the same messages as
the generated constructors, serialised alike, and copies that do not alias what they replace."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from unipose_model.predictor import Instance
from unipose_ros import message_construction as mc
from unipose_ros.detection_messages import ActivePrompt, ClassLayout, keypoint_array


@pytest.mark.skipif(os.environ.get("ROS_PYTHON_CHECK_FIELDS") == "1",
                    reason="with field checks on, the constructors (which check) are used on purpose")
def test_the_generated_layout_is_recognised_so_the_fast_path_is_used():
    # if rosidl changes its layout the module falls back to the constructors (the other tests here
    # pass either way, e.g. with ROS_PYTHON_CHECK_FIELDS=1); this says it did
    assert mc.DIRECT


def test_points_poses_and_vectors_equal_the_constructors_and_survive_serialisation():
    p = mc.point(1.5, -2.25, 3.0)
    assert p == Point(x=1.5, y=-2.25, z=3.0) and type(p) is Point
    assert deserialize_message(serialize_message(p), Point) == p
    assert mc.vector3(0.1, 0.0, 2.0) == Vector3(x=0.1, y=0.0, z=2.0)
    q = Quaternion(w=1.0)
    pose = mc.pose(p, q)
    assert pose == Pose(position=Point(x=1.5, y=-2.25, z=3.0), orientation=Quaternion(w=1.0))
    assert deserialize_message(serialize_message(pose), Pose) == pose
    assert mc.points([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]) == [Point(x=0.0, y=1.0, z=2.0), Point(x=3.0, y=4.0, z=5.0)]
    nan = mc.point(math.nan, math.nan, math.nan)
    back = deserialize_message(serialize_message(nan), Point)
    assert all(math.isnan(v) for v in (back.x, back.y, back.z))


def test_keypoints_equal_the_constructor():
    from unipose_ros.msg import Keypoint

    make = mc.keypoint_factory()
    got = make(["nose", "left wrist"], [[1.0, 2.0, 0.5], [12.5, 40.0, 0.75]],
               [(mc.point(math.nan, math.nan, math.nan), False), (mc.point(0.1, 0.2, 1.5), True)])
    expected = Keypoint(name="left wrist", index=1, x=12.5, y=40.0, score=0.75,
                        position=Point(x=0.1, y=0.2, z=1.5), position_valid=True)
    assert got[1] == expected and len(got) == 2
    assert (got[0].name, got[0].index, got[0].position_valid) == ("nose", 0, False)
    assert deserialize_message(serialize_message(got[1]), Keypoint) == expected


def test_like_copies_a_message_and_replaces_only_the_named_fields():
    template = Marker(ns="a", id=1, type=Marker.SPHERE_LIST, text="t")
    template.header = Header(frame_id="cam")
    template.color = ColorRGBA(r=1.0, a=1.0)
    copy = mc.like(template, ns="b", points=[mc.point(1.0, 2.0, 3.0)])
    assert type(copy) is Marker and copy is not template
    assert (copy.ns, copy.id, copy.type, copy.text, copy.header.frame_id) == ("b", 1, Marker.SPHERE_LIST, "t", "cam")
    assert template.ns == "a" and template.points == []  # the template keeps its own fields
    expected = Marker(ns="b", id=1, type=Marker.SPHERE_LIST, text="t", header=Header(frame_id="cam"),
                      color=ColorRGBA(r=1.0, a=1.0), points=[Point(x=1.0, y=2.0, z=3.0)])
    assert copy == expected
    array = MarkerArray(markers=[copy])
    assert deserialize_message(serialize_message(array), MarkerArray) == MarkerArray(markers=[expected])


def test_keypoint_array_with_positions_is_what_the_constructors_give():
    """The whole message, against one built field by field with the generated constructors."""
    from unipose_ros.msg import Keypoint, KeypointInstance

    names = ("nose", "left eye")
    kpts = np.array([[10.0, 20.0, 0.9], [12.0, 18.0, 0.4]])
    inst = Instance("person", 0, 0.8, (5.0, 6.0, 30.0, 40.0), kpts, names, ((0, 1),), track_id=4)
    prompt = ActivePrompt("person", (ClassLayout("person", names, ((0, 1),)),))
    positions = [(np.array([[0.1, 0.2, 1.5], [np.nan] * 3]), np.array([True, False]))]
    msg = keypoint_array([inst], Header(frame_id="cam"), (64, 48), prompt, "m", 0.1, positions, "cam")
    got = deserialize_message(serialize_message(msg), type(msg))
    expected = KeypointInstance(label="person", class_index=0, score=0.8, track_id=4, x_min=5.0, y_min=6.0,
                                x_max=30.0, y_max=40.0, keypoints=[
                                    Keypoint(name="nose", index=0, x=10.0, y=20.0, score=0.9,
                                             position=Point(x=0.1, y=0.2, z=1.5), position_valid=True),
                                    Keypoint(name="left eye", index=1, x=12.0, y=18.0, score=0.4,
                                             position=Point(x=math.nan, y=math.nan, z=math.nan))])
    a, b = got.instances[0], deserialize_message(serialize_message(expected), KeypointInstance)
    assert (a.label, a.track_id, a.x_max) == (b.label, b.track_id, b.x_max) and a.score == b.score
    assert [(k.name, k.index, k.x, k.y, k.score, k.position_valid) for k in a.keypoints] == \
        [(k.name, k.index, k.x, k.y, k.score, k.position_valid) for k in b.keypoints]
    assert a.keypoints[0].position == b.keypoints[0].position
    assert all(math.isnan(v) for v in (a.keypoints[1].position.x, a.keypoints[1].position.z))
