"""`unipose-data` end to end: convert, stats (over every sample), merge with caps, show."""
import json

import cv2
import pytest

from shared_paths import DATA
from unipose_train.unikpt.cli import main
from unipose_train.unikpt.format import load
from unipose_train.unikpt.merge import DEFAULT_CAPS, iter_index, load_index

SAMPLES = [  # dataset, source, extra flags: one per format present in ../shared/data
    ("coco", "samples/coco/test_coco.json", []),
    ("humanart", "samples/humanart/test_humanart.json", []),
    ("300w", "samples/300w/pts_original", []),
    ("onehand10k", "samples/onehand10k/test_onehand10k.json", []),
    ("ap10k", "samples/ap10k/test_ap10k.json", []),
    ("macaque", "samples/macaque/test_macaque.json", []),
    ("animal_kingdom", "samples/animal_kingdom/ak_P3_mammal_test_annotation_subset.json",
     ["--images-root", str(DATA / "samples/animal_kingdom/images")]),
    ("vinegar_fly", "samples/fly/test_fly.json", []),
    ("desert_locust", "samples/locust/test_locust.json", []),
    ("mp100", "samples/mp100/mp100_split1_test_2per_cat.json", ["--no-image-check"]),
    ("deepfashion2", "samples/mp100/deepfashion2/deepfasion2.json", []),
    ("carfusion", "samples/mp100/carfusion/carfusion_coco.json", []),
    ("deeplabcut", "lab/openfield", ["--category", "mouse"]),
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not DATA.exists():
        pytest.skip("shared data not found")
    out = tmp_path_factory.mktemp("unikpt")
    files = []
    for dataset, src, flags in SAMPLES:
        path = out / f"{dataset}.json"
        assert main(["convert", "--dataset", dataset, "--src", str(DATA / src), "--out", str(path), *flags]) == 0
        files.append(path)
    return files


def test_converted_files_resolve_their_images(converted):
    for path in converted:
        data = load(path)
        if data.dataset != "mp100":
            assert data.validate(check_images=True) == [], path


def test_stats_over_all_samples(converted, capsys):
    assert main(["stats", *map(str, converted)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "| dataset | images | instances | labelled keypoints | keypoint names | categories |"
    assert "| coco | 4 | 14 |" in table and "| deeplabcut | 116 | 116 | 464 | 4 | 1 |" in table
    assert table.strip().splitlines()[-1].startswith("| total |")
    assert main(["stats", "--json", str(converted[0])]) == 0
    assert json.loads(capsys.readouterr().out)[0]["instances"] == 14


def test_merge_caps_and_weights(converted, tmp_path, capsys):
    index_path = tmp_path / "index.json"
    assert main(["merge", *map(str, converted), "--out", str(index_path), "--cap", "deeplabcut=10",
                 "--weight", "coco=2.5"]) == 0
    index = load_index(index_path)
    assert index["datasets"]["deeplabcut"]["selected"] == 10 and index["datasets"]["deeplabcut"]["images"] == 116
    assert index["datasets"]["coco"]["weight"] == 2.5 and index["datasets"]["coco"]["cap"] is None
    assert index["datasets"]["onehand10k"]["cap"] == DEFAULT_CAPS["onehand10k"] == 2000
    seen = {data.dataset: ids for data, ids, _ in iter_index(index)}
    assert len(seen["deeplabcut"]) == 10 and seen["coco"] is None
    again = tmp_path / "again.json"
    main(["merge", *map(str, converted), "--out", str(again), "--cap", "deeplabcut=10"])
    assert json.loads(again.read_text())["files"] == json.loads(index_path.read_text())["files"]  # seeded
    assert main(["merge", str(converted[0]), "--out", str(again), "--weight", "nope=1"]) == 1


def test_show_writes_contact_sheets(converted, tmp_path, capsys):
    coco = next(p for p in converted if p.name == "coco.json")
    assert main(["show", str(coco), "--out", str(tmp_path / "sheets"), "--n", "6", "--columns", "3"]) == 0
    sheet = cv2.imread(str(tmp_path / "sheets" / "coco_000.png"))
    assert sheet.shape == (2 * 256, 3 * 256, 3) and sheet.std() > 20  # real pixels, not blank tiles


def test_convert_strict_and_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg", "width": 10, "height": 10}],
                               "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}],
                               "annotations": [{"id": 4, "image_id": 1, "category_id": 1,
                                                "keypoints": [1, 1, 2] * 17, "bbox": [0, 0, 2, 2]}]}))
    assert main(["convert", "--dataset", "coco", "--src", str(bad), "--out", str(tmp_path / "o.json")]) == 0
    assert "missing_image" in capsys.readouterr().err
    assert main(["convert", "--dataset", "coco", "--src", str(bad), "--out", str(tmp_path / "o.json"),
                 "--strict"]) == 1
    assert "annotation" in capsys.readouterr().err
    assert main(["datasets"]) == 0 and "sleap" in capsys.readouterr().out
