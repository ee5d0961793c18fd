"""Console scripts of the ROS side (`unipose-detector`, `unipose-image-source`, `unipose-demo`,
`unipose-bag`): answer --help without ROS, and say in one line what is missing before importing
a node that cannot run.

A pip install of the wheel has neither rclpy (it comes from a ROS 2 install or the ros-jazzy-*
wheels) nor the generated `unipose_ros.msg` (built by colcon or scripts/build_msgs.sh); without
this module each script ended in an import traceback, and the nodes' --help started the node.
Only the standard library is imported here until a command actually runs.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from typing import Callable, Sequence

ROS_DOCS = "docs/ROS.md"
# The standard message packages each command imports (rclpy's wheel does not bring them).
NODE_MESSAGES = ("sensor_msgs.msg", "std_msgs.msg", "rcl_interfaces.msg")
DETECTOR_MESSAGES = NODE_MESSAGES + ("visualization_msgs.msg", "diagnostic_msgs.msg", "geometry_msgs.msg")


class MissingROS(RuntimeError):
    """A ROS part the command needs is not importable; the message says how to get it."""


def _import_error(module: str) -> str | None:
    """Why `module` does not import (None when it does). rclpy can fail with more than
    ImportError when its C libraries are missing, hence the broad except."""
    try:
        importlib.import_module(module)
    except Exception as e:  # any failure means "cannot run"; the text is reported
        return f"{type(e).__name__}: {e}"
    return None


def missing_ros_part(prog: str, messages: Sequence[str] = (), own_messages: bool = True) -> str | None:
    """One line naming what `prog` lacks to run (rclpy, standard messages, the project's own
    messages) and how to get it; None when everything imports."""
    error = _import_error("rclpy")
    if error is not None:
        return (f"{prog}: ROS 2 (rclpy) is not importable here ({error}). With a ROS 2 install: "
                f"source /opt/ros/<distro>/setup.bash (and your workspace's install/setup.bash); "
                f"without one (Python 3.11): pip install -r requirements-ros.txt, the ROS 2 Jazzy "
                f"wheels ({ROS_DOCS}, 'With pip only').")
    for module in messages:
        error = _import_error(module)
        if error is not None:
            package = module.split(".")[0]
            return (f"{prog}: the ROS message package {package} is not importable ({error}): "
                    f"apt install ros-<distro>-{package.replace('_', '-')}, or pip install "
                    f"-r requirements-ros.txt ({ROS_DOCS}).")
    if own_messages:
        error = _import_error("unipose_ros.msg")
        if error is not None:
            return (f"{prog}: the unipose_ros messages are not built in this environment ({error}); pip "
                    f"does not build them. ROS 2 users: build the package with colcon (colcon build "
                    f"--packages-select unipose_ros, then source install/setup.bash); pip route: from a "
                    f"checkout of the repository, bash scripts/build_msgs.sh {sys.prefix} ({ROS_DOCS}).")
    return None


def _module_doc(module: str) -> str:
    """A module's docstring, read from its source without importing it (the nodes import rclpy)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read())) or ""


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def node_help(prog: str, node_name: str, module: str, parameters) -> str:
    """--help of a node: its description, how ROS arguments are passed, every parameter."""
    lines = [f"usage: {prog} [--ros-args [-p NAME:=VALUE ...] [--params-file FILE] [-r FROM:=TO ...]]",
             "", _module_doc(module), "",
             f"ROS parameters of node '{node_name}' (e.g. {prog} --ros-args -p "
             f"{parameters[0].name}:={_format_value(parameters[0].default) or 'VALUE'}):"]
    for p in parameters:
        extra = ""
        if p.choices:
            extra += f" One of: {', '.join(p.choices)}."
        if p.range:
            extra += f" Range {p.range[0]}..{p.range[1]}."
        lines.append(f"  {p.name} (default {_format_value(p.default)}): {p.description}{extra}")
    return "\n".join(lines)


def _status_line(prog: str, messages: Sequence[str]) -> str:
    missing = missing_ros_part(prog, messages)
    return ("Needs ROS 2 (rclpy) and the unipose_ros messages: both found here." if missing is None
            else f"Cannot run here: {missing}")


def _asks_for_help(argv: Sequence[str]) -> bool:
    """-h/--help among the program's own arguments (what follows --ros-args belongs to ROS)."""
    own = list(argv)
    if "--ros-args" in own:
        own = own[:own.index("--ros-args")]
    return "-h" in own or "--help" in own


def _run_node(prog: str, node_name: str, module: str, parameters: Callable[[], Sequence],
              messages: Sequence[str], argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _asks_for_help(argv):
        print(node_help(prog, node_name, module, parameters()))
        print("\n" + _status_line(prog, messages))
        return 0
    missing = missing_ros_part(prog, messages)
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1
    # rclpy.init(args=None) reads sys.argv, which is what ROS expects (argv[0] included)
    return importlib.import_module(module).main()


def detector(argv: Sequence[str] | None = None) -> int:
    """`unipose-detector`: the lifecycle detector node."""
    def parameters():
        from unipose_ros.parameters import DETECTOR_PARAMETERS
        return DETECTOR_PARAMETERS
    return _run_node("unipose-detector", "unipose", "unipose_ros.detector_node", parameters,
                     DETECTOR_MESSAGES, argv)


def image_source(argv: Sequence[str] | None = None) -> int:
    """`unipose-image-source`: a camera stand-in playing a video, a folder or the bundled sample."""
    def parameters():
        from unipose_ros.parameters import IMAGE_SOURCE_PARAMETERS
        return IMAGE_SOURCE_PARAMETERS
    return _run_node("unipose-image-source", "image_source", "unipose_ros.image_source", parameters,
                     NODE_MESSAGES, argv)


def _run_tool(prog: str, module: str, messages: Sequence[str], argv: Sequence[str] | None,
              before: Callable[[], str | None] | None = None) -> int:
    """Commands with their own argparse (demo, bag): --help is theirs and imports no ROS; before
    running, the ROS parts they need are checked."""
    argv = list(sys.argv[1:] if argv is None else argv)
    tool = importlib.import_module(module)
    if not _asks_for_help(argv):
        missing = (before() if before else None) or missing_ros_part(prog, messages)
        if missing is not None:
            print(missing, file=sys.stderr)
            return 1
    return tool.main(argv)


def demo(argv: Sequence[str] | None = None) -> int:
    """`unipose-demo`: the whole pipeline on the bundled clip, in one process."""
    return _run_tool("unipose-demo", "unipose_ros.demo", DETECTOR_MESSAGES, argv)


def _rosbags_missing(prog: str) -> str | None:
    if _import_error("rosbags.rosbag2") is not None:
        from unipose_model.extras import missing_extra_message
        return f"{prog}: " + missing_extra_message("rosbags", "ros", "reading and writing rosbag2 files")
    return None


def bag(argv: Sequence[str] | None = None, prog: str = "unipose-bag") -> int:
    """`unipose-bag` (also `unipose bag`): the detector over a rosbag2, offline."""
    return _run_tool(prog, "unipose_ros.bag", DETECTOR_MESSAGES, argv, before=lambda: _rosbags_missing(prog))
