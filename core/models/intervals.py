"""95 % intervals of validation metrics, and the one way they are written.

Validation sets here are small (12 to 965 images): 12 of 12 right is compatible with 76 %
accuracy, so every headline number is shown with its interval - in model cards, the README table,
``main.py models`` and the window's model panel alike. NumPy only: the registry reads these
without importing the training code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy measured on ``n`` images (stays inside 0..1, honest
    at 0 or 100 %)."""
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def mean_interval(values: Sequence[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of a mean over images (per-image Dice)."""
    values = np.asarray(values, np.float64)
    means = np.random.default_rng(seed).choice(values, (draws, len(values))).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def interval_text(bounds: Sequence[float] | None) -> str:
    """' [95 % CI a-b]' to follow a metric, or '' where there is no interval (older manifests)."""
    return f" [95 % CI {bounds[0]:.3f}-{bounds[1]:.3f}]" if bounds else ""
