"""3-D keypoints from depth (unipose_model/depth.py) on synthetic scenes of known geometry:
planes fronto-parallel and tilted, 16UC1 and 32FC1, with and without lens distortion, holes and
depth edges. The 3-D error must stay within 1 % of the depth wherever depth is valid; no depth
must give an invalid point, never 0."""
import cv2
import numpy as np
import pytest

from unipose_model.depth import (DepthError, PinholeCamera, depth_in_metres, keypoints_3d,
                                 sample_depth)

W, H = 640, 480
K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
PLUMB_BOB = np.array([-0.25, 0.08, 0.001, -0.0015, 0.0])  # a wide-angle lens, distortion visible at the corners


def rays(camera, uv_k):
    """Undistorted normalised rays (N, 3) of pixels in K's convention (centres at integers)."""
    xy = camera.normalized(uv_k)
    return np.c_[xy, np.ones(len(xy))]


class Scene:
    """Planes n.P = d (each with a pixel mask of where it is seen) rendered into a depth image."""

    def __init__(self, camera, planes, masks=None):
        self.camera, self.planes = camera, planes
        jj, ii = np.meshgrid(np.arange(W), np.arange(H))
        r = rays(camera, np.c_[jj.ravel(), ii.ravel()].astype(float))
        self.surface = np.zeros((H, W), int) if masks is None else masks
        z = np.zeros(H * W)
        for k, (n, d) in enumerate(planes):
            z = np.where(self.surface.ravel() == k, d / (r @ n), z)
        self.z = z.reshape(H, W)

    def encode(self, encoding, holes=None):
        z = self.z.copy()
        if encoding == "16UC1":
            out = np.round(z * 1000).astype(np.uint16)
            if holes is not None:
                out[holes] = 0
        else:
            out = z.astype(np.float32)
            if holes is not None:
                out[holes] = np.nan
        return out

    def truth(self, uv):
        """The true 3-D point of keypoint pixels uv (corner convention), on the surface of their pixel."""
        r = rays(self.camera, uv - 0.5)
        k = self.surface[np.floor(uv[:, 1]).astype(int), np.floor(uv[:, 0]).astype(int)]
        n = np.array([self.planes[i][0] for i in k])
        d = np.array([self.planes[i][1] for i in k])
        return r * (d / (r * n).sum(1))[:, None]


def keypoints(n=400, seed=0, margin=3):
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(margin, W - margin, n), rng.uniform(margin, H - margin, n)]


def tilted(angle_deg, at=1.5):
    a = np.radians(angle_deg)
    n = np.array([np.sin(a), 0.3 * np.sin(a), np.cos(a)])
    n /= np.linalg.norm(n)
    return n, float(n @ np.array([0, 0, at]))


def assert_within_one_percent(points, valid, truth, where):
    err = np.linalg.norm(points - truth, axis=1)
    bad = where & (~valid | (err > 0.01 * truth[:, 2]))
    assert not bad.any(), f"{bad.sum()} keypoints off by more than 1 %: worst {np.nanmax(err[where] / truth[where, 2]):.4f}"


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
@pytest.mark.parametrize("distortion", [None, PLUMB_BOB], ids=["pinhole", "plumb_bob"])
@pytest.mark.parametrize("plane", ["fronto_parallel", "tilted"])
def test_planes_are_recovered_within_one_percent(encoding, distortion, plane):
    camera = PinholeCamera(K, np.zeros(5) if distortion is None else distortion)
    scene = Scene(camera, [(np.array([0, 0, 1.0]), 1.5)] if plane == "fronto_parallel" else [tilted(40)])
    uv = keypoints()
    points, valid = keypoints_3d(uv, scene.encode(encoding), encoding, camera)
    truth = scene.truth(uv)
    assert valid.all()
    assert_within_one_percent(points, valid, truth, np.ones(len(uv), bool))
    if plane == "fronto_parallel":
        assert np.allclose(points[:, 2], 1.5, atol=0.0015)


