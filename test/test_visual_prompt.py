"""Visual prompt encoder: masking, permutation, sizes, support preparation, validation."""
import numpy as np
import pytest
import torch

from unipose_model.visual_prompt import (VisualPrompt, VisualPromptError, build_visual_prompt_encoder,
                                         prepare_support, support_crop)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_visual_prompt_encoder("tiny", width=64, layers=2, heads=4, tower=dict(width=32, layers=1)).eval()


def inputs(k, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 224, 224, generator=g)
    kpts = torch.rand(batch, k, 2, generator=g)
    visible = torch.rand(batch, k, generator=g) > 0.3
    visible[:, 0] = True
    return images, kpts, visible


def test_invisible_keypoint_coordinates_change_nothing(encoder):
    images, kpts, visible = inputs(8, seed=1)
    visible[0, 3] = False
    inst_a, kpt_a = encoder(images, kpts, visible)
    moved = kpts.clone()
    moved[0, 3] = torch.tensor([0.9, 0.05])
    inst_b, kpt_b = encoder(images, moved, visible)
    assert torch.equal(inst_a, inst_b) and torch.equal(kpt_a, kpt_b)
    # a visible keypoint's coordinates do matter
    visible[0, 3] = True
    _, kpt_c = encoder(images, kpts, visible)
    _, kpt_d = encoder(images, moved, visible)
    assert (kpt_c - kpt_d).abs().max() > 1e-3


def test_permuting_keypoints_permutes_outputs(encoder):
    images, kpts, visible = inputs(10, seed=2)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    inst, kpt = encoder(images, kpts, visible)
    inst_p, kpt_p = encoder(images, kpts[:, perm], visible[:, perm])
    assert torch.allclose(kpt[:, perm], kpt_p, atol=1e-5)
    assert torch.allclose(inst, inst_p, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 17, 68, 100])
def test_shapes_for_1_to_100_keypoints(encoder, k):
    images, kpts, visible = inputs(k, seed=k, batch=2)
    inst, kpt = encoder(images, kpts, visible)
    assert inst.shape == (2, 512) and kpt.shape == (2, k, 512)
    assert torch.isfinite(inst).all() and torch.isfinite(kpt).all()


def test_padded_batch_equals_single(encoder):
    images, kpts, visible = inputs(6, seed=4, batch=2)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    inst, kpt = encoder(images, kpts, visible, keypoint_valid=valid)
    inst1, kpt1 = encoder(images[1:], kpts[1:, :4], visible[1:, :4])
    assert torch.allclose(inst[1], inst1[0], atol=1e-5) and torch.allclose(kpt[1, :4], kpt1[0], atol=1e-5)


def support(**kw):
    img = np.zeros((120, 200, 3), np.uint8)
    img[40:80, 50:110] = 255
    kpts = np.array([[50, 40, 2], [110, 40, 2], [110, 80, 1], [0, 0, 0]], np.float32)
    return VisualPrompt(img, kpts, class_name="box", **kw)


def test_prepare_support_maps_keypoints_into_the_crop():
    prompt = support()
    x0, y0, x1, y1 = support_crop(prompt)
    assert np.isclose(x1 - x0, y1 - y0) and np.isclose((x0 + x1) / 2, 80) and np.isclose((y0 + y1) / 2, 60)
    image, kpts, visible = prepare_support(prompt, size=64)
    assert image.shape == (3, 64, 64) and visible.tolist() == [True, True, True, False]
    # the white rectangle's corner lands where its keypoint says
    px, py = (kpts[0] * 64).round().long().tolist()
    assert image[0, py + 2, px + 2] > 1.0 and image[0, py - 3, px - 3] < 0
    with_box = prepare_support(support(box=(40, 30, 120, 90)), size=64)[1]
    # box 80x60 centred at (80, 60) -> square side 80 * 1.5 (25 % margin each side), left edge at 20
    assert with_box[0, 0] == pytest.approx((50 - 20) / 120)


@pytest.mark.parametrize("change, message", [
    (dict(keypoints=np.array([[1, 1, 0], [2, 2, 0]], np.float32)), "no visible keypoint"),
    (dict(keypoints=np.array([[1, 1, 2], [500, 2, 2]], np.float32)), "outside the 200x120"),
    (dict(keypoints=np.array([[1, 1, 2], [5, 2, 2]], np.float32), keypoint_names=["a"]), "1 keypoint names for 2"),
    (dict(keypoints=np.array([[1, 1, 2], [5, 2, 2]], np.float32), skeleton=[(0, 2)]), "does not exist"),
    (dict(keypoints=np.array([[1, 1, 2]], np.float32), box=(5, 5, 5, 9)), "is empty"),
    (dict(keypoints=np.zeros((0, 3), np.float32)), "K x 3"),
])
def test_invalid_visual_prompts_are_rejected_with_a_reason(change, message):
    args = dict(image=np.zeros((120, 200, 3), np.uint8), keypoints=None)
    args.update(change)
    with pytest.raises(VisualPromptError, match=message):
        VisualPrompt(**args)


