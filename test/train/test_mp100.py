"""The MP-100 protocol end to end on the trimmed split file with a tiny model (numbers meaningless)."""
import json

import cv2
import numpy as np

from shared_paths import DATA
from unipose_train.evaluation.mp100 import episodes, load_split, main, pck

SPLIT = DATA / "samples/mp100/mp100_split1_test_2per_cat.json"


def test_pck_counts_visible_keypoints_within_the_threshold():
    gt = np.array([[0, 0, 2], [10, 0, 2], [5, 5, 0]], float)
    pred = np.array([[1, 0], [10, 30], [100, 100]], float)
    # box 20 x 10 -> threshold 0.2 * 20 = 4 px: first correct, second not, third invisible
    assert pck(pred, gt, (0, 0, 20, 10), 0.2) == (1, 2)


def test_episodes_pair_every_support_with_the_other_queries():
    split = load_split(SPLIT)
    eps = episodes(split)
    cats = {c["id"] for c in split["categories"]}
    assert len(eps) == 2 * len(cats)  # 2 annotations per category -> 2 ordered pairs
    assert all(e.support_ann is not e.query_ann and e.support_ann["category_id"] == e.query_ann["category_id"]
               for e in eps)


def test_protocol_runs_end_to_end(tmp_path, capsys):
    """The split file has no images here: the test writes stand-in images of the right sizes."""
    full = json.loads(SPLIT.read_text())
    keep = {c["id"] for c in full["categories"][:3]}
    anns = [a for a in full["annotations"] if a["category_id"] in keep]
    ids = {a["image_id"] for a in anns}
    split = {"images": [im for im in full["images"] if im["id"] in ids], "annotations": anns,
             "categories": [c for c in full["categories"] if c["id"] in keep]}
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for im in split["images"]:
        path = root / im["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (max(im["height"] // 8, 8), max(im["width"] // 8, 8), 3), np.uint8)
        cv2.imwrite(str(path), cv2.resize(small, (im["width"], im["height"]), interpolation=cv2.INTER_NEAREST))
    split_path = tmp_path / "split.json"
    split_path.write_text(json.dumps(split))
    out = tmp_path / "out"
    assert main(["--split", str(split_path), "--images-root", str(root), "--checkpoint", "reference",
                 "--short-side", "128", "--max-size", "192", "--out", str(out)]) == 0
    report = json.loads((out / "mp100.json").read_text())["split"]
    for setting in ("gt_box", "no_box"):
        assert 0.0 <= report[setting]["mean_pck"] <= 1.0
        assert len(report[setting]["per_category"]) == 3
    assert "gt_box" in capsys.readouterr().out
    # missing images: a clear error, not a traceback
    assert main(["--split", str(split_path), "--images-root", str(tmp_path / "nowhere"), "--checkpoint",
                 "reference", "--out", str(out)]) == 1
