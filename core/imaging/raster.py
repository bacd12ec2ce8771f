"""PNG, JPEG, BMP (Pillow) and TIFF (tifffile, for 16-bit and multi-page) reading."""

from __future__ import annotations

import json
import logging
import lzma
import math
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageLoadError
from core.imaging.limits import (MAX_FRAME_PIXELS, MAX_TIFF_PAGES, check_size, downsample_factor, memory_budget, shrink,
                                 shrunk_shape)
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
                # coefficients a progressive (multi-scan) JPEG keeps for the whole picture while it is decoded
                coefficients = _check_jpeg_data(path, width, height) if im.format == "JPEG" else 0
                factor = downsample_factor(height, width)
                scale = 1
                if factor > 1 and im.format == "JPEG":
                    # DCT scaling: the decoder itself produces 1/2, 1/4 or 1/8 of the pixels
                    scale = max(s for s in (1, 2, 4, 8) if s <= factor)
                reason = check_size(height, width, 1, max(bands, 3) if im.mode not in ("L", "1") else 1,
                                    _MODE_BYTES.get(im.mode, 1), decode_scale=scale)
                if not reason and coefficients:
                    reason = _coefficients_reason(coefficients, width, height, scale, 1 if bands == 1 else 4)
                if reason:
                    raise ImageLoadError(path, reason)
                if im.format == "PNG":
                    _check_png_rows(path)  # before a byte is decoded: the check streams, the decoder allocates
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


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type: samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_data_bytes(width: int, height: int, bits: int, interlaced: bool) -> int:
    """Bytes the inflated image data of a PNG holds: each row of each pass, one filter byte before it."""
    def rows(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w > 0 and h > 0 else 0

    if not interlaced:
        return rows(width, height)
    return sum(rows(-(-(width - x) // dx), -(-(height - y) // dy)) for x, y, dx, dy in _ADAM7)


def _check_png_rows(path: Path) -> None:
    """Refuse a PNG whose image data ends before the last row its header declares.

    Pillow takes the end of the zlib stream for the end of the picture and leaves the rows it lacks black
    without a word (10 rows of 4000 were analysed as a blank picture). The stream is inflated here in pieces
    that are thrown away, stopping as soon as it has given all the rows: memory stays small, whatever the size.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(33)
            if len(head) < 33 or head[12:16] != b"IHDR":
                return  # the decoder says what is wrong
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
            if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
                return
            need = _png_data_bytes(width, height, depth * _PNG_CHANNELS[colour], interlace == 1)
            inflater = zlib.decompressobj()
            got = 0
            while got < need and not inflater.eof:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    break
                length, kind = struct.unpack(">I4s", chunk)
                if kind == b"IEND":
                    break
                left = length if kind == b"IDAT" else 0
                while left > 0 and got < need and not inflater.eof:
                    data = fh.read(min(left, 1 << 20))
                    if not data:
                        break
                    left -= len(data)
                    while data and got < need and not inflater.eof:
                        got += len(inflater.decompress(data, 1 << 24))
                        data = inflater.unconsumed_tail
                fh.seek((left if kind == b"IDAT" else length) + 4, os.SEEK_CUR)  # the rest, then the CRC
    except (OSError, zlib.error, struct.error):
        return  # unreadable or corrupt: the decoder says so
    if got >= need:
        return
    if interlace == 1:
        held = f"{100 * got // need}% of the picture"
    else:
        held = f"{got // (1 + (width * depth * _PNG_CHANNELS[colour] + 7) // 8)} of the {height} rows"
    raise ImageLoadError(path, f"the image data is truncated or corrupt: the file ends before its last rows (its "
                               f"compressed data holds {held} its header declares)")


# Start-of-frame markers: Huffman-coded (each 8 x 8 block costs at least one bit) and progressive (the decoder keeps
# the coefficients of the whole picture until its last scan); arithmetic coding (SOF9-15) can be far smaller.
_JPEG_HUFFMAN = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}
_JPEG_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}


def _jpeg_frame(path: Path) -> tuple[int, list[tuple[int, int]], int, int] | None:
    """(SOF marker, (horizontal, vertical) sampling of each component, components in the first scan, where the first
    scan starts), read from the segments before it; None where they cannot be read (the decoder then says what is
    wrong)."""
    sof, sampling = None, []
    try:
        with open(path, "rb") as fh:
            fh.seek(2)
            for _ in range(65536):
                if fh.read(1) != b"\xff":
                    return None
                marker = fh.read(1)
                while marker == b"\xff":  # fill bytes
                    marker = fh.read(1)
                if not marker:
                    return None
                code = marker[0]
                if code == 0x01 or 0xD0 <= code <= 0xD8:  # no length follows
                    continue
                if code == 0xD9:
                    return None
                (length,) = struct.unpack(">H", fh.read(2))
                if length < 2:
                    return None
                if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
                    body = fh.read(length - 2)
                    count = body[5] if len(body) > 5 else 0
                    if count == 0 or len(body) < 6 + 3 * count:
                        return None
                    sof = code
                    sampling = [(max(1, body[7 + 3 * i] >> 4), max(1, body[7 + 3 * i] & 15)) for i in range(count)]
                elif code == 0xDA:
                    scan = fh.read(1)
                    return (sof, sampling, scan[0], fh.tell()) if sof is not None and scan else None
                else:
                    fh.seek(length - 2, os.SEEK_CUR)
    except (OSError, struct.error):
        return None
    return None


def _check_jpeg_data(path: Path, width: int, height: int) -> int:
    """Refuse a Huffman-coded JPEG whose file is too small to hold the picture its header declares (a 380-byte file
    declaring 29000 x 29000 pixels was decoded as a grey picture, 2.7 GB at its peak, and analysed as blank): each
    MCU of the picture costs at least one bit, so a file of fewer than MCUs / 8 bytes ends before its picture does
    (refused below a quarter of that). Return the bytes of coefficients the decoder keeps for the whole picture when
    it is decoded in several scans (progressive, or one component a scan), else 0."""
    frame = _jpeg_frame(path)
    if frame is None:
        return 0
    sof, sampling, scan_components, scan_start = frame
    hmax, vmax = max(h for h, _ in sampling), max(v for _, v in sampling)
    mcus = math.ceil(width / (8 * hmax)) * math.ceil(height / (8 * vmax))
    size = path.stat().st_size - scan_start  # the coded picture, not the metadata before it
    if sof in _JPEG_HUFFMAN and size < mcus // 32:
        raise ImageLoadError(path, f"the image data is truncated or corrupt: the file ends before its picture does "
                                   f"({max(0, size)} bytes of coded picture cannot hold the {width} x {height} pixels "
                                   "its header declares)")
    if sof not in _JPEG_PROGRESSIVE and scan_components >= len(sampling):
        return 0
    blocks = 0
    for h, v in sampling:
        across, down = math.ceil(math.ceil(width * h / hmax) / 8), math.ceil(math.ceil(height * v / vmax) / 8)
        blocks += -(-across // h) * h * (-(-down // v) * v)  # padded to whole MCUs
    return blocks * 64 * 2  # 64 coefficients of 16 bits a block


def _coefficients_reason(coefficients: int, width: int, height: int, scale: int, pixel_bytes: int) -> str | None:
    """A progressive JPEG needs its coefficients and the decoded (DCT-scaled) picture at once (30000 x 30000
    grey: 1.8 GB of coefficients, whatever the scale)."""
    need = coefficients + math.ceil(width / scale) * math.ceil(height / scale) * pixel_bytes
    budget = memory_budget()
    if need <= budget:
        return None
    return (f"the image is too large to decode here (a progressive JPEG of {width} x {height} pixels needs about "
            f"{need / 1024**3:.2f} GiB while it is decoded, {budget / 1024**3:.2f} GiB of memory is available "
            "for one image)")


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
    if im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (im.mode in ("L", "P", "RGB") and "transparency" in im.info):
        return _over_black(im)
    if im.mode.startswith("I;16") and isinstance(im.info.get("transparency"), int):  # a 16-bit grey key colour
        values = np.asarray(im)
        return Image.fromarray(np.where(values == im.info["transparency"], 0, values).astype(values.dtype))
    if im.mode in ("L", "RGB", "I;16", "I;16B", "I;16L", "F"):
        return im
    if im.mode == "I":
        return im  # 32-bit integer greyscale, handled in _normalise
    if im.mode == "1":
        return im.convert("L")
    return im.convert("RGB")  # P, CMYK, YCbCr, LAB ...


def _over_black(im: Image.Image) -> Image.Image:
    """A picture with transparency as it shows over black, a scan's background: the colours hidden under
    transparent pixels (any, as the program that saved it left them) must not reach the models, which would then
    answer differently for two pictures that look the same."""
    if im.mode in ("L", "LA", "La"):
        grey = im.convert("LA")
        shown = Image.new("L", im.size, 0)
        shown.paste(grey.getchannel("L"), mask=grey.getchannel("A"))
        return shown
    rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    shown = Image.new("RGB", im.size, 0)
    shown.paste(rgba, mask=rgba)  # RGBA pasted into RGB as it is: no RGB copy of a large picture (447 -> 137 MB)
    return shown


def _open_tiff(path: Path):
    """Read the first series' shape, samples, planar layout and depth from the tags, check the budget,
    then return ((rows, columns) as shown, factor, frame count, reader of one page at a time, WhiteIsZero,
    warnings: pages of the file that are not read, being another image of another size or kind).

    Pages come back as a reader sees them: palette indices through the ColorMap, turned as the Orientation
    tag says; a WhiteIsZero (Photometric 0) page keeps its values, the record inverts it (MONOCHROME1).

    The file's structure (its series) is worked out once: the pages are read later through the same tifffile
    object, its file opened again for each read. Only compressions whose decoded size is checked before decoding
    are decoded (``_CHECKED_CODECS``)."""
    tif = None
    try:
        tif = tifffile.TiffFile(path)
        series, too_many = _first_series(tif, path)
        key = series.keyframe
        rows, columns = int(key.imagelength), int(key.imagewidth)
        samples, depth = int(key.samplesperpixel), int(key.imagedepth)
        if key.dtype is None:
            raise ImageLoadError(path, f"its sample format ({key.sampleformat}, {key.bitspersample} bit) is not supported")
        count = len(series.pages)
        unread = too_many or _unread_pages(tif, series, count, rows, columns, samples)
        photometric = int(key.photometric)
        palette = _palette(key, path) if photometric == 3 else None
        orientation = key.tags.valueof(274, 1)  # one per series: its pages share the keyframe's shape
        orientation = orientation if orientation in _ORIENTATIONS else 1
        factor = downsample_factor(rows, columns)
        separate = int(key.planarconfig) == 2
        plane = (1 if separate else samples) * key.dtype.itemsize  # bytes of one pixel in one strip or tile
        if key.is_tiled:  # the bytes one strip or tile decodes to
            segment = int(key.tilelength) * int(key.tilewidth) * max(1, int(key.tiledepth)) * plane
            if segment > _SEGMENT_SLACK * rows * columns * plane and segment > _SEGMENT_MIN:
                # its inflation would be checked against the tile, not the image: a 100 x 100 image in one tile
                # of 32768 x 32768 pixels held 1 GiB of zeros
                raise ImageLoadError(path, f"its tiles ({int(key.tilewidth)} x {int(key.tilelength)} pixels) are far "
                                           f"larger than its {columns} x {rows} image: too large (possibly a "
                                           "decompression bomb)")
        else:
            segment = min(int(key.rowsperstrip), rows) * columns * plane
        # big: decoded strip by strip (tile by tile) straight into the smaller frame
        piece = segment if factor > 1 else None
        pixel = (samples, key.dtype.itemsize) if palette is None else (max(3, samples * key.dtype.itemsize), 1)
        reason = check_size(rows, columns, count * depth, *pixel, piece_bytes=piece)  # a palette index: 3 bytes RGB
        code = int(key.compression)
        if not reason and code in _SEGMENT_COPIES:  # a decoder that holds far more than the strip it decodes
            reason = check_size(rows, columns, 1, *pixel, piece_bytes=segment * _SEGMENT_COPIES[code])
        if reason:
            raise ImageLoadError(path, reason)
        if depth > 1:
            raise ImageLoadError(path, f"it is a 3-D TIFF volume ({depth} slices per page), which is not supported")
        compression = getattr(key.compression, "name", str(key.compression))
        if code not in _CHECKED_CODECS or (_CHECKED_CODECS[code] == "ZSTD" and _zstd_decompressor() is None):
            # LZW, JPEG, WebP, JPEG XL, ... (imagecodecs): their decoded size is not checked before decoding
            raise ImageLoadError(path, f"its TIFF compression ({compression}) is not supported")
        try:
            tifffile.TIFF.DECOMPRESSORS[code]
        except KeyError:  # an unknown code
            raise ImageLoadError(path, f"its TIFF compression ({compression}) is not supported") from None
    except ImageLoadError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError, AttributeError, TypeError) as exc:
        raise ImageLoadError(path, f"the TIFF file is truncated or corrupt ({exc})") from exc
    finally:
        if tif is not None:
            tif.close()  # opened again for each page read
    colour = samples in (3, 4)
    base, extras = (3 if colour else 1), tuple(getattr(key, "extrasamples", ()) or ())

    def shown(arr: np.ndarray) -> np.ndarray:
        """Indices (subsampled, never averaged) through the palette, then normalised and turned upright."""
        if palette is not None:
            arr = palette[arr.view(np.uint8) if arr.dtype == np.bool_ else arr]  # indices < entries: checked
        return _reoriented(_normalise(arr), orientation)

    lock = threading.Lock()  # one file handle, one read at a time

    def read_page(index: int) -> np.ndarray:
        try:
            with lock:
                handle = tif.filehandle
                handle.open()  # the series found when the file was opened, not worked out again for each page
                try:
                    page = series.pages[index]
                    _check_inflation(handle, page, segment, path)
                    if factor > 1:
                        return shown(_over_black_samples(_streamed(page, rows, columns, samples, separate, factor),
                                                         base, extras))
                    arr = page.asarray()
                finally:
                    handle.close()
        except ImportError as exc:  # a codec tifffile finds only at decoding time (ZSTD before Python 3.14)
            raise ImageLoadError(path, f"its TIFF compression ({compression}) is not supported") from exc
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError, AttributeError, TypeError) as exc:
            raise ImageLoadError(path, f"the TIFF file is truncated or corrupt ({exc})") from exc
        arr = np.squeeze(arr) if arr.ndim > 3 else arr
        if samples > 1 and arr.ndim == 3 and separate and arr.shape[0] == samples:
            arr = np.moveaxis(arr, 0, -1)  # planar configuration 2: (S, H, W) -> (H, W, S)
        arr = _over_black_samples(arr, base, extras)
        if arr.shape[:2] != (rows, columns):
            raise ImageLoadError(path, f"page {index + 1} decodes to {arr.shape}, not the {rows} x {columns} its tags declare")
        return shown(shrink(arr, factor))

    size = (columns, rows) if orientation >= 5 else (rows, columns)  # 5-8 swap rows and columns
    return size, factor, count, read_page, photometric == 0, unread


class _PageRun:
    """Stands in for tifffile's first series in a TIFF of more than ``MAX_TIFF_PAGES`` pages: its first pages that
    have the first one's shape and kind, as frames."""

    def __init__(self, pages: list):
        self.pages, self.keyframe = pages, pages[0]
        self.levels = [self]


def _linear_series(tif, path: Path) -> bool:
    """Whether tifffile works out the series of this TIFF of many pages in time that grows with the pages, not
    their square: from OME-XML or ImageJ metadata, or tifffile's own shape metadata where its first series holds
    all but at most ``MAX_TIFF_PAGES`` of the pages (it pairs every later series with every other, looking for
    pyramid levels: 5,000 one-page series took 9 s)."""
    if tif.is_ome or tif.is_imagej:
        return True
    first = tif.pages.first
    if not tif.is_shaped or not first.shape:
        return False
    try:
        shape = json.loads(first.shaped_description)["shape"]  # {"shape": [1200, 128, 128]}
        pages = math.prod(int(n) for n in shape) // max(1, math.prod(first.shape))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return False
    chain, loops = _ifd_chain(path, min(pages, 10 ** 7) + MAX_TIFF_PAGES)
    return not loops and chain <= pages + MAX_TIFF_PAGES


def _first_series(tif, path: Path):
    """(The first image of the file, whose pages are its frames; a warning where it is cut short, else None).

    tifffile groups the pages into series. Where their metadata say how (OME-XML, ImageJ, tifffile's own shape),
    its time grows with the pages; its generic grouping of plain pages grows with their square (10,000 one-pixel
    pages took 56 s), so beyond ``MAX_TIFF_PAGES`` pages it is not let run, and a chain of image directories that
    loops back on itself would never end: then only the pages up to there are looked at, those from the first on
    that share its shape and kind being read as the frames.
    """
    chain, loops = _ifd_chain(path, MAX_TIFF_PAGES)
    if chain <= MAX_TIFF_PAGES and not loops:
        if not tif.series:
            raise ImageLoadError(path, "the TIFF file holds no image")
        return tif.series[0], None
    if not loops and _linear_series(tif, path):
        # no fall-back to the generic grouping where the metadata do not fit the pages (a hostile file's): the
        # first pages are read below instead
        tif._series_generic = lambda: None
        if tif.series:
            return tif.series[0], None
    first = tif.pages[0]
    run = [first]
    for index in range(1, min(chain, MAX_TIFF_PAGES)):
        try:
            page = tif.pages[index]
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError, AttributeError, TypeError,
                struct.error):
            break
        if not isinstance(page, tifffile.TiffPage) or page.hash != first.hash or page.shape != first.shape:
            break
        run.append(page)
    held = (f"its chain of image directories (pages) loops back on itself after page {chain}" if loops else
            f"this TIFF file holds more than {MAX_TIFF_PAGES} pages (image directories)")
    return _PageRun(run), [f"{held}: only its first {len(run)} page(s), as frames, are read; the pages after them "
                           "are not"]


def _ifd_chain(path: Path, limit: int) -> tuple[int, bool]:
    """(The image directories in the file's chain, counted up to ``limit`` + 1; whether it loops back on itself).
    Classic TIFF and BigTIFF; where the chain cannot be followed, the directories up to there."""
    seen: set[int] = set()
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            order = "<" if head[:2] == b"II" else ">"
            big = struct.unpack(order + "H", head[2:4])[0] == 43
            offset = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
            count_format, entry, link = (order + "Q", 20, order + "Q") if big else (order + "H", 12, order + "I")
            count_size, link_size = struct.calcsize(count_format), struct.calcsize(link)
            while offset and len(seen) <= limit:
                if offset in seen:
                    return len(seen), True
                fh.seek(offset)
                raw = fh.read(count_size)
                if len(raw) < count_size:
                    break
                seen.add(offset)
                fh.seek(offset + count_size + struct.unpack(count_format, raw)[0] * entry)
                raw = fh.read(link_size)
                if len(raw) < link_size:
                    break
                offset = struct.unpack(link, raw)[0]
    except (OSError, struct.error, OverflowError, ValueError):
        pass
    return len(seen), False


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


# Compressions decoded, each checked for what its strips or tiles decode to before they are decoded
# (``_check_inflation``): tifffile decodes these without imagecodecs by inflating a whole strip or tile, however large
# it gets (PIXTIFF, 50013, is deflate too: a 1 MB strip of it peaked at 2.1 GB). The rest (LZW, JPEG, WebP,
# JPEG XL, ..., decoded through imagecodecs) are refused as not supported: their decoded size is not checked.
_CHECKED_CODECS = {1: "uncompressed", 8: "deflate", 32946: "deflate", 50013: "deflate", 34925: "LZMA",
                   32773: "PackBits", 50000: "ZSTD", 34926: "ZSTD"}
# How many times its strip or tile a decoder holds at once, beyond the DECODE_OVERHEAD copies check_size counts:
# tifffile's PackBits decoder builds a list of Python ints, 8 bytes a decoded byte, then the bytes.
_SEGMENT_COPIES = {32773: 3}
_SEGMENT_SLACK, _SEGMENT_MIN = 4, 16 * 1024**2  # a tile larger than 4 times its image and 16 MiB is no honest tile
try:
    from compression.zstd import ZstdError as _ZstdError  # Python 3.14, which tifffile decodes ZSTD with
except ImportError:
    _ZstdError = zlib.error
_CODEC_ERRORS = (zlib.error, lzma.LZMAError, _ZstdError)


def _zstd_decompressor():
    try:
        from compression import zstd
    except ImportError:
        return None
    return zstd.ZstdDecompressor()


def _decompressor(codec: str):
    if codec == "deflate":
        return zlib.decompressobj()
    return lzma.LZMADecompressor() if codec == "LZMA" else _zstd_decompressor()


def _check_inflation(fh, page, segment: int, path: Path) -> None:
    """Refuse a page one of whose strips (tiles) decodes far beyond the ``segment`` bytes it can hold, or is stored
    in far more bytes than that: a few megabytes on disk must not become gigabytes in memory (a decompression bomb).

    Each segment is inflated in chunks (PackBits: its runs are counted), stopping as soon as it passes the bound;
    nothing is kept.
    """
    codec = _CHECKED_CODECS.get(int(page.keyframe.compression))
    limit = 2 * segment + (1 << 20)  # tifffile keeps the first ``segment`` bytes; padding is tolerated
    size = int(fh.size)
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        count = max(0, min(int(count), size - int(offset)))  # a count past the end of the file: what is there
        if count > limit:
            raise ImageLoadError(path, f"one of its strips or tiles is stored in {count / 1024**2:.0f} MiB, far more "
                                       f"than the {segment} bytes it decodes to: too large (possibly a "
                                       "decompression bomb)")
        if codec in (None, "uncompressed") or count == 0:
            continue
        fh.seek(offset)
        total = _packbits_size(fh.read(count), limit) if codec == "PackBits" else _inflated_size(fh, count, codec, limit)
        if total > limit:
            raise ImageLoadError(path, f"one of its {codec}-compressed strips or tiles inflates to more than "
                                       f"{limit / 1024**2:.0f} MiB, far beyond the image size its tags "
                                       "declare: too large (possibly a decompression bomb)")


def _inflated_size(fh, count: int, codec: str, limit: int) -> int:
    """Bytes the ``count`` compressed bytes at the file position inflate to, counted up to just past ``limit``.
    LZMA and ZSTD streams that follow one another count together (their decoders decode them all)."""
    inflater = _decompressor(codec)
    total, left = 0, count
    try:
        while left > 0:
            data = fh.read(min(left, 1 << 20))
            if not data:
                break
            left -= len(data)
            while data:
                total += len(inflater.decompress(data, limit + 1 - total))
                if total > limit:
                    return total
                data = b""
                if inflater.eof:
                    if codec == "deflate":
                        return total  # zlib decodes the first stream only
                    data, inflater = inflater.unused_data, _decompressor(codec)
    except _CODEC_ERRORS:
        return total  # corrupt, or bytes after the last stream: the decoder says what it makes of them
    return total


def _packbits_size(data: bytes, limit: int) -> int:
    """Bytes PackBits ``data`` decodes to (as tifffile's decoder reads it), counted up to just past ``limit``:
    one header byte, then 1-128 literal bytes or one byte repeated 2-128 times (128 is no operation)."""
    total, i, end = 0, 0, len(data)
    while i < end and total <= limit:
        header = data[i]
        if header < 128:
            total += header + 1
            i += header + 2
        elif header > 128:
            total += 257 - header
            i += 2
        else:
            i += 1
    return total


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
    return out[..., 0] if samples == 1 else out


def _over_black_samples(arr: np.ndarray, base: int, extras: tuple[int, ...]) -> np.ndarray:
    """A TIFF page's grey (``base`` 1) or RGB (3) samples as they show over black, as a PNG's are (``_over_black``):
    an unassociated alpha (ExtraSamples 2) scales them, an associated one (1) is in them already; other extra
    samples are dropped. A page of ``base`` samples only is returned as it is."""
    if arr.ndim != 3 or arr.shape[-1] <= base:
        return arr
    shown = arr[..., :base]
    if extras[:1] == (2,):
        alpha = arr[..., base:base + 1].astype(np.float32)
        top = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0
        shown = (shown * np.clip(alpha / top, 0.0, 1.0)).astype(arr.dtype)
    return shown[..., 0] if base == 1 else shown


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
