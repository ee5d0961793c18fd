"""Packaging: the ROS console scripts answer --help without ROS and name what is missing in one
line (rclpy, the generated messages, rosbags); metadata consistent between setup.py, package.xml
and LICENSE. The installed wheel itself is checked by scripts/check_wheel.sh (.ci/run)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROS_SCRIPTS = {"unipose-detector": "detector", "unipose-image-source": "image_source",
               "unipose-demo": "demo", "unipose-bag": "bag"}

# Run entry functions in a fresh interpreter in which some modules cannot be imported, as on a
# machine without ROS (rclpy), without the built messages (unipose_ros.msg) or without rosbags.
RUNNER = textwrap.dedent("""
    import contextlib, importlib.abc, io, json, sys
    blocked = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in blocked):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    from unipose_ros import entry
    results = {}
    for func, argv in json.loads(sys.argv[2]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = getattr(entry, func)(argv)
            except SystemExit as e:  # argparse's --help
                rc = e.code or 0
        results[func] = {"rc": rc, "out": out.getvalue(), "err": err.getvalue(),
                         "rclpy_imported": "rclpy" in sys.modules}
    print(json.dumps(results))
""")


def run_entries(blocked: list[str], calls: list[tuple[str, list[str]]]) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUNNER, ",".join(blocked), json.dumps(calls)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_console_scripts_point_to_the_entry_module():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name in ROS_SCRIPTS}
    assert scripts == {name: f"unipose_ros.entry:{func}" for name, func in ROS_SCRIPTS.items()}


def test_every_ros_script_answers_help_without_rclpy():
    results = run_entries(["rclpy"], [(func, ["--help"]) for func in ROS_SCRIPTS.values()])
    for func, r in results.items():
        assert r["rc"] == 0, (func, r)
        assert not r["rclpy_imported"]
        assert "Traceback" not in r["out"] + r["err"]
    from unipose_ros.parameters import DETECTOR_PARAMETERS, IMAGE_SOURCE_PARAMETERS

    detector = results["detector"]["out"]
    assert "--ros-args -p model:='unipose_swint'" in detector
    for p in DETECTOR_PARAMETERS:  # every parameter with its default
        assert re.search(rf"^  {p.name} \(default ", detector, re.M), p.name
    assert "  backend (default 'pytorch'):" in detector and "One of: pytorch, onnxruntime, tensorrt, torch." in detector
    assert "Cannot run here: unipose-detector: ROS 2 (rclpy) is not importable" in detector
    source = results["image_source"]["out"]
    for p in IMAGE_SOURCE_PARAMETERS:
        assert re.search(rf"^  {p.name} \(default ", source, re.M), p.name
    assert "rate (default 10.0): Frames per second. Range 0.1..1000.0." in source
    assert "usage: unipose-demo" in results["demo"]["out"] and "--frames" in results["demo"]["out"]
    assert "usage: unipose bag" in results["bag"]["out"] and "--prompt" in results["bag"]["out"]


def _one_line(r: dict) -> str:
    assert r["rc"] == 1 and r["out"] == "", r
    lines = r["err"].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r["err"], r["err"]
    return lines[0]


def test_without_rclpy_each_script_says_how_to_get_ros_in_one_line():
    results = run_entries(["rclpy", "rosbags"], [(func, []) for func in ("detector", "image_source", "demo")]
                          + [("bag", ["in_bag", "-o", "out_bag", "--prompt", "fly"])])
    for func in ("detector", "image_source", "demo"):
        line = _one_line(results[func])
        assert "ROS 2 (rclpy) is not importable" in line and "No module named 'rclpy'" in line
        assert "source /opt/ros/<distro>/setup.bash" in line and "pip install -r requirements-ros.txt" in line
    # unipose-bag first needs rosbags (the [ros] extra)
    line = _one_line(results["bag"])
    assert line.startswith("unipose-bag: ") and "pip install 'unipose_ros[ros]'" in line


def test_with_rclpy_but_no_messages_the_colcon_and_pip_routes_are_named():
    pytest.importorskip("rclpy")
    results = run_entries(["unipose_ros.msg"], [("detector", ["--ros-args", "-p", "model:=fly"]),
                                                ("bag", ["in_bag", "-o", "out_bag", "--prompt", "fly"])])
    for func in ("detector", "bag"):
        line = _one_line(results[func])
        assert "the unipose_ros messages are not built" in line
        assert "colcon build --packages-select unipose_ros" in line and "bash scripts/build_msgs.sh" in line


def test_help_after_ros_args_belongs_to_ros():
    from unipose_ros.entry import _asks_for_help

    assert _asks_for_help(["--help"]) and _asks_for_help(["-h", "--ros-args", "-p", "a:=1"])
    assert not _asks_for_help(["--ros-args", "--help"])


def test_version_licence_and_metadata_agree():
    setup_py = (REPO / "setup.py").read_text()
    package_xml = (REPO / "package.xml").read_text()
    version = re.search(r'^VERSION = "([^"]+)"', setup_py, re.M).group(1)
    assert f"<version>{version}</version>" in package_xml
    assert 'license="Apache-2.0"' in setup_py and ">Apache-2.0</license>" in package_xml
    licence = (REPO / "LICENSE").read_text()
    assert licence.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in licence
    # no upper caps in the declared dependencies (a cap downgrades a user's newer torch)
    requirements = re.findall(r'"([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?[<>=!~][^"]*)"', setup_py)
    assert requirements and not [r for r in requirements if "<" in r], requirements


def test_a_missing_extra_is_named_in_one_line(monkeypatch, tmp_path):
    from unipose_model.extras import MissingExtra, require
    from unipose_train.unikpt.converters.base import ConversionError
    from unipose_train.unikpt.converters.sleap import read_slp

    monkeypatch.setitem(sys.modules, "h5py", None)  # as if not installed
    with pytest.raises(ConversionError) as err:
        read_slp(tmp_path / "labels.slp")
    assert str(err.value) == (f"{tmp_path / 'labels.slp'}: reading SLEAP .slp files needs the 'h5py' package, "
                              "which is not installed: pip install 'unipose_ros[train]'")
    with pytest.raises(MissingExtra, match=r"pip install 'unipose_ros\[export\]'"):
        require("onnx_not_installed_here", "export", "ONNX export")
    # a package that is there but fails on one of its own imports shows the real cause
    (tmp_path / "broken_pkg").mkdir()
    (tmp_path / "broken_pkg" / "__init__.py").write_text("import missing_dependency_of_broken_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="missing_dependency_of_broken_pkg"):
        require("broken_pkg", "train", "x")
