"""Track ids and 3-D keypoints in the node's messages (unipose_ros/tracks_and_depth.py,
depth_3d.py, detection_messages.py), without a running graph."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from unipose_model.predictor import Instance
from unipose_model.settings import Settings
from unipose_ros.depth_3d import marker_array_3d
from unipose_ros.detection_messages import (ActivePrompt, ClassLayout, PixelProjector, keypoint_array,
                                            marker_array)
from unipose_ros.tracks_and_depth import TracksAndDepth, quaternion_matrix

NAMES = ("nose", "left eye", "right eye")
PROMPT = ActivePrompt("person: nose, left eye, right eye", (ClassLayout("person", NAMES, ((0, 1), (0, 2))),))
FX, CX, CY = 500.0, 319.5, 239.5


def person(score=0.8, dx=0.0, track_id=None):
    kpts = np.array([[100 + dx, 50, score], [90 + dx, 40, score], [110 + dx, 40, score]])
    return Instance("person", 0, score, (80.0 + dx, 30.0, 120.0 + dx, 90.0), kpts, NAMES, ((0, 1), (0, 2)),
                    track_id=track_id)


def header(ms, frame="camera_color_optical_frame"):
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = 10 + ms // 1000, (ms % 1000) * 1_000_000
    return h


def camera_info():
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.k = [FX, 0.0, CX, 0.0, FX, CY, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return info


def depth_image(ms, millimetres=1500, hole=None):
    d = np.full((480, 640), millimetres, np.uint16)
    if hole is not None:
        d[hole] = 0
    return Image(header=header(ms), height=480, width=640, encoding="16UC1", step=1280, data=d.tobytes())


def test_track_ids_and_3d_positions_in_the_keypoint_message():
    extras = TracksAndDepth()
    extras.depth.wait = 0.0
    hole = (slice(35, 45), slice(85, 95))   # no depth around the left eye (90, 40)
    extras.on_depth(depth_image(100, hole=hole))
    tracked = extras.track([person(0.9), person(0.7, dx=200)], PROMPT, True, 0.5, 0.1)
    positions, frame, problem = extras.positions(tracked, header(105), (640, 480), camera_info(), 5)
    assert problem == "" and frame == "camera_color_optical_frame"
    msg = keypoint_array(tracked, header(105), (640, 480), PROMPT, "m", 0.1, positions, frame)
    assert [i.track_id for i in msg.instances] == [1, 2] and msg.position_frame_id == frame
    nose, eye = msg.instances[0].keypoints[0], msg.instances[0].keypoints[1]
    assert nose.position_valid and nose.position.z == pytest.approx(1.5)
    assert nose.position.x == pytest.approx((100 - 0.5 - CX) / FX * 1.5)
    assert not eye.position_valid and np.isnan(eye.position.x)  # a hole: invalid, never 0
    assert extras.diagnostics()["depth_paired"] == "1"


def test_depth_too_far_in_time_is_not_used_and_counted():
    extras = TracksAndDepth()
    extras.depth.wait = 0.0
    extras.depth.set_tolerance(0.02)
    extras.on_depth(depth_image(100))
    positions, frame, _ = extras.positions([person()], header(150), (640, 480), camera_info(), 5)
    assert positions is None and frame == ""
    d = extras.diagnostics()
    assert (d["depth_paired"], d["depth_unpaired"]) == ("0", "1")
    msg = keypoint_array([person()], header(150), (640, 480), PROMPT, "m", 0.1, positions, frame)
    assert msg.position_frame_id == "" and not msg.instances[0].keypoints[0].position_valid


def test_an_unusable_depth_image_or_missing_camera_info_is_reported():
    extras = TracksAndDepth()
    extras.depth.wait = 0.0
    extras.on_depth(depth_image(100))
    positions, _, problem = extras.positions([person()], header(100), (640, 480), None, 5)
    assert positions is None and "CameraInfo" in problem and extras.diagnostics()["depth_rejected"] == "1"


def test_target_frame_without_tf2_keeps_the_camera_frame_and_says_why():
    extras = TracksAndDepth()
    extras.depth.wait = 0.0
    extras.on_depth(depth_image(100))
    positions, frame, problem = extras.positions([person()], header(100), (640, 480), camera_info(), 5,
                                                 target_frame="base_link")
    assert positions is not None and frame == "camera_color_optical_frame"
    assert "base_link" in problem


def test_transform_applies_rotation_and_translation():
    class Stamped:
        class transform:
            class rotation:  # 90 degrees about z
                x, y, z, w = 0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)

            class translation:
                x, y, z = 1.0, 2.0, 3.0

    class Buffer:
        def lookup_transform(self, target, source, time):
            return Stamped

    extras = TracksAndDepth()
    extras.tf_buffer = Buffer()
    moved, problem = extras._transform([(np.array([[1.0, 0.0, 0.0]]), np.array([True]))], "cam", "base",
                                       header(0).stamp)
    assert problem == "" and moved[0][0][0] == pytest.approx([1.0, 3.0, 3.0])
    assert quaternion_matrix(0, 0, 0, 1) == pytest.approx(np.eye(3))


def test_tracks_restart_on_a_prompt_change_and_low_scores_only_continue_tracks():
    extras = TracksAndDepth()
    other = ActivePrompt("person", PROMPT.classes)
    assert [i.track_id for i in extras.track([person(0.9)], PROMPT, True, 0.5, 0.1)] == [1]
    # a weak detection keeps track 1 alive without being published (box_threshold still holds)
    assert extras.track([person(0.3, dx=2), person(0.3, dx=300)], PROMPT, True, 0.5, 0.1) == []
    assert [i.track_id for i in extras.track([person(0.9, dx=4)], PROMPT, True, 0.5, 0.1)] == [1]
    assert [i.track_id for i in extras.track([person(0.9, dx=300)], other, True, 0.5, 0.1)] == [1]  # restarted
    assert extras.active_tracks == 1
    # tracking off: no ids, the user's threshold applies
    out = extras.track([person(0.9), person(0.3, dx=100)], PROMPT, False, 0.5, 0.1)
    assert [i.track_id for i in out] == [None]

    class P:  # the floor is per call: the predictor's settings are never changed
        settings = Settings(box_threshold=0.5)
        floors = []

        def predict(self, image, prompt, color, score_floor):
            self.floors.append(score_floor)
            return [person(0.3)]
    p = P()
    found, threshold = extras.detect(p, PROMPT, None, "rgb", True, 0.1)
    assert [i.score for i in found] == [0.3] and threshold == 0.5
    assert extras.detect(p, PROMPT, None, "rgb", False, 0.1)[1] == 0.5
    assert p.floors == [0.1, None] and p.settings.box_threshold == 0.5


def test_markers_are_coloured_by_track_id_and_3d_markers_skip_invalid_points():
    h = header(0)
    a = marker_array([person(track_id=3)], h, PixelProjector(2.0, 0.01, None), (640, 480))
    b = marker_array([person(track_id=1), person(track_id=3, dx=50)], h, PixelProjector(2.0, 0.01, None), (640, 480))
    colour = lambda m: (m.color.r, m.color.g, m.color.b)
    rgb = lambda c: (c.r, c.g, c.b)
    skeleton = lambda arr, i: next(m for m in arr.markers if m.ns == "skeleton" and m.id == i)
    label = lambda arr, i: next(m for m in arr.markers if m.ns == "label" and m.id == i)
    assert colour(skeleton(a, 0)) == colour(skeleton(b, 1))   # id 3 keeps its colour in another frame
    assert colour(skeleton(b, 0)) != colour(skeleton(b, 1))
    assert colour(label(b, 1)) == colour(skeleton(b, 1))
    box = next(m for m in b.markers if m.ns == "box")
    assert {rgb(c) for c in box.colors[8:]} == {colour(skeleton(a, 0))}  # the second box: track 3's colour
    assert label(a, 0).text.startswith("person #3")
    points = np.array([[0.0, 0.0, 1.5], [np.nan] * 3, [0.1, 0.0, 1.5]])
    m3 = marker_array_3d([person(track_id=3)], [(points, np.array([True, False, True]))], h)
    assert m3.markers[0].action == Marker.DELETEALL
    spheres, bones, label3 = m3.markers[1:]
    assert np.array([(p.x, p.y, p.z) for p in spheres.points]) == pytest.approx(np.array([(0, 0, 1.5), (0.1, 0, 1.5)]))
    # only the nose-right eye link has both ends; nothing is drawn at the invalid point (nor at 0)
    assert np.array([(p.x, p.y, p.z) for p in bones.points]) == pytest.approx(np.array([(0, 0, 1.5), (0.1, 0, 1.5)]))
    assert label3.text == "person #3" and spheres.header.frame_id == "camera_color_optical_frame"
    assert label3.pose.position.z == pytest.approx(1.5) and label3.pose.position.x == pytest.approx(0.05)
    assert rgb(spheres.colors[0]) == colour(bones) == colour(skeleton(a, 0)) == colour(label3)  # track 3's colour
    # two instances: one sphere list, plus a skeleton and a label each
    two = marker_array_3d([person(track_id=3), person(track_id=1, dx=50)],
                          [(points, np.array([True, False, True]))] * 2, h)
    assert [(m.ns, m.id) for m in two.markers[1:]] == [("keypoints_3d", 0), ("skeleton_3d", 0), ("skeleton_3d", 1),
                                                       ("label_3d", 0), ("label_3d", 1)]
    assert len(two.markers[1].points) == 4 and rgb(two.markers[1].colors[0]) != rgb(two.markers[1].colors[2])
    assert colour(two.markers[2]) != colour(two.markers[3])
    # an instance without any valid point draws nothing, not even a label
    none = marker_array_3d([person(track_id=3)], [(points, np.zeros(3, bool))], h)
    assert [m.action for m in none.markers] == [Marker.DELETEALL]
