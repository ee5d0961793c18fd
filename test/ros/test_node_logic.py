"""The node's ROS-free parts: frame slot, rates and throttling, message building, parameters."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from unipose_model.predictor import Instance
from unipose_ros.detection_messages import (ActivePrompt, ClassLayout, PixelProjector, keypoint_array,
                                            marker_array)
from unipose_ros.frame_slot import LatestFrameSlot
from unipose_ros.model_loader import load_predictor, runtime_value
from unipose_ros.parameters import DETECTOR_PARAMETERS, check_choice, descriptor, markdown_table
from unipose_ros.stats import ProblemThrottle, RateLimiter, WindowStats

NAMES = ("nose", "left eye", "right eye")
PROMPT = ActivePrompt("person: nose, left eye, right eye",
                      (ClassLayout("person", NAMES, ((0, 1), (0, 2))), ClassLayout("dog", ("nose",), ())))


def person(score=0.8, dx=0.0):
    kpts = np.array([[100 + dx, 50, score], [90 + dx, 40, score], [110 + dx, 40, 0.05]])
    return Instance("person", 0, score, (80.0 + dx, 30.0, 120.0 + dx, 90.0), kpts, NAMES, ((0, 1), (0, 2)))


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


# ------------------------------------------------------------------------------ frame slot
def test_slot_keeps_only_the_newest_frame_and_counts_drops():
    slot = LatestFrameSlot()
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert slot.take(0) == 3 and slot.take(0) is None
    assert (slot.received, slot.dropped) == (3, 2)


def test_slot_wakes_a_waiting_worker_and_close_releases_it():
    slot = LatestFrameSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    worker.start()
    slot.put("frame")
    worker.join(5.0)
    assert got == ["frame"]
    worker = threading.Thread(target=lambda: got.append(slot.take(30.0)))
    worker.start()
    slot.close()
    worker.join(5.0)
    assert not worker.is_alive() and got[-1] is None
    slot.reopen()
    slot.put("again")
    assert slot.take(0) == "again"


# ------------------------------------------------------------------------------ stats
def test_window_stats_rate_and_values():
    clock = FakeClock()
    stats = WindowStats(window_s=2.0, clock=clock)
    for v in (0.1, 0.2, 0.3, 0.4):
        stats.add(v)
        clock.t += 0.5
    snap = stats.snapshot()
    assert snap["count"] == 4 and snap["rate"] == pytest.approx(2.0) and snap["max"] == 0.4
    clock.t += 10
    assert stats.snapshot()["count"] == 0 and stats.total == 4


def test_problem_throttle_per_kind():
    clock = FakeClock()
    throttle = ProblemThrottle(5.0, clock=clock)
    assert throttle.should_report("data size 10 != 12")
    assert not throttle.should_report("data size 11 != 13")  # same kind, numbers differ
    assert throttle.should_report("unsupported encoding 'x'")  # another kind: at once
    clock.t += 5.1
    assert throttle.should_report("data size 10 != 12")


def test_rate_limiter():
    clock = FakeClock()
    limiter = RateLimiter(0.0, clock=clock)
    limiter.mark()
    assert limiter.wait_time() == 0.0
    limiter.max_rate = 4.0
    limiter.mark()
    assert limiter.wait_time() == pytest.approx(0.25)
    clock.t += 0.3
    assert limiter.wait_time() == 0.0


# ------------------------------------------------------------------------------ messages
def test_keypoint_array_fields():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = keypoint_array([person(0.9), person(0.7, dx=5)], header, (640, 480), PROMPT, "tiny (ref)", 0.05)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    assert (msg.image_width, msg.image_height, msg.prompt, msg.model) == (640, 480, PROMPT.text, "tiny (ref)")
    assert msg.inference_time == pytest.approx(0.05)
    assert [c.name for c in msg.classes] == ["person", "dog"]
    assert list(msg.classes[0].skeleton) == [0, 1, 0, 2] and list(msg.classes[1].keypoint_names) == ["nose"]
    first = msg.instances[0]
    assert (first.label, first.class_index) == ("person", 0) and first.score == pytest.approx(0.9)
    assert (first.x_min, first.y_min, first.x_max, first.y_max) == (80.0, 30.0, 120.0, 90.0)
    assert [(k.name, k.index) for k in first.keypoints] == [("nose", 0), ("left eye", 1), ("right eye", 2)]
    assert (first.keypoints[1].x, first.keypoints[1].y) == (90.0, 40.0)
    # untracked, no depth: no identity, no 3-D position (NaN and invalid, never 0)
    assert first.track_id == -1 and msg.position_frame_id == ""
    assert not any(k.position_valid for k in first.keypoints) and np.isnan(first.keypoints[0].position.z)


def test_markers_image_plane_with_lifetime_and_cleanup():
    header = Header(frame_id="cam")
    markers = marker_array([person(), person(dx=30)], header, PixelProjector(2.0, 0.01, None), (640, 480),
                           lifetime_s=0.75, min_keypoint_score=0.1)
    assert markers.markers[0].action == Marker.DELETEALL
    body = markers.markers[1:]
    # one sphere list and one box line list for all instances, a skeleton and a label per instance
    assert [(m.ns, m.id, m.type) for m in body] == [
        ("keypoints", 0, Marker.SPHERE_LIST), ("box", 0, Marker.LINE_LIST), ("skeleton", 0, Marker.LINE_LIST),
        ("skeleton", 1, Marker.LINE_LIST), ("label", 0, Marker.TEXT_VIEW_FACING), ("label", 1, Marker.TEXT_VIEW_FACING)]
    assert all(m.action == Marker.ADD and m.pose.orientation.w == 1.0 and m.color.a == 1.0 for m in body)
    assert all(m.lifetime.sec == 0 and m.lifetime.nanosec == 750_000_000 for m in body)
    assert all(m.header.frame_id == "cam" for m in markers.markers)
    spheres, box, bones, bones_b, label, label_b = body
    xyz = lambda points: np.array([(p.x, p.y, p.z) for p in points])
    rgb = lambda c: (c.r, c.g, c.b)
    # the 0.05-score keypoint of each instance is hidden; the others in pixels x 0.01 m
    assert xyz(spheres.points) == pytest.approx(
        np.array([(1.0, 0.5, 0.0), (0.9, 0.4, 0.0), (1.3, 0.5, 0.0), (1.2, 0.4, 0.0)]))
    # coloured by keypoint: the same keypoint has the same colour in both instances
    colours = [rgb(c) for c in spheres.colors]
    assert len(colours) == 4 and colours[0] == colours[2] and colours[1] == colours[3] and colours[0] != colours[1]
    assert spheres.scale.x == spheres.scale.y == spheres.scale.z > 0
    # only the link between shown keypoints; one colour per instance
    assert xyz(bones.points) == pytest.approx(np.array([(1.0, 0.5, 0.0), (0.9, 0.4, 0.0)]))
    assert xyz(bones_b.points) == pytest.approx(np.array([(1.3, 0.5, 0.0), (1.2, 0.4, 0.0)]))
    assert not bones.colors and rgb(bones.color) == rgb(label.color) != rgb(bones_b.color) == rgb(label_b.color)
    assert bones.scale.x > 0 and bones.scale.y == bones.scale.z == 0.0
    # each box as four segments, coloured per point like its instance
    corners = [(0.8, 0.3), (1.2, 0.3), (1.2, 0.9), (0.8, 0.9)]
    segments = [corners[k] for j in range(4) for k in (j, (j + 1) % 4)]
    assert np.array([(p.x, p.y) for p in box.points]) == pytest.approx(
        np.array(segments + [(x + 0.3, y) for x, y in segments]))
    assert [rgb(c) for c in box.colors] == [rgb(bones.color)] * 8 + [rgb(bones_b.color)] * 8
    assert label.text == "person 0.80" and (label.pose.position.x, label.pose.position.y) == pytest.approx((0.8, 0.22))
    assert label.scale.z > 0
    # no detections: only the clean-up
    empty = marker_array([], header, PixelProjector(2.0, 0.01, None), (640, 480))
    assert [m.action for m in empty.markers] == [Marker.DELETEALL]


def test_markers_on_camera_rays_and_frame_override():
    info = CameraInfo()
    info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    projector = PixelProjector.from_camera_info(info, depth=3.0, scale=0.01)
    point = projector.project(820.0, 240.0)
    assert (point.x, point.y, point.z) == pytest.approx((3.0, 0.0, 3.0))
    header = Header(frame_id="camera_optical")
    markers = marker_array([person()], header, projector, (640, 480), frame_id="map")
    assert all(m.header.frame_id == "map" for m in markers.markers)
    assert header.frame_id == "camera_optical"  # the input header is untouched
    assert PixelProjector.from_camera_info(CameraInfo(), 2.0, 0.5).intrinsics is None


def test_active_prompt_from_prepared():
    class Group:
        def __init__(self, classes, names, skeleton):
            self.class_indices, self.keypoint_names, self.skeleton = classes, names, skeleton

    class Prepared:
        classes = ("cat", "dog", "person")
        groups = [Group((0, 1), ("nose", "tail"), ((0, 1),)), Group((2,), ("nose",), ())]

    prompt = ActivePrompt.from_prepared("cat, dog, person", Prepared())
    assert [c.name for c in prompt.classes] == ["cat", "dog", "person"]
    assert prompt.classes[1].keypoint_names == ("nose", "tail") and prompt.classes[1].skeleton == ((0, 1),)
    assert prompt.classes[2].keypoint_names == ("nose",)


# ------------------------------------------------------------------------------ parameters
def test_parameter_table_descriptors_and_choices():
    names = {p.name for p in DETECTOR_PARAMETERS}
    assert {"model", "checkpoint", "device", "backend", "precision", "box_threshold", "iou_threshold",
            "max_instances", "short_side", "max_size", "prompt", "publish_annotated", "marker_depth",
            "image_qos", "max_rate", "autostart"} <= names
    for p in DETECTOR_PARAMETERS:
        d = descriptor(p)
        assert d.description and d.name == p.name
        if p.range and isinstance(p.default, float):
            assert d.floating_point_range[0].to_value == p.range[1]
        elif p.range:
            assert d.integer_range[0].from_value == p.range[0]
    assert check_choice("device", "anything") is None
    assert "backend must be one of" in check_choice("backend", "tflite")
    assert "refine must be 0 (off)" in check_choice("refine", 0.5)
    assert check_choice("refine", 0.0) is None and check_choice("refine", -1.0) is None and check_choice("refine", 6.0) is None
    assert "| `box_threshold` | `-1.0` | yes |" in markdown_table()


def test_docs_parameter_table_is_current():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "ROS.md").read_text()
    assert markdown_table() in docs, "docs/ROS.md is stale: run python -m unipose_ros.parameters docs/ROS.md"


def _defaults() -> dict:
    return {p.name: p.default for p in DETECTOR_PARAMETERS}


def test_default_parameters_take_the_model_files_threshold_and_input_size():
    """Started by hand on the bundled model, the node uses the file's threshold (0.3) and the
    input size it was trained at (512), not the library's 0.1 and 800/1333."""
    from unipose_model.model_file import BUNDLED_CHECKPOINT, read_model_file_info

    info = read_model_file_info(BUNDLED_CHECKPOINT)
    params = {**_defaults(), "model": info.model_name, "checkpoint": str(BUNDLED_CHECKPOINT), "device": "cpu"}
    predictor = load_predictor(params)
    assert predictor.box_threshold == pytest.approx(info.postprocess["box_threshold"]) != 0.1
    assert (predictor.short_side, predictor.max_size) == (info.input_size["short_side"], info.input_size["max_size"])
    # set at run time: explicit values win, the sentinels go back to the file's values
    assert runtime_value(predictor, "box_threshold", 0.55) == 0.55
    assert runtime_value(predictor, "box_threshold", -1.0) == pytest.approx(info.postprocess["box_threshold"])
    assert runtime_value(predictor, "short_side", 640) == 640
    assert runtime_value(predictor, "short_side", 0) == info.input_size["short_side"]
    assert runtime_value(predictor, "max_size", 0) is None
    assert runtime_value(predictor, "max_size", -1) == info.input_size["max_size"]
    assert predictor.refine == (info.postprocess.get("refine") or None) and runtime_value(predictor, "refine", 0.0) is None
    assert runtime_value(predictor, "refine", 4.0) == 4.0


