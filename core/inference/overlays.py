"""Overlay pictures for files and reports (the GUI draws its own layers from the same arrays)."""

from __future__ import annotations


import cv2
import numpy as np


def heatmap_rgb(heatmap: np.ndarray) -> np.ndarray:
    """0..1 heatmap to a jet-coloured uint8 RGB image."""
    return cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]


def blend_heatmap(display: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    base = display if display.ndim == 3 else cv2.cvtColor(display, cv2.COLOR_GRAY2RGB)
    alpha = (opacity * np.clip(heatmap, 0, 1))[..., None]
    return np.uint8(base * (1 - alpha) + heatmap_rgb(heatmap) * alpha)


def heatmap_rgba(heatmap: np.ndarray, opacity: float, threshold: float = 0.0,
                 colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Heatmap layer for a viewer: colour-mapped, transparent below ``threshold``, alpha ~ value."""
    value = np.clip(heatmap, 0, 1)
    rgb = cv2.applyColorMap(np.uint8(value * 255), colormap)[..., ::-1]
    alpha = np.where(value >= threshold, opacity * 255 * np.clip(value * 1.5, 0, 1), 0)
    return np.ascontiguousarray(np.dstack([rgb, alpha.astype(np.uint8)]))


def mask_rgba(mask: np.ndarray, color: tuple[int, int, int], opacity: float, contour_only: bool = False,
              thickness: int = 2) -> np.ndarray:
    """Segmentation layer for a viewer: filled or outlined mask in one colour."""
    region = mask > 0
    if contour_only:
        edges = np.zeros(mask.shape, np.uint8)
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(edges, contours, -1, 1, thickness)
        region = edges > 0
    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[region, :3] = color
    rgba[region, 3] = int(round(255 * (1.0 if contour_only else opacity)))
    return rgba


def colorbar_rgb(height: int = 256, width: int = 16, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Vertical colour bar, high values at the top."""
    ramp = np.linspace(255, 0, height).astype(np.uint8)[:, None].repeat(width, 1)
    return np.ascontiguousarray(cv2.applyColorMap(ramp, colormap)[..., ::-1])
