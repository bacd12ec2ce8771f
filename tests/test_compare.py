"""The paired comparison that decides whether a retrained classifier replaces the shipped one."""

import numpy as np
import pytest

from core.training.compare import metrics_for, paired_differences

CLASSES = ["benign", "malignant", "normal"]


def _calls(y: np.ndarray, right: np.ndarray, confidence: float = 0.8) -> np.ndarray:
    """Probabilities that put ``confidence`` on the true class where ``right``, else on the next class."""
    picked = np.where(right, y, (y + 1) % 3)
    p = np.full((len(y), 3), (1 - confidence) / 2)
    p[np.arange(len(y)), picked] = confidence
    return p


def test_metrics_follow_the_classes():
    assert set(metrics_for(CLASSES)) == {"accuracy", "log_loss", "finding_vs_none_auc", "malignant_vs_benign_auc"}
    assert set(metrics_for(["glioma", "meningioma", "notumor", "pituitary"])) == {
        "accuracy", "log_loss", "finding_vs_none_auc"}
    assert set(metrics_for(["benign", "malignant"])) == {"accuracy", "log_loss", "malignant_vs_benign_auc"}


def test_a_clearly_better_model_has_an_interval_above_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    groups = [f"p{i // 2}" for i in range(400)]  # two images per patient
    old = _calls(y, rng.random(400) < 0.70)
    new = _calls(y, rng.random(400) < 0.95)
    out = paired_differences(new, old, y, groups, metrics_for(CLASSES), rounds=300)
    low, high = out["accuracy"]["interval"]
    assert out["accuracy"]["diff"] == pytest.approx(out["accuracy"]["new"] - out["accuracy"]["old"])
    assert 0 < low < out["accuracy"]["diff"] < high
    assert out["log_loss"]["interval"][1] < 0  # fewer confident mistakes: lower log-loss


def test_the_same_model_differs_by_nothing_and_small_changes_stay_inside():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    groups = [f"p{i}" for i in range(200)]
    old = _calls(y, rng.random(200) < 0.8)
    same = paired_differences(old, old, y, groups, metrics_for(CLASSES), rounds=200)
    assert all(m["diff"] == 0 and m["interval"] == [0.0, 0.0] for m in same.values())
    nudged = old.copy()
    flip = np.flatnonzero(old.argmax(1) != y)[:2]  # two more right calls out of 200
    nudged[flip] = _calls(y[flip], np.ones(2, bool))
    small = paired_differences(nudged, old, y, groups, metrics_for(CLASSES), rounds=300)
    low, high = small["accuracy"]["interval"]
    assert small["accuracy"]["diff"] == pytest.approx(0.01)
    assert low <= 0 < high  # two images out of 200 are not an improvement one can claim
