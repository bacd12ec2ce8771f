"""Macenko H&E stain normalisation (Macenko et al., ISBI 2009), so another lab's H&E looks familiar.

Optical density of tissue pixels is projected on the plane of its two main directions; the extreme
angles give the haematoxylin and eosin vectors; concentrations are rescaled to a reference and the
image is rebuilt with the reference stain matrix. Used identically by training and inference.
"""

from __future__ import annotations

import numpy as np

# Reference stain vectors (rows: H, E) and 99th-percentile concentrations, from Macenko's paper.
REFERENCE_STAINS = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]])
REFERENCE_MAX = np.array([1.9705, 1.0308])
LIGHT = 240.0


def macenko_normalise(rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> np.ndarray:
    """uint8 RGB in, uint8 RGB out; returns the input unchanged when it holds too little tissue."""
    od = -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / LIGHT)
    tissue = od[np.all(od > beta, axis=1)]
    if len(tissue) < 500:
        return rgb
    if len(tissue) > 200_000:
        tissue = tissue[:: len(tissue) // 200_000]
    _, vectors = np.linalg.eigh(np.cov(tissue.T))
    plane = vectors[:, 1:3]
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    lo, hi = np.percentile(angles, alpha), np.percentile(angles, 100 - alpha)
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.array([v1, v2] if v1[0] > v2[0] else [v2, v1])  # haematoxylin has the larger red OD
    stains = np.where(stains.sum(axis=1, keepdims=True) < 0, -stains, stains)
    concentrations = np.linalg.lstsq(stains.T, od.T, rcond=None)[0]
    maxima = np.percentile(concentrations[:, np.all(od > beta, axis=1)], 99, axis=1)
    concentrations *= (REFERENCE_MAX / np.maximum(maxima, 1e-6))[:, None]
    out = LIGHT * np.exp(-(REFERENCE_STAINS.T @ concentrations))
    return np.clip(out.T.reshape(rgb.shape), 0, 255).astype(np.uint8)
