"""PNG, JPEG, BMP (Pillow) and TIFF (tifffile, for 16-bit and multi-page) reading."""

from __future__ import annotations

import logging
import lzma
import warnings
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageLoadError
from core.imaging.limits import MAX_FRAME_PIXELS, check_size, downsample_factor, shrink, shrunk_shape
from core.imaging.record import ImageRecord, Modality, StudyInfo, WindowPreset
from core.imaging.windowing import auto_preset, full_range_preset

Image.MAX_IMAGE_PIXELS = MAX_FRAME_PIXELS
logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # its tag complaints are not the reader's concern: errors are raised


def read_raster(path: Path, file_format: str) -> ImageRecord:
    """Open a non-DICOM picture; ``file_format`` comes from the content, not the extension.

    The header is read first (size, samples, depth, planar layout) and checked against the memory
    budget before anything is decoded; a big but legal picture is loaded downsampled.
    """
    white_is_zero = False
    if file_format == "TIFF":
        source_size, factor, frame_count, read_any, white_is_zero, unread_pages = _open_tiff(path)
    else:
        source_size, factor, first = _read_pillow(path)
        frame_count, read_any, unread_pages = 1, (lambda index: first), []
    first = read_any(0)
    nonfinite = first.dtype.kind == "f" and not np.isfinite(first).all()
    if nonfinite:
        first = np.nan_to_num(first, nan=0.0, posinf=0.0, neginf=0.0)
    is_color = first.ndim == 3
    bits = 16 if first.dtype == np.uint16 else (32 if first.dtype.kind == "f" else 8)
    presets: list[WindowPreset] = []
    if not is_color:
        values = first.astype(np.float32)
        full = full_range_preset(np.array([0.0, 255.0]) if bits == 8 else values)
        auto = auto_preset(values)
        presets.extend([full, auto] if bits == 8 else [auto, full])

    def read_frame(index: int) -> np.ndarray:
        arr = first if index == 0 else read_any(index)
        if arr.dtype.kind == "f":
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        if is_color and arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        elif not is_color and arr.ndim == 3:
            arr = arr[..., 0]
        return arr if is_color else arr.astype(np.float32)

    warnings = [f"loaded at 1/{factor} of its {source_size[1]} x {source_size[0]} pixels to fit in memory"] \
        if factor > 1 else []
    if nonfinite:
        warnings.append("some pixel values are NaN or infinite; they are shown as 0")
    warnings += unread_pages
    return ImageRecord(
        path=path,
        file_format=file_format,
        modality=Modality.OTHER,
        modality_source="guess",
        rows=int(first.shape[0]),
        columns=int(first.shape[1]),
        frames=frame_count,
        samples_per_pixel=3 if is_color else 1,
        # A WhiteIsZero TIFF keeps its stored values and is shown inverted, as DICOM MONOCHROME1 is.
        photometric="RGB" if is_color else ("MONOCHROME1" if white_is_zero else "MONOCHROME2"),
        bits_stored=bits,
        pixel_spacing_mm=None,
        window_presets=presets,
        study=StudyInfo(),
        metadata=[("", "Format", file_format), ("", "Size", f"{source_size[1]} x {source_size[0]}")],
        _read_frame=read_frame,
        downsample=factor,
        source_size=source_size if factor > 1 else None,
        warnings=warnings,
    )


_MODE_BYTES = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}


