"""Distances a reader measures on a slice, as with any viewer's ruler: to check a model's lesion size, or to size
what no model outlines.

A ruler joins two points in image pixels (x right, y down, origin top-left). Its length is in millimetres where the
slice's pixel spacing is known (DICOM PixelSpacing: the spacing between rows, then between columns, so a ruler on a
picture with non-square pixels is measured right), else in pixels, and its text says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
