"""Lifecycle transitions and run-time parameter changes of the detector, across processes."""
from __future__ import annotations

import cv2
import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import Image

from rostest_support import (CAMERA, DETECTOR, TEST_MODEL_PARAMS, header, load_bgr, publish_until,
                             same_stamp, sample_images)
from unipose_ros.image_conversion import array_to_image
from unipose_ros.msg import KeypointInstanceArray


def call(probe, srv_type, name, request, node, timeout=60.0):
    client = probe.node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), f"no service {name}\n{node.log()[-3000:]}"
    future = client.call_async(request)
    probe.wait_until(future.done, timeout, f"a reply from {name}", node=node)
    probe.node.destroy_client(client)
    return future.result()


def transition(probe, node, transition_id):
    reply = call(probe, ChangeState, "/unipose/change_state",
                 ChangeState.Request(transition=Transition(id=transition_id)), node, timeout=120)
    assert reply.success, node.log()[-3000:]
    return call(probe, GetState, "/unipose/get_state", GetState.Request(), node).current_state.id


def set_params(probe, node, **values):
    kinds = {bool: ("bool_value", ParameterType.PARAMETER_BOOL),
             int: ("integer_value", ParameterType.PARAMETER_INTEGER),
             float: ("double_value", ParameterType.PARAMETER_DOUBLE),
             str: ("string_value", ParameterType.PARAMETER_STRING)}
    params = []
    for name, value in values.items():
        field, kind = kinds[type(value)]
        params.append(Parameter(name=name, value=ParameterValue(type=kind, **{field: value})))
    return call(probe, SetParameters, "/unipose/set_parameters",
                SetParameters.Request(parameters=params), node).results


def test_lifecycle_transitions_and_runtime_parameters(probe, start_node):
    node = start_node(DETECTOR, {**TEST_MODEL_PARAMS, "autostart": False, "box_threshold": 0.0,
                                 "image_qos": "reliable", "image_qos_depth": 2},
                      {"image": CAMERA})
    camera = probe.node.create_publisher(Image, CAMERA, 10)
    probe.subscribe(KeypointInstanceArray, "/unipose/keypoints")
    bgr = cv2.resize(load_bgr(sample_images(1)[0]), (320, 240))
    frame = iter(range(10_000))

    def detect():
        msg = array_to_image(bgr, "bgr8", header(next(frame)))
        return publish_until(probe, camera, msg, "/unipose/keypoints",
                             lambda m: same_stamp(m.header, msg.header), node=node)

    state = call(probe, GetState, "/unipose/get_state", GetState.Request(), node).current_state
    assert state.id == State.PRIMARY_STATE_UNCONFIGURED
    assert camera.get_subscription_count() == 0  # not subscribed before activation
    assert transition(probe, node, Transition.TRANSITION_CONFIGURE) == State.PRIMARY_STATE_INACTIVE
    assert camera.get_subscription_count() == 0
    assert transition(probe, node, Transition.TRANSITION_ACTIVATE) == State.PRIMARY_STATE_ACTIVE
    assert len(detect().instances) > 1
    # the image QoS came from the parameters (the default is the best-effort sensor-data profile)
    qos = probe.node.get_subscriptions_info_by_topic(CAMERA)[0].qos_profile
    assert qos.reliability == ReliabilityPolicy.RELIABLE and qos.depth in (2, 0)  # depth not always shared

    # run-time parameters: max instances and the score threshold
    assert all(r.successful for r in set_params(probe, node, max_instances=1))
    assert len(detect().instances) == 1
    assert all(r.successful for r in set_params(probe, node, max_instances=0))
    scores = sorted(i.score for i in detect().instances)
    threshold = (scores[0] + scores[-1]) / 2
    assert all(r.successful for r in set_params(probe, node, box_threshold=threshold))
    kept = detect().instances
    assert all(i.score >= threshold for i in kept)
    assert len(kept) < len(scores) or scores[0] == scores[-1]
    assert all(r.successful for r in set_params(probe, node, box_threshold=0.0))
    assert len(detect().instances) > 1
    # out of range and invalid values are refused with a reason; the old value stays
    refused = set_params(probe, node, box_threshold=1.5)
    assert not refused[0].successful
    refused = set_params(probe, node, refine=0.5)
    assert not refused[0].successful and "crop factor >= 1" in refused[0].reason
    refused = set_params(probe, node, prompt="person: nose, nose")
    assert not refused[0].successful and "rejected prompt" in refused[0].reason
    assert all(r.successful for r in set_params(probe, node, prompt="person: nose"))
    assert [k.name for k in detect().instances[0].keypoints] == ["nose"]

    # speed profile at run time: fewer keypoint instances (the tiny model selects 10 -> 2 in
    # "fastest"), a smaller input; back to "accurate" restores the outputs; a typo is refused
    assert all(r.successful for r in set_params(probe, node, max_instances=0))
    accurate = detect()
    assert all(r.successful for r in set_params(probe, node, speed_profile="fastest"))
    fastest = detect()
    assert 1 <= len(fastest.instances) <= 2 < len(accurate.instances)
    assert all(r.successful for r in set_params(probe, node, speed_profile="accurate"))
    again = detect()
    assert [i.score for i in again.instances] == pytest.approx([i.score for i in accurate.instances], abs=1e-6)
    refused = set_params(probe, node, speed_profile="turbo")
    assert not refused[0].successful and "speed_profile must be one of" in refused[0].reason

    # deactivate: unsubscribed, no processing, model kept; activate again works at once
    assert transition(probe, node, Transition.TRANSITION_DEACTIVATE) == State.PRIMARY_STATE_INACTIVE
    probe.wait_until(lambda: camera.get_subscription_count() == 0, 30, "the image unsubscription")
    assert transition(probe, node, Transition.TRANSITION_ACTIVATE) == State.PRIMARY_STATE_ACTIVE
    assert [k.name for k in detect().instances[0].keypoints] == ["nose"]

    # cleanup frees the model; configure loads it again
    assert transition(probe, node, Transition.TRANSITION_DEACTIVATE) == State.PRIMARY_STATE_INACTIVE
    assert transition(probe, node, Transition.TRANSITION_CLEANUP) == State.PRIMARY_STATE_UNCONFIGURED
    assert node.alive()
    with pytest.raises(AssertionError):  # no keypoints without configuration
        probe.wait_until(lambda: camera.get_subscription_count() > 0, 0.5, "no subscriber")