def test_detector_runs_on_visual_prompt_features():
    """Support image -> prompt features -> the unchanged detector (instance + keypoint queries)."""
    from unipose_model import build_model
    from unipose_model.checkpoint import fill_reference_weights
    model = fill_reference_weights(build_model("unipose_tiny_visual"))
    image, kpts, visible = prepare_support(support(), size=224)
    inst, kpt_feats = model.encode_visual_prompt(image[None], kpts[None], visible[None])
    out = model(torch.randn(1, 3, 96, 128), None, inst, kpt_feats)
    assert out["pred_keypoints"].shape[-2:] == (4, 2) and torch.isfinite(out["pred_boxes"]).all()
    with pytest.raises(ValueError, match="no visual prompt encoder"):
        build_model("unipose_tiny").encode_visual_prompt(image[None], kpts[None], visible[None])


# ------------------------------------------------------------------ Predictor, files, CLI
@pytest.fixture(scope="module")
def visual_predictor():
    from unipose_model.predictor import Predictor
    return Predictor("unipose_tiny_visual", "reference", device="cpu", text_encoder="hash",
                     short_side=128, max_size=160, box_threshold=0.0)


def test_predictor_runs_a_visual_prompt_and_caches_its_features(visual_predictor, monkeypatch):
    p = visual_predictor
    prompt = VisualPrompt(support().image, np.array([[50, 40, 2], [120, 60, 2], [90, 100, 0], [60, 90, 1]], np.float32),
                          "widget", ["a", "b", "c", "d"], [(0, 1), (1, 2)])
    image = (np.random.default_rng(0).random((90, 130, 3)) * 255).astype(np.uint8)
    calls = []
    encode = p.model.encode_visual_prompt
    monkeypatch.setattr(p.model, "encode_visual_prompt", lambda *a, **k: calls.append(1) or encode(*a, **k))
    first = p.predict(image, visual_prompt=prompt)
    again = p.predict(image, visual_prompt=prompt)
    assert len(calls) == 1  # the second call reused the support features
    assert first and all(i.label == "widget" and i.keypoint_names == ("a", "b", "c", "d") for i in first)
    assert [i.score for i in first] == [i.score for i in again]
    # the same content in a new object hits the cache; other keypoints do not
    copy = VisualPrompt(prompt.image.copy(), prompt.keypoints.copy(), "widget", ["a", "b", "c", "d"], [(0, 1), (1, 2)])
    p.predict(image, visual_prompt=copy)
    assert len(calls) == 1
    moved = prompt.keypoints.copy()
    moved[0, 0] += 5
    other = p.predict(image, visual_prompt=VisualPrompt(prompt.image, moved, "widget", ["a", "b", "c", "d"]))
    assert len(calls) == 2 and [i.box for i in other] != [i.box for i in first]
    # with a text prompt too: features averaged, a different result
    both = p.predict(image, "person: nose, left eye, right eye, left ear", visual_prompt=prompt)
    assert [i.box for i in both] != [i.box for i in first] and both[0].label == "person"
    with pytest.raises(ValueError, match="same keypoints"):
        p.predict(image, "person: nose, left eye", visual_prompt=prompt)


def test_text_only_model_refuses_visual_prompts_with_a_reason():
    from unipose_model.predictor import Predictor
    p = Predictor("unipose_tiny", "reference", device="cpu", text_encoder="hash", short_side=64, max_size=96)
    prompt = VisualPrompt(support().image, np.array([[50, 40, 2]], np.float32))
    with pytest.raises(VisualPromptError, match="no visual prompt encoder"):
        p.predict(np.zeros((64, 64, 3), np.uint8), visual_prompt=prompt)


