"""The heatmap codec (unipose_model/heatmap_codec.py): what training encodes, inference decodes back.

Points on a quarter-pixel grid across the whole 128 px crop of the shipped refiner (64 heatmap
cells, sigma 1.5 cells as in training) are encoded and decoded. Interior points (at least 3 cells
from every edge: the crop minus a 6 px border) come back to 0.03 crop px. Within that border the
decoder's smoothing (replicate padding) pulls the peak toward the edge cell, where no sub-cell
step is taken: those come back within 2.5 crop px (a point at 3 px decodes to the edge cell, 0.5 px).
"""
import numpy as np
import pytest
import torch

from unipose_model.heatmap_codec import decode_heatmaps, encode_heatmaps, to_cells

INPUT, CELLS, SIGMA = 128, 64, 1.5


def round_trip(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps = encode_heatmaps(xy, np.ones(len(xy)), INPUT, CELLS, SIGMA)
    out, peak = decode_heatmaps(torch.from_numpy(maps[None]), INPUT)
    return out[0], peak[0]


def test_round_trip_across_the_crop():
    xs = np.arange(0, INPUT - 0.99, 0.25)                       # every quarter pixel along x
    ys = np.linspace(0, INPUT - 1, 9)                            # rows from edge to edge
    xy = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    out, peak = round_trip(xy)
    err = np.abs(out - xy).max(1)
    cells = to_cells(xy, INPUT, CELLS)
    interior = ((cells >= 3) & (cells <= CELLS - 4)).all(1)
    assert interior.sum() > 1000
    assert err[interior].max() < 0.03
    assert err[~interior].max() <= 2.5
    assert ((out >= 0) & (out <= INPUT - 1)).all() and (peak > 0.5).all()


@pytest.mark.parametrize("xy", [(64.0, 64.0), (20.37, 101.9), (7.0, 120.25)])
def test_a_known_point_comes_back(xy):
    out, peak = round_trip(np.array([xy]))
    assert np.abs(out[0] - xy).max() < 0.03 and peak[0] > 0.9


def test_unlabelled_keypoints_encode_to_zero():
    maps = encode_heatmaps(np.array([[10.5, 20.5], [50.0, 50.0]]), np.array([1.0, 0.0]), INPUT, CELLS, SIGMA)
    assert maps.shape == (2, CELLS, CELLS) and maps.dtype == np.float32
    assert maps[0].max() == pytest.approx(1.0, abs=1e-6) and maps[0, 10, 5] == maps[0].max()   # a cell centre
    assert maps[1].max() == 0.0
