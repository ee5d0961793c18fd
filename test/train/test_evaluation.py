"""The evaluator equals xtcocotools and pycocotools (1e-6) on ground truth scored against
perturbed copies of itself; PCK equals a hand computation; reports and overlays are written."""
import json

import numpy as np
import pytest

from shared_paths import DATA
from unipose_train.evaluation.box_ap import evaluate_boxes
from unipose_train.evaluation.cli import main as eval_main
from unipose_train.evaluation.coco_eval import available_backends, evaluate_keypoints, library_eval
from unipose_train.evaluation.oks import oks_matrix
from unipose_train.evaluation.pck import pck
from unipose_train.evaluation.report import worst_cases
from unipose_train.unikpt.converters import convert
from unipose_train.unikpt.format import Category, Image, Instance, UniKPT, save

BACKENDS = available_backends()
NOISE_LEVELS = [0.0, 0.03, 0.08, 0.2]


def need(rel):
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


def perturbed(gt, noise, seed=0, drop=0.15, extra=0.1, boxes=False):
    """Results: each instance's keypoints moved by noise * sqrt(area), some dropped, some duplicated."""
    rng = np.random.default_rng(seed)
    out = []
    for inst in gt.instances:
        for _ in range(1 + (rng.random() < extra)):
            if rng.random() < drop:
                continue
            k = inst.keypoints.copy()
            k[:, :2] += rng.normal(0, noise * np.sqrt(max(inst.area, 1.0)), k[:, :2].shape)
            k[:, 2] = rng.random(len(k))
            r = {"image_id": inst.image_id, "category_id": inst.category_id,
                 "keypoints": k.reshape(-1).tolist(), "score": float(rng.random())}
            if boxes:
                x, y, w, h = inst.bbox
                j = rng.normal(0, noise * max(w, h), 4)
                r["bbox"] = [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]
            out.append(r)
    return out


@pytest.fixture(scope="module")
def datasets():
    fly = convert("sleap", need("lab/fly_clip/clip.slp")).data
    keep = {im.id for im in fly.images[:150]}  # a slice keeps the test fast
    fly.images = [im for im in fly.images if im.id in keep]
    fly.instances = [i for i in fly.instances if i.image_id in keep]
    fly.categories[0].sigmas = [0.05] * len(fly.categories[0].keypoints)  # for the OKS comparison
    return {"coco": convert("coco", need("samples/coco/test_coco.json")).data,
            "coco_train_mini": convert("coco", need("coco_train_mini/person_keypoints_train2017.json")).data,
            "ap10k": convert("ap10k", need("samples/ap10k/test_ap10k.json")).data,
            "fly": fly}


@pytest.mark.skipif(not BACKENDS, reason="neither xtcocotools nor pycocotools is importable")
@pytest.mark.parametrize("name", ["coco", "coco_train_mini", "ap10k", "fly"])
@pytest.mark.parametrize("noise", NOISE_LEVELS)
def test_oks_ap_equals_coco_tools(datasets, name, noise):
    gt = datasets[name]
    results = perturbed(gt, noise, seed=int(noise * 100), boxes=(noise == 0.03))
    mine = evaluate_keypoints(gt, results)
    for backend in BACKENDS:
        ref = library_eval(gt, results, sigmas=gt.categories[0].sigmas, backend=backend)
        for key in mine:
            assert mine[key] == pytest.approx(ref[key], abs=1e-6), (backend, key)
    if noise == 0.0:
        assert mine["AP"] > 0.5


@pytest.mark.skipif("xtcocotools" not in BACKENDS, reason="xtcocotools not importable")
def test_equals_xtcocotools_on_the_source_file(datasets):
    """Conversion keeps everything OKS AP depends on: the raw AP-10K/COCO files give the same numbers."""
    for name, rel in (("coco", "samples/coco/test_coco.json"), ("ap10k", "samples/ap10k/test_ap10k.json")):
        gt = datasets[name]
        results = perturbed(gt, 0.05)
        raw = library_eval(need(rel), results, sigmas=gt.categories[0].sigmas, backend="xtcocotools")
        mine = evaluate_keypoints(gt, results)
        assert all(mine[k] == pytest.approx(raw[k], abs=1e-6) for k in mine)


@pytest.mark.skipif("xtcocotools" not in BACKENDS, reason="xtcocotools not importable")
def test_use_area_false_matches_xtcocotools(datasets):
    gt = datasets["coco"]
    results = perturbed(gt, 0.05, seed=3)
    mine = evaluate_keypoints(gt, results, use_area=False)
    ref = library_eval(gt, results, sigmas=gt.categories[0].sigmas, backend="xtcocotools", use_area=False)
    assert all(mine[k] == pytest.approx(ref[k], abs=1e-6) for k in mine)


@pytest.mark.skipif("pycocotools" not in BACKENDS, reason="pycocotools not importable")
@pytest.mark.parametrize("noise", [0.0, 0.05, 0.15])
def test_box_ap_equals_pycocotools(datasets, noise):
    gt = datasets["coco_train_mini"]
    results = perturbed(gt, noise, seed=7, boxes=True)
    for r in results:
        del r["keypoints"]
    mine = evaluate_boxes(gt, results)
    ref = library_eval(gt, results, iou_type="bbox", backend="pycocotools")
    assert all(mine[k] == pytest.approx(ref[k], abs=1e-6) for k in mine)


