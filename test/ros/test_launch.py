"""launch/detect.launch.py under the test-only runner: arguments, and the pipeline it starts."""
from __future__ import annotations

import contextlib
import shlex
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rostest_support import LATCHED, ROOT, NodeProcess
from std_msgs.msg import String
from unipose_ros.msg import KeypointInstanceArray
from unipose_ros.parameters import BY_NAME

import launch_runner

LAUNCH_FILE = ROOT / "launch" / "detect.launch.py"
TEST_MODEL = {"model": "unipose_tiny", "checkpoint": "reference", "text_encoder": "hash", "device": "cpu"}
DATA = ROOT / "unipose_model" / "data"


def by_executable(nodes):
    return {n.executable: n for n in nodes}


@contextlib.contextmanager
def launched(nodes, tmp_path):
    """Start the described nodes as `ros2 launch` would (rviz2 cannot run here and is left out);
    yield a function returning their logs; stop them with SIGINT."""
    processes = []
    runnable = [n for n in nodes if n.executable != "rviz2"]

    def logs():
        return "\n".join(f"--- {n.executable} ---\n" + (tmp_path / f"{n.executable}.log").read_text(errors="replace")[-3000:]
                         for n in runnable)
    try:
        for node in runnable:
            log = open(tmp_path / f"{node.executable}.log", "wb")
            processes.append((subprocess.Popen(launch_runner.command_line(node, tmp_path), cwd=ROOT,
                                               stdout=log, stderr=subprocess.STDOUT), log))
        yield logs
    finally:
        for proc, log in processes:
            stopper = NodeProcess.__new__(NodeProcess)  # reuse the SIGINT-then-kill stop logic
            stopper.proc, stopper._log = proc, log
            stopper.stop()


def documented_launch_arguments(doc: Path, marker: str) -> dict[str, str]:
    """The `name:=value` arguments of the `ros2 launch unipose_ros detect.launch.py` line of `doc`
    that carries `marker` (so the test runs the command exactly as the document writes it)."""
    lines = [line for line in doc.read_text().splitlines()
             if "ros2 launch unipose_ros detect.launch.py" in line and marker in line]
    assert lines, f"{doc.name} has no launch command marked {marker!r}"
    words = shlex.split(lines[0].split("detect.launch.py", 1)[1], comments=True)
    return dict(w.split(":=", 1) for w in words)


def test_launch_arguments_and_described_nodes(rviz2_installed):
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
    # the bundled sample is the fly clip: without model/checkpoint, the bundled fly model runs it
    assert detector.parameters[1] == {"prompt": "cat, dog", "model": "fly", "checkpoint": "", "use_compressed": True}
    assert ("image/compressed", "/front/color/image/compressed") in detector.remappings
    assert ("camera_info", "/front/color/camera_info") in detector.remappings
    assert nodes["image_source"].parameters[0]["publish_compressed"] is True
    rviz_config = Path(nodes["rviz2"].arguments[1])
    assert nodes["rviz2"].arguments[0] == "-d" and rviz_config == ROOT / "config" / "unipose.rviz"
    assert "/unipose/image_annotated" in rviz_config.read_text()
    # one argument for the bundled model; the params file's empty prompt means the model's own
    _, nodes = launch_runner.evaluate(LAUNCH_FILE, {"model": "fly"})
    assert nodes[0].parameters[1] == {"model": "fly", "use_compressed": False}
    assert 'prompt: ""' in (ROOT / "config" / "detector.yaml").read_text()


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
    with launched(nodes, tmp_path) as logs:
        probe.subscribe(KeypointInstanceArray, "/unipose/keypoints")
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


def test_rviz_without_rviz2_fails_before_any_node_starts(monkeypatch, tmp_path):
    """launch_ros looks rviz2 up only when it starts it, after the detector and image_source: the
    launch file checks first, and says what to install."""
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))  # a ROS install without rviz2
    monkeypatch.setenv("ROS_DISTRO", "jazzy")
    with pytest.raises(RuntimeError, match=r"rviz:=true needs rviz2.*apt install ros-jazzy-rviz2.*Nothing was started"):
        launch_runner.evaluate(LAUNCH_FILE, {"use_sample_source": "true", "rviz": "true"})
    monkeypatch.delenv("AMENT_PREFIX_PATH")  # no ROS environment at all: the same message
    with pytest.raises(RuntimeError, match=r"rviz:=true needs rviz2"):
        launch_runner.evaluate(LAUNCH_FILE, {"rviz": "true"})
    _, nodes = launch_runner.evaluate(LAUNCH_FILE, {"use_sample_source": "true"})  # rviz:=false needs none
    assert set(by_executable(nodes)) == {"detector", "image_source"}


