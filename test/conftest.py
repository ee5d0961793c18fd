"""Shared test setup: never touch the network; in CI, headline tests may not skip."""
import os
from pathlib import Path

import pytest

# Must be set before huggingface_hub is imported anywhere (it reads these once).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# dtype "auto" (the CLI's and the node's default) means bfloat16 on CPUs with bf16 units: pin it to
# float32 so that results compared with fixed figures do not depend on which CPU runs the suite
# (test_auto_dtype.py checks the rule itself with given CPU flags).
os.environ.setdefault("UNIPOSE_AUTO_DTYPE", "float32")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (still part of CI)")
    config.addinivalue_line("markers", "headline: parity, bundled model or ROS test: a skip fails CI "
                                       "(UNIPOSE_REQUIRE_ALL=1, set by .ci/run)")
    config.addinivalue_line("markers", "gpu: has checks that run on a CUDA device when one is present "
                                       "(scripts/gpu_check.py runs them: pytest -m gpu)")


# ------------------------------------------------------------------ headline tests
# Parity with the official model, the bundled model's accuracy and the ROS tests skip when
# ../shared or the built messages are missing (a user's checkout may lack them). CI sets
# UNIPOSE_REQUIRE_ALL=1 (.ci/run): there a skip of one of them is a failure, so a green CI run
# cannot hide a parity or ROS check that never ran.
TEST_DIR = Path(__file__).resolve().parent
HEADLINE_FILES = {"test_parity.py", "test_official_end_to_end.py", "test_official_keypoints.py",
                  "test_bundled_model.py"}
REQUIRE_ALL = os.environ.get("UNIPOSE_REQUIRE_ALL") == "1"


def is_headline(path) -> bool:
    try:
        rel = Path(path).resolve().relative_to(TEST_DIR)
    except ValueError:
        return False
    return rel.parts[:1] == ("ros",) or rel.name in HEADLINE_FILES


def pytest_collection_modifyitems(config, items):
    for item in items:
        if is_headline(item.path):
            item.add_marker("headline")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_skip(report, what: str) -> None:
    report.outcome = "failed"
    report.longrepr = (f"{what} was skipped, but UNIPOSE_REQUIRE_ALL=1 (CI) requires every headline test "
                       f"(parity, bundled model, ROS) to run: {_skip_reason(report)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("headline"):
        _fail_skip(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and is_headline(collector.path):
        _fail_skip(report, collector.nodeid)