def test_oks_formula_by_hand():
    gt = np.array([[[10.0, 10.0, 2], [20.0, 10.0, 2], [0.0, 0.0, 0]]])
    dt = np.array([[[13.0, 14.0, 1], [20.0, 10.0, 1], [99.0, 99.0, 1]]])
    sigmas = np.array([0.1, 0.2, 0.3])
    area = 400.0
    e0 = 25 / (2 * 0.1) ** 2 / (area + np.spacing(1)) / 2  # d^2 / (2 sigma)^2 / s / 2
    expected = (np.exp(-e0) + 1.0) / 2  # the unlabelled third point does not count
    assert oks_matrix(dt, gt, np.array([area]), np.array([[0, 0, 30, 20]]), sigmas)[0, 0] == pytest.approx(expected)


def tiny_pck_dataset():
    cat = Category(1, "mouse", ["snout", "left ear", "right ear", "root of tail"])
    k1 = np.array([[10, 10, 2], [20, 10, 2], [30, 10, 2], [0, 0, 0]], float)
    k2 = np.array([[60, 60, 2], [70, 60, 2], [80, 60, 2], [90, 60, 1]], float)
    insts = [Instance(1, 1, 1, k1, (10, 5, 20, 10), 200), Instance(2, 1, 1, k2, (60, 50, 30, 20), 600),
             Instance(3, 2, 1, k1, (10, 5, 20, 10), 200)]
    return UniKPT("lab", images=[Image(1, "a.png", 100, 100), Image(2, "b.png", 100, 100)],
                  instances=insts, categories=[cat])


def test_pck_by_hand():
    gt = tiny_pck_dataset()
    # Instance 1 (norm = max(20, 10) = 20, threshold 4 px): errors 0, 3, 5 -> 2 of 3 correct.
    p1 = [10, 10, 1, 23, 10, 1, 35, 10, 1, 0, 0, 0]
    # Instance 2 (norm 30, threshold 6 px): errors 0, 6 (not < 6), 1, 10 -> 2 of 4 correct.
    p2 = [60, 60, 1, 76, 60, 1, 80, 61, 1, 100, 60, 1]
    results = [{"image_id": 1, "category_id": 1, "keypoints": p2, "score": 0.5},
               {"image_id": 1, "category_id": 1, "keypoints": p1, "score": 0.9}]
    # Instance 3 has no prediction: 0 of 3 correct.
    out = pck(gt, results, thr=0.2)
    assert out["PCK"] == pytest.approx((2 / 3 + 2 / 4 + 0) / 3)
    assert out["PCK_keypoints"] == pytest.approx(4 / 10)
    assert out["instances"] == 3 and out["keypoints"] == 10
    # per keypoint, over the instances that label it (instance 3 misses all three of its own)
    assert out["per_keypoint"] == pytest.approx({"snout": 2 / 3, "left ear": 1 / 3, "right ear": 1 / 3,
                                                 "root of tail": 0.0})
    assert list(out["per_keypoint"]) == ["snout", "left ear", "right ear", "root of tail"]


def test_worst_cases_and_cli(tmp_path, datasets):
    gt = datasets["fly"]
    gt.categories[0].sigmas = None  # a PCK dataset again
    gt_path = save(gt, tmp_path / "fly.json")
    gt_path_data = json.loads(gt_path.read_text())
    gt_path_data["images_root"] = str(DATA / "lab" / "fly_clip")
    gt_path.write_text(json.dumps(gt_path_data))
    results = perturbed(gt, 0.05, seed=1)
    worst = worst_cases(gt, results, n=3)
    assert [w[2] for w in worst] == sorted(w[2] for w in worst) and worst[0][1] is None  # a dropped one
    coco_gt = save(datasets["ap10k"], tmp_path / "ap10k.json")
    (tmp_path / "p_fly.json").write_text(json.dumps(results))
    (tmp_path / "p_ap.json").write_text(json.dumps(perturbed(datasets["ap10k"], 0.0, drop=0, extra=0, boxes=True)))
    code = eval_main(["--gt", str(gt_path), str(coco_gt), "--pred", str(tmp_path / "p_fly.json"),
                      str(tmp_path / "p_ap.json"), "--out", str(tmp_path / "eval"), "--worst", "2"])
    assert code == 0
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert rows[0]["metric"] == "PCK@0.2" and 0.5 < rows[0]["PCK@0.2"] < 1
    assert rows[1]["metric"] == "OKS AP" and rows[1]["AP"] == pytest.approx(1.0) and rows[1]["box AP"] == pytest.approx(1.0)
    table = (tmp_path / "eval" / "results.md").read_text()
    assert "| sleap | PCK@0.2 |" in table and "| ap10k | OKS AP | 100.0 |" in table
    # per keypoint: pooled over each dataset's categories, in the categories' keypoint order
    per_fly = rows[0]["PCK@0.2 per keypoint"]
    assert list(per_fly) == gt.categories[0].keypoints
    assert all(0 <= v <= 1 for v in per_fly.values())
    assert rows[1]["PCK@0.2 per keypoint"] == pytest.approx({k: 1.0 for k in rows[1]["PCK@0.2 per keypoint"]})
    ap = datasets["ap10k"]   # one row per keypoint name that some instance labels
    labelled = {c.keypoints[j] for i in ap.instances for c in ap.categories if c.id == i.category_id
                for j in np.flatnonzero(i.keypoints[:, 2] > 0)}
    assert set(rows[1]["PCK@0.2 per keypoint"]) == labelled and len(labelled) >= 15
    assert "## sleap: PCK@0.2 per keypoint" in table and "| head |" in table
    pngs = sorted((tmp_path / "eval" / "worst").glob("*.png"))
    assert len(pngs) == 4
    import cv2
    assert cv2.imread(str(pngs[0])).shape == (384, 384, 3)


def test_results_for_unknown_images_are_refused(datasets):
    gt = datasets["coco"]
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_keypoints(gt, [{"image_id": -5, "category_id": 1, "keypoints": [0] * 51, "score": 1}])
