"""The single entry point from a path on disk to an ImageRecord."""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path
from typing import BinaryIO

from core.errors import ImageLoadError
from core.imaging.dicom import read_dicom
from core.imaging.modality_guess import guess_modality
from core.imaging.raster import read_raster
from core.imaging.record import ImageRecord, Modality

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)


def sniff_format(head: bytes) -> str | None:
    """Name the format from the first bytes; the extension is never trusted."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    # DICOM without the 128-byte preamble starts with a group 0002 or 0008 tag (little endian).
    if len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00":
        return "DICOM"
    return None


def open_regular(path: str | Path, max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for binary reading if it is a readable regular file; every other case is refused by name.

    This is the one guarded door to the decoders: folders, FIFOs, devices (``/dev/zero``), sockets,
    dangling or looping links and unreadable files never reach a decoder, so nothing can block or
    stream without end. The file is opened non-blocking and checked again on the open descriptor (a
    file swapped for a FIFO or a link between the check and the open is refused too). With ``max_bytes``
    a file larger than that is refused as too large before a byte of it is read.

    The caller reads through the returned file object (pydicom and PIL take it as it is) and closes it;
    its ``name`` is the path, so pydicom can still find the file again for a deferred element.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ImageLoadError(path, "the file is a link to something that does not exist") from None
        raise ImageLoadError(path, "the file does not exist") from None
    except OSError as exc:
        raise ImageLoadError(path, _os_reason(exc)) from exc
    _check_regular(path, st, max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fh = open(path, "rb", opener=lambda name, _flags: os.open(name, flags))  # noqa: SIM115 - handed to the caller
    except OSError as exc:
        raise ImageLoadError(path, _os_reason(exc)) from exc
    try:
        _check_regular(path, os.fstat(fh.fileno()), max_bytes)  # swapped between stat and open
    except OSError as exc:
        fh.close()
        raise ImageLoadError(path, _os_reason(exc)) from exc
    except BaseException:
        fh.close()
        raise
    return fh


def _check_regular(path: Path, st: os.stat_result, max_bytes: int | None) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError(path, "this is a folder, not an image file (use batch analysis for folders)")
    if not stat.S_ISREG(st.st_mode):
        raise ImageLoadError(path, f"this is {_kind(st.st_mode)}, not a regular file: refused")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ImageLoadError(path, f"the file is too large ({_size_text(st.st_size)} on disk, limit "
                                   f"{_size_text(max_bytes)}): not read")


def _size_text(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def read_header(path: str | Path, keywords: list[str], max_bytes: int | None = None):
    """The DICOM attributes ``keywords`` of ``path`` and its file meta (pydicom ``Dataset``, no pixel data), read
    through the guarded door; None for anything unreadable, refused or not DICOM, which the loader names when the
    file is opened. For questions asked before a file is opened (is it a DICOMDIR, a SEG, the instance sought?)."""
    import pydicom

    try:
        with open_regular(path, max_bytes) as fh:
            return pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=list(keywords), force=True)
    except Exception:  # noqa: BLE001 - not DICOM, truncated, refused: not an answer to these questions
        return None


def _head(fh: BinaryIO, path: Path) -> bytes:
    """The first bytes of an open file (enough to name its format)."""
    try:
        return fh.read(132)
    except OSError as exc:
        raise ImageLoadError(path, _os_reason(exc)) from exc


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "the file is a link that loops back on itself"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied: the file or a folder above it cannot be read"
    if exc.errno == errno.ENAMETOOLONG:
        return "the file name is too long"
    if exc.errno == errno.ENOTDIR:
        return "the file does not exist (a part of its path is not a folder)"
    return f"the file cannot be read ({exc.strerror or exc})"


def load_image(path: str | Path, modality: Modality | str | None = None) -> ImageRecord:
    """Open any supported image, decode its first frame and settle its modality.

    ``modality`` is the user's choice and wins over the DICOM tag and over the guess.
    Every failure is raised as ImageLoadError with a message that names the file and the problem.
    """
    path = Path(path)
    try:
        with open_regular(path) as fh:  # format, deflate check and header read through one descriptor
            head = _head(fh, path)
            if not head:
                raise ImageLoadError(path, "the file is empty (0 bytes)")
            file_format = sniff_format(head)
            fh.seek(0)
            if file_format is None:
                record = _read_headerless_dicom(path, fh)
            else:
                record = read_dicom(path, fh) if file_format == "DICOM" else read_raster(path, file_format)
        return _settle_modality(record, modality)
    except ImageLoadError:
        raise
    except MemoryError as exc:
        raise ImageLoadError(path, "the image is too large to fit in memory") from exc
    except OSError as exc:
        raise ImageLoadError(path, _os_reason(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure becomes one readable message
        raise ImageLoadError(path, f"the file is damaged or unsupported ({type(exc).__name__}: {exc})") from exc


_UNKNOWN_FORMAT = "not a recognised image format (expected DICOM, PNG, JPEG, TIFF or BMP)"
_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US "
                 b"UT UV".split())


def plausible_data_set_start(head: bytes, size: int) -> bool:
    """Whether ``head`` (a file's first bytes, ``size`` bytes in all) can start a DICOM data set written without
    preamble or meta group: an even group from 0002 to 0028 (an image's data set holds Rows, (0028,0010), so its
    first element comes no later), little or big endian, then a known VR (explicit VR) or a length that fits in
    the file or is undefined (implicit VR). A file of zeros, text or noise fails at once, before pydicom reads it
    element by empty element (a 10 MB file of zeros took 11 s)."""
    if len(head) < 8:
        return False
    for endian in "<>":
        group = struct.unpack(endian + "H", head[:2])[0]
        if group % 2 or not 0x0002 <= group <= 0x0028:
            continue
        if head[4:6] in _VRS:
            return True
        length = struct.unpack(endian + "I", head[4:8])[0]
        if endian == "<" and (length == 0xFFFFFFFF or 8 + length <= size):
            return True
    return False


def _read_headerless_dicom(path: Path, fh: BinaryIO) -> ImageRecord:
    """Last resort for DICOM written without preamble or meta group; anything else is unknown."""
    head = fh.read(8)
    fh.seek(0)
    if not plausible_data_set_start(head, os.fstat(fh.fileno()).st_size):
        raise ImageLoadError(path, _UNKNOWN_FORMAT)
    try:
        return read_dicom(path, fh, headerless=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - not DICOM after all
        raise ImageLoadError(path, _UNKNOWN_FORMAT) from exc


def _settle_modality(record: ImageRecord, modality: Modality | str | None) -> ImageRecord:
    if modality is not None:
        record.modality = Modality(modality)
        record.modality_source = "user"
    elif record.modality_source == "guess" or _is_untyped_dicom(record):
        record.frame0_guess = guess_modality(record.display(0))
        record.modality, record.modality_confidence = record.frame0_guess
        record.modality_source = "guess"
    return record


def _is_untyped_dicom(record: ImageRecord) -> bool:
    """OT/SC DICOMs (screenshots, scanned films) say nothing about their content: guess instead."""
    if record.modality != Modality.OTHER:
        return False
    return record.header_texts.get("Modality", "").upper() in ("OT", "SC", "")
