"""`unipose bag`: a rosbag2 of real images in, a readable bag with the live node's keypoints out."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import String

from rostest_support import (CAMERA, DETECTOR, ROOT, TEST_MODEL_PARAMS, NodeProcess, Probe, header,
                             load_bgr, publish_until, ros_args, same_stamp, sample_images)
from unipose_ros.bag import message_typestore
from unipose_ros.image_conversion import array_to_image
from unipose_ros.msg import KeypointInstanceArray

rosbag2 = pytest.importorskip("rosbags.rosbag2")
PROMPT = "person: nose, left eye, right eye, left shoulder, right shoulder"


def write_input_bag(path, frames, storage):
    store = message_typestore()
    plugin = rosbag2.StoragePlugin.MCAP if storage == "mcap" else rosbag2.StoragePlugin.SQLITE3
    with rosbag2.Writer(path, version=9, storage_plugin=plugin) as writer:
        images = writer.add_connection(CAMERA, "sensor_msgs/msg/Image", typestore=store)
        chatter = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for i, msg in enumerate(frames):
            t = 1_000_000_000 * (i + 1)
            writer.write(images, t, serialize_message(msg))
            writer.write(chatter, t + 1, serialize_message(String(data=f"hello {i}")))


def read_bag(path):
    with rosbag2.Reader(path) as reader:
        return [(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in reader.messages()]


def assert_same_result(a: KeypointInstanceArray, b: KeypointInstanceArray):
    assert same_stamp(a.header, b.header)
    assert (a.prompt, a.model, a.image_width, a.image_height) == (b.prompt, b.model, b.image_width, b.image_height)
    assert [(c.name, list(c.keypoint_names), list(c.skeleton)) for c in a.classes] == \
           [(c.name, list(c.keypoint_names), list(c.skeleton)) for c in b.classes]
    assert len(a.instances) == len(b.instances)
    for x, y in zip(a.instances, b.instances):
        assert (x.label, x.class_index) == (y.label, y.class_index)
        np.testing.assert_allclose([x.score, x.x_min, x.y_min, x.x_max, x.y_max],
                                   [y.score, y.x_min, y.y_min, y.x_max, y.y_max], rtol=1e-4, atol=1e-2)
        np.testing.assert_allclose([(k.x, k.y, k.score) for k in x.keypoints],
                                   [(k.x, k.y, k.score) for k in y.keypoints], rtol=1e-4, atol=1e-2)
        assert [k.name for k in x.keypoints] == [k.name for k in y.keypoints]


def bag_frames():
    return [array_to_image(cv2.resize(load_bgr(p), (320, 240)), "bgr8", header(400 + i))
            for i, p in enumerate(sample_images(2))]


@pytest.fixture(scope="module")
def live_results(ros_context, tmp_path_factory):
    """The live node's keypoint messages for bag_frames() (one node for both storage formats)."""
    node = NodeProcess(DETECTOR, ros_args({**TEST_MODEL_PARAMS, "prompt": PROMPT, "box_threshold": 0.1},
                                          {"image": CAMERA}), tmp_path_factory.mktemp("logs"), name="live")
    probe = Probe()
    try:
        probe.subscribe(KeypointInstanceArray, "/unipose/keypoints")
        camera = probe.node.create_publisher(Image, CAMERA, 10)
        yield [publish_until(probe, camera, frame, "/unipose/keypoints",
                             lambda m, h=frame.header: same_stamp(m.header, h), node=node)
               for frame in bag_frames()]
    finally:
        probe.close()
        node.stop()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_keypoints_are_readable_and_match_the_live_node(storage, tmp_path, live_results):
    frames = bag_frames()
    in_bag, out_bag = tmp_path / "in", tmp_path / "out"
    write_input_bag(in_bag, frames, storage)

    model = TEST_MODEL_PARAMS
    cli = [sys.executable, "-m", "unipose_ros.bag", str(in_bag), "--output", str(out_bag),
           "--prompt", PROMPT, "--annotate", "--no-progress", "--model", model["model"],
           "--checkpoint", model["checkpoint"], "--text-encoder", model["text_encoder"],
           "--device", model["device"], "--short-side", str(model["short_side"]),
           "--max-size", str(model["max_size"]), "--box-threshold", "0.1"]
    done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 frames" in done.stderr

    # the output: original topics unchanged, plus keypoints and overlays at the images' times
    messages = read_bag(out_bag)
    original = read_bag(in_bag)
    assert [m for m in messages if m[0] in (CAMERA, "/chatter")] == original
    assert any(out_bag.glob("*.mcap" if storage == "mcap" else "*.db3"))
    store = message_typestore()
    arrays = []
    for topic, msgtype, t, raw in messages:
        if topic == "/unipose/keypoints":
            assert msgtype == "unipose_ros/msg/KeypointInstanceArray"
            decoded = store.deserialize_cdr(raw, msgtype)  # readable without rclpy
            arrays.append((t, deserialize_message(raw, KeypointInstanceArray)))
            assert decoded.prompt == arrays[-1][1].prompt
            assert len(decoded.instances) == len(arrays[-1][1].instances)
    assert [t for t, _ in arrays] == [1_000_000_000, 2_000_000_000]
    overlays = [deserialize_message(raw, Image) for topic, _, _, raw in messages
                if topic == "/unipose/image_annotated"]
    assert [(o.width, o.height) for o in overlays] == [(320, 240)] * 2

    # the live node on the same frames gives the same keypoint messages
    for (_, from_bag), live in zip(arrays, live_results):
        assert_same_result(from_bag, live)


