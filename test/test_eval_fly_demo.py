"""scripts/eval_fly_demo.py, the held-out scoring behind the model card: runs from the command
line on a few frames and reports per-keypoint PCK consistent with the overall figure."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared_paths import DATA

REPO = Path(__file__).resolve().parents[1]
LABELS = DATA / "lab" / "fly_clip" / "clip_keypoints_coco.json"


@pytest.mark.skipif(not LABELS.exists(), reason=f"shared data missing: {LABELS}")
def test_eval_script_reports_per_keypoint_pck(tmp_path):
    out = tmp_path / "eval.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", UNIPOSE_SHARED_DATA=str(DATA))
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "eval_fly_demo.py"), "--frames", "1200:1204:2",
                          "--refine", "0", "--json", str(out)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["num_frames"] == 2 and not result["refine"]   # --refine 0: first pass only
    per = result["PCK@0.2_per_keypoint"]
    labels = json.loads(LABELS.read_text())["categories"][0]["keypoints"]
    assert len(per) == len(labels) == 13 and all(0.0 <= v <= 1.0 for v in per.values())
    # every held-out fly labels all 13 keypoints, so the mean over keypoints is the overall rate
    assert sum(per.values()) / len(per) == pytest.approx(result["PCK_keypoints@0.2"], abs=1e-3)
    # the body axis is where the bundled model is sure (0.99-1.0 over all 300 frames)
    assert per["thorax"] == 1.0 and per["head"] == 1.0
