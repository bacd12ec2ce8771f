"""The mammography detector's geometry: which tiles are searched, which are labelled, where marks land."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("core.imaging.breast")

from core.training.datasets import Circle  # noqa: E402
from core.training.mammo_cv import _reached, marks  # noqa: E402
from core.training.mammo_detector import TILE, tile_grid, tile_labels  # noqa: E402


def test_tile_grid_keeps_tiles_with_enough_breast():
    keep = np.zeros((1024, 1024), bool)
    keep[:, :300] = True  # a breast strip along the left edge
    corners = tile_grid(keep.shape, keep, tile=224, stride=112, min_share=0.25)
    xs = sorted({x for _, x in corners})
    assert xs == [0, 112, 224]  # the tile at x=224 holds 76 of 224 columns (0.34), at 336 none
    assert len({y for y, _ in corners}) == len(range(0, 1024 - 224 + 1, 112))


def test_tile_labels_need_the_centre_in_the_tile_middle():
    corners = np.array([[0, 0], [0, 112], [0, 224]])
    labels = tile_labels(corners, (Circle(150.0, 100.0, 20.0),), tile=224)
    # x=150 lies in [56, 168) of the first tile and [168, 280) of the second: only the first is labelled.
    assert labels.tolist() == [1, 0, 0]


def test_circles_reach_tiles_they_overlap_only():
    corners = np.array([[0, 0], [0, 300], [300, 0]])
    reached = _reached(corners, (Circle(250.0, 100.0, 60.0),))
    assert reached.tolist() == [True, True, False]  # 26 px from the first tile's edge, 50 px from the second's


def test_marks_merge_neighbouring_tiles_and_respect_the_threshold():
    corners = np.array([[0, 0], [0, 112], [500, 500]])
    probs = np.array([0.9, 0.6, 0.7])
    found = marks(corners, probs, threshold=0.5)
    assert len(found) == 2 and found[0][2] == 0.9 and found[1][2] == 0.7
    x, _, _ = found[0]  # pulled from the first tile's centre towards its suppressed neighbour
    assert TILE / 2 < x < TILE / 2 + 112
    assert marks(corners, probs, threshold=0.95) == []
