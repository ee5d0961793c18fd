"""`training` was renamed `unipose_train`; old `python -m training...` commands keep working in the
checkout for a while and say what to type instead."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_old_module_path_runs_the_new_module_with_a_deprecation_line():
    r = subprocess.run([sys.executable, "-m", "training.train_cli", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: unipose-train" in r.stdout
    assert "`training` is now `unipose_train`" in r.stderr
