"""Heatmap refinement: crop geometry (centre, facing, scale), heatmap decoding, the per-instance
pass mapping peaks back to image pixels, the model-file entry and the Predictor's use of it."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from unipose_model.heatmap_refiner import (HeatmapRefiner, HeatmapRefinerSpec, apply_affine, crop_affine,
                                           decode_heatmaps, facing_angle, invert_affine, refine_instances)
from unipose_model.predictor import Instance

NAMES = ("head", "thorax", "tip")


def _spec(**kw):
    base = dict(category="bug", keypoints=NAMES, align=("thorax", "head"), input_size=64, context=1.5,
                widths=(4, 4, 4, 4, 4), flip_pairs=())
    base.update(kw)
    return HeatmapRefinerSpec(**base)


def test_crop_puts_the_box_centre_in_the_middle_and_the_facing_direction_up():
    spec = _spec()
    box = (100.0, 200.0, 140.0, 220.0)                       # 40 x 20, centre (120, 210)
    head, thorax = np.array([130.0, 230.0]), np.array([120.0, 210.0])
    angle = facing_angle(np.stack([head, thorax, thorax]), spec, NAMES)
    m = crop_affine(box, angle, spec)
    centre = apply_affine(m, np.array([[120.0, 210.0]]))[0]
    assert np.allclose(centre, [32.0, 32.0])
    up = apply_affine(m, head[None])[0] - centre             # thorax -> head points to -y in the crop
    assert abs(up[0]) < 1e-9 and up[1] < 0
    # crop side = 1.5 x the longer box side: 60 image px -> 64 crop px
    assert np.hypot(*up) == pytest.approx(np.hypot(10, 20) * 64 / 60)
    back = apply_affine(invert_affine(m), apply_affine(m, np.array([[7.0, 9.0], [300.0, -4.0]])))
    assert np.allclose(back, [[7.0, 9.0], [300.0, -4.0]])


def test_facing_needs_both_align_keypoints_and_no_align_means_no_rotation():
    spec = _spec()
    kp = np.array([[5.0, 5.0], [5.0, 5.0]])
    assert facing_angle(kp, spec, ("head", "thorax")) is None           # coincident points
    assert facing_angle(np.zeros((1, 2)), spec, ("tip",)) is None       # no head / thorax
    free = _spec(align=None)
    m = crop_affine((0, 0, 10, 10), facing_angle(kp, free, ("tip",)), free)
    assert np.allclose(m[:, :2], np.eye(2) * 64 / 15)


def test_spec_rejects_align_names_it_does_not_have_and_round_trips():
    with pytest.raises(ValueError, match="align"):
        _spec(align=("thorax", "tail"))
    spec = _spec(flip_pairs=((0, 2),))
    assert HeatmapRefinerSpec.from_dict(spec.to_dict()) == spec
    assert spec.flip_permutation() == [2, 1, 0]


def test_decode_recovers_sub_cell_peak_positions():
    size, input_size = 32, 64
    truth = np.array([[10.3, 20.7], [0.2, 31.0], [17.5, 3.25]])          # heatmap cells
    g = np.arange(size, dtype=np.float32)
    maps = np.stack([np.exp(-((g[None, :] - x) ** 2 + (g[:, None] - y) ** 2) / (2 * 1.5 ** 2)) for x, y in truth])
    xy, peak = decode_heatmaps(torch.from_numpy(maps[None]).float(), input_size)
    expected = (truth + 0.5) * 2 - 0.5                                    # cells -> crop pixels
    # interior peaks to 0.02 crop px (the peak cell alone would be off by up to 1 crop px); a peak
    # on the border stays on its cell
    assert np.abs(xy[0, 0] - expected[0]).max() < 0.02
    assert np.abs(xy[0, 2] - expected[2]).max() < 0.02
    assert np.abs(xy[0, 1] - expected[1]).max() < 1.0
    assert peak.shape == (1, 3) and (peak > 0.8).all()


class _BrightestPixel(nn.Module):
    """Stands in for a trained refiner: every keypoint's heatmap peaks at the crop's brightest
    pixel, so the pass must return that pixel's image position."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec

    def forward(self, x):
        b, _, s, _ = x.shape
        h = s // 2
        small = torch.nn.functional.avg_pool2d(x, 2)
        idx = small.reshape(b, -1).argmax(-1)
        py, px = (idx // h).float(), (idx % h).float()
        g = torch.arange(h, dtype=torch.float32)
        maps = torch.exp(-((g.view(1, 1, h) - px.view(b, 1, 1)) ** 2 + (g.view(1, h, 1) - py.view(b, 1, 1)) ** 2) / 2)
        return maps[:, None].expand(b, len(self.spec.keypoints), h, h)


def test_refine_instances_maps_peaks_back_to_the_image_for_its_category_only():
    spec = _spec()
    image = np.zeros((200, 300, 3), np.uint8)
    image[148:152, 208:212] = 255                                         # a bright spot at (209.5, 149.5)
    kp = np.array([[230.0, 160.0, 0.9], [210.0, 150.0, 0.9], [180.0, 140.0, 0.9]])   # facing down-right
    mine = Instance("bug", 0, 0.9, (180.0, 130.0, 240.0, 170.0), kp.copy(), NAMES)
    subset = Instance("bug", 0, 0.8, (180.0, 130.0, 240.0, 170.0), kp[[1, 0]].copy(), ("thorax", "head"))
    other = Instance("cat", 1, 0.9, (180.0, 130.0, 240.0, 170.0), kp.copy(), NAMES)
    no_facing = Instance("bug", 0, 0.7, (180.0, 130.0, 240.0, 170.0), kp[[2]].copy(), ("tip",))
    # a visual prompt's own spelling of the names (SLEAP/DeepLabCut style) still matches
    spelled = Instance("bug", 0, 0.6, (180.0, 130.0, 240.0, 170.0), kp[[2, 1, 0]].copy(), ("Tip", "THORAX", "head"))
    results = [[mine, subset, other, no_facing, spelled]]
    assert refine_instances(_BrightestPixel(spec), [image], results) == 3
    assert np.allclose(mine.keypoints[:, :2], [209.5, 149.5], atol=1.2)   # a 2-px heatmap cell, rotated
    assert np.allclose(mine.keypoints[:, 2], 0.9)                         # scores kept
    assert np.allclose(subset.keypoints[:, :2], [209.5, 149.5], atol=1.2)
    assert np.allclose(spelled.keypoints[:, :2], [209.5, 149.5], atol=1.2)
    assert np.array_equal(other.keypoints, kp) and np.array_equal(no_facing.keypoints, kp[[2]])


def test_network_shapes_and_model_file_round_trip(tmp_path):
    from unipose_model.model_file import load_heatmap_refiner, read_model_file_info, save_model_file

    spec = _spec(input_size=48)
    net = HeatmapRefiner(spec)
    assert net(torch.zeros(2, 1, 48, 48)).shape == (2, 3, 24, 24)
    path = save_model_file(tmp_path / "m.pth", {}, model_name="unipose_tiny", half=True,
                           heatmap_refiner={"model": net.state_dict(), "spec": spec.to_dict()})
    assert read_model_file_info(path).heatmap_refiner_spec["keypoints"] == list(NAMES)
    loaded = load_heatmap_refiner(path)
    x = torch.rand(1, 1, 48, 48)
    net.eval()
    assert torch.allclose(loaded(x), net(x), atol=5e-2)                   # float16 storage
    assert loaded.spec == spec


def test_a_file_without_a_heatmap_refiner_says_so(tmp_path):
    from unipose_model.checkpoint import CheckpointError
    from unipose_model.model_file import load_heatmap_refiner, save_model_file

    path = save_model_file(tmp_path / "m.pth", {}, model_name="unipose_tiny")
    with pytest.raises(CheckpointError, match="no heatmap refiner"):
        load_heatmap_refiner(path)


def test_facing_angle_is_the_image_angle_of_thorax_to_head():
    spec = _spec()
    kp = np.array([[10.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert facing_angle(kp, spec, NAMES) == pytest.approx(0.0)
    kp = np.array([[0.0, 10.0], [0.0, 0.0], [0.0, 0.0]])
    assert facing_angle(kp, spec, NAMES) == pytest.approx(math.pi / 2)


def test_speed_profiles_keep_the_heatmap_refiner_except_the_fastest():
    from types import SimpleNamespace

    from unipose_model.settings import LIBRARY_DEFAULTS, Settings
    from unipose_model.speed import apply_profile

    built = Settings(refine=7.5).resolved(LIBRARY_DEFAULTS)
    p = SimpleNamespace(initial_settings=built, settings=built, backend="onnxruntime", device=None,
                        model_defaults=lambda: LIBRARY_DEFAULTS,
                        model=SimpleNamespace(config=SimpleNamespace(num_queries=100, num_select=10)))
    kept = {name: (apply_profile(p, name, 512, 512), p.settings.heatmap_refiner, p.settings.refine)[1:]
            for name in ("fastest", "fast", "realtime", "accurate")}
    assert kept == {"fastest": (False, None), "fast": (True, None), "realtime": (False, None),
                    "accurate": (True, 7.5)}
