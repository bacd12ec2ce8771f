"""Augmentation presets: every name the command line offers builds, and masks move with their images."""

import numpy as np
import pytest

from core.training.augment import AUGMENTATIONS, build_augmentation


@pytest.mark.parametrize("name", [a for a in AUGMENTATIONS if a != "none"])
def test_every_offered_preset_keeps_the_mask_on_its_lesion(name):
    rng = np.random.default_rng(0)
    image = rng.integers(20, 100, (64, 64, 3), dtype=np.uint8)  # textured, so equalisation has an order to keep
    mask = np.zeros((64, 64), np.uint8)
    image[10:30, 12:40] += 120  # a bright lesion off centre, so flips and shifts move it
    mask[10:30, 12:40] = 1
    moved = 0
    for seed in range(6):
        out = build_augmentation(name, seed)(image=image, mask=mask)
        assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
        lesion = out["mask"].astype(bool)
        assert lesion.any()
        grey = out["image"].mean(axis=2)
        assert grey[lesion].mean() > grey[~lesion].mean() + 40  # the mask still covers the bright region
        moved += not np.array_equal(out["mask"], mask)
    assert (moved > 0) == (name != "filter")  # every preset but "filter" moves the lesion in some draws


def test_no_augmentation_and_unknown_names():
    assert build_augmentation("none") is None and build_augmentation(None) is None
    with pytest.raises(ValueError, match="choose from none, filter"):
        build_augmentation("elastic")


def test_burned_in_marks_draw_on_the_image_never_on_the_mask():
    """Ultrasound marks (calipers, text, depth ticks) are bright strokes on the picture; the lesion mask stays."""
    from core.training.augment import _burned_in_marks

    image = np.full((96, 128, 3), 60, np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    mask[30:60, 40:80] = 1
    marks = _burned_in_marks()(p=1.0)
    changed = 0
    for seed in range(8):
        marks.set_random_seed(seed)
        out = marks(image=image, mask=mask)
        assert np.array_equal(out["mask"], mask)
        drawn = out["image"] != image
        changed += drawn.any()
        assert (out["image"][drawn] > 60).all()  # bright strokes only: the picture is only ever brightened
        assert (out["image"][..., 0] == out["image"][..., 2]).all()  # grey, as the product feeds ultrasound
    assert changed == 8
