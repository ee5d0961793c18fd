"""3-D keypoints from an aligned depth image: robust depth sampling, undistortion, back-projection.

    camera = PinholeCamera(K, D, "plumb_bob")
    points, valid = keypoints_3d(uv, depth_image, "16UC1", camera)

Conventions (ROS REP 103 / 118, sensor_msgs/CameraInfo):
  * the depth image is registered to the colour image (same pixel grid; another resolution is
    scaled to it) and holds z, the distance along the optical axis: 16UC1 in millimetres, 32FC1
    in metres; 0 (and NaN, inf, negative) means "no depth";
  * keypoint pixels (u, v) have their origin at the top-left corner of the top-left pixel (the
    keypoint messages' convention), so pixel (i, j) spans [j, j+1) x [i, i+1) and its depth is the
    one used for any (u, v) inside it; CameraInfo's K puts pixel centres at integers (OpenCV's
    convention), so a ray goes through (u - 0.5, v - 0.5) in K's coordinates;
  * points come out in the camera optical frame: x right, y down, z forward, metres.

Depth at a keypoint (``sample_depth``): the valid depths in a small square window around it; when
the centre pixel has depth, the median of the window's depths on the centre's surface (within
``surface_tolerance`` of it), so a window across a depth edge does not mix foreground and
background; when the centre pixel is a hole, the median of the nearest surface in the window
(keypoints lie on the objects in front). No valid depth in the window: NaN, and the point is
invalid, never (0, 0, 0).

Pure numpy + OpenCV: no ROS.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")  # what cv2.undistortPoints handles


class DepthError(ValueError):
    """A depth image or camera model that cannot be used."""


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """Intrinsics K (3x3) and lens distortion D of the colour camera (sensor_msgs/CameraInfo)."""

    K: np.ndarray
    D: np.ndarray | tuple = ()
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        if not (K[0, 0] > 0 and K[1, 1] > 0):
            raise DepthError(f"camera intrinsics need fx > 0 and fy > 0, got K = {K.reshape(-1).tolist()} "
                             "(is the CameraInfo calibrated?)")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", np.asarray(self.D, dtype=np.float64).reshape(-1))

    @property
    def distorted(self) -> bool:
        return bool(np.any(self.D != 0))

    def normalized(self, uv: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) in K's convention (pixel centres at integers) -> undistorted normalised
        image coordinates (x/z, y/z), (N, 2)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        if self.distorted and self.distortion_model in DISTORTION_MODELS and len(uv):
            import cv2

            return cv2.undistortPoints(uv.reshape(-1, 1, 2), self.K, self.D).reshape(-1, 2)
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        return np.c_[(uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy]


def depth_in_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """A depth image as float32 metres, NaN where there is no depth."""
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise DepthError(f"a depth image has one channel, got shape {depth.shape}")
    if encoding in ("16UC1", "mono16"):
        if depth.dtype != np.uint16:
            raise DepthError(f"{encoding} depth must be uint16 millimetres, got {depth.dtype}")
        out = depth.astype(np.float32) * np.float32(0.001)
        out[depth == 0] = np.nan
        return out
    if encoding == "32FC1":
        out = depth.astype(np.float32, copy=True)
        out[~np.isfinite(out) | (out <= 0)] = np.nan
        return out
    raise DepthError(f"unsupported depth encoding {encoding!r}; use 16UC1 (millimetres) or 32FC1 (metres)")


def _window_values_in_metres(values: np.ndarray, encoding: str) -> np.ndarray:
    """Raw depth values (any shape) -> float64 metres, NaN where there is no depth."""
    if encoding == "metres":
        return values.astype(np.float64)
    if encoding in ("16UC1", "mono16"):
        out = values.astype(np.float64) * 0.001
        out[values == 0] = np.nan
        return out
    out = values.astype(np.float64)
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


def sample_depth(depth: np.ndarray, uv: np.ndarray, window: int = 5,
                 surface_tolerance: float = 0.03, encoding: str = "metres") -> np.ndarray:
    """Robust depth (metres) at each pixel position of `uv` (N, 2); NaN where none (see module doc).
    `depth` is float metres with NaN holes (:func:`depth_in_metres`) or, with `encoding` 16UC1 /
    32FC1, the raw image: only the windows are converted."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    n = len(uv)
    if n == 0:
        return np.zeros(0)
    if encoding != "metres" and encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"unsupported depth encoding {encoding!r}; use 16UC1 (millimetres) or 32FC1 (metres)")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    h, w = depth.shape
    half = max(0, int(window) // 2)
    offsets = np.arange(-half, half + 1)
    # (col, row) of each keypoint's pixel; a non-finite keypoint lands far outside the image
    col_row = np.floor(np.where(np.isfinite(uv).all(1)[:, None], uv, -1e6)).astype(np.int64)
    rows = col_row[:, 1:] + offsets                                        # (N, k)
    cols = col_row[:, :1] + offsets                                        # (N, k)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    # (few calls on small arrays: numpy's per-call cost is most of this function's time)
    window_values = depth[np.minimum(np.maximum(rows, 0), h - 1)[:, :, None],
                          np.minimum(np.maximum(cols, 0), w - 1)[:, None, :]]
    values = _window_values_in_metres(window_values, encoding)
    values[~inside] = np.nan
    values = values.reshape(n, -1)                                         # (N, k*k)
    centre = values[:, values.shape[1] // 2]
    with np.errstate(all="ignore"):
        nearest = np.fmin.reduce(values, axis=1)                           # NaN only where all are
        reference = np.where(np.isfinite(centre), centre, nearest)
        on_surface = np.abs(values - reference[:, None]) <= surface_tolerance * reference[:, None]
        # median of the kept values: sorted, NaN (not kept) last
        kept = np.sort(np.where(on_surface, values, np.nan), axis=1)
        count = on_surface.sum(axis=1)
        index = np.arange(n)
        lo = kept[index, np.maximum(count - 1, 0) // 2]
        hi = kept[index, count // 2]
        return np.where(count > 0, 0.5 * (lo + hi), np.nan)


PIXEL_CENTRE = 0.5  # keypoint coordinates of the centre of pixel (0, 0)


def back_project(uv: np.ndarray, z: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """Keypoint pixels (N, 2) at depths z (N,) -> points (N, 3) in the optical frame; NaN where z is."""
    xy = camera.normalized(np.asarray(uv, dtype=np.float64).reshape(-1, 2) - PIXEL_CENTRE)
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    return np.c_[xy * z[:, None], z]


def keypoints_3d(uv: np.ndarray, depth: np.ndarray, encoding: str, camera: PinholeCamera,
                 image_size: tuple[int, int] | None = None, window: int = 5,
                 surface_tolerance: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """3-D points (N, 3) of the pixels `uv` (N, 2) of the colour image, and which are valid (N,).

    `image_size` (width, height) of the colour image: a depth image of another resolution (still
    registered to it) is sampled at the scaled position. Invalid points are NaN."""
    if encoding in ("16UC1", "mono16") and depth.dtype != np.uint16:
        raise DepthError(f"{encoding} depth must be uint16 millimetres, got {depth.dtype}")
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    sample_at = uv
    if image_size is not None and tuple(image_size) != (depth.shape[1], depth.shape[0]):
        sample_at = uv * (depth.shape[1] / image_size[0], depth.shape[0] / image_size[1])
    z = sample_depth(depth, sample_at, window, surface_tolerance, encoding)
    points = back_project(uv, z, camera)
    valid = np.isfinite(points).all(1)
    points[~valid] = np.nan
    return points, valid
