"""unipose-eval with unusable predictions (issue 19, item 6): each is named and left out; the
metrics, the report and the worst-case overlays are still written."""
import json

import numpy as np
import pytest

from unipose_train.evaluation.cli import main as eval_main
from unipose_train.evaluation.report import evaluate_dataset
from unipose_train.unikpt.converters import convert
from unipose_train.unikpt.format import save

from test_evaluation import need, perturbed


@pytest.fixture(scope="module")
def coco():
    return convert("coco", need("coco_train_mini/person_keypoints_train2017.json")).data


def test_nan_keypoints_partial_boxes_and_unknown_ids(tmp_path, coco, capsys):
    gt_path = save(coco, tmp_path / "coco.json")
    results = perturbed(coco, 0.0, drop=0, extra=0, boxes=True)
    assert len(results) >= 10
    results[0]["keypoints"][3] = float("nan")       # was: crash while drawing the worst cases
    for r in results[1::2]:
        del r["bbox"]                               # was: KeyError 'bbox'
    results.append({**results[2], "image_id": 987654321})
    results.append({**results[2], "category_id": 4242})
    results.append({**results[2], "keypoints": results[2]["keypoints"][:-3]})
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(results))  # NaN is written as the bare NaN many tools emit
    good = [r for r in json.loads(pred.read_text())[1:-3]]
    code = eval_main(["--gt", str(gt_path), "--pred", str(pred), "--out", str(tmp_path / "eval"), "--worst", "3"])
    err = capsys.readouterr()
    assert code == 0, err.err
    assert "prediction #0 (image_id" in err.err and "NaN" in err.err
    assert f"prediction #{len(results) - 3}" in err.err and "987654321 is not in the ground truth" in err.err
    assert "category_id 4242" in err.err and "needs" in err.err
    assert "have no 'bbox'" in err.err
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())
    expected = evaluate_dataset(coco, good)  # the report scores exactly the usable predictions
    assert rows[0]["AP"] == pytest.approx(expected["AP"]) and rows[0]["AP"] > 0.3
    assert rows[0]["box AP"] == pytest.approx(expected["box AP"]) and rows[0]["box AP"] > 0.1
    assert (tmp_path / "eval" / "results.md").is_file()
    assert len(list((tmp_path / "eval" / "worst").glob("*.png"))) == 3
    assert np.isfinite(rows[0]["PCK@0.2"])