def test_the_distortion_matters_so_the_test_above_can_fail():
    camera = PinholeCamera(K, PLUMB_BOB)
    scene = Scene(camera, [(np.array([0, 0, 1.0]), 1.5)])
    corners = np.array([[5.0, 5.0], [W - 5.0, H - 5.0], [W - 5.0, 5.0]])
    ignoring, _ = keypoints_3d(corners, scene.encode("32FC1"), "32FC1", PinholeCamera(K))
    err = np.linalg.norm(ignoring - scene.truth(corners), axis=1)
    assert (err > 0.01 * 1.5).all()


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_holes_and_depth_edges(encoding):
    camera = PinholeCamera(K, PLUMB_BOB)
    # a box at 0.8 m in front of a tilted wall at ~2 m: sharp depth edges along its sides
    masks = np.zeros((H, W), int)
    masks[150:330, 200:420] = 1
    scene = Scene(camera, [tilted(25, at=2.0), (np.array([0, 0, 1.0]), 0.8)], masks)
    rng = np.random.default_rng(1)
    holes = rng.random((H, W)) < 0.2          # 20 % of the pixels without depth (speckle)
    holes[380:460, 40:160] = True              # and a large hole (a black, shiny or too-near surface)
    depth = scene.encode(encoding, holes)
    # keypoints everywhere, plus many right next to the edges (within 2 px on either side)
    edge = np.r_[np.c_[rng.uniform(198, 202, 200), rng.uniform(160, 320, 200)],
                 np.c_[rng.uniform(220, 400, 200), rng.uniform(328, 332, 200)]]
    inside_hole = np.c_[rng.uniform(50, 150, 50), rng.uniform(390, 450, 50)]
    uv = np.r_[keypoints(600, seed=2), edge, inside_hole]
    points, valid = keypoints_3d(uv, depth, encoding, camera)
    truth = scene.truth(uv)
    row, col = np.floor(uv[:, 1]).astype(int), np.floor(uv[:, 0]).astype(int)
    own_depth = ~holes[row, col]
    # wherever the keypoint's own pixel has depth: within 1 %, edges included
    assert_within_one_percent(points, valid, truth, own_depth)
    # a speckle hole away from edges takes its neighbours' depth
    near_edge = np.zeros((H, W), bool)
    near_edge[147:333, 197:423] = True
    near_edge[153:327, 203:417] = False
    speckle = ~own_depth & ~near_edge[row, col] & (~holes[row, col] | (uv[:, 0] > 170) | (uv[:, 1] < 370))
    assert_within_one_percent(points, valid, truth, speckle)
    # inside the large hole: no depth -> invalid, NaN, never 0
    deep = np.arange(len(uv)) >= len(uv) - len(inside_hole)
    assert not valid[deep].any() and np.isnan(points[deep]).all()
    assert edge.shape[0] > 0 and own_depth[len(uv) - len(inside_hole) - 400:-len(inside_hole)].sum() > 250


def test_window_median_ignores_zeros_and_nans_and_invalid_is_nan():
    d = np.full((20, 20), 1.0, np.float32)
    d[8:13, 8:13] = np.nan
    d[10, 10] = 1.2  # the centre alone, surrounded by holes
    z = sample_depth(d, np.array([[10.5, 10.5], [3.5, 3.5], [np.nan, 2.0], [-50.0, 3.0]]))
    assert z[0] == pytest.approx(1.2) and z[1] == pytest.approx(1.0)
    assert np.isnan(z[2]) and np.isnan(z[3])
    raw = np.zeros((10, 10), np.uint16)
    p, v = keypoints_3d(np.array([[5.0, 5.0]]), raw, "16UC1", PinholeCamera(K))
    assert not v[0] and np.isnan(p).all()


def test_a_depth_image_of_another_resolution_is_scaled_to_the_colour_image():
    camera = PinholeCamera(K)
    scene = Scene(camera, [tilted(30)])
    half = cv2.resize(scene.encode("32FC1"), (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
    uv = keypoints(100, seed=3, margin=8)
    points, valid = keypoints_3d(uv, half, "32FC1", camera, image_size=(W, H))
    assert valid.all()
    assert_within_one_percent(points, valid, scene.truth(uv), valid)


def test_bad_inputs_are_named():
    with pytest.raises(DepthError, match="encoding"):
        depth_in_metres(np.zeros((4, 4), np.uint16), "8UC3")
    with pytest.raises(DepthError, match="uint16"):
        depth_in_metres(np.zeros((4, 4), np.float32), "16UC1")
    with pytest.raises(DepthError, match="fx > 0"):
        PinholeCamera(np.zeros((3, 3)))
