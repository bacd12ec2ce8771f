"""Tumour-free stand-ins made of a slice's tumour-free hemisphere and its mirror image (core.training.mirrored_halves)."""

import cv2
import numpy as np
import pytest

from core.training import mirrored_halves
from core.training.mirrored_halves import MIN_SYMMETRY, midline, mirrored_half, tumour_side


def _head(angle: float = 0.0, shift: int = 0, blob: tuple[int, int] | None = (120, 160)) -> tuple[np.ndarray, np.ndarray]:
    """A 256-px symmetric 'head' (ellipse, ventricles, a textured cortex symmetric about its axis), tilted by
    ``angle`` and moved ``shift`` px right, with a bright round 'tumour' at ``blob`` (row, column before the tilt)."""
    rng = np.random.default_rng(0)
    grey = np.zeros((256, 256), np.uint8)
    cx = 128 + shift
    cv2.ellipse(grey, (cx, 128), (80, 100), 0, 0, 360, 90, -1)
    half = rng.integers(0, 40, (200, 80)).astype(np.uint8)
    texture = np.hstack([half[:, ::-1], half])  # symmetric about the head's axis
    region = grey[28:228, cx - 80:cx + 80]
    region[region > 0] += texture[region > 0]
    for dx in (-25, 25):
        cv2.ellipse(grey, (cx + dx, 120), (10, 25), 0, 0, 360, 20, -1)
    mask = np.zeros_like(grey)
    if blob is not None:
        cv2.circle(grey, (blob[1] + shift, blob[0]), 14, 250, -1)
        cv2.circle(mask, (blob[1] + shift, blob[0]), 14, 255, -1)
    turn = cv2.getRotationMatrix2D((128, 128), angle, 1.0)
    return (cv2.warpAffine(grey, turn, (256, 256)),
            cv2.warpAffine(mask, turn, (256, 256), flags=cv2.INTER_NEAREST))


@pytest.mark.parametrize("angle,shift", [(0.0, 0), (6.0, 0), (-4.5, 9)])
def test_midline_found_through_tilt_and_shift(angle, shift):
    grey, _ = _head(angle, shift, blob=None)
    line = midline(grey)
    assert line is not None and line.score > 0.9
    assert line.angle == pytest.approx(-angle, abs=1.6)  # the image is turned back by the tilt
    assert line.x == pytest.approx(128 + shift * np.cos(np.radians(angle)), abs=3)


def test_stand_in_keeps_the_tumour_free_half_and_drops_the_tumour():
    grey, mask = _head(angle=4.5, shift=5)
    line = midline(grey, mask)
    assert line.score >= MIN_SYMMETRY
    assert midline(grey).score < line.score  # the bright tumour, left in, spoils the match
    assert tumour_side(mask, line) == "right"
    healthy = mirrored_half(grey, line, keep="left")
    tumour = mirrored_half(grey, line, keep="right")
    assert grey[mask > 0].mean() > 200
    assert healthy[mask > 0].mean() < 150  # the tumour's place now holds the mirrored healthy side
    assert (healthy > 200).sum() < 20
    assert (tumour > 200).sum() > 1.5 * (mask > 0).sum()  # the tumour half mirrored: two tumours
    untouched = np.zeros_like(mask)
    untouched[:, :100] = 1  # well inside the kept half: as it was
    assert np.abs(healthy.astype(int) - grey)[untouched > 0].max() <= 2


def test_the_mirror_image_lands_across_the_tilted_midline():
    """The tumour twin's second tumour (and its mask) sits where the first one's mirror image about the tilted
    midline is: the reflection is turn, flip, turn back (another order would put it elsewhere on a tilted head)."""
    angle, shift = 8.0, 6
    grey, mask = _head(angle=angle, shift=shift)
    line = midline(grey, mask)
    twin_mask = (mirrored_half(mask, line, "right") > 127).astype(np.uint8)
    count, _, _, centres = cv2.connectedComponentsWithStats(twin_mask)
    assert count == 3  # background and two tumours
    turn = cv2.getRotationMatrix2D((128, 128), angle, 1.0)  # how _head tilted its picture
    expected = [turn @ np.array([x, 120.0, 1.0]) for x in (160 + shift, 2 * (128 + shift) - 160 - shift)]
    for point in expected:
        assert min(np.hypot(*(c - point)) for c in centres[1:]) < 3


def test_stand_ins_written_with_the_twins_mask(tmp_path, monkeypatch):
    grey, mask = _head(angle=4.5, shift=5)
    cv2.imwrite(str(tmp_path / "Tr-gl_0001.jpg"), grey)
    cv2.imwrite(str(tmp_path / "Tr-gl_0001_mask.png"), mask)
    monkeypatch.setattr(mirrored_halves, "_figshare_slices", lambda part: [
        (tmp_path / "Tr-gl_0001.jpg", tmp_path / "Tr-gl_0001_mask.png", "glioma", "figshare-P1")])
    rows = mirrored_halves.write_stand_ins(tmp_path / "out", "all")
    assert rows[0]["used"] == 1 and rows[0]["tumour_side"] == "right"
    twin = cv2.imread(str(tmp_path / "out" / "tumour" / "Tr-gl_0001_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(twin)) == {0, 255}
    assert (twin > 0).sum() == pytest.approx(2 * (mask > 0).sum(), rel=0.1)  # the tumour and its mirror image
    assert (twin[mask > 0] > 0).mean() > 0.95
    assert not (tmp_path / "out" / "healthy" / "Tr-gl_0001_mask.png").exists()  # nothing to outline there


def test_a_tumour_on_or_near_the_midline_has_no_side():
    grey, mask = _head(blob=(128, 132))
    assert tumour_side(mask, midline(grey, mask)) is None
    assert tumour_side(np.zeros_like(mask), midline(grey, mask)) is None


def test_no_head_no_midline():
    assert midline(np.zeros((128, 128), np.uint8)) is None
