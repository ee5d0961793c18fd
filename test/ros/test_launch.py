"""launch/detect.launch.py under the test-only runner: arguments, and the pipeline it starts."""
from __future__ import annotations

import subprocess
from pathlib import Path

from rostest_support import ROOT, NodeProcess
from unipose_ros.msg import KeypointInstanceArray

import launch_runner

LAUNCH_FILE = ROOT / "launch" / "detect.launch.py"
TEST_MODEL = {"model": "unipose_tiny", "checkpoint": "reference", "text_encoder": "hash", "device": "cpu"}


def by_executable(nodes):
    return {n.executable: n for n in nodes}


def test_launch_arguments_and_described_nodes():
    declared, nodes = launch_runner.evaluate(LAUNCH_FILE, {})
    names = {d.name for d in declared}
    assert {"image", "compressed", "prompt", "model", "checkpoint", "device", "backend", "params_file",
            "use_sample_source", "rviz"} <= names
    assert all(d.description for d in declared)
    assert list(by_executable(nodes)) == ["detector"]  # defaults: the detector only
    detector = nodes[0]
    assert detector.name == "unipose"
    params_file = Path(detector.parameters[0])
    assert params_file == ROOT / "config" / "detector.yaml" and params_file.is_file()
    assert detector.parameters[1] == {"use_compressed": False}  # empty arguments: the file decides
    assert ("image", "/camera/image_raw") in detector.remappings
    assert ("camera_info", "/camera/camera_info") in detector.remappings

    _, nodes = launch_runner.evaluate(LAUNCH_FILE, {
        "image": "/front/color/image", "compressed": "true", "prompt": "cat, dog", "rviz": "true",
        "use_sample_source": "true"})
    nodes = by_executable(nodes)
    assert set(nodes) == {"detector", "image_source", "rviz2"}
    detector = nodes["detector"]
    assert detector.parameters[1] == {"prompt": "cat, dog", "use_compressed": True}
    assert ("image/compressed", "/front/color/image/compressed") in detector.remappings
    assert ("camera_info", "/front/color/camera_info") in detector.remappings
    assert nodes["image_source"].parameters[0]["publish_compressed"] is True
    rviz_config = Path(nodes["rviz2"].arguments[1])
    assert nodes["rviz2"].arguments[0] == "-d" and rviz_config == ROOT / "config" / "unipose.rviz"
    assert "/unipose/image_annotated" in rviz_config.read_text()


def test_launch_rgbd_arguments():
    _, nodes = launch_runner.evaluate(LAUNCH_FILE, {
        "image": "/camera/color/image_raw", "depth_image": "/camera/aligned_depth_to_color/image_raw",
        "camera_info": "/camera/color/camera_info", "depth_tolerance": "0.03", "tracking": "false"})
    detector = by_executable(nodes)["detector"]
    assert detector.parameters[1] == {"use_compressed": False, "use_depth": True, "depth_tolerance": 0.03,
                                      "tracking": False}
    assert ("depth_image", "/camera/aligned_depth_to_color/image_raw") in detector.remappings
    assert ("camera_info", "/camera/color/camera_info") in detector.remappings
    assert ("image", "/camera/color/image_raw") in detector.remappings


def test_launch_with_sample_source_runs_the_pipeline(probe, tmp_path):
    _, nodes = launch_runner.evaluate(LAUNCH_FILE, {"use_sample_source": "true", "sample_rate": "5.0",
                                                    "prompt": "fly", **TEST_MODEL})
    processes = []
    try:
        for node in nodes:
            log = open(tmp_path / f"{node.executable}.log", "wb")
            processes.append((subprocess.Popen(launch_runner.command_line(node, tmp_path), cwd=ROOT,
                                               stdout=log, stderr=subprocess.STDOUT), log))
        probe.subscribe(KeypointInstanceArray, "/unipose/keypoints")

        def logs():
            return "\n".join((tmp_path / f"{n.executable}.log").read_text(errors="replace")[-2000:]
                             for n in nodes)

        try:
            array = probe.wait_for_message("/unipose/keypoints", timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        assert array.model == "unipose_tiny (reference)" and array.prompt == "fly"
        assert array.header.frame_id == "camera_optical_frame"
        probe.wait_until(lambda: {"unipose", "image_source"} <= set(probe.node.get_node_names()), 30,
                         "both nodes in the graph")
        topics = dict(probe.node.get_topic_names_and_types())
        assert topics["/camera/image_raw"] == ["sensor_msgs/msg/Image"]
        assert topics["/camera/camera_info"] == ["sensor_msgs/msg/CameraInfo"]
        assert topics["/unipose/keypoints"] == ["unipose_ros/msg/KeypointInstanceArray"]
        assert "/unipose/markers" in topics and "/unipose/active_prompt" in topics
        assert "/diagnostics" in topics
    finally:
        for proc, log in processes:
            stopper = NodeProcess.__new__(NodeProcess)  # reuse the SIGINT-then-kill stop logic
            stopper.proc, stopper._log = proc, log
            stopper.stop()
