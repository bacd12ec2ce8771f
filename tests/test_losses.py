"""Segmentation losses (core.training.losses) on small hand-made masks."""

import numpy as np
import pytest

from core.training.losses import segmentation_loss


def _batch():
    """Two 8x8 images: one with a 4x4 lesion predicted half right, one lesion-free with a small false blob."""
    truth = np.zeros((2, 8, 8, 1), np.float32)
    truth[0, 2:6, 2:6] = 1
    pred = np.full((2, 8, 8, 1), 0.05, np.float32)
    pred[0, 2:6, 2:4] = 0.9
    pred[1, 0:2, 0:2] = 0.9
    return truth, pred


def test_lesion_dice_leaves_lesion_free_images_to_bce():
    truth, pred = _batch()
    bce = float(segmentation_loss("bce")(truth, pred))
    lesion_dice = float(segmentation_loss("bce+lesion_dice")(truth, pred)) - bce
    first_image_dice = float(np.mean(segmentation_loss("dice")(truth[:1], pred[:1])))
    assert lesion_dice == pytest.approx(first_image_dice, abs=1e-5)  # the lesion-free image adds no Dice term
    both = float(segmentation_loss("bce+dice")(truth, pred)) - bce
    assert both > lesion_dice  # plain Dice charges the false blob on the empty mask nearly a whole Dice term


def test_lesion_dice_on_a_batch_without_lesions_is_bce():
    truth, pred = _batch()
    empty = truth[1:]
    assert float(segmentation_loss("bce+lesion_dice")(empty, pred[1:])) == pytest.approx(
        float(segmentation_loss("bce")(empty, pred[1:])), abs=1e-6)


def test_an_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss"):
        segmentation_loss("focal")