def test_bag_errors_are_one_line(tmp_path):
    from unipose_ros.bag import main

    assert main([str(tmp_path), "--output", str(tmp_path / "o"), "--prompt", "person"]) == 2


def test_bag_with_depth_gives_3d_keypoints_track_ids_and_3d_markers(tmp_path, capsys):
    """Depth frames are written after their colour frames (as a recorder may): the colour frame waits
    for them. The second frame's depth is stamped 0.5 s away: not used, counted."""
    from sensor_msgs.msg import CameraInfo
    from visualization_msgs.msg import MarkerArray

    from unipose_ros.bag import main

    frames = bag_frames()
    store = message_typestore()
    info = CameraInfo(header=frames[0].header, width=320, height=240, distortion_model="plumb_bob")
    info.k = [300.0, 0.0, 159.5, 0.0, 300.0, 119.5, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    in_bag, out_bag = tmp_path / "in", tmp_path / "out"
    with rosbag2.Writer(in_bag, version=9, storage_plugin=rosbag2.StoragePlugin.MCAP) as writer:
        images = writer.add_connection("/camera/color/image_raw", "sensor_msgs/msg/Image", typestore=store)
        depths = writer.add_connection("/camera/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image",
                                       typestore=store)
        infos = writer.add_connection("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        for i, msg in enumerate(frames):
            t = 1_000_000_000 * (i + 1)
            writer.write(infos, t, serialize_message(info))
            writer.write(images, t + 1, serialize_message(msg))
            depth = Image(header=header(400 + i), height=240, width=320, encoding="16UC1", step=640,
                          data=np.full((240, 320), 1200, np.uint16).tobytes())
            depth.header.stamp.nanosec += 5_000_000 if i == 0 else 500_000_000
            writer.write(depths, t + 2, serialize_message(depth))
    model = TEST_MODEL_PARAMS
    rc = main([str(in_bag), "--output", str(out_bag), "--prompt", PROMPT, "--no-progress",
               "--model", model["model"], "--checkpoint", model["checkpoint"], "--text-encoder",
               model["text_encoder"], "--device", "cpu", "--short-side", str(model["short_side"]),
               "--max-size", str(model["max_size"]), "--box-threshold", "0.1",
               "--depth-topic", "/camera/aligned_depth_to_color/image_raw"])
    assert rc == 0
    assert "3-D for 1 (no depth within 0.02 s: 1)" in capsys.readouterr().err
    messages = read_bag(out_bag)
    arrays = [deserialize_message(raw, KeypointInstanceArray) for topic, _, _, raw in messages
              if topic == "/unipose/keypoints"]
    assert [same_stamp(a.header, f.header) for a, f in zip(arrays, frames)] == [True, True]
    first, second = arrays
    assert first.position_frame_id == frames[0].header.frame_id and first.instances
    inside = [k for inst in first.instances for k in inst.keypoints if 0 <= k.x < 320 and 0 <= k.y < 240]
    assert inside and all(k.position_valid and k.position.z == pytest.approx(1.2) for k in inside)
    assert all(inst.track_id >= 1 for inst in first.instances)
    assert second.position_frame_id == "" and not any(k.position_valid for i in second.instances for k in i.keypoints)
    markers = [deserialize_message(raw, MarkerArray) for topic, _, _, raw in messages
               if topic == "/unipose/markers_3d"]
    assert len(markers) == 1 and {m.ns for m in markers[0].markers[1:]} >= {"keypoints_3d", "skeleton_3d"}


def test_bag_max_frames_processes_the_first_frames_and_ends_the_output_there(tmp_path):
    from unipose_ros.bag import main

    frames = bag_frames() + [array_to_image(cv2.resize(load_bgr(sample_images(1)[0]), (320, 240)), "bgr8",
                                            header(402))]
    in_bag, out_bag = tmp_path / "in", tmp_path / "out"
    write_input_bag(in_bag, frames, "mcap")
    model = TEST_MODEL_PARAMS
    assert main([str(in_bag), "--output", str(out_bag), "--prompt", PROMPT, "--no-progress", "--max-frames", "2",
                 "--model", model["model"], "--checkpoint", model["checkpoint"],
                 "--text-encoder", model["text_encoder"], "--device", model["device"],
                 "--short-side", str(model["short_side"]), "--max-size", str(model["max_size"])]) == 0
    messages = read_bag(out_bag)
    keypoint_times = [t for topic, _, t, _ in messages if topic == "/unipose/keypoints"]
    assert keypoint_times == [1_000_000_000, 2_000_000_000]
    # the copied topics stop before the third image (its chatter message included)
    assert [t for topic, _, t, _ in messages if topic == CAMERA] == [1_000_000_000, 2_000_000_000]
    assert max(t for _, _, t, _ in messages) < 3_000_000_000
