"""Ultrasound screen captures cut to their scan area, as the training pictures are (Qt- and TF-free)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.imaging import load_image
from core.imaging.scan_area import scan_area
from core.models.preprocessing import PreprocessSpec, crop_box, to_model_pixels
from core.training.us_screens import box_iou, scanner_screen

SCAN = PreprocessSpec(size=128, color="grey3", crop="scan")


def _picture(shape=(300, 400), seed=0, black_band=False) -> np.ndarray:
    """Speckle with bright layers and a dark cyst, like a breast scan already cut to its scan area; with
    ``black_band`` an anechoic band across the whole width cuts it in two."""
    rng = np.random.default_rng(seed)
    h, w = shape
    img = rng.rayleigh(30, shape)
    yy, xx = np.mgrid[:h, :w]
    img += 60 * (np.sin(yy / 9.0 + xx / 70.0) > 0.7)
    img[((yy - h * 0.5) / (h * 0.15)) ** 2 + ((xx - w * 0.5) / (w * 0.2)) ** 2 < 1] *= 0.1
    if black_band:
        img[int(h * 0.4):int(h * 0.6)] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_scan_area_found_in_a_screen_capture(seed):
    """Each edge exact: the rule's working copy left 1-3 px of black screen around the scan, which moved the
    3-class model's probabilities by up to 0.25 on real BUSI pictures set in a screen."""
    screen, truth = scanner_screen(_picture(seed=seed), np.random.default_rng(seed))
    assert scan_area(screen) == truth


def test_both_panes_of_a_dual_view_are_kept():
    left, right = _picture((300, 240), seed=1), _picture((300, 240), seed=2)
    screen = np.zeros((600, 800), np.uint8)
    screen[100:400, 120:360], screen[100:400, 380:620] = left, right
    y0, y1, x0, x1 = scan_area(screen)
    assert y0 <= 100 and y1 >= 400 and x0 <= 120 and x1 >= 620 and x1 - x0 < 520


def test_scan_area_cut_in_two_by_an_anechoic_band_stays_whole():
    screen, truth = scanner_screen(_picture(black_band=True), np.random.default_rng(7))
    assert box_iou(scan_area(screen), truth) > 0.95


def test_a_picture_already_cut_to_its_scan_area_is_left_alone():
    picture = _picture()
    assert scan_area(picture) == (0, 300, 0, 400)
    assert np.array_equal(to_model_pixels(picture, SCAN), to_model_pixels(picture, PreprocessSpec(size=128)))


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (40, 3000)])
def test_blank_or_odd_pictures_keep_the_whole_image(shape):
    assert scan_area(np.zeros(shape, np.uint8)) == (0, shape[0], 0, shape[1])


def test_a_screen_gives_the_model_nearly_the_input_of_its_picture():
    picture = _picture(seed=3)
    screen, _ = scanner_screen(picture, np.random.default_rng(3))
    def seen(image, spec):  # structure, not speckle: a shift of a pixel or two is no change to the model
        return cv2.GaussianBlur(to_model_pixels(image, spec), (9, 9), 0).astype(float)

    plain, uncut, cut = seen(picture, PreprocessSpec(size=128)), seen(screen, PreprocessSpec(size=128)), seen(screen, SCAN)
    assert np.abs(cut - plain).mean() < 0.25 * np.abs(uncut - plain).mean()


def test_real_philips_breast_screen_capture(deid_file):
    """A real scanner screen (Philips, 'Adv Breast', L12-5): patient bar above, preset panel on the left, depth
    scale and grey bar on the right; the DICOM's own ultrasound region spans nearly the whole screen."""
    record = load_image(deid_file("ultrasounds/GREYSCALE_IMAGE.dcm"))
    y0, y1, x0, x1 = crop_box(record.display(0), SCAN)
    assert 60 < y0 < 110 and 690 < y1 <= 768  # under the patient bar, to the bottom of the picture
    assert 100 < x0 < 150 and 880 < x1 < 930  # between the preset panel and the depth scale


@pytest.mark.parametrize("folder", ["busi/benign", "busbra/malignant"])
def test_shared_training_pictures_are_barely_cut(shared, folder):
    paths = sorted(p for p in (shared / folder).iterdir() if "_mask" not in p.name)[:25]
    kept = []
    for path in paths:
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        y0, y1, x0, x1 = scan_area(grey)
        kept.append((y1 - y0) * (x1 - x0) / grey.size)
    assert np.median(kept) == 1.0 and min(kept) > 0.6
