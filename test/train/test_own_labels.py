"""`unipose-train --data` on a DeepLabCut project and a SLEAP file (a couple of tiny steps), and
the resulting checkpoint running on its own through the Predictor."""
import json

import pytest

from shared_paths import DATA, REPO
from unipose_train.dataset import SourceConfig, load_source
from unipose_train.train_cli import main as train_main

OPENFIELD = DATA / "lab" / "openfield"
SLP = DATA / "lab" / "fly_clip" / "clip.slp"
TINY = ["optim.max_steps=2", "run.eval_every=0", "run.checkpoint_every=0", "data.num_workers=0",
        "data.augment.scales=[128]", "data.augment.max_size=160", "data.augment.eval_size=128",
        "data.val.0.max_images=2", "eval.max_images=2"]


def test_split_is_disjoint_and_covers_everything():
    parts = [load_source(SourceConfig(ann=str(OPENFIELD), split=s)) for s in ([0, 0.8], [0.8, 1])]
    ids = [{im.id for im in p.images} for p in parts]
    assert not ids[0] & ids[1] and len(ids[0]) + len(ids[1]) == 116 and len(ids[1]) == 23


@pytest.mark.skipif(not OPENFIELD.is_dir(), reason="shared DeepLabCut project not available")
def test_train_on_deeplabcut_project(tmp_path, capsys):
    out = tmp_path / "dlc"
    rc = train_main([str(REPO / "unipose_train/configs/own_labels.yaml"), "--data", str(OPENFIELD), "--category", "mouse",
                     f"run.out_dir={out}", *TINY])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 2 and "pck" in result["metrics"]

    import cv2
    from unipose_model.predictor import Predictor
    p = Predictor(checkpoint=out / "best.pth", device="cpu")   # model, prompts, size from the file
    assert p.known_prompts().startswith("mouse (keypoints: snout, left ear, right ear")
    image = cv2.imread(str(OPENFIELD / "labeled-data" / "m4s1" / "img0000.png"))
    assert all(len(i.keypoints) == 4 for i in p.predict(image, "mouse", color="bgr"))


@pytest.mark.skipif(not SLP.is_file(), reason="shared SLEAP file not available")
def test_train_on_sleap_file(tmp_path, capsys):
    out = tmp_path / "slp"
    rc = train_main([str(REPO / "unipose_train/configs/own_labels.yaml"), "--data", str(SLP), f"run.out_dir={out}",
                     "data.train.0.max_images=4", *TINY])
    assert rc == 0
    import torch
    ckpt = torch.load(out / "best.pth", weights_only=True)
    assert ckpt["vocabulary"][0]["categories"] == ["fly"] and ckpt["model_config"]["name"] == "unipose_tiny"


def _coco_fly(n_images: int = 3) -> dict:
    data = json.loads((DATA / "lab" / "fly_clip" / "clip_keypoints_coco.json").read_text())
    data["images"] = data["images"][:n_images]
    ids = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    return data


def _break(data: dict, how: str) -> str:
    if how == "json":
        return '{"images": [], "annotations": ['
    if how == "sections":
        data.pop("categories")
    elif how == "field":
        data["annotations"][2].pop("bbox")
    elif how == "triples":
        data["annotations"][1]["keypoints"] = data["annotations"][1]["keypoints"][:-1]
    elif how == "count":
        data["annotations"][1]["keypoints"] = data["annotations"][1]["keypoints"][:-3]
    return json.dumps(data)


@pytest.mark.parametrize("how, message", [
    ("json", "not valid JSON (Expecting value at line 1, column 32)"),
    ("sections", "not a COCO keypoints file: it needs the lists 'categories', 'images' and 'annotations' "
                 "(found: annotations, images, info)"),
    ("field", "not a valid COCO keypoints file: annotations[2] (id 3): missing field 'bbox'"),
    ("triples", "not a valid COCO keypoints file: annotations[1] (id 2): 'keypoints' holds 38 numbers, "
                "not x, y, v triples"),
    ("count", "not a valid COCO keypoints file: annotations[1] (id 2): 12 keypoints, but its category 1 names 13"),
])
def test_a_broken_label_file_is_named_before_training(tmp_path, capsys, how, message):
    bad = tmp_path / "labels.json"
    bad.write_text(_break(_coco_fly(), how))
    rc = train_main([str(REPO / "unipose_train/configs/own_labels.yaml"), "--data", str(bad),
                     "--images", str(DATA / "lab" / "fly_clip"), f"run.out_dir={tmp_path / 'out'}", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == f"unipose-train: {bad}: {message}", err
    assert not list((tmp_path / "out").glob("*"))   # nothing was trained or written
