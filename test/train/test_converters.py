"""Every converter: on the real samples in ../shared/data where the format is there, on small
files written here in the published format where it is not (APT-36K, AnimalWeb, Keypoint-5,
MacaquePose csv, OneHand10K txt)."""
import csv
import json

import cv2
import numpy as np
import pytest

from shared_paths import DATA
from unipose_train.unikpt.converters import CONVERTERS, ConversionError, convert
from unipose_train.unikpt.converters.w300 import read_ljson, read_pts

SAMPLES = DATA / "samples"


def need(path):
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


def conv(dataset, rel, **kw):
    return convert(dataset, need(DATA / rel), **kw)


def coco_json(rel):
    return json.loads(need(DATA / rel).read_text())


def write_image(path, w=64, h=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 127, np.uint8))
    return path


# ----------------------------------------------------------------------------- real samples
@pytest.mark.parametrize("dataset, rel, images, instances", [
    ("coco", "samples/coco/test_coco.json", 4, 14),
    ("coco", "coco_train_mini/person_keypoints_train2017.json", 80, 172),
    ("humanart", "samples/humanart/test_humanart.json", 3, 4),
    ("300w", "samples/300w/mmpose_coco/test_300w.json", 2, 2),
    ("300w", "samples/300w/pts_original", 4, 4),
    ("onehand10k", "samples/onehand10k/test_onehand10k.json", 4, 4),
    ("ap10k", "samples/ap10k/test_ap10k.json", 2, 2),
    ("macaque", "samples/macaque/test_macaque.json", 2, 2),
    ("vinegar_fly", "samples/fly/test_fly.json", 2, 2),
    ("desert_locust", "samples/locust/test_locust.json", 2, 2),
    ("deepfashion2", "samples/mp100/deepfashion2/deepfasion2.json", 2, 2),
    ("carfusion", "samples/mp100/carfusion/carfusion_coco.json", 1, 2),
])
def test_real_samples_convert_cleanly(dataset, rel, images, instances):
    result = conv(dataset, rel)
    data = result.data
    assert (len(data.images), len(data.instances)) == (images, instances)
    assert result.issues == [] and data.validate(check_images=True) == []
    for inst in data.instances:
        cat = data.category(inst.category_id)
        assert inst.keypoints.shape == (len(cat.keypoints), 3)
        assert all(name == name.lower() and "_" not in name for name in cat.keypoints)


def test_coco_keeps_ids_coordinates_and_sigmas():
    src = coco_json("samples/coco/test_coco.json")
    data = conv("coco", "samples/coco/test_coco.json").data
    mine = {i.id: i for i in data.instances}
    for a in src["annotations"]:
        np.testing.assert_allclose(mine[a["id"]].keypoints.reshape(-1), a["keypoints"])
        assert mine[a["id"]].area == pytest.approx(a["area"]) and mine[a["id"]].iscrowd == a["iscrowd"]
    cat = data.categories[0]
    assert cat.keypoints[:3] == ["nose", "left eye", "right eye"] and cat.sigmas[0] == pytest.approx(0.026)
    assert cat.skeleton[0] == (15, 13)  # 0-based (COCO's file says [16, 14])


def test_humanart_style_and_image_paths():
    data = conv("humanart", "samples/humanart/test_humanart.json").data
    styles = {im.style for im in data.images}
    assert {"digital art", "garage kits", "acrobatics"} == styles
    assert all(not im.file_name.startswith("HumanArt/") for im in data.images)  # located under the root
    assert data.categories[0].keypoint_set == "person" and len(data.categories[0].keypoints) == 17


def test_ap10k_species_and_taxonomy():
    data = conv("ap10k", "samples/ap10k/test_ap10k.json").data
    assert len(data.categories) == 54
    jaguar = next(c for c in data.categories if c.name == "jaguar")
    assert jaguar.id == 26 and jaguar.taxonomy == {"class": "mammalia", "family": "felidae"}
    assert jaguar.keypoints[4] == "root of tail" and jaguar.sigmas is not None


def test_animal_kingdom_list_and_coco_export_agree():
    root = SAMPLES / "animal_kingdom" / "images"
    a = conv("animal_kingdom", "samples/animal_kingdom/ak_P3_mammal_test_annotation_subset.json", images_root=root).data
    b = conv("animal_kingdom", "samples/animal_kingdom/ak_P3_mammal_test_annotation_coco_subset.json",
             images_root=root).data
    assert [c.name for c in a.categories] == [c.name for c in b.categories] == ["elephant"]
    assert a.categories[0].taxonomy["class"] == "mammal"
    for x, y in zip(a.instances, b.instances):
        np.testing.assert_allclose(x.keypoints[:, :2], y.keypoints[:, :2])
        assert ((x.keypoints[:, 2] > 0) == (y.keypoints[:, 2] > 0)).all()
    # the official Animal Kingdom text, verbatim (its trailing space included)
    assert a.categories[0].keypoints[1] == "eye left" and len(a.categories[0].keypoints) == 23
    assert a.categories[0].keypoints[18] == "ankle left "