def _read_pillow(path: Path) -> tuple[tuple[int, int], int, np.ndarray]:
    """((rows, columns) in the file, downsample factor, first frame at that factor)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                bands = len(im.getbands())
                factor = downsample_factor(height, width)
                scale = 1
                if factor > 1 and im.format == "JPEG":
                    # DCT scaling: the decoder itself produces 1/2, 1/4 or 1/8 of the pixels
                    scale = max(s for s in (1, 2, 4, 8) if s <= factor)
                reason = check_size(height, width, 1, max(bands, 3) if im.mode not in ("L", "1") else 1,
                                    _MODE_BYTES.get(im.mode, 1), decode_scale=scale)
                if reason:
                    raise ImageLoadError(path, reason)
                if scale > 1:
                    im.draft(im.mode, (width // scale, height // scale))
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # no copy of a picture that is already upright
                if width != height and (im.size[0] > im.size[1]) != (width > height):
                    width, height = height, width  # rotated by its EXIF orientation
                if factor > 1 and scale < factor:
                    # Shrunk by Pillow, area-averaging as the resize below would: the full-size picture never
                    # exists a second time as an array (a 20000 x 20000 picture peaked at 2.9 GB)
                    im = _reduced(im, factor // scale)
                arr = _normalise(np.asarray(_to_supported_mode(im)))
                if factor > 1:
                    arr = _resize_to(arr, shrunk_shape(height, width, factor))
                return (height, width), factor, arr
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(path, f"the image is too large: possibly a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(path, "the file is not a readable image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(path, f"the image data is truncated or corrupt ({exc})") from exc


def _reduced(im: Image.Image, factor: int) -> Image.Image:
    """``im`` area-averaged down by an integer ``factor`` (a mode Pillow cannot reduce, e.g. palette or 1-bit:
    left as it is, for the array resize to do)."""
    try:
        return im.reduce(factor) if factor > 1 else im
    except ValueError:
        return im


def _resize_to(arr: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    if arr.shape[:2] == target:
        return arr
    import cv2

    if arr.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        return cv2.resize(np.ascontiguousarray(arr), (target[1], target[0]), interpolation=cv2.INTER_AREA)
    return shrink(arr, max(1, arr.shape[0] // target[0]))


def _to_supported_mode(im: Image.Image) -> Image.Image:
    if im.mode in ("L", "RGB", "I;16", "I;16B", "I;16L", "F"):
        return im
    if im.mode == "I":
        return im  # 32-bit integer greyscale, handled in _normalise
    if im.mode in ("LA", "1"):
        return im.convert("L")
    return im.convert("RGB")  # P, RGBA, CMYK, YCbCr, LAB ...


def _open_tiff(path: Path):
    """Read the first series' shape, samples, planar layout and depth from the tags, check the budget,
    then return ((rows, columns) as shown, factor, frame count, reader of one page at a time, WhiteIsZero,
    warnings: pages of the file that are not read, being another image of another size or kind).

    Pages come back as a reader sees them: palette indices through the ColorMap, turned as the Orientation
    tag says; a WhiteIsZero (Photometric 0) page keeps its values, the record inverts it (MONOCHROME1)."""
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ImageLoadError(path, "the TIFF file holds no image")
            series = tif.series[0]
            key = series.keyframe
            rows, columns = int(key.imagelength), int(key.imagewidth)
            samples, depth = int(key.samplesperpixel), int(key.imagedepth)
            if key.dtype is None:
                raise ImageLoadError(path, f"its sample format ({key.sampleformat}, {key.bitspersample} bit) is not supported")
            count = len(series.pages)
            unread = _unread_pages(tif, series, count, rows, columns, samples)
            photometric = int(key.photometric)
            palette = _palette(key, path) if photometric == 3 else None
            orientation = key.tags.valueof(274, 1)  # one per series: its pages share the keyframe's shape
            orientation = orientation if orientation in _ORIENTATIONS else 1
            factor = downsample_factor(rows, columns)
            separate = int(key.planarconfig) == 2
            if key.is_tiled:  # the bytes one strip or tile decodes to
                segment = int(key.tilelength) * int(key.tilewidth) * max(1, int(key.tiledepth))
            else:
                segment = min(int(key.rowsperstrip), rows) * columns
            segment *= (1 if separate else samples) * key.dtype.itemsize
            # big: decoded strip by strip (tile by tile) straight into the smaller frame
            piece = segment if factor > 1 else None
            pixel = (samples, key.dtype.itemsize) if palette is None else (max(3, samples * key.dtype.itemsize), 1)
            reason = check_size(rows, columns, count * depth, *pixel, piece_bytes=piece)  # a palette index: 3 bytes RGB
            if reason:
                raise ImageLoadError(path, reason)
            if depth > 1:
                raise ImageLoadError(path, f"it is a 3-D TIFF volume ({depth} slices per page), which is not supported")
            compression = getattr(key.compression, "name", str(key.compression))
            try:
                tifffile.TIFF.DECOMPRESSORS[int(key.compression)]
            except KeyError:  # LZW, JPEG, ... need the imagecodecs package; or an unknown code
                raise ImageLoadError(path, f"its TIFF compression ({compression}) is not supported") from None
    except ImageLoadError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError, AttributeError, TypeError) as exc:
        raise ImageLoadError(path, f"the TIFF file is truncated or corrupt ({exc})") from exc
    colour = samples in (3, 4)

    def shown(arr: np.ndarray) -> np.ndarray:
        """Indices (subsampled, never averaged) through the palette, then normalised and turned upright."""
        if palette is not None:
            arr = palette[arr.view(np.uint8) if arr.dtype == np.bool_ else arr]  # indices < entries: checked
        return _reoriented(_normalise(arr), orientation)

    def read_page(index: int) -> np.ndarray:
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.series[0].pages[index]
                _check_inflation(tif.filehandle, page, segment, path)
                if factor > 1:
                    return shown(_streamed(page, rows, columns, samples, separate, factor))
                arr = page.asarray()
        except ImportError as exc:  # a codec tifffile finds only at decoding time (ZSTD before Python 3.14)
            raise ImageLoadError(path, f"its TIFF compression ({compression}) is not supported") from exc
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError, AttributeError, TypeError) as exc:
            raise ImageLoadError(path, f"the TIFF file is truncated or corrupt ({exc})") from exc
        arr = np.squeeze(arr) if arr.ndim > 3 else arr
        if samples > 1 and arr.ndim == 3 and separate and arr.shape[0] == samples:
            arr = np.moveaxis(arr, 0, -1)  # planar configuration 2: (S, H, W) -> (H, W, S)
        if samples > 1 and not colour and arr.ndim == 3:
            arr = arr[..., 0]  # grey plus extra samples (alpha, ...)
        if arr.shape[:2] != (rows, columns):
            raise ImageLoadError(path, f"page {index + 1} decodes to {arr.shape}, not the {rows} x {columns} its tags declare")
        return shown(shrink(arr, factor))

    size = (columns, rows) if orientation >= 5 else (rows, columns)  # 5-8 swap rows and columns
    return size, factor, count, read_page, photometric == 0, unread


def _unread_pages(tif, series, count: int, rows: int, columns: int, samples: int) -> list[str]:
    """A warning where the file holds pages outside its first image (which alone is read, as its frames): pages
    of another size or kind, that would otherwise be lost without a word. Reduced-resolution copies of the
    image (pyramid levels, pages marked reduced) are not other pages."""
    if len(tif.pages) <= count:
        return []
    read = {p.index for level in series.levels for p in level.pages if p is not None and isinstance(p.index, int)}
    others = []
    for page in tif.pages:
        if page.index in read or getattr(page, "is_reduced", False):
            continue
        page = page.keyframe if getattr(page, "keyframe", None) is not None else page
        kind = "colour" if int(page.samplesperpixel) in (3, 4) else "grey"
        others.append((int(page.index) + 1, f"{int(page.imagewidth)} x {int(page.imagelength)} {kind}"))
    if not others:
        return []
    shown = ", ".join(f"page {n} ({what})" for n, what in others[:5]) + (", ..." if len(others) > 5 else "")
    frames = sorted(p.index + 1 for p in series.pages if p is not None and isinstance(p.index, int))
    pages = "" if frames == list(range(1, count + 1)) else \
        " (pages " + ", ".join(map(str, frames[:10])) + (", ..." if len(frames) > 10 else "") + ")"
    first = f"{columns} x {rows} {'colour' if samples in (3, 4) else 'grey'}"
    return [f"only the first image of this TIFF is read, as its {count} frame(s){pages}: {first}; {len(others)} "
            f"other page(s), another image of another size or kind, are not read: {shown}"]


# TIFF 6.0 Orientation (tag 274): where the stored row 0 and column 0 lie in the picture a reader sees
# (Pillow's ImageOps.exif_transpose does the same).
_ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # top-right: mirrored
    3: lambda a: a[::-1, ::-1],  # bottom-right: turned 180 degrees
    4: lambda a: a[::-1],  # bottom-left: flipped
    5: lambda a: a.swapaxes(0, 1),  # left-top: transposed
    6: lambda a: np.rot90(a, -1),  # right-top: turned 90 degrees clockwise
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # right-bottom: transverse
    8: lambda a: np.rot90(a, 1),  # left-bottom: turned 90 degrees counter-clockwise
}


def _reoriented(arr: np.ndarray, orientation: int) -> np.ndarray:
    return arr if orientation == 1 else np.ascontiguousarray(_ORIENTATIONS[orientation](arr))


def _palette(key, path: Path) -> np.ndarray:
    """A palette-colour page's ColorMap as an (entries, 3) uint8 table, as Pillow renders it (16-bit
    entries / 256); a map whose entries all fit in 8 bits was written 8-bit and is kept (tifffile does too)."""
    colormap = key.colormap
    if (colormap is None or colormap.ndim != 2 or colormap.shape[0] != 3 or colormap.dtype.kind not in "iu"
            or key.dtype.char not in "?BH" or colormap.shape[1] < 2 ** int(key.bitspersample)
            or int(key.samplesperpixel) in (3, 4)):  # one index per pixel (an alpha beside it is dropped)
        raise ImageLoadError(path, "it is a palette-colour TIFF whose colour map (ColorMap tag) is missing or "
                                   "does not cover its pixel values")
    colormap = np.clip(colormap.astype(np.int64), 0, 65535)
    if colormap.max() > 255:
        colormap >>= 8
    return np.ascontiguousarray(colormap.T.astype(np.uint8))


# Compressions tifffile decodes without imagecodecs by inflating a whole strip or tile, however large it gets.
_INFLATING = {8: "deflate", 32946: "deflate", 34925: "LZMA"}  # Adobe deflate, deflate, LZMA


def _check_inflation(fh, page, segment: int, path: Path) -> None:
    """Refuse a page one of whose deflate- or LZMA-compressed strips (tiles) inflates far beyond the ``segment``
    bytes it can hold: a few megabytes on disk must not become gigabytes in memory (a decompression bomb).

    Each segment is inflated in chunks, stopping as soon as it passes the bound; nothing is kept.
    """
    codec = _INFLATING.get(int(page.keyframe.compression))
    if codec is None:
        return
    limit = 2 * segment + (1 << 20)  # tifffile keeps the first ``segment`` bytes; padding is tolerated
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        inflater = zlib.decompressobj() if codec == "deflate" else lzma.LZMADecompressor()
        fh.seek(offset)
        total, left = 0, int(count)
        try:
            while left > 0 and not inflater.eof:
                chunk = fh.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
                total += len(inflater.decompress(chunk, limit + 1 - total))
                if total > limit:
                    raise ImageLoadError(path, f"one of its {codec}-compressed strips or tiles inflates to more than "
                                               f"{limit / 1024**2:.0f} MiB, far beyond the image size its tags "
                                               "declare: too large (possibly a decompression bomb)")
        except (zlib.error, lzma.LZMAError):
            return  # corrupt: the decoder says so


def _streamed(page, rows: int, columns: int, samples: int, separate: bool, factor: int) -> np.ndarray:
    """Page ``page`` at 1/``factor`` (every factor-th pixel), one decoded strip or tile in memory at a time."""
    page = page.aspage() if hasattr(page, "aspage") else page
    out = np.zeros(shrunk_shape(rows, columns, factor) + (samples,), page.keyframe.dtype)
    for segment, position, _ in page.segments(maxworkers=1):
        if segment is None:
            continue
        plane, _, top, left, _ = position
        data = segment[0][: max(0, rows - top), : max(0, columns - left)]
        skip_r, skip_c = (-top) % factor, (-left) % factor
        sub = data[skip_r::factor, skip_c::factor]
        r0, c0 = (top + skip_r) // factor, (left + skip_c) // factor
        nr, nc = min(sub.shape[0], out.shape[0] - r0), min(sub.shape[1], out.shape[1] - c0)
        if nr <= 0 or nc <= 0:
            continue
        if separate:
            out[r0 : r0 + nr, c0 : c0 + nc, plane] = sub[:nr, :nc, 0]
        else:
            out[r0 : r0 + nr, c0 : c0 + nc, :] = sub[:nr, :nc, :samples]
    if samples == 1:
        return out[..., 0]
    return out if samples in (3, 4) else out[..., 0]


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
