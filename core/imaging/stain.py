"""Macenko H&E stain normalisation (Macenko et al., ISBI 2009), so another lab's H&E looks familiar.

Optical density of tissue pixels is projected on the plane of its two main directions; the extreme
angles give the haematoxylin and eosin vectors; concentrations are rescaled to a reference and the
image is rebuilt with the reference stain matrix. Used identically by training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Reference stain vectors (rows: H, E) and 99th-percentile concentrations, from Macenko's paper.
REFERENCE_STAINS = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]])
REFERENCE_MAX = np.array([1.9705, 1.0308])
LIGHT = 240.0


STAIN_FIT_PIXELS = 4_000_000  # larger pictures are fitted on an even grid of this many pixels


@dataclass(frozen=True)
class StainFit:
    """One image's Macenko stain vectors (rows H, E) and 99th-percentile concentrations."""

    stains: np.ndarray
    maxima: np.ndarray


def fit_macenko(rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> StainFit | None:
    """The fit ``macenko_normalise`` makes, on at most ``STAIN_FIT_PIXELS`` pixels; None
    where the image holds too little tissue (it is then left as it is)."""
    step = int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / STAIN_FIT_PIXELS))) if rgb.ndim == 3 else 1
    sample = rgb[::step, ::step] if step > 1 else rgb
    od = -np.log((sample.reshape(-1, 3).astype(np.float64) + 1.0) / LIGHT)
    is_tissue = np.all(od > beta, axis=1)
    tissue = od[is_tissue]
    if len(tissue) < 500:
        return None
    if len(tissue) > 200_000:
        tissue = tissue[:: len(tissue) // 200_000]
    _, vectors = np.linalg.eigh(np.cov(tissue.T))
    plane = vectors[:, 1:3]
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    lo, hi = np.percentile(angles, alpha), np.percentile(angles, 100 - alpha)
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.array([v1, v2] if v1[0] > v2[0] else [v2, v1])
    stains = np.where(stains.sum(axis=1, keepdims=True) < 0, -stains, stains)
    concentrations = np.linalg.lstsq(stains.T, od[is_tissue].T, rcond=None)[0]
    return StainFit(stains, np.percentile(concentrations, 99, axis=1))


def apply_macenko(rgb: np.ndarray, fit: StainFit | None) -> np.ndarray:
    """Pixels (a tile) rebuilt with the reference stains from an image's fit."""
    if fit is None or rgb.ndim != 3:
        return rgb
    od = -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / LIGHT)
    concentrations = np.linalg.lstsq(fit.stains.T, od.T, rcond=None)[0]
    concentrations *= (REFERENCE_MAX / np.maximum(fit.maxima, 1e-6))[:, None]
    out = LIGHT * np.exp(-(REFERENCE_STAINS.T @ concentrations))
    return np.clip(out.T.reshape(rgb.shape), 0, 255).astype(np.uint8)


def macenko_normalise(rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> np.ndarray:
    """uint8 RGB in, uint8 RGB out; returns the input unchanged when it holds too little tissue."""
    return apply_macenko(rgb, fit_macenko(rgb, beta, alpha))