def test_300w_pts_are_one_based_and_ljson_is_y_x():
    folder = need(SAMPLES / "300w" / "pts_original")
    first = next(ln for ln in (folder / "einstein.pts").read_text().splitlines()[3:] if ln.strip())
    x, y = (float(v) for v in first.split())
    assert tuple(read_pts(folder / "einstein.pts")[0]) == (x - 1, y - 1)
    raw = json.loads((folder / "lenna.ljson").read_text())["groups"]["LJSON"]["landmarks"]["points"][0]
    assert tuple(read_ljson(folder / "lenna.ljson")[0]) == (raw[1], raw[0])
    data = conv("300w", "samples/300w/pts_original").data
    for inst in data.instances:  # jaw point 0 is the subject's right: image left in a frontal face
        assert inst.keypoints[0, 0] < inst.keypoints[16, 0]
    assert data.categories[0].keypoints[8] == "chin center"  # the official face text


def test_deepfashion2_concatenated_layout_is_sliced():
    data = conv("deepfashion2", "samples/mp100/deepfashion2/deepfasion2.json").data
    src = coco_json("samples/mp100/deepfashion2/deepfasion2.json")
    cat = data.categories[0]
    assert cat.keypoint_set == "long_sleeved_dress" and len(cat.keypoints) == 37
    for inst, a in zip(data.instances, src["annotations"]):
        full = np.asarray(a["keypoints"]).reshape(-1, 3)
        np.testing.assert_allclose(inst.keypoints, full[219:256])  # 25+33+31+39+15+15+10+14+8+29 = 219
        assert inst.num_keypoints == a["num_keypoints"]


def test_carfusion_and_zero_annotation_id():
    data = conv("carfusion", "samples/mp100/carfusion/carfusion_coco.json").data
    assert data.categories[0].keypoint_set == "car" and data.categories[0].supercategory == "vehicle"
    # all 14 CarFusion slots, named by the official text: the model was trained with both "none"
    assert data.categories[0].keypoints[0] == "right front wheel center"
    assert data.categories[0].keypoints.count("none") == 2
    assert all(i.id > 0 for i in data.instances)  # COCO tools read id 0 as "unmatched"


def test_mp100_categories_map_to_sets():
    data = conv("mp100", "samples/mp100/mp100_split1_test_2per_cat.json", check_images=False)
    assert data.issues == []
    by_source = {c.source_name: c for c in data.data.categories}
    assert by_source["klipspringer_face"].keypoint_set == "animal_face"
    assert by_source["klipspringer_face"].name == "klipspringer face"
    assert (by_source["squirrel_body"].keypoint_set, by_source["squirrel_body"].name) == ("animal", "squirrel")
    assert by_source["Woodpecker"].keypoint_set == "bird"
    assert by_source["swivelchair"].keypoint_set == "swivelchair"
    assert by_source["long_sleeved_outwear"].keypoint_set == "long_sleeved_outwear"
    val = conv("mp100", "samples/mp100/mp100_split1_val_2per_cat.json", check_images=False)
    assert val.issues == [] and {c.keypoint_set for c in val.data.categories} >= {"fly", "macaque", "animal_face"}


def test_deepposekit_h5(tmp_path):
    result = convert("vinegar_fly", need(SAMPLES / "fly" / "example_annotation_set.h5"), frames_dir=tmp_path / "f")
    data = result.data
    assert len(data.images) == 100 and len(data.instances) == 100 and result.issues == []
    assert (data.images[0].width, data.images[0].height) == (192, 192)
    assert (tmp_path / "f" / data.images[0].file_name).exists()
    import h5py
    with h5py.File(SAMPLES / "fly" / "example_annotation_set.h5") as fh:
        np.testing.assert_allclose(data.instances[3].keypoints[:, :2], fh["annotations"][3])
    assert data.validate(check_images=True) == []


