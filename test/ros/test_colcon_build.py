"""`colcon build` of the package in a temporary workspace, as a ROS 2 user does it.

Uses colcon from PyPI and the Jazzy wheels of this virtual environment as the underlay.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rostest_support import ROOT

import launch_runner

VENV = Path(sys.prefix)


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory):
    colcon = shutil.which("colcon", path=str(VENV / "bin"))
    if colcon is None:
        pytest.skip("colcon is not installed (requirements-ros.txt)")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    workspace = tmp_path_factory.mktemp("colcon_ws")
    (workspace / "src").mkdir()
    # the package as a user clones it (source files only; no venv, no build outputs)
    package = workspace / "src" / "unipose_ros"
    package.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("package.xml", "CMakeLists.txt"):
        shutil.copy2(ROOT / name, package / name)
    for name in ("msg", "srv", "launch", "config", "unipose_ros", "unipose_model"):
        shutil.copytree(ROOT / name, package / name, ignore=ignore)
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV),
           "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [colcon, "build", "--event-handlers", "console_direct-",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workspace / "install" / "unipose_ros"


@pytest.mark.slow  # ~30-45 s on 2 cores; still part of the CI run
def test_colcon_build_installs_messages_executables_launch_and_config(colcon_install, rviz2_installed):
    share = colcon_install / "share" / "unipose_ros"
    # where `ros2 launch unipose_ros detect.launch.py` and `ros2 run unipose_ros ...` look
    assert (share / "launch" / "detect.launch.py").is_file()
    assert (share / "config" / "detector.yaml").is_file()
    assert (share / "config" / "unipose.rviz").is_file()
    assert (share / "package.xml").is_file()
    assert (colcon_install / "share" / "ament_index" / "resource_index" / "packages" / "unipose_ros").is_file()
    for exe in ("detector", "image_source"):
        path = colcon_install / "lib" / "unipose_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK)
    site = next((colcon_install / "lib").glob("python3*/site-packages"))
    assert (site / "unipose_ros" / "msg" / "_keypoint_instance_array.py").is_file()
    assert (site / "unipose_ros" / "srv" / "_capture_visual_prompt.py").is_file()
    assert (site / "unipose_ros" / "detector_node.py").is_file()
    assert (site / "unipose_model" / "predictor.py").is_file()

    # the installed launch file finds the installed params and RViz files
    _, nodes = launch_runner.evaluate(share / "launch" / "detect.launch.py", {"rviz": "true"})
    detector = next(n for n in nodes if n.executable == "detector")
    assert Path(detector.parameters[0]) == share / "config" / "detector.yaml"

    # the installed messages and node code import from the install tree (as after `source setup.bash`)
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import unipose_ros, unipose_ros.msg as m, unipose_ros.detector_node as d; "
            "print(unipose_ros.__file__, m.KeypointInstanceArray.__name__, d.NODE_NAME)")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert str(site) in out.stdout and "KeypointInstanceArray unipose" in out.stdout

    # `ros2 run unipose_ros detector --help` answers and exits instead of starting the node
    out = subprocess.run([str(colcon_install / "lib" / "unipose_ros" / "detector"), "--help"], cwd="/", env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ROS parameters of node 'unipose'" in out.stdout, out.stderr[-3000:]
