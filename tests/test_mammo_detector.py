"""The mammography detector's geometry: which tiles are searched, which are labelled, where marks land."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("core.imaging.breast")

from pathlib import Path  # noqa: E402

from core.training.datasets import Circle, Sample  # noqa: E402
from core.training.mammo_cv import _reached, marks, minus_other_breast  # noqa: E402
from core.models.mammography import tile_grid  # noqa: E402
from core.training.mammo_detector import TILE, tile_labels  # noqa: E402


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


def test_a_film_is_scored_against_the_womans_other_film():
    samples = [Sample(Path(f"mdb00{i}.png"), "normal", group) for i, group in enumerate(["w1", "w1", "w2"])]
    scores = minus_other_breast(samples, np.array([0.9, 0.3, 0.5]))
    assert np.allclose(scores, [0.6, -0.6, 0.5])  # the third film has no partner and keeps its score


def test_positive_views_keep_the_finding_in_the_tile_middle():
    from core.training.mammo_finetune import POSITIVE_VIEWS, positive_views

    grey = np.zeros((600, 500), np.uint8)
    grey[290:310, 240:260] = 255  # the finding: a bright square around (250, 300)
    views = positive_views(grey, (Circle(250.0, 300.0, 10.0),), np.random.default_rng(0))
    assert views.shape == (POSITIVE_VIEWS, TILE, TILE, 3)
    for view in views:
        ys, xs = np.nonzero(view[..., 0] > 0)  # xception scaling: the background is -1, the square +1
        assert TILE / 4 - 10 <= ys.mean() <= 3 * TILE / 4 + 10 and TILE / 4 - 10 <= xs.mean() <= 3 * TILE / 4 + 10


@pytest.mark.slow
def test_the_two_detectors_join_into_one_network_that_means_their_logits(tmp_path, monkeypatch):
    """The shipped network gives each tile the mean of its detectors' logits, as the cross-validation combined their
    out-of-fold tiles (``ensemble_tiles``), survives float16 storage, and explains that mean at its Grad-CAM layer."""
    import keras

    from core.inference.gradcam import GradCam
    from core.models.storage import save_keras_fp16
    from core.training import mammo_finetune as mf

    rng = np.random.default_rng(0)
    members = {b: mf.fit_fold(rng.normal(size=(8, 7, 7, 1024)).astype(np.float32),
                              rng.normal(size=(24, 7, 7, 1024)).astype(np.float32), 1, seed=i, batch=8, backbone=b)
               for i, b in enumerate(mf.ENSEMBLE)}
    network = mf.ensemble_network(members)
    tiles = rng.uniform(-1, 1, (3, 224, 224, 3)).astype(np.float32)
    each = [members[b].predict(mf.split_backbone(b)[0].predict(tiles, verbose=0), verbose=0)[:, 0] for b in mf.ENSEMBLE]
    logits = network.predict(tiles, verbose=0)
    np.testing.assert_allclose(logits[:, 0], 0.0)
    np.testing.assert_allclose(logits[:, 1], np.mean(each, axis=0), atol=1e-4)
    save_keras_fp16(network, tmp_path / "head.keras")
    stored = keras.saving.load_model(tmp_path / "head.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(stored.predict(tiles, verbose=0), logits, atol=2e-3)
    _, maps, _ = GradCam(stored, mf.CAM_LAYER)([tiles])
    assert maps.shape[0] == 3 and np.isfinite(maps).all()
    # The out-of-fold tiles of the members, combined the same way.
    monkeypatch.setattr(mf, "cache_dir", lambda backbone="imagenet": tmp_path / backbone)
    sample = Sample(Path("mdb001.png"), "normal", "w1")
    for b, z in zip(mf.ENSEMBLE, each):
        (tmp_path / b).mkdir()
        np.savez(tmp_path / b / "oof_tiles_t.npz", mdb001=1 / (1 + np.exp(-z)))
    combined = mf.ensemble_tiles([sample], "t")[0]
    np.testing.assert_allclose(combined, 1 / (1 + np.exp(-logits[:, 1])), atol=1e-4)