def test_sentinels_fall_back_to_library_defaults_for_a_file_without_recommendations():
    from unipose_model.postprocess import DEFAULT_BOX_THRESHOLD

    params = {**_defaults(), "model": "unipose_tiny", "checkpoint": "reference", "text_encoder": "hash",
              "device": "cpu"}
    predictor = load_predictor(params)
    assert predictor.box_threshold == DEFAULT_BOX_THRESHOLD
    assert (predictor.short_side, predictor.max_size, predictor.refine) == (800, 1333, None)
    explicit = load_predictor({**params, "box_threshold": 0.0, "short_side": 256, "max_size": 0})
    assert (explicit.box_threshold, explicit.short_side, explicit.max_size) == (0.0, 256, None)
    assert predictor.compiled is None
    assert load_predictor({**params, "compile": True}).compiled.backend == "inductor"  # compiles at the first frame


def test_startup_visual_prompt_from_parameters(ros_context, tmp_path):
    """support_image/support_keypoints make the bundled 1-shot support the prompt at configure;
    a support that cannot be used is refused with its reason and the text prompt stays."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from unipose_model.model_file import BUNDLED_CHECKPOINT, BUNDLED_SUPPORT_IMAGE, BUNDLED_SUPPORT_KEYPOINTS
    from unipose_model.visual_prompt import VisualPromptError
    from unipose_ros.detector_node import DetectorNode
    from unipose_ros.model_loader import visual_prompt_from_parameters

    assert visual_prompt_from_parameters({"support_image": "", "support_keypoints": ""}) is None
    with pytest.raises(VisualPromptError, match="support_keypoints is empty"):
        visual_prompt_from_parameters({"support_image": BUNDLED_SUPPORT_IMAGE, "support_keypoints": ""})

    def configured(image, keypoints):
        node = DetectorNode(parameter_overrides=[
            Parameter("model", value="unipose_tiny_visual"), Parameter("checkpoint", value=str(BUNDLED_CHECKPOINT)),
            Parameter("device", value="cpu"), Parameter("prompt", value="fly"),
            Parameter("support_image", value=image), Parameter("support_keypoints", value=keypoints)])
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            return node.prompt.text
        finally:
            node.trigger_cleanup()
            node.destroy_node()

    assert configured(BUNDLED_SUPPORT_IMAGE, str(BUNDLED_SUPPORT_KEYPOINTS)) == "<visual prompt: fly, 13 keypoints>"
    (tmp_path / "bad.txt").write_text("head 1 2\n")
    assert configured(BUNDLED_SUPPORT_IMAGE, str(tmp_path / "bad.txt")) == "fly"   # refused: no 'name:'
    assert configured(str(tmp_path / "missing.png"), str(BUNDLED_SUPPORT_KEYPOINTS)) == "fly"


def test_parameters_become_one_settings_object_with_one_auto_rule():
    """Negative = the model file's value (AUTO); 0 keeps its meaning (no cap, off, all); the
    backend's old name 'torch' is the library's 'pytorch'."""
    from unipose_model.settings import AUTO
    from unipose_ros.model_loader import backend_name, settings_from_parameters

    s = settings_from_parameters(_defaults())
    assert (s.box_threshold, s.short_side, s.max_size, s.refine, s.max_instances) == (AUTO, AUTO, AUTO, AUTO, None)
    s = settings_from_parameters({**_defaults(), "box_threshold": 0.4, "short_side": 0, "max_size": 0,
                                  "refine": 0.0, "max_instances": 3})
    assert (s.box_threshold, s.short_side, s.max_size, s.refine, s.max_instances) == (0.4, AUTO, None, None, 3)
    assert _defaults()["backend"] == "pytorch" and backend_name("torch") == "pytorch"
    assert check_choice("backend", "torch") is None  # the old spelling is still accepted
