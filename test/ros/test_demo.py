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


def test_demo_with_the_bundled_visual_prompt(tmp_path):
    """--visual: the same pipeline prompted by the bundled 1-shot support (a labelled fly of frame
    1000) instead of the text; both flies are found on the first frames."""
    proc = subprocess.run([sys.executable, "-m", "unipose_ros.demo", "--visual", "--frames", "2", "--rate", "5",
                           "--device", "cpu", "--out", str(tmp_path / "demo"), "--timeout", "120"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "prompt '<visual prompt: fly, 13 keypoints>'" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("frame ")]
    assert len(lines) >= 2 and all("2 x fly" in line for line in lines), proc.stdout


def test_demo_refuses_an_unusable_support(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("head 1 2\n")
    proc = subprocess.run([sys.executable, "-m", "unipose_ros.demo", "--support-image",
                           str(ROOT / "unipose_model" / "data" / "sample_fly.jpg"), "--support-keypoints", str(bad),
                           "--frames", "1", "--device", "cpu", "--out", str(tmp_path / "demo"), "--timeout", "60"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "visual prompt was refused" in proc.stderr, proc.stderr[-3000:]
    assert "expected 'name: x y'" in proc.stdout + proc.stderr