def test_package_declares_ros2launch_and_the_backend_argument_names_every_backend():
    depends = {e.text for e in ET.parse(ROOT / "package.xml").getroot().iter("exec_depend")}
    assert {"ros2launch", "launch", "launch_ros"} <= depends
    declared, _ = launch_runner.evaluate(LAUNCH_FILE, {})
    backend = next(d for d in declared if d.name == "backend").description
    assert "later" not in backend
    assert all(choice in backend for choice in BY_NAME["backend"].choices)


def _fly_arrays(probe, logs, predicate, timeout=120):
    try:
        return probe.wait_for_message("/unipose/keypoints", predicate, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None


def _flies(array):
    return [i for i in array.instances if i.label == "fly" and len(i.keypoints) == 13]


@pytest.mark.slow  # 20-35 s: the bundled model on a 2-core machine
@pytest.mark.parametrize("doc", ["README.md", "docs/ROS.md"])
def test_documented_no_camera_command_detects_flies_on_a_fresh_install(doc, probe, tmp_path, monkeypatch,
                                                                        rviz2_installed):
    """The command as the document writes it, with no official weights: the bundled clip, the
    bundled fly model and its prompt; both flies found."""
    arguments = documented_launch_arguments(ROOT / doc, "no camera")
    assert arguments == {"use_sample_source": "true", "rviz": "true"}
    if doc != "README.md":
        return  # the same command: run it once
    monkeypatch.setenv("UNIPOSE_CACHE", str(tmp_path / "empty-cache"))  # a fresh install: no official file
    _, nodes = launch_runner.evaluate(LAUNCH_FILE, arguments)
    assert set(by_executable(nodes)) == {"detector", "image_source", "rviz2"}
    with launched(nodes, tmp_path) as logs:
        probe.subscribe(KeypointInstanceArray, "/unipose/keypoints")
        array = _fly_arrays(probe, logs, lambda m: len(_flies(m)) == 2)
        assert array.prompt == "fly" and array.model == "fly (bundled fly_demo.pth)"
        assert all(0.3 <= i.score <= 1 for i in array.instances)  # the model file's threshold
        assert "ERROR" not in logs()


@pytest.mark.slow  # 20-35 s: the bundled model on a 2-core machine
def test_visual_prompt_launch_beats_a_rejected_text_prompt_and_ctrl_c_while_frames_flow_logs_no_error(
        probe, tmp_path):
    """model:=fly with the bundled support: the visual prompt is what was asked for, so a text
    prompt the fly model does not know ('person', e.g. from a user's params file) stays unused.
    Then a Ctrl-C while the detector is busy with a frame ends it quietly (rclpy shuts the context
    down under the worker, whose next publish used to log 'processing failed: RCLError')."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text((ROOT / "config" / "detector.yaml").read_text().replace('prompt: ""', "prompt: person"))
    assert "prompt: person" in params_file.read_text()
    _, nodes = launch_runner.evaluate(LAUNCH_FILE, {
        "model": "fly", "params_file": str(params_file), "device": "cpu",
        "support_image": f"{DATA / 'sample_fly.mp4'}#frame=1000", "support_keypoints": str(DATA / "fly_support.json"),
        "use_sample_source": "true", "sample_source": str(DATA / "sample_fly.mp4"), "sample_rate": "30.0"})
    with launched(nodes, tmp_path) as logs:
        probe.subscribe(String, "/unipose/active_prompt", LATCHED)
        probe.subscribe(KeypointInstanceArray, "/unipose/keypoints")
        array = _fly_arrays(probe, logs, lambda m: len(_flies(m)) >= 1)
        assert array.prompt.startswith("<visual prompt: fly, 13 keypoints")
        assert probe.messages("/unipose/active_prompt")[-1].data == array.prompt
        assert "person" not in logs()  # never parsed, never rejected
        # frames arrive faster than the model runs, so the worker is mid-frame at any instant
        probe.wait_until(lambda: len(probe.messages("/unipose/keypoints")) >= 3, 60, "three results")
    # launched() has now sent SIGINT to both nodes and waited for them
    for name in ("detector", "image_source"):
        text = (tmp_path / f"{name}.log").read_text(errors="replace")
        assert "ERROR" not in text and "Traceback" not in text, f"{name}:\n{text[-3000:]}"
