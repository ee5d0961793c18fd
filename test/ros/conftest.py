"""Fixtures for the ROS 2 tests (helpers live in rostest_support.py)."""
from __future__ import annotations

import pytest

from rostest_support import NodeProcess, Probe, ros_args, rclpy  # noqa: F401 - sets the test domain first


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test (still run in CI)")


@pytest.fixture
def start_node(tmp_path_factory):
    """start_node(module, params, remaps) -> NodeProcess; all stopped at the end of the test."""
    started: list[NodeProcess] = []
    log_dir = tmp_path_factory.mktemp("node-logs")

    def start(module="unipose_ros.detector_node", params=None, remaps=None, name=None, env=None):
        node = NodeProcess(module, ros_args(params, remaps), log_dir, name=name, env=env)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture(scope="session")
def ros_context():
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def probe(ros_context):
    p = Probe()
    yield p
    p.close()
