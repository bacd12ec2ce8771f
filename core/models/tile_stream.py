"""Tiles of an image of any size, streamed to a model in small batches.

The image is never turned into one big model tensor: tile boxes are planned on the loaded picture
(resampled to the bundle's physical scale where it has one, ``core.models.scale``), and each batch of
tiles is cut, stain-normalised and scaled only when the model is ready for it. Macenko stain
normalisation is fitted once per image on a bounded sample of its pixels and applied tile by tile,
which equals normalising the whole picture (for pictures up to ``STAIN_FIT_PIXELS``, exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from core.imaging.stain import LIGHT, REFERENCE_MAX, REFERENCE_STAINS
from core.models.preprocessing import PreprocessSpec, preprocess
from core.models.tiling import TilingSpec, tile_boxes, tile_pixels

STAIN_FIT_PIXELS = 4_000_000  # larger pictures are fitted on an even grid of this many pixels


@dataclass(frozen=True)
class StainFit:
    """One image's Macenko stain vectors (rows H, E) and 99th-percentile concentrations."""

    stains: np.ndarray
    maxima: np.ndarray


def fit_macenko(rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> StainFit | None:
    """The fit ``core.imaging.stain.macenko_normalise`` makes, on at most ``STAIN_FIT_PIXELS`` pixels; None
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


class TilePlan:
    """Tissue tiles of one picture at the bundle's scale, cut and preprocessed batch by batch."""

    def __init__(self, display: np.ndarray, tiling: TilingSpec, spec: PreprocessSpec,
                 image_um: tuple[float, float] | None = None) -> None:
        self.display, self.spec = display, spec
        self.boxes = tile_boxes(display, tiling, image_um)
        self.fit = fit_macenko(display) if spec.stain == "macenko" and display.ndim == 3 else None

    def __len__(self) -> int:
        return len(self.boxes)

    def tile_input(self, index: int) -> np.ndarray:
        """float32 (size, size, 3) model input of tile ``index``."""
        return preprocess(apply_macenko(tile_pixels(self.display, self.boxes[index]), self.fit), self.spec)

    def batches(self, size: int = 16) -> Iterator[np.ndarray]:
        """Model inputs of ``size`` tiles at a time, in box order."""
        for start in range(0, len(self.boxes), size):
            yield np.stack([self.tile_input(i) for i in range(start, min(start + size, len(self.boxes)))])
