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
# Two stains need two colours. Where the stained pixels' colour hardly varies (all black, one uniform colour,
# a grey picture, whose optical densities all lie along the grey axis) the fit finds the same vector for H and
# E and rebuilding with it changes the picture for nothing: such a picture is left as it is. The spread is the
# RMS distance of the optical densities, grey axis removed, from their mean: 0 for those pictures, 0.02-0.03
# for one colour under sensor or JPEG noise (RGB noise sd 2-3), at least 0.06 on 146 UCSB and BACH H&E images.
MIN_COLOUR_SPREAD = 0.03
_GREY_AXIS = np.ones(3) / np.sqrt(3.0)


def colour_spread(od: np.ndarray) -> float:
    """RMS spread of optical densities (N, 3) across the colour plane (the grey axis projected out)."""
    if not len(od):
        return 0.0
    chroma = od - np.outer(od @ _GREY_AXIS, _GREY_AXIS)
    return float(np.sqrt(((chroma - chroma.mean(axis=0)) ** 2).sum(axis=1).mean()))


@dataclass(frozen=True)
class StainFit:
    """One image's Macenko stain vectors (rows H, E) and 99th-percentile concentrations."""

    stains: np.ndarray
    maxima: np.ndarray


def fit_macenko(rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> StainFit | None:
    """The fit ``macenko_normalise`` makes, on at most ``STAIN_FIT_PIXELS`` pixels; None
    where the image holds too little tissue or its tissue too little colour variation for two stains
    (``MIN_COLOUR_SPREAD``; it is then left as it is)."""
    step = int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / STAIN_FIT_PIXELS))) if rgb.ndim == 3 else 1
    sample = rgb[::step, ::step] if step > 1 else rgb
    od = -np.log((sample.reshape(-1, 3).astype(np.float64) + 1.0) / LIGHT)
    is_tissue = np.all(od > beta, axis=1)
    tissue = od[is_tissue]
    if len(tissue) < 500:
        return None
    if len(tissue) > 200_000:
        tissue = tissue[:: len(tissue) // 200_000]
    if colour_spread(tissue) < MIN_COLOUR_SPREAD:
        return None
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
    """uint8 RGB in, uint8 RGB out; returns the input unchanged when it holds too little tissue or no two stains."""
    return apply_macenko(rgb, fit_macenko(rgb, beta, alpha))
