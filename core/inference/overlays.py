"""Overlay pictures for files and reports (the GUI draws its own layers from the same arrays)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def heatmap_rgb(heatmap: np.ndarray) -> np.ndarray:
    """0..1 heatmap to a jet-coloured uint8 RGB image."""
    return cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]


def blend_heatmap(display: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    base = display if display.ndim == 3 else cv2.cvtColor(display, cv2.COLOR_GRAY2RGB)
    alpha = (opacity * np.clip(heatmap, 0, 1))[..., None]
    return np.uint8(base * (1 - alpha) + heatmap_rgb(heatmap) * alpha)


def save_heatmap_png(display: np.ndarray, heatmap: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), blend_heatmap(display, heatmap)[..., ::-1])
    return path


def save_mask_png(mask: np.ndarray, path: Path) -> Path:
    """Binary mask as 0/255 PNG at the image's original resolution."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (mask > 0).astype(np.uint8) * 255)
    return path