def test_sleap_matches_its_coco_export():
    data = conv("sleap", "lab/fly_clip/clip.slp").data
    ref = coco_json("lab/fly_clip/clip_keypoints_coco.json")
    cat = data.categories[0]
    assert cat.keypoint_set == "fly" and cat.keypoints[3] == "wing left"  # the official fly text
    assert len(data.instances) == len(ref["annotations"]) == 3000
    frame_of = {im.id: int(im.file_name.split("#frame=")[1]) for im in data.images}
    mine = {(frame_of[i.image_id], i.track_id): i for i in data.instances}
    for a in ref["annotations"][::7]:
        inst = mine[(a["image_id"], a["track_id"])]
        np.testing.assert_allclose(inst.keypoints.reshape(-1), a["keypoints"])
        np.testing.assert_allclose(inst.bbox, a["bbox"])
    assert (data.images[0].width, data.images[0].height) == (1024, 1024)
    assert [list(p) for p in cat.skeleton] == ref["categories"][0]["skeleton"]


def test_deeplabcut_csv_and_h5_agree(tmp_path):
    project = need(DATA / "lab" / "openfield")
    from_csv = convert("deeplabcut", project, category="mouse").data
    assert from_csv.categories[0].keypoints == ["snout", "left ear", "right ear", "root of tail"]
    assert from_csv.categories[0].flip_pairs == [(1, 2)] and len(from_csv.instances) == 116
    # The same project with the .h5 only (csv removed) reads the same labels.
    import shutil
    copy = tmp_path / "openfield"
    (copy / "labeled-data" / "m4s1").mkdir(parents=True)
    shutil.copy(project / "config.yaml", copy)
    shutil.copy(project / "labeled-data/m4s1/CollectedData_Pranav.h5", copy / "labeled-data/m4s1")
    from_h5 = convert("deeplabcut", copy, category="mouse", check_images=False, images_root=project).data
    assert len(from_h5.instances) == 116
    for a, b in zip(from_csv.instances, from_h5.instances):
        np.testing.assert_allclose(a.keypoints, b.keypoints)


# ----------------------------------------------------------------------------- test-written files
def test_apt36k_written(tmp_path):
    kp = [10, 10, 2] * 17
    kp[3:6] = [0, 0, 0]
    data = {"images": [{"id": 1, "file_name": "clip01/0001.jpg", "width": 64, "height": 48, "video_id": 1,
                        "frame_id": 1}],
            "categories": [{"id": 3, "name": "dog", "supercategory": "Canidae",
                            "keypoints": ["left_eye"] * 17, "skeleton": []}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 20], "area": 400,
                             "iscrowd": 0, "keypoints": kp, "num_keypoints": 16, "track_id": 7}]}
    write_image(tmp_path / "clip01" / "0001.jpg")
    (tmp_path / "apt.json").write_text(json.dumps(data))
    out = convert("apt36k", tmp_path / "apt.json").data
    assert out.instances[0].track_id == 7 and out.categories[0].taxonomy["family"] == "canidae"
    assert out.categories[0].keypoint_set == "animal"


def write_pts(path, pts):
    body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts)
    path.write_text(f"version: 1\nn_points:  {len(pts)}\n{{\n{body}\n}}\n")


def test_animalweb_written(tmp_path):
    pts = np.array([[10, 10], [20, 10], [30, 10], [40, 10], [25, 20], [15, 30], [35, 30], [25, 28], [25, 34]], float)
    for name in ("klipspringer_1", "commonwarthog_12"):
        write_image(tmp_path / f"{name}.jpg")
        write_pts(tmp_path / f"{name}.pts", pts)
    out = convert("animalweb", tmp_path).data
    assert sorted(c.name for c in out.categories) == ["commonwarthog face", "klipspringer face"]
    np.testing.assert_allclose(out.instances[0].keypoints[:, :2], pts, atol=1e-6)
    assert out.categories[0].keypoint_set == "animal_face"


def test_keypoint5_written(tmp_path):
    from scipy.io import savemat
    rng = np.random.default_rng(0)
    coords = rng.uniform(5, 40, size=(2, 10, 3))  # (x/y, keypoint, image)
    coords[:, 9, 2] = 0  # a missing point
    names = np.empty((3,), dtype=object)
    for i in range(3):
        names[i] = f"img{i}.jpg"
        write_image(tmp_path / "chair" / "images" / f"img{i}.jpg")
    savemat(tmp_path / "chair" / "coords.mat", {"coords": coords, "imgs": names})
    out = convert("keypoint5", tmp_path).data
    assert len(out.instances) == 3 and out.categories[0].keypoint_set == "chair"
    np.testing.assert_allclose(out.instances[1].keypoints[:, :2], coords[:, :, 1].T)
    assert out.instances[2].keypoints[9, 2] == 0 and out.images[0].file_name == "chair/images/img0.jpg"


