"""Distances and regions a reader measures on a slice, as with any viewer's ruler and ellipse: to check a model's
lesion size, to size what no model outlines, or to read a region's values (a cyst's Hounsfield units, a signal).

A ruler joins two points in image pixels (x right, y down, origin top-left). Its length is in millimetres where the
slice's pixel spacing is known (DICOM PixelSpacing: the spacing between rows, then between columns, so a ruler on a
picture with non-square pixels is measured right), else in pixels, and its text says which. Below a millimetre (a
square millimetre) the text reads in micrometres (square micrometres): a slide-microscopy image at 0.5 um per pixel
measures cells tens of micrometres across, which "0.0 mm" would hide; exported values stay in mm, never rounded to 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_LENGTH_PX = 2.0  # a click without a drag is not a measurement
RULER_RGB = (255, 220, 90)  # rulers and regions, in the viewer and the mammography exam window alike


def _digits(value: float, below_10: int) -> str:
    """``value`` with three significant digits from 10 up (no exponent: '123', '45.6') and ``below_10`` ones under."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.{below_10}g}"


def length_text(mm: float) -> str:
    """'18.0 mm' from a millimetre up, '30.0 µm' below it (microscopy); never '0.0 mm' for a length there is."""
    um = mm * 1000.0
    if mm >= 1.0 or round(um) >= 1000:  # 999.7 um reads '1.0 mm', not '1000 µm'
        return f"{mm:.1f} mm"
    return f"{_digits(um, 3)} µm"


def area_text(mm2: float) -> str:
    """'78.5 mm²' from a square millimetre up, '314 µm²' below it (1 mm² = 10^6 µm²)."""
    um2 = mm2 * 1e6
    if mm2 >= 1.0 or round(um2) >= 1_000_000:
        return f"{mm2:.1f} mm²"
    return f"{_digits(um2, 3)} µm²"


PLANE_DEGREES = 20.0  # as core.series.index.OBLIQUE_DEGREES: a normal further from every axis is an oblique plane


def slice_position_text(position: Sequence[float] | None, orientation: Sequence[float] | None) -> str | None:
    """Where a slice lies, from a point of it (the middle of its picture, as the comparison links slices: on a tilted
    slice its top-left corner lies elsewhere) and its ImageOrientationPatient: the patient coordinate (DICOM
    LPS: +x left, +y posterior, +z head) along the axis its plane faces, 'x = 30.0 mm' sagittal, 'y = …' coronal,
    'z = 110.0 mm' axial; '12.5 mm along the slice normal' for an oblique plane; None without both.

    Not ``SliceRef.position_mm``: that is the position projected on the slice normal (it orders the slices), which is
    -z on an axial series whose rows run right to left and -x on the usual sagittal one. Here, free of the series
    modules, for the viewer's slice label and the series PDF report (core.series may import this module) alike."""
    if position is None or orientation is None or len(position) != 3 or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    norm = float(np.linalg.norm(normal))
    if not math.isfinite(norm) or norm < 1e-6:  # row and column cosines along one line: no plane
        return None
    normal /= norm
    axis = int(np.argmax(np.abs(normal)))
    if math.degrees(math.acos(min(1.0, abs(float(normal[axis]))))) <= PLANE_DEGREES:
        return f"{'xyz'[axis]} = {_tenths(position[axis])} mm"
    return f"{_tenths(np.dot(np.asarray(position, float), normal))} mm along the slice normal"


def _tenths(value: float) -> str:
    """``value`` to a tenth, never '-0.0' (a picture's middle computed a rounding error below zero)."""
    return f"{round(float(value), 1) + 0.0:.1f}"


def patient_point(position: Sequence[float], orientation: Sequence[float], spacing_mm: Sequence[float],
                  column: float, row: float) -> np.ndarray:
    """The patient position (LPS, mm) of the pixel centre (column, row) of a slice: ImagePositionPatient is the top-left
    pixel's centre, the columns step along the row cosines (``orientation[:3]``) by the spacing between columns, the
    rows along the column cosines by the spacing between rows (``spacing_mm`` = PixelSpacing: rows, then columns)."""
    row_step, column_step = spacing_mm
    return (np.asarray(position, float) + column * column_step * np.asarray(orientation[:3], float)
            + row * row_step * np.asarray(orientation[3:], float))


_SIDES = (("R", "L"), ("A", "P"), ("F", "H"))  # (negative, positive) LPS direction of x, y, z


def patient_position_text(point: Sequence[float]) -> str:
    """'R 12.0, A 110.0, H 50.0 mm': a patient position as radiology viewers give it, each coordinate's distance with
    the side it lies on (DICOM LPS: L, P and H positive; -12 on x is 12 mm to the patient's right)."""
    return ", ".join(f"{sides[value >= 0]} {abs(value):.1f}" for sides, value in zip(_SIDES, map(float, point))) + " mm"


def export_mm(value: float | None) -> float | None:
    """A length or area in mm (mm²) for the exported JSON: two decimals as before where that keeps four significant
    digits, more below (30 um: 0.03, not 0.0; 314 um²: 0.0003142 mm², not 0.0)."""
    if value is None or value == 0 or not math.isfinite(value):
        return value
    return round(value, max(2, 3 - math.floor(math.log10(abs(value)))))


