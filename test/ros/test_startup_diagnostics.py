"""/diagnostics exists from start-up: a model that fails to load is an ERROR status there."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus


def test_failed_model_load_is_an_error_on_diagnostics_and_the_node_keeps_running(start_node, probe, tmp_path):
    missing = tmp_path / "no_such_model.pth"
    node = start_node(params={"model": "unipose_tiny", "checkpoint": str(missing), "device": "cpu",
                              "diagnostics_period": 0.2})
    probe.subscribe(DiagnosticArray, "/diagnostics")

    def error_status(msg):
        return any(s.level == DiagnosticStatus.ERROR and s.name.startswith("/unipose") for s in msg.status)

    msg = probe.wait_for_message("/diagnostics", error_status, timeout=60, node=node)
    status = next(s for s in msg.status if s.level == DiagnosticStatus.ERROR)
    assert "cannot load the model" in status.message and str(missing) in status.message
    assert node.alive()
