"""`unipose-eval --checkpoint`: run a model over converted ground truth, then score it."""
import json

from shared_paths import DATA
from unipose_train.evaluation.cli import main as eval_main
from unipose_train.unikpt.cli import main as data_main


def test_eval_runs_a_checkpoint_on_converted_data(tmp_path, capsys):
    gt = tmp_path / "coco.json"
    assert data_main(["convert", "--dataset", "coco", "--src", str(DATA / "samples/coco/test_coco.json"),
                      "--out", str(gt)]) == 0
    out = tmp_path / "eval"
    assert eval_main(["--gt", str(gt), "--checkpoint", "reference", "--model", "unipose_tiny",
                      "--text-encoder", "hash", "--device", "cpu", "--short-side", "160", "--max-size", "256",
                      "--box-threshold", "0.0", "--max-images", "2", "--worst", "1", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "coco" in table and "AP" in table
    preds = json.loads((out / "predictions" / "coco.json").read_text())
    gt_json = json.loads(gt.read_text())
    first_two = {im["id"] for im in gt_json["images"][:2]}
    assert preds and {p["image_id"] for p in preds} <= first_two
    assert {p["category_id"] for p in preds} == {gt_json["categories"][0]["id"]}
    assert all(len(p["keypoints"]) == 3 * 17 for p in preds)
    results = json.loads((out / "results.json").read_text())
    assert results  # the report covers the evaluated dataset


def test_eval_needs_predictions_or_a_checkpoint(tmp_path, capsys):
    assert eval_main(["--gt", "x.json", "--out", str(tmp_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err