@dataclass(frozen=True)
class Ruler:
    """A line measured on a picture, its ends in the picture's pixels; ``scale``: the file's pixels per pixel of that
    picture (``ImageRecord.downsample``: a file read smaller to fit in memory), so lengths and ends are said in the
    file's pixels, as the analyses' lesions and marks are (as a Region carries ``averaged``)."""

    x0: float
    y0: float
    x1: float
    y1: float
    scale: int = 1

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
        """The ruler as exported: its ends and length in the file's pixels, as the analyses' positions are given, and
        its length in mm (None where the spacing is unknown)."""
        mm, scale = self.length_mm(spacing_mm), self.scale
        return {"x0": round(self.x0 * scale, 2), "y0": round(self.y0 * scale, 2), "x1": round(self.x1 * scale, 2),
                "y1": round(self.y1 * scale, 2), "length_px": round(self.length_px * scale, 2),
                "length_mm": export_mm(mm)}

    def text(self, spacing_mm: tuple[float, float] | None) -> str:
        """'18.0 mm' ('30.0 µm' under a millimetre), or '50 px' where the pixel spacing is unknown: the file's pixels,
        as a lesion's diameter beside it says them (a ruler along a 90-px diameter read at 1/2 had said '45 px')."""
        mm = self.length_mm(spacing_mm)
        return length_text(mm) if mm is not None else f"{self.length_px * self.scale:.0f} px"


def ruler_within(x0: float, y0: float, x1: float, y1: float, width: int, height: int, scale: int = 1
                 ) -> Ruler | None:
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
    ruler = Ruler(x0 + start * dx, y0 + start * dy, x0 + end * dx, y0 + end * dy, scale)
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
    averaged: int = 1  # each value the mean of averaged x averaged file pixels: the picture was read smaller

    @property
    def area_px(self) -> float:
        return math.pi * abs(self.x1 - self.x0) * abs(self.y1 - self.y0) / 4

    def area_mm2(self, spacing_mm: tuple[float, float] | None) -> float | None:
        return self.area_px * spacing_mm[0] * spacing_mm[1] if spacing_mm else None

    def to_dict(self, spacing_mm: tuple[float, float] | None) -> dict:
        """The region as exported: its box in the file's pixels (``averaged``: the file's pixels per pixel measured
        on), its area (mm²: None where the spacing is unknown) and its values' statistics (with ``pixels_averaged``:
        n where each value is the mean of n x n file pixels)."""
        mm2, scale = self.area_mm2(spacing_mm), self.averaged
        out = {"shape": "ellipse", "x0": round(self.x0 * scale, 2), "y0": round(self.y0 * scale, 2),
               "x1": round(self.x1 * scale, 2), "y1": round(self.y1 * scale, 2),
               "area_px": round(self.area_px * scale * scale, 1),
               "area_mm2": export_mm(mm2), "unit": self.unit}
        if self.stats is not None:
            out.update({key: round(value, 3) if isinstance(value, float) else value
                        for key, value in vars(self.stats).items()})
            if self.averaged > 1:
                out["pixels_averaged"] = self.averaged
        return out

    def text(self, spacing_mm: tuple[float, float] | None) -> str:
        """'78.5 mm² · mean 41.2 ± 6.3 HU (min 20, max 63)' (µm² under a square millimetre); the area in px² where
        the pixel spacing is unknown. On a picture read smaller it says its values are averages: their mean is the
        file's, their minimum, maximum and SD are not."""
        mm2 = self.area_mm2(spacing_mm)
        n = self.averaged  # the file's pixels, as the lesions' areas are said
        area = area_text(mm2) if mm2 is not None else f"{self.area_px * n * n:.0f} px²"
        if self.stats is None:
            return area
        unit = f" {self.unit}" if self.unit else ""
        s = self.stats
        text = f"{area} · mean {s.mean:.4g} ± {s.sd:.3g}{unit} (min {s.minimum:.4g}, max {s.maximum:.4g})"
        return text if n == 1 else f"{text} (of pixels averaged {n} x {n}: the picture was read at 1/{n})"


def ellipse_mask(x0: float, y0: float, x1: float, y1: float, rows: int, columns: int) -> np.ndarray:
    """The pixels of a ``rows`` x ``columns`` picture whose centres lie inside the ellipse in the box."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = max(abs(x1 - x0) / 2, 1e-9), max(abs(y1 - y0) / 2, 1e-9)
    y, x = np.ogrid[:rows, :columns]
    return ((x + 0.5 - cx) / a) ** 2 + ((y + 0.5 - cy) / b) ** 2 <= 1.0


def region_within(x0: float, y0: float, x1: float, y1: float, values: np.ndarray, unit: str = "",
                  averaged: int = 1) -> Region | None:
    """The ellipse in the box dragged from (x0, y0) to (x1, y1), the box cut to the picture of ``values`` (rows x
    columns, or x 3 for colour) and the statistics of the values inside; None where the box is under
    ``MIN_LENGTH_PX`` either way (a click) or holds no pixel centre. ``averaged``: each value is the mean of that
    many file pixels each way (a picture read smaller), which the region says."""
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
    return Region(left, top, right, bottom, stats, unit if stats is not None else "", averaged)
