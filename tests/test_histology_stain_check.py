"""The H&E colour check of the histology bundle: a picture of other colours is flagged, H&E slides are not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.imaging import load_image
from core.models.tiling import MIN_H_AND_E_SHARE, h_and_e_share, stain_warnings


def _hued(hues_deg: list[float], shape=(200, 300)) -> np.ndarray:
    """A textured picture whose stained pixels take the given hues, in bands (saturated, mid-bright)."""
    rng = np.random.default_rng(0)
    hsv = np.zeros(shape + (3,), np.uint8)
    bands = np.array_split(np.arange(shape[1]), len(hues_deg))
    for band, hue in zip(bands, hues_deg):
        hsv[:, band, 0] = int(hue / 360 * 256) % 256
    hsv[..., 1] = rng.integers(90, 200, shape)
    hsv[..., 2] = rng.integers(110, 220, shape)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def test_pink_and_purple_pass_green_and_brown_are_flagged():
    assert stain_warnings(_hued([330, 290, 10])) == []
    flagged = stain_warnings(_hued([110, 150, 35]))  # foliage greens and a brown: a photograph, or a DAB stain
    assert len(flagged) == 1 and flagged[0].startswith("Not H&E colours")
    assert h_and_e_share(_hued([110, 300])) == pytest.approx(0.5, abs=0.02)
    assert h_and_e_share(np.full((50, 50, 3), 250, np.uint8)) is None  # glass: nothing stained to judge


def test_every_shared_h_and_e_picture_passes(shared):
    shares = [h_and_e_share(load_image(path).display(0))
              for path in sorted((shared / "histology_ucsb").glob("*/*.jpg"))]
    assert len(shares) == 46 and min(shares) > 2 * MIN_H_AND_E_SHARE
