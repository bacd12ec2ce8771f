"""PNG, JPEG, BMP (Pillow) and TIFF (tifffile, for 16-bit and multi-page) reading."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageLoadError
from core.imaging.limits import MAX_FRAME_PIXELS, check_size
from core.imaging.record import ImageRecord, Modality, StudyInfo, WindowPreset
from core.imaging.windowing import auto_preset, full_range_preset

Image.MAX_IMAGE_PIXELS = MAX_FRAME_PIXELS


def read_raster(path: Path, file_format: str) -> ImageRecord:
    """Open a non-DICOM picture; ``file_format`` comes from the content, not the extension."""
    if file_format == "TIFF":
        frames = _read_tiff(path)
    else:
        frames = [_read_pillow(path)]
    first = frames[0]
    is_color = first.ndim == 3
    bits = 16 if first.dtype == np.uint16 else (32 if first.dtype.kind == "f" else 8)
    presets: list[WindowPreset] = []
    if not is_color:
        values = first.astype(np.float32)
        full = full_range_preset(np.array([0.0, 255.0]) if bits == 8 else values)
        auto = auto_preset(values)
        presets.extend([full, auto] if bits == 8 else [auto, full])

    def read_frame(index: int) -> np.ndarray:
        arr = frames[index]
        return arr if is_color else arr.astype(np.float32)

    return ImageRecord(
        path=path,
        file_format=file_format,
        modality=Modality.OTHER,
        modality_source="guess",
        rows=int(first.shape[0]),
        columns=int(first.shape[1]),
        frames=len(frames),
        samples_per_pixel=3 if is_color else 1,
        photometric="RGB" if is_color else "MONOCHROME2",
        bits_stored=bits,
        pixel_spacing_mm=None,
        window_presets=presets,
        study=StudyInfo(),
        metadata=[("", "Format", file_format), ("", "Size", f"{first.shape[1]} x {first.shape[0]}")],
        _read_frame=read_frame,
    )


def _read_pillow(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                reason = check_size(im.height, im.width, 1, len(im.getbands()), 2)
                if reason:
                    raise ImageLoadError(path, reason)
                im = ImageOps.exif_transpose(im)
                return _normalise(np.asarray(_to_supported_mode(im)))
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(path, f"the image is too large: possibly a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(path, "the file is not a readable image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(path, f"the image data is truncated or corrupt ({exc})") from exc


def _to_supported_mode(im: Image.Image) -> Image.Image:
    if im.mode in ("L", "RGB", "I;16", "I;16B", "I;16L", "F"):
        return im
    if im.mode == "I":
        return im  # 32-bit integer greyscale, handled in _normalise
    if im.mode in ("LA", "1"):
        return im.convert("L")
    return im.convert("RGB")  # P, RGBA, CMYK, YCbCr, LAB ...


def _read_tiff(path: Path) -> list[np.ndarray]:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0] if tif.series else None
            if series is None:
                raise ImageLoadError(path, "the TIFF file holds no image")
            page = tif.pages[0]
            rows, cols = int(page.shape[0]), int(page.shape[1])
            pages = len(tif.pages)
            reason = check_size(rows, cols, pages, int(page.samplesperpixel), page.dtype.itemsize)
            if reason:
                raise ImageLoadError(path, reason)
            arr = series.asarray()
    except ImageLoadError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
        raise ImageLoadError(path, f"the TIFF file is truncated or corrupt ({exc})") from exc
    colour = int(page.samplesperpixel) in (3, 4)
    per_frame_ndim = 3 if colour else 2
    if arr.ndim == per_frame_ndim:
        return [_normalise(arr)]
    return [_normalise(frame) for frame in arr.reshape((-1,) + arr.shape[-per_frame_ndim:])]


def _normalise(arr: np.ndarray) -> np.ndarray:
    """Greyscale stays 2-D in its own depth; colour becomes uint8 RGB; RGB with equal channels is grey."""
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        if arr.dtype != np.uint8:
            top = float(arr.max()) or 1.0
            arr = np.clip(arr.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
        if _is_grey(arr):
            return np.ascontiguousarray(arr[..., 0])
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind in "iu" and arr.dtype.itemsize > 2:
        return arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def _is_grey(rgb: np.ndarray) -> bool:
    """JPEG re-encoding leaves grey pictures a few levels off equal; sample to keep this cheap."""
    sample = rgb[:: max(1, rgb.shape[0] // 256), :: max(1, rgb.shape[1] // 256)].astype(np.int16)
    spread = np.abs(sample[..., 0] - sample[..., 1]) + np.abs(sample[..., 1] - sample[..., 2])
    return float(np.percentile(spread, 99)) <= 6.0
