"""Tiles of an image of any size, streamed to a model in small batches.

The image is never turned into one big model tensor: tile boxes are planned on the loaded picture
(resampled to the bundle's physical scale where it has one, ``core.models.scale``), and each batch of
tiles is cut, stain-normalised and scaled only when the model is ready for it. Macenko stain
normalisation is fitted once per image on a bounded sample of its pixels and applied tile by tile,
which equals normalising the whole picture (for pictures up to ``core.imaging.stain.STAIN_FIT_PIXELS``, exactly).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from core.imaging.stain import apply_macenko, fit_macenko
from core.models.preprocessing import PreprocessSpec, preprocess
from core.models.tiling import TilingSpec, tile_boxes, tile_pixels

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
