"""scripts/eval_tracking.py end to end on a detection cache made from the labels themselves
(perfect detections): every step scores 0 switches, IDF1 and MOTA 1, through the script's own
ground-truth reading, frame subsampling and report."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import eval_tracking  # noqa: E402

FRAMES = 30


def cache_from_labels(path):
    labels = json.loads(eval_tracking.LABELS.read_text())
    frames = {str(f): [] for f in range(FRAMES)}
    for a in labels["annotations"]:
        if a["image_id"] < FRAMES:
            frames[str(a["image_id"])].append({"bbox": a["bbox"], "score": 0.9, "keypoints": a["keypoints"]})
    path.write_text(json.dumps({"checkpoint": "labels", "box_threshold": 0.3, "cache_threshold": 0.05,
                                "frames": frames}))


def test_perfect_detections_score_perfectly(tmp_path, capsys):
    cache = tmp_path / "dets.json"
    cache_from_labels(cache)
    out = tmp_path / "report.json"
    assert eval_tracking.main(["--detections", str(cache), "--num-frames", str(FRAMES), "--steps", "1", "5",
                               "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for step, frames in (("1", 30), ("5", 6)):
        row = report["steps"][step]
        assert row["frames"] == frames
        assert row["all"]["id_switches"] == 0 and row["all"]["IDF1"] == 1.0 and row["all"]["MOTA"] == 1.0
        assert row["iou_baseline_all"]["IDF1"] == 1.0
    assert "every 5: 6 frames, switches 0" in capsys.readouterr().err
