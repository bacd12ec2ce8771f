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
    function = function.upper()
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 8
    voi.PixelRepresentation = 0
    voi.WindowCenter = float(center)
    voi.WindowWidth = max(float(width), min_window_width(function))
    voi.VOILUTFunction = function
    out = apply_windowing(np.asarray(values, dtype=np.float64), voi)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def min_window_width(function: str) -> float:
    """DICOM's narrowest window: LINEAR divides by (width - 1), so it needs at least 1."""
    return 1.0 if function.upper() == "LINEAR" else 1e-6


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
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max()) + 1.0
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
    """The 8-bit picture is (almost) one grey level: 99 % of its pixels lie within ``BLANK_RANGE`` levels. Such are
    the slices of a scan above or below the head (74 of the 2,188 LGG FLAIR slices); no image of the other shared
    data sets is. A model still answers for it, which means nothing."""
    # About 65,000 pixels looked at (a 256-px slice whole): it runs for every image analysed, series slices included.
    step = max(1, int(np.sqrt(display.shape[0] * display.shape[1] / 65_536)))
    low, high = np.percentile(display[::step, ::step], [0.5, 99.5])
    return bool(high - low < BLANK_RANGE)
