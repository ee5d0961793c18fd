"""The detector node with depth and tracking across processes: 3-D keypoints from an aligned depth
image paired by stamp, unpaired frames counted in /diagnostics, track ids kept between frames."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from rostest_support import (CAMERA, DETECTOR, TEST_MODEL_PARAMS, NodeProcess, load_bgr, ros_args,
                             same_stamp, sample_images)
from unipose_ros.image_conversion import array_to_image
from unipose_ros.msg import KeypointInstanceArray

DEPTH = "/camera/aligned_depth_to_color/image_raw"
INFO = "/camera/color/camera_info"
W, H = 160, 120   # small frames: best-effort depth messages must arrive whole on a loaded machine


def stamped(sec, nanosec=0, frame="camera_color_optical_frame"):
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame)


def depth_msg(h, millimetres=1500):
    d = np.full((H, W), millimetres, np.uint16)
    return Image(header=h, height=H, width=W, encoding="16UC1", step=2 * W, data=d.tobytes())


def camera_info():
    info = CameraInfo(header=stamped(0), width=W, height=H, distortion_model="plumb_bob")
    info.k = [150.0, 0.0, 79.5, 0.0, 150.0, 59.5, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return info


@pytest.fixture(scope="module")
def rgbd_detector(tmp_path_factory):
    params = {**TEST_MODEL_PARAMS, "prompt": "person", "box_threshold": 0.0, "max_instances": 3,
              "image_qos": "reliable", "use_depth": True, "depth_tolerance": 0.02, "tracking": True,
              "diagnostics_period": 0.2}
    node = NodeProcess(DETECTOR, ros_args(params, {"image": CAMERA, "depth_image": DEPTH, "camera_info": INFO}),
                       tmp_path_factory.mktemp("logs"), name="rgbd")
    yield node
    node.stop()


def send_until(probe, pubs, image, depth, match, node, timeout=90.0):
    """Publish CameraInfo, depth and image until a keypoint message satisfies `match`."""
    info_pub, depth_pub, image_pub = pubs
    probe.wait_for_subscriber(image_pub, timeout, node=node)
    probe.wait_for_subscriber(depth_pub, timeout, node=node)
    start = len(probe.messages("/unipose/keypoints"))
    deadline = time.monotonic() + timeout
    while True:
        info_pub.publish(camera_info())
        if depth is not None:
            depth_pub.publish(depth)
        image_pub.publish(image)
        try:
            return probe.wait_for_message("/unipose/keypoints", match, timeout=0.5, after=start)
        except AssertionError:
            if time.monotonic() > deadline or not node.alive():
                raise AssertionError(f"no keypoints\n{node.log()[-3000:]}") from None


def test_depth_gives_3d_keypoints_unpaired_frames_are_counted_and_ids_persist(rgbd_detector, probe):
    probe.subscribe(KeypointInstanceArray, "/unipose/keypoints")
    probe.subscribe(DiagnosticArray, "/diagnostics")
    pubs = (probe.node.create_publisher(CameraInfo, INFO, 10), probe.node.create_publisher(Image, DEPTH, 10),
            probe.node.create_publisher(Image, CAMERA, 10))
    bgr = cv2.resize(load_bgr(sample_images(1)[0]), (W, H))

    h1 = stamped(2000, 100_000_000)
    first = send_until(probe, pubs, array_to_image(bgr, "bgr8", h1), depth_msg(h1),
                       lambda m: same_stamp(m.header, h1) and m.position_frame_id != "", rgbd_detector)
    assert first.position_frame_id == "camera_color_optical_frame" and first.instances
    kps = [k for inst in first.instances for k in inst.keypoints]
    inside = [k for k in kps if 0 <= k.x < W and 0 <= k.y < H]
    assert inside and all(k.position_valid and k.position.z == pytest.approx(1.5) for k in inside)
    k = inside[0]
    assert k.position.x == pytest.approx((k.x - 0.5 - 79.5) / 150.0 * 1.5, abs=1e-4)
    ids = {inst.track_id for inst in first.instances}
    assert all(i >= 1 for i in ids)   # the first frame of a stream confirms at once

    # the same scene 0.1 s later, but its depth frame is stamped 0.5 s away: 2-D only, counted
    h2 = stamped(2000, 200_000_000)
    far = stamped(2000, 700_000_000)
    second = send_until(probe, pubs, array_to_image(bgr, "bgr8", h2), depth_msg(far),
                        lambda m: same_stamp(m.header, h2), rgbd_detector)
    assert second.position_frame_id == ""
    assert not any(k.position_valid for inst in second.instances for k in inst.keypoints)
    assert {inst.track_id for inst in second.instances} <= ids   # same objects, same ids

    def unpaired(m):
        values = {kv.key: kv.value for s in m.status for kv in s.values}
        return int(values.get("depth_unpaired", "0")) >= 1 and int(values.get("depth_paired", "0")) >= 1
    probe.wait_for_message("/diagnostics", unpaired, timeout=30, node=rgbd_detector)
