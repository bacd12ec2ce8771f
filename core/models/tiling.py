"""Tiles over large images (histology, mammograms): tissue detection, the tile grid and aggregation.

An image of any size is covered by tiles of the bundle's tile size; tiles with too little tissue
are skipped; the image probability aggregates the tile probabilities (mean or max, documented in
the bundle's manifest), and the tile probabilities form a map over the whole image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TilingSpec:
    tile: int = 224  # tile side in image pixels (after ``scale``)
    stride: int = 224
    scale: float = 1.0  # resize factor applied before tiling (to match magnification)
    min_tissue: float = 0.4  # fraction of tissue pixels a tile needs
    # What tissue looks like: "stained" (H&E on bright glass) or "radiograph" (breast brighter than the
    # dark air around it; on a mammogram most of the frame is air and would otherwise count as tissue).
    tissue: str = "stained"
    aggregate: str = "mean"  # "mean" of tile probabilities, or "max": the most suspicious tile decides
    # (binary bundles, positive class last: a small lesion in one tile makes the image abnormal)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "TilingSpec | None":
        if not data:
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


RADIOGRAPH_AIR = 30  # display grey level below which a radiograph pixel is air (mini-MIAS air is 0-20)


def tissue_mask(rgb: np.ndarray, kind: str = "stained") -> np.ndarray:
    """Tissue pixels. Stained: coloured enough and not the bright slide background (grey: not bright).
    Radiograph: brighter than air."""
    if kind == "radiograph":
        grey = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return grey > RADIOGRAPH_AIR
    if kind != "stained":
        raise ValueError(f"unknown tissue kind '{kind}'")
    if rgb.ndim == 2:
        return rgb < 235
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    return (hsv[..., 1] > 20) & (hsv[..., 2] < 235)


def tile_boxes(rgb: np.ndarray, spec: TilingSpec) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) boxes in original image pixels; at least one box even for tiny images."""
    h, w = rgb.shape[:2]
    side = int(round(spec.tile / spec.scale))
    step = max(1, int(round(spec.stride / spec.scale)))
    if h < side or w < side:
        return [(0, h, 0, w)]
    tissue = tissue_mask(rgb, spec.tissue).astype(np.float32)
    integral = cv2.integral(tissue)
    boxes, fractions = [], []
    ys = list(range(0, h - side + 1, step)) or [0]
    xs = list(range(0, w - side + 1, step)) or [0]
    if ys[-1] + side < h:
        ys.append(h - side)
    if xs[-1] + side < w:
        xs.append(w - side)
    for y in ys:
        for x in xs:
            total = integral[y + side, x + side] - integral[y, x + side] - integral[y + side, x] + integral[y, x]
            boxes.append((y, y + side, x, x + side))
            fractions.append(total / (side * side))
    kept = [b for b, f in zip(boxes, fractions) if f >= spec.min_tissue]
    return kept or [boxes[int(np.argmax(fractions))]]


def aggregate(tile_probs: np.ndarray, spec: TilingSpec) -> np.ndarray:
    """Image-level class probabilities from tile probabilities (N, K)."""
    if spec.aggregate == "mean":
        return tile_probs.mean(axis=0)
    if spec.aggregate == "max" and tile_probs.shape[1] == 2:
        positive = float(tile_probs[:, 1].max())
        return np.array([1.0 - positive, positive])
    raise ValueError(f"unknown aggregation '{spec.aggregate}' for {tile_probs.shape[1]} classes")


def tile_map(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]], values: np.ndarray) -> np.ndarray:
    """Per-pixel average of the values of the tiles covering it (0 where no tile)."""
    total = np.zeros(shape, np.float32)
    count = np.zeros(shape, np.float32)
    for (y0, y1, x0, x1), v in zip(boxes, values):
        total[y0:y1, x0:x1] += v
        count[y0:y1, x0:x1] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
