"""The detector node's own handling of issue 19's inputs, in process (items 1 and 7): a very thin
frame is processed, not "processing failed"; a rejected prompt names what the loaded model knows
and echoes at most a capped piece of a huge prompt on ~/active_prompt."""
from __future__ import annotations

import time

import numpy as np
import pytest

from rostest_support import header


@pytest.fixture(scope="module")
def node(ros_context):
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from unipose_model.model_file import BUNDLED_CHECKPOINT
    from unipose_ros.detector_node import DetectorNode

    node = DetectorNode(parameter_overrides=[
        Parameter("model", value="unipose_tiny_visual"), Parameter("checkpoint", value=str(BUNDLED_CHECKPOINT)),
        Parameter("device", value="cpu"), Parameter("prompt", value="fly")])
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    latched = []
    node._publish_active = latched.append  # what ~/active_prompt would latch
    node.latched = latched
    yield node
    node.trigger_cleanup()
    node.destroy_node()


def test_a_very_thin_frame_is_processed(node):
    from rclpy.serialization import deserialize_message

    from unipose_ros.image_conversion import array_to_image
    from unipose_ros.msg import KeypointInstanceArray

    published = []

    def publish(self, m):  # the node publishes the serialised form (unipose_ros.cdr)
        published.append(deserialize_message(m, KeypointInstanceArray) if isinstance(m, bytes) else m)

    node._pubs["keypoints"] = type("Pub", (), {"publish": publish})()
    for shape in [(1, 3000, 3), (2, 4000, 3)]:
        msg = array_to_image(np.full(shape, 120, np.uint8), "bgr8", header(1))
        node._process(msg, time.monotonic())  # was: ValueError -> "processing failed"
    assert len(published) == 2 and node._bad_frames == 0
    assert (published[0].image_width, published[0].image_height) == (3000, 1)


def test_rejected_prompts_name_the_models_categories_and_are_capped(node):
    ok, reason = node._apply_prompt("zebra", "topic")
    assert not ok and "fly" in reason and "cat, dog" not in reason, reason
    assert node.latched[-1].startswith("error: ")
    ok, reason = node._apply_prompt("a" * 100_000, "topic")
    assert not ok and "(100,000 characters)" in reason
    assert len(node.latched[-1]) < 1000 and len(reason) < 1000, len(node.latched[-1])
    assert node.prompt.text == "fly"  # still in force


def test_the_serialised_outputs_and_the_fallback_publish_the_same_detections(node):
    # the node writes its outputs serialised (unipose_ros.cdr) and falls back to message objects
    # where rclpy would read the bytes differently: both must publish the same keypoints
    import cv2
    from rclpy.parameter import Parameter
    from rclpy.serialization import deserialize_message, serialize_message

    from unipose_model.model_file import BUNDLED_VIDEO
    from unipose_ros import cdr
    from unipose_ros.image_conversion import array_to_image
    from unipose_ros.msg import KeypointInstanceArray

    video = cv2.VideoCapture(str(BUNDLED_VIDEO))
    ok, frame = video.read()
    video.release()
    assert ok
    published = []
    node._pubs["keypoints"] = type("Pub", (), {"publish": lambda self, m: published.append(m)})()
    assert node._serialised  # what on_configure found here
    tracking = node.get_parameter("tracking").value
    node.set_parameters([Parameter("tracking", value=False)])  # (a second frame would confirm track ids)
    try:
        for serialised in (True, False):
            node._serialised = serialised
            node._process(array_to_image(frame, "bgr8", header(7)), time.monotonic())
    finally:
        node._serialised = True
        node.set_parameters([Parameter("tracking", value=tracking)])
    data, message = published
    assert isinstance(data, bytes) and isinstance(message, KeypointInstanceArray)
    from_bytes = deserialize_message(data, KeypointInstanceArray)
    from_objects = deserialize_message(serialize_message(message), KeypointInstanceArray)
    assert len(from_bytes.instances) == 2  # the two flies
    assert cdr.same_message(from_bytes.instances, from_objects.instances)
    assert cdr.same_message(from_bytes.classes, from_objects.classes)
    assert from_bytes.header == from_objects.header and from_bytes.prompt == from_objects.prompt == "fly"
