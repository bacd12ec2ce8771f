"""A clearly labelled modality guess for files that do not say (PNG, JPEG, untyped DICOM).

A multinomial logistic regression on a 24x24 thumbnail plus a few colour and shape statistics,
fitted on the shared training sets (``python -m core.training.fit_modality_guess``). Pure NumPy and
OpenCV, so ``info`` and the window never wait for TensorFlow.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from core.imaging.record import Modality

THUMB = 24
WEIGHTS = Path(__file__).resolve().parents[2] / "resources" / "modality_guess.npz"


def modality_features(display: np.ndarray) -> np.ndarray:
    """Feature vector of an 8-bit display image (grey or RGB); shared by fitting and guessing."""
    if display.ndim == 3:
        grey = cv2.cvtColor(display, cv2.COLOR_RGB2GRAY)
        sat = cv2.cvtColor(display, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32) / 255.0
    else:
        grey = display
        sat = np.zeros((1, 1), np.float32)
    thumb = cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    h, w = grey.shape
    stats = np.array(
        [
            float(sat.mean()),
            float((sat > 0.15).mean()),
            float(np.log(w / h)),
            float((grey < 20).mean()),
            float(grey.mean()) / 255.0,
            float(grey.std()) / 255.0,
            float(thumb[:, : THUMB // 2].mean() - thumb[:, THUMB // 2 :].mean()),
        ],
        np.float32,
    )
    return np.concatenate([thumb.ravel(), stats])


@lru_cache(maxsize=1)
def _weights() -> dict[str, np.ndarray] | None:
    if not WEIGHTS.exists():
        return None
    with np.load(WEIGHTS) as data:
        return {k: data[k] for k in data.files}


def guess_modality(display: np.ndarray) -> tuple[Modality, float | None]:
    """Most likely product modality and its probability (None when no fitted guesser is present)."""
    weights = _weights()
    if weights is None:
        return (Modality.SM if display.ndim == 3 else Modality.OTHER), None
    x = (modality_features(display) - weights["mean"]) / weights["scale"]
    logits = weights["coef"] @ x + weights["intercept"]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    best = int(np.argmax(p))
    return Modality(str(weights["classes"][best])), float(p[best])
