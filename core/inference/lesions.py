"""Connected lesions of a binary mask with areas, diameters, width and depth in pixels and millimetres."""

from __future__ import annotations

import cv2
import numpy as np

from core.inference.results import Lesion


def find_lesions(mask: np.ndarray, spacing_mm: tuple[float, float] | None, min_area_px: int = 16,
                 calipers: bool = False, aspect: float = 1.0) -> list[Lesion]:
    """Components larger than ``min_area_px``, largest first; mm values only when spacing is known. The longest
    diameter is measured in mm where spacing is known (non-square pixels can move its ends), else in pixels;
    ``calipers``: ultrasound width/depth (the vertical axis is the beam); ``aspect``: a pixel's height over its
    width where spacing is unknown (the depth-to-width ratio)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    lesions = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area_px:
            continue
        component = (labels[y : y + h, x : x + w] == label).astype(np.uint8)
        contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        contour = max(contours, key=cv2.contourArea).reshape(-1, 2) + np.array([x, y])
        # Edge to edge, as the width and depth calipers (bbox width x column spacing) and a reader's ruler measure:
        # over the corners of the boundary pixels (pixel (c, r) covers [c, c+1] x [r, r+1] in image coordinates),
        # not their centres, which would read one pixel short (a 20-px-wide bar: 19 px). The ends lie on the lesion's
        # edges. The hull is found in pixels, then measured in mm: scaling the axes keeps a hull a hull.
        corners = (contour[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]])).reshape(-1, 2)
        hull = cv2.convexHull(corners.astype(np.float32)).reshape(-1, 2)
        diff = hull[:, None, :] - hull[None, :, :]
        px = np.sqrt((diff**2).sum(-1))
        lengths = px if spacing_mm is None else np.sqrt(((diff * np.array(spacing_mm[::-1])) ** 2).sum(-1))
        i, j = np.unravel_index(int(np.argmax(lengths)), lengths.shape)
        ends = ((float(hull[i][0]), float(hull[i][1])), (float(hull[j][0]), float(hull[j][1])))
        area_mm2 = None if spacing_mm is None else float(area * spacing_mm[0] * spacing_mm[1])
        diameter_mm = None if spacing_mm is None else float(lengths[i, j])
        diameter_px = float(px.max())
        lesions.append(Lesion(label, area, area_mm2, (x, y, w, h), diameter_px, diameter_mm, contour, spacing_mm,
                              diameter_ends=ends, calipers=calipers, aspect=aspect))
    return sorted(lesions, key=lambda l: -l.area_px)


def drop_unsure_components(mask: np.ndarray, probability: np.ndarray, min_peak: float) -> np.ndarray:
    """``mask`` without the components whose highest probability stays below ``min_peak``.

    A lesion the model is sure of somewhere is kept whole; faint blobs (speckle, acoustic shadow) that
    only just cross the mask threshold are dropped. Each bundle picks ``min_peak`` on its validation
    split (``min_lesion_peak`` in its manifest); 0 keeps every component.
    """
    if min_peak <= 0:
        return mask
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    peaks = np.zeros(count, np.float32)
    np.maximum.at(peaks, labels.ravel(), probability.ravel().astype(np.float32))
    keep = peaks >= min_peak
    keep[0] = False
    return keep[labels].astype(mask.dtype)


def drop_small_components(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    """``mask`` without the components smaller than ``min_area_px`` (the lesions ``find_lesions`` does not count):
    the mask drawn, written and exported holds what the result counts (a 2-pixel speck had been painted green
    beside '1 lesion(s)')."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area_px
    keep[0] = False
    return mask if keep[1:].all() else keep[labels].astype(mask.dtype)