def test_macaque_csv_written(tmp_path):
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
             "right_knee", "left_ankle", "right_ankle"]
    monkey1 = [{"name": n, "position": [5 + i, 6 + i]} for i, n in enumerate(names)]
    monkey1[3]["position"] = None
    monkey2 = [{"name": n, "x": 30 + i, "y": 20} for i, n in enumerate(names)]
    seg = [[[{"x": 2, "y": 3}, {"x": 40, "y": 3}, {"x": 40, "y": 30}]], [[[28, 18], [50, 18], [50, 25]]]]
    write_image(tmp_path / "images" / "m1.jpg")
    with open(tmp_path / "annotations.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image file name", "segmentation", "keypoints"])
        w.writerow(["m1.jpg", json.dumps(seg), json.dumps([monkey1, monkey2])])
        w.writerow(["m1.jpg", "[]", json.dumps([monkey1[:5]])])  # wrong count: reported, skipped
    result = convert("macaque", tmp_path / "annotations.csv")
    out = result.data
    assert len(out.instances) == 2 and out.images[0].file_name == "images/m1.jpg"
    assert out.instances[0].bbox == (2, 3, 38, 27) and out.instances[0].keypoints[3, 2] == 0
    assert out.instances[1].keypoints[16, 0] == 46
    assert [i.kind for i in result.issues] == ["keypoint_count"] and "row 3" in str(result.issues[0].ann_id)


def test_onehand10k_txt_written(tmp_path):
    write_image(tmp_path / "source" / "7.jpg", 80, 60)
    coords = [[10 + i, 20 + i] for i in range(21)]
    coords[4] = [-1, -1]
    line = "7.jpg,80,60," + ",".join(f"{x},{y}" for x, y in coords)
    (tmp_path / "label_joint.txt").write_text(line + "\n" + "8.jpg,80,60,1,2\n")
    result = convert("onehand10k", tmp_path / "label_joint.txt")
    inst = result.data.instances[0]
    assert result.data.images[0].file_name == "source/7.jpg"
    assert inst.keypoints[4, 2] == 0 and inst.keypoints[5, 0] == 15 and inst.num_keypoints == 20
    assert {i.kind for i in result.issues} == {"missing_image"}  # 8.jpg does not exist


# ----------------------------------------------------------------------------- bad annotations
def bad_coco(tmp_path):
    write_image(tmp_path / "a.jpg", 100, 80)
    good = [50, 40, 2] * 17
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": good, "bbox": [10, 10, 50, 50], "area": 900},
            {"id": 2, "image_id": 1, "category_id": 1, "keypoints": [500, 40, 2] + good[3:], "bbox": [10, 10, 5, 5]},
            {"id": 3, "image_id": 1, "category_id": 1, "keypoints": good[:-3], "bbox": [10, 10, 5, 5]},
            {"id": 4, "image_id": 2, "category_id": 1, "keypoints": good, "bbox": [10, 10, 5, 5]},
            {"id": 5, "image_id": 1, "category_id": 1, "keypoints": [float("nan"), 40, 2] + good[3:],
             "bbox": [10, 10, 5, 5]},
            {"id": 6, "image_id": 1, "category_id": 9, "keypoints": good, "bbox": [10, 10, 5, 5]}]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                       {"id": 2, "file_name": "missing.jpg", "width": 100, "height": 80}],
            "categories": [{"id": 1, "name": "person", "keypoints": [str(i) for i in range(17)], "skeleton": []}],
            "annotations": anns}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def test_bad_annotations_are_reported_and_skipped(tmp_path):
    result = convert("coco", bad_coco(tmp_path))
    assert [i.id for i in result.data.instances] == [1]
    kinds = {i.ann_id: i.kind for i in result.issues}
    assert kinds[2] == "out_of_range" and kinds[3] == "keypoint_count" and kinds[5] == "nan"
    assert kinds[6] == "unknown_category"
    assert "missing.jpg" in " ".join(str(i) for i in result.issues if i.kind == "missing_image")
    assert result.skipped["annotation_of_missing_image"] == 1
    assert all(str(i).startswith(str(tmp_path / "bad.json")) for i in result.issues)


def test_strict_fails_with_file_and_annotation_id(tmp_path):
    with pytest.raises(ConversionError, match=r"bad\.json: annotation 2: out_of_range"):
        convert("coco", bad_coco(tmp_path), strict=True)


def test_registry_lists_every_format():
    assert {"coco", "humanart", "300w", "onehand10k", "ap10k", "apt36k", "macaque", "animal_kingdom",
            "animalweb", "vinegar_fly", "desert_locust", "keypoint5", "mp100", "deepfashion2", "carfusion",
            "sleap", "deeplabcut"} == set(CONVERTERS)
    with pytest.raises(ConversionError, match="unknown dataset"):
        convert("nope", ".")