def test_support_keypoint_files(tmp_path):
    from unipose_model.visual_prompt import load_visual_prompt, read_support_keypoints
    text = tmp_path / "s.txt"
    text.write_text("# fly, frame 0\nhead: 10 20\nthorax: 15.5, 30\nleft wing: -\nright wing: 40 50 0\n")
    kpts, names, skeleton, box, cls = read_support_keypoints(text)
    assert names == ["head", "thorax", "left wing", "right wing"]
    assert kpts.tolist() == [[10, 20, 2], [15.5, 30, 2], [0, 0, 0], [40, 50, 0]]
    coco = {"images": [{"id": 3, "file_name": "other.png"}, {"id": 7, "file_name": "dir/s.png"}],
            "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "keypoints": [1, 1, 2, 2, 2, 2], "bbox": [0, 0, 5, 5]},
                            {"id": 2, "image_id": 7, "category_id": 1, "keypoints": [5, 6, 2, 7, 8, 0], "bbox": [1, 2, 10, 20]}],
            "categories": [{"id": 1, "name": "cup", "keypoints": ["rim", "handle"], "skeleton": [[1, 2]]}]}
    path = tmp_path / "s.json"
    path.write_text(__import__("json").dumps(coco))
    kpts, names, skeleton, box, cls = read_support_keypoints(path, image_name="s.png")
    assert kpts.tolist() == [[5, 6, 2], [7, 8, 0]] and names == ["rim", "handle"]
    assert skeleton == ((0, 1),) and box == (1, 2, 11, 22) and cls == "cup"
    import cv2
    cv2.imwrite(str(tmp_path / "s.png"), support().image[:, :, ::-1])
    vp = load_visual_prompt(tmp_path / "s.png", path)
    assert vp.class_name == "cup" and vp.keypoint_names == ("rim", "handle") and vp.image.shape == support().image.shape
    bad = [("head 10 20\n", "expected 'name: x y'"), ("head: 10\n", "two numbers"), ("a: 1 2\na: 3 4\n", "repeat"),
           ("", "no keypoints"), ("{broken", "not valid JSON")]
    for content, message in bad:
        f = tmp_path / "bad.txt"
        f.write_text(content)
        with pytest.raises(VisualPromptError, match=message):
            read_support_keypoints(f)
    with pytest.raises(VisualPromptError, match="instance 3"):
        read_support_keypoints(path, image_name="s.png", instance=3)
    with pytest.raises(VisualPromptError, match="does not exist"):
        read_support_keypoints(tmp_path / "missing.json")


def test_support_image_may_be_a_video_frame(tmp_path):
    """'video.mp4#frame=N' as the support image reads that frame (the same pixels as decoding in
    order), with clear errors past the end and for bad references."""
    import cv2
    from unipose_model.media import read_video_frame
    from unipose_model.model_file import BUNDLED_VIDEO
    from unipose_model.visual_prompt import VisualPromptError, load_visual_prompt

    cap = cv2.VideoCapture(str(BUNDLED_VIDEO))
    for _ in range(7):
        ok, frame = cap.read()
    cap.release()
    assert np.array_equal(read_video_frame(BUNDLED_VIDEO, 6), frame)
    (tmp_path / "s.txt").write_text("head: 300 400\nthorax: 320 420\n")
    prompt = load_visual_prompt(f"{BUNDLED_VIDEO}#frame=6", tmp_path / "s.txt")
    assert np.array_equal(prompt.image, frame[:, :, ::-1])
    with pytest.raises(VisualPromptError, match="cannot read frame 99999"):
        load_visual_prompt(f"{BUNDLED_VIDEO}#frame=99999", tmp_path / "s.txt")
    with pytest.raises(VisualPromptError, match="frame number"):
        load_visual_prompt(f"{BUNDLED_VIDEO}#frame=x", tmp_path / "s.txt")


def test_coco_support_file_must_name_the_support_among_several_images(tmp_path):
    """With several images in the keypoints file, a support image it does not name is an error
    (taking annotation N of the whole file would be another image's keypoints); a file with one
    image is used whatever the support is called."""
    import json
    from unipose_model.visual_prompt import read_support_keypoints

    cat = {"id": 1, "name": "fly", "keypoints": ["head", "tail"], "skeleton": [[1, 2]]}
    doc = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": [1, 2, 2, 3, 4, 2]},
                           {"id": 2, "image_id": 2, "category_id": 1, "keypoints": [5, 6, 2, 7, 8, 2]}],
           "categories": [cat]}
    (tmp_path / "two.json").write_text(json.dumps(doc))
    kpts = read_support_keypoints(tmp_path / "two.json", image_name="b.png")[0]
    assert kpts[0, :2].tolist() == [5, 6]
    with pytest.raises(VisualPromptError, match="no image named 'c.png' among its 2 images"):
        read_support_keypoints(tmp_path / "two.json", image_name="c.png", instance=1)
    doc["images"], doc["annotations"] = doc["images"][1:], doc["annotations"][1:]
    (tmp_path / "one.json").write_text(json.dumps(doc))
    assert read_support_keypoints(tmp_path / "one.json", image_name="c.png")[0][0, :2].tolist() == [5, 6]
