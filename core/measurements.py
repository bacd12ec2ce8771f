"""Distances and regions a reader measures on a slice, as with any viewer's ruler and ellipse: to check a model's
lesion size, to size what no model outlines, or to read a region's values (a cyst's Hounsfield units, a signal).

A ruler joins two points in image pixels (x right, y down, origin top-left). Its length is in millimetres where the
slice's pixel spacing is known (DICOM PixelSpacing: the spacing between rows, then between columns, so a ruler on a
picture with non-square pixels is measured right), else in pixels, and its text says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_LENGTH_PX = 2.0  # a click without a drag is not a measurement


@dataclass(frozen=True)
class Ruler:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def length_px(self) -> float:
        return math.hypot(self.x1 - self.x0, self.y1 - self.y0)

    def length_mm(self, spacing_mm: tuple[float, float] | None) -> float | None:
        """The length in mm for ``spacing_mm`` = (between rows, between columns); None when it is not known."""
        if not spacing_mm:
            return None
        row, column = spacing_mm
        return math.hypot((self.x1 - self.x0) * column, (self.y1 - self.y0) * row)

    def to_dict(self, spacing_mm: tuple[float, float] | None) -> dict:
        """The ruler as exported: its ends in image pixels and its length (mm: None where the spacing is unknown)."""
        mm = self.length_mm(spacing_mm)
        return {"x0": round(self.x0, 2), "y0": round(self.y0, 2), "x1": round(self.x1, 2), "y1": round(self.y1, 2),
                "length_px": round(self.length_px, 2), "length_mm": None if mm is None else round(mm, 2)}

    def text(self, spacing_mm: tuple[float, float] | None) -> str:
        """'18.0 mm', or '50 px' where the pixel spacing is unknown."""
        mm = self.length_mm(spacing_mm)
        return f"{mm:.1f} mm" if mm is not None else f"{self.length_px:.0f} px"


def ruler_within(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> Ruler | None:
    """The part of the line from (x0, y0) to (x1, y1) inside a ``width`` x ``height`` picture, in the line's own
    direction (Liang-Barsky clipping: a drag past the edge stops there, it does not turn along it); None where no
    part lies inside or the part is under ``MIN_LENGTH_PX`` (a click)."""
    dx, dy = float(x1) - x0, float(y1) - y0
    start, end = 0.0, 1.0
    for p, q in ((-dx, x0), (dx, width - x0), (-dy, y0), (dy, height - y0)):  # left, right, top, bottom edges
        if p == 0:
            if q < 0:  # parallel to this edge and outside it
                return None
        elif p < 0:
            start = max(start, q / p)
        else:
            end = min(end, q / p)
    if start > end:
        return None
    ruler = Ruler(x0 + start * dx, y0 + start * dy, x0 + end * dx, y0 + end * dy)
    return ruler if ruler.length_px >= MIN_LENGTH_PX else None


@dataclass(frozen=True)
class RegionStats:
    """The file's own values (modality LUT applied: Hounsfield units for CT) of the pixels inside a region."""

    pixels: int
    mean: float
    sd: float
    minimum: float
    maximum: float


@dataclass(frozen=True)
class Region:
    """The ellipse inscribed in the box from (x0, y0) to (x1, y1), image pixels, and the statistics of the values
    of the pixels whose centres lie inside it (None for a colour picture, whose values are not one quantity)."""

    x0: float
    y0: float
    x1: float
    y1: float
    stats: RegionStats | None = None
    unit: str = ""  # of the values: 'HU' for CT, '' where they have none (MR signal, grey levels)

    @property
    def area_px(self) -> float:
        return math.pi * abs(self.x1 - self.x0) * abs(self.y1 - self.y0) / 4

    def area_mm2(self, spacing_mm: tuple[float, float] | None) -> float | None:
        return self.area_px * spacing_mm[0] * spacing_mm[1] if spacing_mm else None

    def to_dict(self, spacing_mm: tuple[float, float] | None) -> dict:
        """The region as exported: its box in image pixels, its area (mm²: None where the spacing is unknown) and
        its values' statistics."""
        mm2 = self.area_mm2(spacing_mm)
        out = {"shape": "ellipse", "x0": round(self.x0, 2), "y0": round(self.y0, 2), "x1": round(self.x1, 2),
               "y1": round(self.y1, 2), "area_px": round(self.area_px, 1),
               "area_mm2": None if mm2 is None else round(mm2, 2), "unit": self.unit}
        if self.stats is not None:
            out.update({key: round(value, 3) if isinstance(value, float) else value
                        for key, value in vars(self.stats).items()})
        return out

    def text(self, spacing_mm: tuple[float, float] | None) -> str:
        """'78.5 mm² · mean 41.2 ± 6.3 HU (min 20, max 63)'; the area in px² where the pixel spacing is unknown."""
        mm2 = self.area_mm2(spacing_mm)
        area = f"{mm2:.1f} mm²" if mm2 is not None else f"{self.area_px:.0f} px²"
        if self.stats is None:
            return area
        unit = f" {self.unit}" if self.unit else ""
        s = self.stats
        return f"{area} · mean {s.mean:.4g} ± {s.sd:.3g}{unit} (min {s.minimum:.4g}, max {s.maximum:.4g})"


def ellipse_mask(x0: float, y0: float, x1: float, y1: float, rows: int, columns: int) -> np.ndarray:
    """The pixels of a ``rows`` x ``columns`` picture whose centres lie inside the ellipse in the box."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = max(abs(x1 - x0) / 2, 1e-9), max(abs(y1 - y0) / 2, 1e-9)
    y, x = np.ogrid[:rows, :columns]
    return ((x + 0.5 - cx) / a) ** 2 + ((y + 0.5 - cy) / b) ** 2 <= 1.0


def region_within(x0: float, y0: float, x1: float, y1: float, values: np.ndarray, unit: str = "") -> Region | None:
    """The ellipse in the box dragged from (x0, y0) to (x1, y1), the box cut to the picture of ``values`` (rows x
    columns, or x 3 for colour) and the statistics of the values inside; None where the box is under
    ``MIN_LENGTH_PX`` either way (a click) or holds no pixel centre."""
    rows, columns = values.shape[:2]
    left, right = sorted((min(max(float(x0), 0.0), columns), min(max(float(x1), 0.0), columns)))
    top, bottom = sorted((min(max(float(y0), 0.0), rows), min(max(float(y1), 0.0), rows)))
    if right - left < MIN_LENGTH_PX or bottom - top < MIN_LENGTH_PX:
        return None
    r0, c0 = int(math.floor(top)), int(math.floor(left))  # the box's pixels only: a drag on a large film stays quick
    box = values[r0:int(math.ceil(bottom)), c0:int(math.ceil(right))]
    inside = ellipse_mask(left - c0, top - r0, right - c0, bottom - r0, box.shape[0], box.shape[1])
    if not inside.any():
        return None
    stats = None
    if values.ndim == 2:
        picked = box[inside].astype(np.float64)
        stats = RegionStats(int(picked.size), float(picked.mean()), float(picked.std()), float(picked.min()),
                            float(picked.max()))
    return Region(left, top, right, bottom, stats, unit if stats is not None else "")
