"""A short run of the README's demo: bundled clip -> image_source -> detector -> topics ->
per-frame summary and annotated video."""
import subprocess
import sys

import cv2

from rostest_support import ROOT


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "unipose_ros.demo", "--frames", "3", "--rate", "5",
                           "--device", "cpu", "--out", str(out), "--timeout", "120"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("frame ")]
    assert len(lines) >= 3 and all("x fly" in line for line in lines), proc.stdout
    assert "processed" in proc.stdout and "marker arrays" in proc.stdout
    video = cv2.VideoCapture(str(out / "fly_demo_annotated.mp4"))
    ok, frame = video.read()
    assert ok and frame.shape == (1024, 1024, 3)
    video.release()
