"""Size limits that stop decompression bombs before any pixel buffer is allocated.

Two budgets, both measured against the memory this process can actually get (free memory and its
address-space limit, whichever is smaller):

* the bytes a decoder produces for one frame (times ``DECODE_OVERHEAD``: decoders hand over copies),
  which must fit or the file is refused before decoding;
* the working set of a loaded frame (``WORK_BYTES_PER_PIXEL``: float values, the 8-bit picture,
  windowing in float64, overlays, model input), which decides the integer factor a big but legal
  image is downsampled by while it is loaded (``downsample_factor``).
"""

from __future__ import annotations

import math
import os

import numpy as np

MAX_FRAME_PIXELS = 30_000 * 30_000  # declared sizes beyond this are bombs whatever the memory
MAX_TOTAL_BYTES = 8 * 1024**3  # decoded size of all frames together, as declared
# Files read for their headers only (the series index): larger on disk than any image decoded here is refused
# unread; a DICOMDIR is parsed whole (no deferred elements), so it has a budget of its own.
MAX_FILE_BYTES = MAX_TOTAL_BYTES
MAX_DICOMDIR_BYTES = 256 * 1024**2  # some 500,000 directory records
WORK_BYTES_PER_PIXEL = 28  # measured: a 225-megapixel image took 6.2 GiB loaded, windowed and shown
DECODE_OVERHEAD = 3  # raw bytes, decoded array and one converted copy live at once
BUDGET_FRACTION = 0.5  # of the memory available: the viewer, models and caches need the rest
# One image never takes more, however much memory is free: a picture decoded or loaded within the budget peaks at
# about the budget plus the process itself (with 4 GiB, 1 MB PNG/JPEG/BMP bombs of 30000 x 30000 pixels peaked
# at 2.9-3.1 GB while loaded downsampled; 1.5 GiB keeps such files under 2 GB, and a 4688 x 2592 16-bit
# mammogram, 0.3 GiB loaded, still loads whole).
MAX_IMAGE_BUDGET = 3 * 1024**3 // 2
FALLBACK_AVAILABLE = 2 * 1024**3  # when the system does not say
# Image directories (pages) of a TIFF looked at: grouping pages into series costs tifffile time that grows with the
# square of their number (10,000 one-pixel pages took 56 s); beyond this only the first pages are read, unless OME,
# ImageJ or shape metadata lays the stack out (read in linear time, whole).
MAX_TIFF_PAGES = 1000


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _address_space_room() -> int | None:
    """Room left under ``ulimit -v`` (RLIMIT_AS), or None when unlimited or unknown."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    used = 0
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmSize:"):
                    used = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - used)


def available_bytes() -> int:
    """Memory this process can still get: free memory or its address-space limit, the smaller."""
    candidates = [v for v in (_meminfo_available(), _address_space_room()) if v is not None]
    return min(candidates) if candidates else FALLBACK_AVAILABLE


def memory_budget() -> int:
    """Bytes one image may use; ``MIDA_MEMORY_BUDGET_MB`` overrides (tests, small sites)."""
    override = os.environ.get("MIDA_MEMORY_BUDGET_MB", "").strip()
    if override:
        try:
            return max(1, int(float(override) * 1024**2))
        except ValueError:
            pass
    return min(MAX_IMAGE_BUDGET, int(available_bytes() * BUDGET_FRACTION))


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 / 10 else f"{n / 1024**2:.0f} MiB"


# Every refusal for size says "too large": the batch keeps such files from later readers (series index).
def check_size(rows: int, columns: int, frames: int, samples: int, bytes_per_sample: int,
               decode_scale: int = 1, budget: int | None = None, piece_bytes: int | None = None) -> str | None:
    """Return a reason when the declared image is absurd or cannot be decoded in memory, else None.

    ``decode_scale`` is the reduction the decoder itself applies (JPEG DCT scaling), so a big JPEG
    decoded at 1/8 is measured at that size; ``piece_bytes`` is the largest piece a streaming decoder
    holds at once (a TIFF strip or tile), which then replaces the whole frame in the measure.
    """
    if rows <= 0 or columns <= 0 or frames <= 0 or samples <= 0:
        return f"the header declares an empty image ({rows} x {columns} pixels, {frames} frames)"
    if rows * columns > MAX_FRAME_PIXELS:
        return (
            f"the image is too large ({columns} x {rows} pixels, limit "
            f"{MAX_FRAME_PIXELS / 1e6:.0f} megapixels): possibly a decompression bomb"
        )
    total = rows * columns * frames * samples * max(1, bytes_per_sample)
    if total > MAX_TOTAL_BYTES:
        return (f"the image is too large: the decoded image would need {total / 1024**3:.1f} GiB, "
                f"more than the {MAX_TOTAL_BYTES // 1024**3} GiB limit")
    budget = memory_budget() if budget is None else budget
    scale = max(1, decode_scale)
    decode = math.ceil(rows / scale) * math.ceil(columns / scale) * samples * max(1, bytes_per_sample) * DECODE_OVERHEAD
    if piece_bytes is not None:
        decode = piece_bytes * DECODE_OVERHEAD
    if decode > budget:
        return (f"the image is too large to decode here ({columns} x {rows} pixels need about {_gib(decode)}, "
                f"{_gib(budget)} of memory is available for one image)")
    return None


def downsample_factor(rows: int, columns: int, budget: int | None = None) -> int:
    """The smallest integer factor whose loaded frame's working set fits the budget (1: full size)."""
    budget = memory_budget() if budget is None else budget
    need = rows * columns * WORK_BYTES_PER_PIXEL
    if need <= budget:
        return 1
    return max(2, math.ceil(math.sqrt(need / max(budget, 1))))


def shrunk_shape(rows: int, columns: int, factor: int) -> tuple[int, int]:
    return max(1, rows // factor), max(1, columns // factor)


def shrink(arr: np.ndarray, factor: int) -> np.ndarray:
    """Area-average ``arr`` (H, W[, C]) down by ``factor``; kinds OpenCV cannot resize are subsampled."""
    if factor <= 1:
        return arr
    import cv2

    rows, columns = shrunk_shape(arr.shape[0], arr.shape[1], factor)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if arr.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64) and channels <= 4:
        return cv2.resize(np.ascontiguousarray(arr), (columns, rows), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr[: rows * factor : factor, : columns * factor : factor])
