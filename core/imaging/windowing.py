"""VOI windowing to 8 bits, delegated to pydicom so DICOM's exact formulas are used everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing


@dataclass(frozen=True)
class WindowPreset:
    """A VOI window in modality units (after rescale slope/intercept)."""

    name: str
    center: float
    width: float
    function: str = "LINEAR"


def apply_window(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """Map modality values through a window to uint8 0..255.

    pydicom's ``apply_windowing`` scales into the output range implied by BitsStored; an 8-bit
    unsigned description makes that range exactly 0..255 whatever the input units are.
    """
    voi = voi_window(center, width, function)
    values = np.asarray(values)
    levels = _integer_levels(values)
    if levels is not None:
        # Integer data (CT, MR and most DICOM, float32 after an integer rescale): the same formula, in float64, over
        # each level from the lowest to the highest once, then looked up; elementwise, so the picture is bit-identical
        # to the formula applied to every pixel, and a slice step costs a table lookup instead of float64 passes.
        index, lo, hi = levels
        table = _window(np.arange(lo, hi + 1, dtype=np.float64), voi)
        return table[index]
    return _window(values.astype(np.float64), voi)


def voi_window(center: float, width: float, function: str = "LINEAR") -> Dataset:
    """The window as pydicom's ``apply_windowing`` reads it, onto an 8-bit unsigned output (0..255)."""
    function = function.upper()
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 8
    voi.PixelRepresentation = 0
    voi.WindowCenter = float(center)
    voi.WindowWidth = max(float(width), min_window_width(function))
    voi.VOILUTFunction = function
    return voi


LUT_MAX_LEVELS = 1 << 17  # a table of at most this many grey levels (16-bit data's 65,536 fit, signed or not)


def _window(values: np.ndarray, voi: Dataset) -> np.ndarray:
    """pydicom's VOI formula in float64, rounded to 0..255."""
    out = apply_windowing(values, voi)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _integer_levels(values: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """(index of each pixel into the levels lo..hi, lo, hi) where every value is a whole number in a range of at most
    ``LUT_MAX_LEVELS`` and no bigger than the picture; None where a table would not pay (or not be exact)."""
    kind, size = values.dtype.kind, values.dtype.itemsize
    if values.ndim == 0 or values.size == 0 or not (kind in "iu" and size <= 8 or kind == "f" and size in (4, 8)):
        return None
    if kind == "f":  # a fraction among a thousand pixels spread over the picture: not worth a full look
        sample = values.flat[:: max(1, values.size // 1024)]
        if not np.array_equal(sample, np.floor(sample)):
            return None
    lo, hi = values.min(), values.max()
    if values.dtype.kind == "f":
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo != np.floor(lo) or hi != np.floor(hi):
            return None
    lo, hi = int(lo), int(hi)
    if hi - lo + 1 > min(LUT_MAX_LEVELS, values.size) or max(-lo, hi) > 2**53:  # float64 holds each level exactly
        return None
    if values.dtype.kind == "u":
        return values - values.dtype.type(lo), lo, hi  # cannot wrap: every value is at least lo
    if values.dtype.kind == "i":
        return np.subtract(values, lo, dtype=np.int64), lo, hi
    # float: whole numbers only (a float32 holds each integer of the range exactly, as float64 does)
    shifted = values - values.dtype.type(lo)
    index = shifted.astype(np.int32)
    if not np.array_equal(index, shifted):
        return None
    return index, lo, hi


def min_window_width(function: str) -> float:
    """DICOM's narrowest window: LINEAR divides by (width - 1), so it needs at least 1."""
    return 1.0 if function.upper() == "LINEAR" else MIN_EXACT_WIDTH


MIN_EXACT_WIDTH = 1e-6
MAX_WINDOW = 1e15  # no centre or width beyond this: a drag doubling the width for ever reached inf, then NaN


def drawable_window(name: str, center: float, width: float, function: str) -> WindowPreset:
    """The window as it can be drawn. A LINEAR window narrower than 1 (a header's for data in small units, or a
    drag narrowing one), which DICOM's formula cannot draw and would widen to 1 (a threshold: values 0.12-0.84 all
    white under C 0.5 / W 0.4), is the same window in LINEAR_EXACT; centre and width stay finite."""
    if function.upper() == "LINEAR" and width < 1.0:
        function = "LINEAR_EXACT"
    width = min(max(width, min_window_width(function)), MAX_WINDOW)
    return WindowPreset(name, min(max(center, -MAX_WINDOW), MAX_WINDOW), width, function)


def rescale_to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map of [lo, hi] onto 0..255 (for VOI LUT output, whose range is the LUT's)."""
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    out = (np.asarray(values, np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def percentile_window(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """(center, width) covering the bulk of the intensities."""
    sample = values[:: max(1, values.shape[0] // 512), :: max(1, values.shape[1] // 512)]
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:  # half a level either side: one grey level shows mid grey, not black like an empty picture
        lo, hi = float(sample.min()) - 0.5, float(sample.max()) + 0.5
    return (float(lo) + float(hi)) / 2.0, float(hi) - float(lo)


# Presets computed from the pixels use LINEAR_EXACT, which maps [center - width/2, center + width/2]
# onto 0..255 for any width; DICOM's LINEAR divides by (width - 1) and so needs integer-like units
# (a float image in 0..1 rendered through it came out all white).
def auto_preset(values: np.ndarray) -> WindowPreset:
    """The window over the 0.5-99.5 % intensities: the default view of a file without its own window."""
    center, width = percentile_window(values)
    return WindowPreset("Auto (0.5-99.5 %)", center, width, "LINEAR_EXACT")


def full_range_preset(values: np.ndarray) -> WindowPreset:
    """The window that maps [min, max] onto 0..255 exactly (identity for 8-bit data)."""
    lo, hi = float(values.min()), float(values.max())
    return WindowPreset("Full range", (lo + hi) / 2.0, hi - lo if hi > lo else 1.0, "LINEAR_EXACT")


BLANK_RANGE = 8  # grey levels from the 0.5th to the 99.5th percentile below which a picture shows nothing


SLIVER_SIDE = 16  # pixels: a picture this thin on a side shows no anatomy a model could read
SLIVER_ASPECT = 10  # a scan, film, slide field or sonogram is never ten times longer than wide


def is_sliver(display: np.ndarray) -> bool:
    """The picture is a line or a sliver (a side under ``SLIVER_SIDE`` px, or ``SLIVER_ASPECT`` times longer than
    wide): nothing the models were trained on looks like it, though the modality guess may still name one."""
    short, long = sorted(display.shape[:2])
    return short < SLIVER_SIDE or long > SLIVER_ASPECT * short


def is_blank(display: np.ndarray) -> bool:
    """The 8-bit picture is (almost) one grey level or one colour: in each channel 99 % of its pixels lie within
    ``BLANK_RANGE`` levels. Such are the slices of a scan above or below the head (74 of the 2,188 LGG FLAIR slices);
    no image of the other shared data sets is. A model still answers for it, which means nothing."""
    # About 65,000 pixels looked at (a 256-px slice whole): it runs for every image analysed, series slices included.
    step = max(1, int(np.sqrt(display.shape[0] * display.shape[1] / 65_536)))
    pixels = display[::step, ::step].reshape(-1, display.shape[2] if display.ndim == 3 else 1)
    low, high = np.percentile(pixels, [0.5, 99.5], axis=0)
    return bool(np.all(high - low < BLANK_RANGE))
