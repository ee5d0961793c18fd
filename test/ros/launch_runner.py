"""Test-only stand-in for `ros2 launch` (launch/launch_ros do not exist on this machine).

It gives the launch file the small part of the launch / launch_ros API it uses (LaunchDescription,
DeclareLaunchArgument, OpaqueFunction, LaunchConfiguration, launch_ros.actions.Node), evaluates
generate_launch_description() with given arguments, and turns each described Node into a command
line: `python -m MODULE --ros-args -r __node:=NAME --params-file ... -p ... -r ...`. Nothing here is
installed with the package.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

# The executables the package installs (CMakeLists.txt) -> their Python modules.
EXECUTABLES = {("unipose_ros", "detector"): "unipose_ros.detector_node",
               ("unipose_ros", "image_source"): "unipose_ros.image_source"}


class LaunchDescription:
    def __init__(self, entities=()):
        self.entities = list(entities)


class DeclareLaunchArgument:
    def __init__(self, name, default_value=None, description=""):
        self.name, self.default_value, self.description = name, default_value, description


class OpaqueFunction:
    def __init__(self, function, args=None, kwargs=None):
        self.function, self.args, self.kwargs = function, args or [], kwargs or {}


class LaunchConfiguration:
    def __init__(self, name, default=None):
        self.name, self.default = name, default

    def perform(self, context) -> str:
        if self.name in context.launch_configurations:
            return context.launch_configurations[self.name]
        if self.default is not None:
            return self.default
        raise KeyError(f"launch argument '{self.name}' has no value")


class Node:
    def __init__(self, *, package, executable, name=None, namespace=None, parameters=(),
                 remappings=(), arguments=(), output=None, **unused):
        if unused:
            raise TypeError(f"launch_runner.Node does not support {sorted(unused)}")
        self.package, self.executable, self.name, self.namespace = package, executable, name, namespace
        self.parameters, self.remappings, self.arguments = list(parameters), list(remappings), list(arguments)


@dataclass
class Context:
    launch_configurations: dict = field(default_factory=dict)


def _install_fake_modules() -> None:
    """Register the fake modules (never over a real launch install)."""
    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    module("launch", LaunchDescription=LaunchDescription)
    module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument, OpaqueFunction=OpaqueFunction)
    module("launch.substitutions", LaunchConfiguration=LaunchConfiguration)
    module("launch_ros")
    module("launch_ros.actions", Node=Node)


def evaluate(launch_file: Path, arguments: dict[str, str]) -> tuple[list[DeclareLaunchArgument], list[Node]]:
    """The declared arguments and the Nodes a launch file describes for `arguments`."""
    saved = {k: sys.modules.get(k) for k in ("launch", "launch.actions", "launch.substitutions",
                                             "launch_ros", "launch_ros.actions")}
    _install_fake_modules()
    try:
        spec = importlib.util.spec_from_file_location("launch_file_under_test", launch_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    unknown = set(arguments) - {d.name for d in declared}
    if unknown:
        raise KeyError(f"unknown launch arguments: {sorted(unknown)}")
    context = Context({d.name: d.default_value for d in declared if d.default_value is not None})
    context.launch_configurations.update(arguments)
    nodes = []
    for entity in description.entities:
        if isinstance(entity, OpaqueFunction):
            nodes += entity.function(context, *entity.args, **entity.kwargs) or []
        elif isinstance(entity, Node):
            nodes.append(entity)
    return declared, nodes


def command_line(node: Node, workdir: Path) -> list[str]:
    """`python -m MODULE --ros-args ...` for a Node, as `ros2 launch` would run it."""
    module = EXECUTABLES.get((node.package, node.executable))
    if module is None:
        raise LookupError(f"{node.package}/{node.executable} is not runnable here")
    args = [sys.executable, "-m", module, *node.arguments, "--ros-args"]
    if node.name:
        args += ["-r", f"__node:={node.name}"]
    if node.namespace:
        args += ["-r", f"__ns:={node.namespace}"]
    for entry in node.parameters:
        if isinstance(entry, dict):
            # a YAML params file keeps the types (bool/float/str) exactly as launch_ros passes them
            path = Path(tempfile.mkstemp(suffix=".yaml", dir=workdir)[1])
            path.write_text(json.dumps({"/**": {"ros__parameters": entry}}))
            args += ["--params-file", str(path)]
        else:
            args += ["--params-file", str(entry)]
    for src, dst in node.remappings:
        args += ["-r", f"{src}:={dst}"]
    return args
