"""DICOM reading: header first, frames decoded one at a time through pydicom's codec plugins."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import io
import math
import struct
import zlib

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder, pixel_array
from pydicom.tag import Tag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR as VR_
from pydicom.values import convert_UI
from pydicom.uid import (UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000TransferSyntaxes,
                         JPEGLSTransferSyntaxes, JPEGTransferSyntaxes)

from core.errors import ImageLoadError
from core.imaging.limits import (DECODE_OVERHEAD, check_size, downsample_factor, memory_budget, shrink,
                                 shrunk_shape)
from core.imaging.record import VOI_LUT, DefaultRenderer, FrameWindow, ImageRecord, Modality, StudyInfo, WindowPreset
from core.imaging.windowing import apply_window, auto_preset, drawable_window, full_range_preset, rescale_to_uint8

_MODALITY_TAGS = {"MR": Modality.MR, "MG": Modality.MG, "US": Modality.US, "SM": Modality.SM, "GM": Modality.SM}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFER = "512 KB"  # big elements (pixel data) stay on disk until a frame is asked for
_NONFINITE_WARNING = "some pixel values are NaN or infinite; they are shown as 0"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_INFLATE_CHUNK = 1 << 20
_META_PEEK = 4096  # the file meta group is a few hundred bytes


def _finite(value) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in _as_list(value))
    except (TypeError, ValueError):
        return False


def _valid_window(preset: WindowPreset) -> bool:
    return math.isfinite(preset.center) and math.isfinite(preset.width) and preset.width > 0


def _scaled(spacing: tuple[float, float] | None, factor: int) -> tuple[float, float] | None:
    if spacing is None or not all(math.isfinite(v) and v > 0 for v in spacing):
        return None
    return spacing[0] * factor, spacing[1] * factor


def check_deflated(fp: BinaryIO, path: Path) -> None:
    """Refuse, before pydicom parses it, a header that would cost memory or time out of all proportion to the
    file (``ImageLoadError``): a deflate-compressed data set that inflates beyond the budget ("too large"), a file
    meta group that states two different transfer syntaxes, sequences nested deeper than ``MAX_SEQUENCE_DEPTH``,
    more than ``MAX_SEQUENCE_ITEMS`` sequence items, or a per-frame functional group sequence with more items than
    the file declares frames (``SPARE_PER_FRAME_ITEMS`` spare ones allowed).

    ``fp`` is read from where it stands (the file's start). The transfer syntax is the one pydicom will use (the
    last (0002,0010) of the meta group, as pydicom's own meta parse keeps). The data set is walked element by
    element up to its pixel data: values are skipped, never kept; a deflated one is inflated chunk by chunk and
    counted. A walk that meets something it does not understand stops there and leaves the file to dcmread.
    The caller seeks back before reading the file again.
    """
    _scan_header(fp, path, drain=True)


def _scan_header(fp: BinaryIO, path: Path, drain: bool = False) -> "_HeaderScan | None":
    """``check_deflated``'s walk of the file ``fp`` (from where it stands); the walk, or None where the file meta
    group cannot be read. ``drain``: inflate a deflated data set to its end (counted), not only to its pixels."""
    try:
        start = fp.tell()
        found = _meta_of(fp.read(_META_PEEK), path)
        if found is None:  # not a plain explicit little-endian meta group: pydicom's own parse decides
            fp.seek(start)
            read_preamble(fp, True)
            meta = _read_file_meta_info(fp)
            syntax = str(meta.get("TransferSyntaxUID", "") or "").strip() or None
            found = (syntax, fp.tell() - start)
        syntax, offset = found
        fp.seek(start + offset)
    except ImageLoadError:
        raise
    except Exception:  # noqa: BLE001 - no readable meta group: dcmread decides what the file is
        return None
    try:
        if syntax == _DEFLATED:
            stream_limit = memory_budget() // (_INFLATED_COPIES + DECODE_OVERHEAD)
            stream = _Stream.inflating(fp, stream_limit, path)
            scan = _HeaderScan(stream, path, deflated=True, size=stream_limit).walk(little=True)
            if drain:
                stream.drain()
            return scan
        here = fp.tell()
        size = fp.seek(0, 2) - here  # the data set's bytes: what bounds the frames it can hold
        fp.seek(here)
        scan = _HeaderScan(_Stream.of_file(fp), path, size=size, encapsulated=_is_encapsulated(UID(syntax or "")))
        return scan.walk(little=syntax != "1.2.840.10008.1.2.2")
    except (ImageLoadError, MemoryError):
        raise
    except zlib.error as exc:
        raise ImageLoadError(path, f"the deflate-compressed DICOM data is corrupt ({exc})") from exc
    except Exception:  # noqa: BLE001 - a walk the header defeats: dcmread names the problem
        return None


# pydicom's dcmread holds a deflated data set inflated (zlib's output joined once more at its end) and copies each
# element it reads out of it: the inflated bytes are counted twice besides the decoder's own copies.
_INFLATED_COPIES = 2
MAX_SEQUENCE_DEPTH = 64  # pydicom itself fails (RecursionError) near 200; real files nest fewer than 10
# Elements out of order (or repeated) tolerated in one data set: PS3.5 7.1 orders them by increasing tag; a few
# misordered private tags occur in real files, thousands only in damaged ones.
MAX_DISORDERED_ELEMENTS = 1000
MAX_SEQUENCE_ITEMS = 200_000  # pydicom keeps each item as a data set: 200,000 empty items take 6 s and 110 MB
# ... plus this many for each frame declared (an enhanced MR holds some 20 functional group items a frame: a 4D
# fMRI or DCE series of 10,800 frames, 216,000 items, is read in 2 s); the frames no more than the file can hold.
SEQUENCE_ITEMS_PER_FRAME = 64
# Per-frame functional group items beyond the frames declared are never used; a few are found in objects cut down
# from multi-frame ones (pydicom's liver_1frame.dcm: one frame, three items). Two million were an attack.
SPARE_PER_FRAME_ITEMS = 1000
_SCAN_CHUNK = 1 << 16
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PER_FRAME_GROUPS = 0x52009230
_IMAGE_SIZE_TAGS = (0x00280002, 0x00280010, 0x00280011, 0x00280100)  # SamplesPerPixel, Rows, Columns, BitsAllocated
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_KNOWN_VRS = frozenset(vr.value.encode() for vr in VR_ if len(vr.value) == 2)


def _meta_of(head: bytes, path: Path) -> tuple[str | None, int] | None:
    """(TransferSyntaxUID, offset of the data set) from a plain explicit little-endian file meta group in ``head``
    (preamble, ``DICM``, group 0002 elements of known VRs); None where that is not certain (no preamble, cut short,
    a VR pydicom reads otherwise). Refuses a group that states two different transfer syntaxes: which one a reader
    uses is a matter of chance (pydicom keeps the last), and a guard that looks at one is blind to the other."""
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    at, syntaxes = 132, []
    while True:
        if at + 8 > len(head):
            return None  # the meta group runs past the peek: pydicom reads it
        group = struct.unpack_from("<H", head, at)[0]
        if group != 0x0002:
            break
        element, vr = struct.unpack_from("<H", head, at + 2)[0], head[at + 4 : at + 6]
        if vr not in _KNOWN_VRS:
            return None  # not explicit VR (a damaged or implicit meta group): pydicom reads it
        if vr in _LONG_VRS:
            if at + 12 > len(head):
                return None
            length, at = struct.unpack_from("<I", head, at + 8)[0], at + 12
        else:
            length, at = struct.unpack_from("<H", head, at + 6)[0], at + 8
        if length == _UNDEFINED or at + length > len(head):
            return None
        if element == 0x0010:  # decoded as pydicom decodes it (a value of two UIDs matches no syntax)
            syntaxes.append(str(convert_UI(head[at : at + length], True)))
        at += length
    if len(set(syntaxes)) > 1:
        raise ImageLoadError(path, "the DICOM file meta group states its transfer syntax twice, differently ("
                                   + " and ".join(syntaxes) + "): damaged or forged, not read")
    return (syntaxes[-1] if syntaxes else None), at


class _Stream:
    """Forward-only reading for the header walk: a file (skips are seeks) or a deflated data set inflated on the
    fly (skips are inflated and dropped, every byte counted against ``limit``)."""

    def __init__(self, more, skip_more) -> None:
        self._buf, self._at, self.pos = b"", 0, 0
        self._more, self._skip_more = more, skip_more

    @classmethod
    def of_file(cls, fp: BinaryIO) -> "_Stream":
        stream = cls(fp.read, lambda n: fp.seek(n, 1))
        stream.pos = fp.tell()  # positions in the file
        return stream

    @classmethod
    def inflating(cls, fp: BinaryIO, limit: int, path: Path) -> "_Stream":
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        state = {"total": 0, "done": False}

        def more(_n: int) -> bytes:
            while not state["done"]:
                if inflater.unconsumed_tail:
                    data = inflater.decompress(inflater.unconsumed_tail, _INFLATE_CHUNK)
                else:
                    chunk = fp.read(_INFLATE_CHUNK)
                    data = inflater.decompress(chunk, _INFLATE_CHUNK)
                    if not chunk or inflater.eof:
                        state["done"] = not inflater.unconsumed_tail
                state["total"] += len(data)
                if state["total"] > limit:
                    raise ImageLoadError(path, f"the deflate-compressed DICOM data set inflates to more than "
                                               f"{limit / 1024**2:.0f} MiB: too large (possibly a decompression bomb)")
                if data:
                    return data
            return b""

        def skip_more(n: int) -> None:
            while n > 0:
                data = more(n)
                if not data:
                    return
                n -= len(data)
                if n < 0:  # inflated past the skip: keep the rest
                    stream._buf, stream._at = data[n:], 0

        stream = cls(more, skip_more)
        return stream

    def _fill(self, n: int) -> bool:
        while len(self._buf) - self._at < n:
            data = self._more(max(n, _SCAN_CHUNK))
            if not data:
                return False
            self._buf, self._at = self._buf[self._at :] + data, 0
        return True

    def read(self, n: int) -> bytes:
        self._fill(n)
        out = self._buf[self._at : self._at + n]
        self._at += len(out)
        self.pos += len(out)
        return out

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return self._buf[self._at : self._at + n]

    def skip(self, n: int) -> None:
        self.pos += n
        have = len(self._buf) - self._at
        if n <= have:
            self._at += n
            return
        self._buf, self._at = b"", 0
        self._skip_more(n - have)

    def unpack(self, layout: struct.Struct) -> tuple | None:
        """The next ``layout.size`` bytes unpacked, read past; None at the end of the data."""
        if not self._fill(layout.size):
            return None
        values = layout.unpack_from(self._buf, self._at)
        self._at += layout.size
        self.pos += layout.size
        return values

    def drain(self) -> None:
        while self._more(_INFLATE_CHUNK):
            pass


class _StopWalk(Exception):
    """The header is not what the walk understands (cut short, not DICOM, odd): dcmread decides."""


class _HeaderScan:
    """Walks a data set's elements up to its pixel data as pydicom will read them (explicit VR, or implicit where
    the first element or a sequence's items say so), counting sequence items and nesting; refuses what would make
    pydicom's parse blow up. Element values are skipped."""

    def __init__(self, stream: _Stream, path: Path, deflated: bool = False, size: int | None = None,
                 encapsulated: bool = False) -> None:
        self.stream, self.path, self.deflated = stream, path, deflated
        self.items, self.frames = 0, 1
        # The data set's size in bytes (None: unknown) and what one frame takes of it at least: native, its pixels
        # (Rows x Columns x SamplesPerPixel x BitsAllocated as read); encapsulated, its fragment's item header.
        self.size, self.encapsulated, self.image = size, encapsulated, {}
        # The top-level pixel data element: (tag, length, offset of its value in the file; None where deflated)
        self.pixels: tuple[int, int, int | None] | None = None

    def walk(self, little: bool) -> "_HeaderScan":
        self.endian = "<" if little else ">"
        head = self.stream.peek(6)
        try:
            self._data_set(self._looks_implicit(head), 0, None, top=True)
        except _StopWalk:
            pass
        return self

    @staticmethod
    def _looks_implicit(head: bytes) -> bool:
        return len(head) == 6 and not (0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B)

    def _header(self, implicit: bool) -> tuple[int, bytes | None, int]:
        raw = self.stream.read(8)
        if len(raw) < 8:
            raise _StopWalk
        group, element = struct.unpack(self.endian + "HH", raw[:4])
        tag = group << 16 | element
        vr = None if implicit or tag in (_ITEM, _ITEM_END, _SEQUENCE_END) else raw[4:6]
        if vr is not None and vr not in _KNOWN_VRS and not (b"AA" <= vr <= b"ZZ"):
            vr = None  # pydicom reads an element without a VR as implicit
        if vr is None:
            return tag, None, struct.unpack(self.endian + "I", raw[4:])[0]
        if vr in _LONG_VRS:
            extra = self.stream.read(4)
            if len(extra) < 4:
                raise _StopWalk
            return tag, vr, struct.unpack(self.endian + "I", extra)[0]
        return tag, vr, struct.unpack(self.endian + "H", raw[6:])[0]

    def _data_set(self, implicit: bool, depth: int, end: int | None, top: bool = False) -> None:
        last, disordered = -1, 0
        while end is None or self.stream.pos < end:
            tag, vr, length = self._header(implicit)
            if tag == _ITEM_END:
                return
            if tag in (_ITEM, _SEQUENCE_END):
                raise _StopWalk
            disordered += tag <= last
            last = tag
            if disordered > MAX_DISORDERED_ELEMENTS:  # megabytes of zeros read as empty elements: 1 s per MB
                if top and self.pixels is not None:
                    raise _StopWalk  # padding after the pixels (some writers pad files to a block): the image stands
                raise ImageLoadError(self.path, f"the DICOM header repeats or misorders more than "
                                                f"{MAX_DISORDERED_ELEMENTS} elements (a data set's tags increase): "
                                                "damaged, not read")
            if top and tag >> 16 == 0x7FE0 and tag >= 0x7FE00008 and self.pixels is None:
                self.pixels = (tag, length, None if self.deflated else self.stream.pos)  # then on: pydicom reads on
            if top and tag == 0x00280008 and length < 64 and length != _UNDEFINED:
                try:
                    self.frames = int(self.stream.read(length).decode("ascii").strip(" \0") or 1)
                except ValueError:
                    self.frames = 0  # not a number: read_dicom says so
                continue
            if top and tag in _IMAGE_SIZE_TAGS and length == 2:
                raw = self.stream.read(2)
                if len(raw) == 2:
                    self.image[tag] = struct.unpack(self.endian + "H", raw)[0]
                continue
            if self._is_sequence(tag, vr, length):
                self._sequence(implicit or vr != b"SQ", depth + 1, length, per_frame=top and tag == _PER_FRAME_GROUPS)
            elif length == _UNDEFINED:
                self._fragments()
            else:
                self.stream.skip(length)

    def _is_sequence(self, tag: int, vr: bytes | None, length: int) -> bool:
        """Whether pydicom reads (or, on access, converts) this element as a sequence: SQ; UN of undefined length;
        an implicit (or UN) element the dictionary calls SQ; an unknown implicit one of undefined length whose value
        starts with an item."""
        if vr == b"SQ" or (vr == b"UN" and length == _UNDEFINED):
            return True
        if vr not in (None, b"UN"):
            return False
        try:
            return dictionary_VR(tag) == "SQ"
        except KeyError:
            if vr is not None or length != _UNDEFINED:
                return False
        head = self.stream.peek(4)
        if len(head) < 4:
            return False
        group, element = struct.unpack(self.endian + "HH", head)
        return (group << 16 | element) == _ITEM

    def _fragments(self) -> None:
        """An undefined-length value that is no sequence (encapsulated pixel data): its items, to its delimiter.
        A tight loop on the stream's buffer: a frame may come in a million fragments."""
        stream, layout = self.stream, struct.Struct(self.endian + "HHI")
        while True:
            header = stream.unpack(layout)
            if header is None:
                raise _StopWalk
            group, element, length = header
            if group == 0xFFFE and element == 0xE0DD:
                return
            if group != 0xFFFE or element != 0xE000 or length == _UNDEFINED:
                raise _StopWalk
            stream.skip(length)

    def item_limit(self) -> int:
        """``MAX_SEQUENCE_ITEMS`` and ``SEQUENCE_ITEMS_PER_FRAME`` for each further frame declared, no more frames
        than the data set's size can hold."""
        frames = max(1, self.frames)
        if self.size is not None:
            bits = math.prod(self.image.get(tag, 1) for tag in _IMAGE_SIZE_TAGS)
            frame_bytes = 8 if self.encapsulated else max(1, bits // 8)
            frames = max(1, min(frames, self.size // frame_bytes))
        return MAX_SEQUENCE_ITEMS + SEQUENCE_ITEMS_PER_FRAME * (frames - 1)

    def _sequence(self, implicit: bool, depth: int, length: int, per_frame: bool) -> None:
        if depth > MAX_SEQUENCE_DEPTH:
            raise ImageLoadError(self.path, f"the DICOM header nests sequences more than {MAX_SEQUENCE_DEPTH} deep: "
                                            "damaged or hostile, not read")
        end = None if length == _UNDEFINED else self.stream.pos + length
        count = 0
        while end is None or self.stream.pos < end:
            tag, _, item_length = self._header(True)
            if tag == _SEQUENCE_END:
                return
            if tag != _ITEM:
                raise _StopWalk
            count += 1
            self.items += 1
            if per_frame and 0 < self.frames and self.frames + SPARE_PER_FRAME_ITEMS < count:
                raise ImageLoadError(self.path, f"its per-frame functional groups hold more than "
                                                f"{self.frames + SPARE_PER_FRAME_ITEMS:,} items for the "
                                                f"{self.frames:,} frame(s) it declares: a damaged or hostile header, "
                                                "not read")
            if self.items > MAX_SEQUENCE_ITEMS and self.items > self.item_limit():
                raise ImageLoadError(self.path, f"the DICOM header holds more than {self.item_limit():,} sequence "
                                                "items: too large to read (damaged or hostile)")
            if item_length == 0:
                continue
            item_implicit = implicit or self._looks_implicit(self.stream.peek(6))
            item_end = None if item_length == _UNDEFINED else self.stream.pos + item_length
            self._data_set(item_implicit, depth, item_end)
            if item_end is not None and self.stream.pos != item_end:
                raise _StopWalk


def _no_pixels_reason(path: Path, ds: Dataset) -> str:
    """Why a data set has no pixels: a damaged header (an element longer than the file) or a non-image object."""
    sop = str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    if sop == "1.2.840.10008.1.3.10":
        return "the DICOM file holds no image: it is a DICOMDIR (an index of other files)"
    overrun = _element_past_end(path)
    if overrun:
        return f"the DICOM header is damaged: element {overrun} declares a length that runs past the end of the file"
    if _compressed_pixels_cut_short(path):
        return ("the DICOM file is cut short: its compressed pixel data ends before its last item (an interrupted "
                "transfer or copy?); fetch or copy the file again")
    if sop.startswith("1.2.840.10008.5.1.4.1.1.88."):
        return "the DICOM file holds no image (no Pixel Data): it is a structured report"
    if "Image Storage" in UID(sop).name:
        return (f"the DICOM file is an image ({UID(sop).name}) without its pixel data: it may be cut short (an "
                "interrupted transfer or copy?); fetch or copy the file again")
    return "the DICOM file holds no image (no Pixel Data): it may be a report, a plan or another non-image object"


# Encapsulated (compressed) Pixel Data, explicit VR little endian: tag (7FE0,0010), VR OB or OW, undefined length.
_ENCAPSULATED_HEADERS = (b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff", b"\xe0\x7f\x10\x00OW\x00\x00\xff\xff\xff\xff")
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0: the end of its items


def _compressed_pixels_cut_short(path: Path) -> bool:
    """The file holds an encapsulated Pixel Data element whose items never end (no sequence delimiter after it):
    pydicom then drops the element, and the file would be taken for a non-image object. Searched through a memory
    map, so a large file is not read into memory."""
    import mmap

    try:
        with open(path, "rb") as fp, mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as data:
            # the top-level Pixel Data comes last (an icon's encapsulated pixels, in a sequence, come before it)
            starts = [at for at in (data.rfind(h) for h in _ENCAPSULATED_HEADERS) if at >= 0]
            return bool(starts) and data.find(_SEQUENCE_DELIMITER, max(starts)) < 0
    except (OSError, ValueError):  # an empty file cannot be mapped; one that cannot be read says so elsewhere
        return False


def _element_past_end(path: Path) -> str | None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fp:
            read_preamble(fp, True)
            meta = _read_file_meta_info(fp)
            syntax = UID(str(meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
            if syntax == _DEFLATED:
                return None
            implicit = syntax == ImplicitVRLittleEndian
            little = syntax != "1.2.840.10008.1.2.2"
            for raw in data_element_generator(fp, implicit, little, defer_size=1024):
                length = 0 if raw.length == 0xFFFFFFFF else raw.length
                if raw.value_tell + length > size:
                    return str(raw.tag)
    except Exception:  # noqa: BLE001 - the walk itself fails on a damaged header: say nothing more
        return None
    return None


# A header that declares a few frames more than its pixel data holds (a file cut short) still lists them, each
# missing one named when it is read; beyond this many, only the frames held are listed (a NumberOfFrames of two
# thousand million on a few bytes made the series index and the batch build one entry per frame).
UNHELD_FRAMES_LISTED = 64
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData


def frame_counts(ds: Dataset, fp: BinaryIO | None = None) -> tuple[int, int | None]:
    """(How many frames to list, the frames the pixel data holds: None where it cannot be measured) for the DICOM
    data set ``ds``. The frames listed are its NumberOfFrames (1 where absent or not a positive number), bounded by
    what its pixel data holds (``UNHELD_FRAMES_LISTED`` missing frames at most; they are named unreadable when
    read). Native pixel data holds its length divided by one frame's size; encapsulated pixel data as many frames
    as it has fragments, or entries in its (Extended) Basic Offset Table where it has one.

    ``fp``: the file ``ds`` was read from, open (needed where ``ds`` was read with ``stop_before_pixels`` or its
    compressed pixel data was deferred and ``ds`` has no open ``buffer`` or ``filename`` to read it from again);
    its position is kept; it may also stand at the pixel data element, where ``dcmread(..., stop_before_pixels=True)``
    left it (the series index): it is then read there, not found by a walk of the header again. Never raises:
    NumberOfFrames as stated where the pixel data cannot be reached."""
    declared = _declared_frames(ds)
    try:
        held = _pixel_extent(ds, fp, declared)[0]
    except Exception:  # noqa: BLE001 - the pixel data cannot be measured: the header's word stands
        held = None
    return _listed_frames(declared, held), held


def _declared_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _listed_frames(declared: int, held: int | None) -> int:
    if held is None or held >= declared or declared - held <= UNHELD_FRAMES_LISTED:
        return declared
    return max(1, held)


def _pixel_extent(ds: Dataset, fp: BinaryIO | None, declared: int) -> tuple[int | None, int | None, int | None]:
    """(frames the pixel data holds, its length in bytes, bits per frame): the last two for native pixel data
    only; None where it cannot be told."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.BitsAllocated)
    if min(rows, columns, samples, bits) <= 0:
        return None, None, None
    tag = next((t for t in _PIXEL_TAGS if t in ds), None)
    value = None
    if tag is not None:
        element = ds.get_item(tag, keep_deferred=True)
        if isinstance(element, RawDataElement):
            value, length, offset = element.value, element.length, element.value_tell
        else:
            value, length, offset = element.value, None, None
    elif fp is not None:  # read without its pixel data: find the element in the file
        located = _pixels_here(ds, fp) or _locate_pixels(fp)
        if located is None:
            return None, None, None
        tag, length, offset = located
    else:
        return None, None, None
    syntax = _transfer_syntax(ds)
    if tag == 0x7FE00010 and _is_encapsulated(syntax):
        return _encapsulated_frames(ds, value, offset, fp, declared), None, None
    if value is not None:
        length = len(value)
    if length is None or length == _UNDEFINED:
        return None, None, None
    if value is None and offset is not None:  # a file cut short holds less than its element's length says
        length = min(length, max(0, _stream_size(_pixel_source(ds, fp)) - offset))
    frame_bits = rows * columns * samples * bits
    if samples == 3 and str(ds.get("PhotometricInterpretation", "")).strip().upper().endswith("_422"):
        frame_bits = frame_bits // 3 * 2  # YBR_FULL_422, YBR_PARTIAL_422: two samples of every three are stored
    return length * 8 // frame_bits, length, frame_bits


def _is_encapsulated(syntax: UID) -> bool:
    try:
        return syntax.is_encapsulated
    except ValueError:  # not a transfer syntax pydicom knows: read as native, as pydicom does
        return False


def _pixel_source(ds: Dataset, fp: BinaryIO | None):
    """The stream the offsets of ``ds``'s elements count in: its inflated copy where deflated, else ``fp``."""
    if _transfer_syntax(ds) == _DEFLATED or fp is None:
        return getattr(ds, "buffer", None)
    return fp


def _stream_size(fp) -> int:
    """The size of the open stream ``fp`` (a huge number where it cannot be told); its position is kept."""
    if fp is None or getattr(fp, "closed", True):
        return 1 << 62
    try:
        here = fp.tell()
        try:
            return fp.seek(0, 2)
        finally:
            fp.seek(here)
    except (OSError, ValueError, AttributeError):
        return 1 << 62


def _pixels_here(ds: Dataset, fp: BinaryIO) -> tuple[int, int, int] | None:
    """The pixel data element whose header stands at ``fp``'s position (tag, length, offset of its value), read in
    ``ds``'s encoding; None where none stands there. ``fp``'s position is kept."""
    at = fp.tell()
    try:
        implicit, little = ds.original_encoding
        raw = fp.read(12)
        if len(raw) < 8:
            return None
        endian = "<" if little is not False else ">"
        group, element = struct.unpack(endian + "HH", raw[:4])
        tag = group << 16 | element
        if tag not in _PIXEL_TAGS:
            return None
        if implicit or raw[4:6] not in _KNOWN_VRS:
            return tag, struct.unpack(endian + "I", raw[4:8])[0], at + 8
        if raw[4:6] in _LONG_VRS:
            return (tag, struct.unpack(endian + "I", raw[8:12])[0], at + 12) if len(raw) == 12 else None
        return tag, struct.unpack(endian + "H", raw[6:8])[0], at + 8
    except (OSError, ValueError, TypeError, AttributeError, struct.error):
        return None
    finally:
        fp.seek(at)


def _locate_pixels(fp: BinaryIO) -> tuple[int, int, int | None] | None:
    """The top-level pixel data element of the file ``fp`` (tag, length, offset of its value), found by the header
    walk from the file's start; ``fp``'s position is kept."""
    at = fp.tell()
    try:
        fp.seek(0)
        scan = _scan_header(fp, Path(str(getattr(fp, "name", "") or "")))
        return scan.pixels if scan is not None else None
    except ImageLoadError:
        return None
    finally:
        fp.seek(at)


def _encapsulated_frames(ds: Dataset, value: bytes | None, offset: int | None, fp: BinaryIO | None,
                         declared: int) -> int | None:
    """Frames that encapsulated pixel data can give: one per fragment at most, and no more than its Extended (or
    Basic) Offset Table lists where it has one; counted up to ``declared`` only (item headers read, values
    skipped). Where all ``declared`` are there and the table lists more, the table's count: frames the header
    does not declare (fragments alone cannot tell, as a frame may span several)."""
    table = None
    if "ExtendedOffsetTable" in ds:
        element = ds.get_item(0x7FE00001, keep_deferred=True)
        size = element.length if isinstance(element, RawDataElement) and element.value is None else \
            len(element.value or b"")
        table = size // 8
    if value is not None:
        source, opened, start = io.BytesIO(value), True, 0
    elif fp is not None and offset is not None:
        source, opened, start = fp, False, offset
    elif offset is not None and getattr(ds, "buffer", None) is not None and not getattr(ds.buffer, "closed", True):
        source, opened, start = ds.buffer, False, offset
    elif offset is not None and isinstance(getattr(ds, "filename", None), str):
        source, opened, start = open(ds.filename, "rb"), True, offset  # noqa: SIM115 - closed below
    else:
        return None
    at = source.tell()
    try:
        source.seek(start)
        stream = _Stream.of_file(source)

        def item() -> int | None:
            raw = stream.read(8)
            if len(raw) < 8:
                return None
            group, element, length = struct.unpack("<HHI", raw)
            return length if (group << 16 | element) == _ITEM and length != _UNDEFINED else None

        first = item()  # the Basic Offset Table, maybe empty
        if first is None:
            return None
        if table is None and first >= 4:
            table = first // 4
        stream.skip(first)
        limit = min(declared, table) if table is not None else declared
        count = 0
        while count < limit:
            length = item()
            if length is None:
                break
            count += 1
            stream.skip(length)
        return table if table is not None and count == declared < table else count
    finally:
        if opened:
            source.close()
        else:
            source.seek(at)


def read_dicom(path: Path, fp: BinaryIO, headerless: bool = False) -> ImageRecord:
    """A DICOM file as a record, its header read from ``fp`` (``path`` opened through the loader's guarded door, at
    its start); ImageLoadError with a reader-friendly reason when it cannot be shown. Frames are read on demand.
    ``headerless``: a last try at a file that did not look like DICOM (no damaged header is then looked for)."""
    check_deflated(fp, path)
    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp, defer_size=_DEFER, force=True)
    except InvalidDicomError as exc:
        raise ImageLoadError(path, f"not a valid DICOM file ({exc})") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, OverflowError, struct.error, zlib.error) as exc:
        raise ImageLoadError(path, f"the DICOM file is truncated or damaged ({exc})") from exc
    except RecursionError as exc:
        raise ImageLoadError(path, "the DICOM header nests sequences too deeply to be read: damaged or "
                                   "hostile") from exc

    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if headerless:
            raise ImageLoadError(path, "no image found (no Pixel Data)")
        raise ImageLoadError(path, _no_pixels_reason(path, ds))
    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if keyword not in ds:
            raise ImageLoadError(path, f"the DICOM header lacks the required '{keyword}' attribute")

    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    except (TypeError, ValueError) as exc:
        raise ImageLoadError(path, f"the DICOM header's image size is not a number ({exc})") from exc
    reason = check_size(rows, columns, frames, samples, max(1, bits // 8))
    if reason:
        raise ImageLoadError(path, reason)
    factor = downsample_factor(rows, columns)
    warnings: list[str] = []
    declared = frames
    try:
        held, pixel_bytes, frame_bits = _pixel_extent(ds, fp, declared)
    except (TypeError, ValueError, AttributeError, KeyError, OSError, struct.error):
        held, pixel_bytes, frame_bits = None, None, None  # not measurable: the decoder names any problem
    frames = _listed_frames(declared, held)
    if held is not None and 0 < held < declared:
        warnings.append(f"its header declares {declared:,} frames, but its pixel data holds only {held:,}: " +
                        (f"frames {held + 1:,} to {declared:,} cannot be read" if frames == declared
                         else f"only those {held:,} are listed"))
    elif pixel_bytes is None and held is not None and held > declared:  # compressed: its offset table says so
        warnings.append(f"its compressed pixel data holds {held:,} frames by its offset table, more than the "
                        f"{declared:,} its header declares: only those are listed")
    elif pixel_bytes is not None and frame_bits and held is not None and held > declared and \
            pixel_bytes * 8 >= (declared + 1) * frame_bits:
        warnings.append(f"its pixel data holds {pixel_bytes:,} bytes, more than the {declared * frame_bits // 8:,} its "
                        f"header's {declared:,} frame(s) of {columns} x {rows} pixels need: the header (Rows, "
                        "Columns, bits or number of frames) may be wrong, and the picture with it")
    slope, intercept = ds.get("RescaleSlope", 1), ds.get("RescaleIntercept", 0)
    for name, value in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
        if not _finite(value):
            raise ImageLoadError(path, f"its {name} ({value}) is not a finite number: the pixel values cannot be computed")

    alone = _one_rescale_attribute(ds) if "ModalityLUTSequence" not in ds else None
    if alone:
        other = "RescaleIntercept" if alone == "RescaleSlope" else "RescaleSlope"
        warnings.append(f"its header states {alone} without {other}: {other} is taken as "
                        f"{0 if other == 'RescaleIntercept' else 1} (the values may not be in the modality's units)")
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    is_color = samples == 3 or photometric == "PALETTE COLOR"
    color_bits = _color_bits(ds, photometric) if is_color else 8
    tsyntax = _transfer_syntax(ds)
    _require_decoder(path, tsyntax)

    # Frames are read from the file, one at a time; a deflated data set is already inflated in memory (its file's
    # bytes are still compressed), and a file without a meta group is told its transfer syntax.
    source = ds if tsyntax == _DEFLATED else path
    has_meta = "TransferSyntaxUID" in (getattr(ds, "file_meta", None) or {})
    told = {} if has_meta or tsyntax == _DEFLATED else {"transfer_syntax_uid": tsyntax}

    plugins = _decoding_plugins(tsyntax)
    # the data set as read, for a file whose own walk fails (``_decode``): only where its pixel data fits in memory
    read_as = ds if source is path and has_meta and path.stat().st_size <= memory_budget() else None

    def read_frame(index: int) -> np.ndarray:
        if held is not None and index >= held:
            if pixel_bytes is not None and held == 0:
                raise ImageLoadError(path, f"the pixel data is truncated or does not match the header: it holds "
                                           f"{pixel_bytes:,} bytes, less than one {columns} x {rows} frame "
                                           f"({-(-frame_bits // 8):,} bytes)")
            raise ImageLoadError(path, f"the pixel data is truncated or does not match the header: frame {index + 1} "
                                       f"is missing (it holds {held:,} of the {declared:,} frames its header declares)")
        cut = _check_codestream_size(path, ds, tsyntax, index, declared, rows, columns, samples)
        if cut and cut not in warnings:
            warnings.append(cut)
        arr = _decode(path, source, index if declared > 1 else None, tsyntax, plugins, told, read_as=read_as)
        if photometric == "PALETTE COLOR":  # indices first: averaged indices would pick unrelated colours
            try:
                arr = apply_color_lut(arr, ds)
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - numpy and struct errors say nothing to a reader
                raise ImageLoadError(path, "its palette colour lookup tables are damaged: their descriptors and "
                                           "data do not agree, or do not fit the pixel values") from exc
        arr = shrink(arr, factor)  # before any float conversion: big frames never exist as float64
        if is_color:
            return _color_to_uint8(arr, color_bits)
        try:
            values = _modality_values(arr, ds, index)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - an unpack error says nothing to a reader
            raise ImageLoadError(path, "its Modality LUT is damaged: its descriptor and data do not agree, so the "
                                       "pixel values cannot be computed") from exc
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
            if _NONFINITE_WARNING not in warnings:
                warnings.append(_NONFINITE_WARNING)
        return values

    mixed = len(_frame_spacings(ds, frames)) > 1  # a multi-plane localizer: one spacing would mis-measure frames
    stated = _safe_spacing(ds)
    implausible = stated is not None and not all(MIN_SPACING_MM <= v <= MAX_SPACING_MM for v in stated)
    spacing = None if mixed or implausible else _scaled(stated, factor)
    if implausible:  # 1e200 mm made areas and volumes infinite, and JSON invalid
        warnings.append(f"its pixel spacing ({stated[0]:g} x {stated[1]:g} mm) is no plausible pixel size: lengths "
                        "and areas are given in pixels")
    magnification = _magnification(ds) if spacing else None
    detector_spacing = spacing if magnification else None
    if magnification:  # PS3.3 C.8.11.7: ImagerPixelSpacing is at the detector; sizes are read in the breast
        spacing = (spacing[0] / magnification, spacing[1] / magnification)
        warnings.append(f"sizes are in the breast plane: the detector's pixel spacing divided by the estimated "
                        f"radiographic magnification ({magnification:g})")
    if mixed:
        warnings.append("its frames state different pixel spacings: lengths and areas are given in pixels")
    whole = _slide_size(ds)
    if whole is not None and frames > 1:  # a whole-slide image: its frames are tiles of one picture
        warnings.append(f"a tiled whole-slide image ({whole[1]} x {whole[0]} pixels in {frames} tiles of {columns} x "
                        f"{rows}): each frame is one tile, shown and analysed on its own; the slide is not assembled "
                        "here, so a result describes that tile only")
    if spacing is None and "SequenceOfUltrasoundRegions" in ds and len(_safe_region_scales(ds)) > 1:
        warnings.append("its ultrasound regions are calibrated to different scales (views of two depths): lengths "
                        "and areas are given in pixels")
    presets: list[WindowPreset] = []
    padding = _padding(ds)
    render, frame_window = (None, None) if is_color else _default_renderer(ds, padding)
    record = ImageRecord(
        path=path,
        file_format="DICOM",
        modality=_MODALITY_TAGS.get(_modality_tag(ds), Modality.OTHER),
        modality_source="dicom",
        rows=shrunk_shape(rows, columns, factor)[0],
        columns=shrunk_shape(rows, columns, factor)[1],
        frames=frames,
        samples_per_pixel=3 if is_color else 1,
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored", ds.BitsAllocated)),
        pixel_spacing_mm=spacing,
        pixel_aspect=None if spacing else _pixel_aspect(ds),
        detector_spacing_mm=detector_spacing,
        us_regions=_region_boxes(ds, factor),
        header_texts=_header_texts(ds),
        window_presets=presets,
        study=_study(ds),
        metadata=_tag_list(ds),
        _read_frame=read_frame,
        _default_render=render,
        _frame_window=frame_window,
        downsample=factor,
        source_size=(rows, columns) if factor > 1 else None,
        warnings=warnings,
    )
    if factor > 1:
        warnings.append(f"loaded at 1/{factor} of its {columns} x {rows} pixels to fit in memory")
    stored = None if is_color else _stored_range_preset(ds)
    dropped = [p for p in _window_presets(ds, keep_invalid=True) if not _valid_window(p)]
    unknown = None if is_color else (_voi_function(ds)[1] or
                                     _voi_function(_functional_group(ds, "FrameVOILUTSequence", 0) or Dataset())[1])
    if unknown:
        warnings.append(f"its VOI LUT function '{unknown}' is not one DICOM defines: its window is drawn LINEAR")
    if dropped:
        warnings.append("its window centre/width is not a finite positive number; " +
                        ("the full range of its stored values is shown" if stored else "an automatic window is used"))
    if not is_color:
        first = record.values(0)
        presets.extend(_window_presets(ds))
        auto = auto_preset(_without_padding(first, padding))
        # 8-bit data: the stored range first, as a PNG's presets list it (the default picture of both)
        presets.extend([stored, auto] if stored is not None else [auto, full_range_preset(first)])
    else:
        record.values(0)
    return record


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(meta.TransferSyntaxUID)
    return ExplicitVRLittleEndian if not ds.is_implicit_VR else ImplicitVRLittleEndian


def _require_decoder(path: Path, tsyntax: UID) -> None:
    """Fail at open time, by name, when no installed plugin can decode this compression."""
    try:
        compressed = tsyntax.is_compressed
    except ValueError as exc:  # a UID that is no transfer syntax pydicom knows
        raise ImageLoadError(path, f"its transfer syntax ({tsyntax}) is not one this program can read") from exc
    if not compressed:
        return
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise ImageLoadError(path, f"its compression ({tsyntax.name}) is not supported") from exc
    if not decoder.is_available:
        missing = "; ".join(line.strip() for line in decoder.missing_dependencies)
        raise ImageLoadError(
            path, f"its compression ({tsyntax.name}) needs a codec plugin that is not installed ({missing})"
        )


# The decoding plugins in the order tried: pydicom's own order (pylibjpeg, then Pillow or pydicom's RLE) save where
# named here, and GDCM, pydicom's first choice for most syntaxes, moved last:
# - JPEG-LS: pyjpegls (CharLS) first: a 5000 x 4000 mammogram takes it 0.6 s, GDCM 0.95 s, pylibjpeg 1.9 s.
# - 8-bit JPEG: Pillow (libjpeg-turbo) first: its pictures are GDCM's to the bit, as pydicom's default showed them
#   (pylibjpeg's differ by a level or two); it takes no 12-bit or lossless JPEG, which pylibjpeg decodes.
# - GDCM is the last try, after the others failed (a codestream they refuse, a plugin missing), for every syntax but
#   the JPEG processes (baseline, extended, lossless): there its JPEG codec throws a C++ exception on one stray byte
#   after SOI, which aborts the whole process, so it is tried only where no other plugin is installed.
_PLUGIN_ORDER = ("pylibjpeg", "pydicom", "pillow")
_SYNTAX_PLUGIN_ORDER = {
    **{syntax: ("pyjpegls", "pylibjpeg") for syntax in JPEGLSTransferSyntaxes},
    **{syntax: ("pillow", "pylibjpeg") for syntax in JPEGTransferSyntaxes},
}
_LAST_RESORT = "gdcm"


def _decoding_plugins(tsyntax: UID) -> list[str]:
    """The plugins to try for ``tsyntax`` in turn ("" for pixel data that needs none: pydicom's own reading)."""
    try:
        if not tsyntax.is_compressed:
            return [""]
        available = list(get_decoder(tsyntax).available_plugins)
    except (ValueError, NotImplementedError, AttributeError):
        return [""]
    preferred = _SYNTAX_PLUGIN_ORDER.get(tsyntax, _PLUGIN_ORDER)
    ordered = [name for name in preferred if name in available]
    ordered += sorted(name for name in available if name not in ordered and name != _LAST_RESORT)
    if _LAST_RESORT in available and (not ordered or tsyntax not in JPEGTransferSyntaxes):
        ordered.append(_LAST_RESORT)
    return ordered or [""]


def _decode(path: Path, source, index: int | None, tsyntax: UID, plugins: list[str], told: dict,
            read_as: Dataset | None = None) -> np.ndarray:
    """One frame (``index``; None: the only one) decoded by the first of ``plugins`` that can. ``read_as``: the
    data set as the header was read, decoded from where the file's own walk fails (pydicom reads a data set whose
    elements are implicit VR under an explicit transfer syntax, as highdicom 0.1 wrote them; a walk of the file that
    trusts the transfer syntax does not): its pixel data is then read whole, so the caller offers it only for a file
    that fits in the memory budget."""
    failures = []
    for plugin in plugins:
        try:
            return pixel_array(source, index=index, as_rgb=True, decoding_plugin=plugin, **told)
        except (NotImplementedError, RuntimeError, ImportError) as exc:
            # pydicom lists each plugin's failure on a line of its own, after a preamble
            reason = " ".join(str(exc).split()).replace(
                "Unable to decode as exceptions were raised by all available plugins: ", "")
            if plugin == _LAST_RESORT and failures:
                continue  # GDCM's own word on a codestream it cannot take says nothing ('NoneType' ...): the others'
            failures.append(reason if reason.startswith(f"{plugin}:") or not plugin else f"{plugin}: {reason}")
        except (ValueError, EOFError, OSError, KeyError, AttributeError, TypeError, struct.error) as exc:
            if read_as is not None:
                return _decode(path, read_as, index, tsyntax, plugins, {})
            raise ImageLoadError(path, f"the pixel data is truncated or does not match the header ({exc})") from exc
        except RecursionError as exc:
            raise ImageLoadError(path, "the DICOM header nests sequences too deeply to be read") from exc
    raise ImageLoadError(path, f"its {tsyntax.name} pixel data could not be decoded: corrupt or an unsupported "
                               f"variant ({'; '.join(failures)})")


_SIZED_SYNTAXES = set(JPEGTransferSyntaxes) | set(JPEGLSTransferSyntaxes) | set(JPEG2000TransferSyntaxes)
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}  # 0xF7: JPEG-LS


def _check_codestream_size(path: Path, ds: Dataset, tsyntax: UID, index: int, frames: int, rows: int,
                           columns: int, samples: int = 1) -> str | None:
    """Refuse a JPEG, JPEG-LS or JPEG 2000 frame whose own header declares more samples than Rows x Columns x
    SamplesPerPixel, or a JPEG frame that leaves its height to a DNL marker (not bounded before decoding).
    Returns a warning for a frame cut short (no end-of-image marker: pylibjpeg shows what it has, silently).

    The decoders allocate what the codestream declares, and only then is the result compared with the header:
    a few hundred bytes claiming 30,000 x 30,000 pixels would take gigabytes before being refused. A codestream
    whose header cannot be found (none where the decoders look) is left to the decoders, which fail on it.
    """
    if tsyntax not in _SIZED_SYNTAXES:
        return
    try:
        element = ds.get_item(0x7FE00010, keep_deferred=True)
        offsets = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        if isinstance(element, RawDataElement) and element.value is None:  # deferred: read this frame only
            with open(path, "rb") as fp:
                fp.seek(element.value_tell)
                frame = get_frame(fp, index, extended_offsets=offsets, number_of_frames=frames)
        else:
            frame = get_frame(element.value, index, extended_offsets=offsets, number_of_frames=frames)
        declared = _codestream_shape(frame)
    except Exception:  # noqa: BLE001 - the encapsulation itself is damaged: the decoder names the problem
        return None
    cut = None
    if frame[:2] == b"\xff\xd8" or frame[:4] == b"\xff\x4f\xff\x51":  # JPEG (-LS) or a JPEG 2000 codestream
        # EOI / EOC near the end, before padding (0x00 or 0xFF). Neither coder lets FF D9 occur in coded data.
        if b"\xff\xd9" not in bytes(frame[-4096:]).rstrip(b"\x00")[-16:]:
            cut = (f"frame {index + 1}'s compressed data ends before its end marker: the file is truncated or "
                   "damaged, and the part of the picture that is missing is shown as the decoder filled it")
    if declared is None:
        return cut
    height, width, components = declared
    if height == 0:
        raise ImageLoadError(path, f"frame {index + 1} is a JPEG image that does not state its height (it leaves it "
                                   "to a DNL marker): not decoded")
    if height * width * max(1, components) > rows * columns * max(1, samples):
        raise ImageLoadError(path, f"frame {index + 1} holds a {width} x {height} pixel compressed image"
                                   f"{f' of {components} components' if components > max(1, samples) else ''}, "
                                   f"larger than the {columns} x {rows} its header declares: not decoded")
    return cut


def _codestream_shape(src: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) that a JPEG, JPEG-LS or JPEG 2000 codestream (or JP2 file) declares, read as
    the decoders read it; None where no frame header is found (the decoders then find none either)."""
    src = bytes(src)
    if src[:2] == b"\xff\xd8":
        return _jpeg_shape(src)
    if src[:4] == b"\xff\x4f\xff\x51":
        return _siz_shape(src, 0)
    at = 0  # JP2: boxes (length, type) up to the contiguous codestream box
    while at + 8 <= len(src):
        length, kind = struct.unpack_from(">I4s", src, at)
        header = 8
        if length == 1:
            if at + 16 > len(src):
                return None
            length, header = struct.unpack_from(">Q", src, at + 8)[0], 16
        elif length == 0:
            length = len(src) - at  # the last box runs to the end
        if kind == b"jp2c":
            return _siz_shape(src, at + header) if src[at + header : at + header + 4] == b"\xff\x4f\xff\x51" \
                else None
        if length < header:
            return None
        at += length
    return None


def _siz_shape(src: bytes, at: int) -> tuple[int, int, int] | None:
    """A JPEG 2000 codestream's size (SIZ follows SOC at ``at``)."""
    if at + 42 > len(src):
        return None
    width, height, left, top = struct.unpack_from(">IIII", src, at + 8)
    components = struct.unpack_from(">H", src, at + 40)[0]
    return max(0, height - top), max(0, width - left), components


def _jpeg_shape(src: bytes) -> tuple[int, int, int] | None:
    """A JPEG (or JPEG-LS) frame's size from its SOF segment, markers walked as libjpeg does: bytes between
    segments that are no marker (a stray byte after SOI) are skipped, as are fill bytes."""
    at = 2
    end = len(src)
    while at + 1 < end:
        if src[at] != 0xFF:
            at += 1  # extraneous data: libjpeg warns and looks on
            continue
        marker = src[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker == 0x00:  # a stuffed zero, not a marker
            at += 2
        elif marker in _JPEG_SOF:
            if at + 10 > end:
                return None
            height, width = struct.unpack_from(">HH", src, at + 5)
            return height, width, src[at + 9]
        elif marker in (0xD9, 0xDA):  # EOI, or scan data before any frame header: nothing a decoder can size
            return None
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
        else:
            if at + 4 > end:
                return None
            at += 2 + struct.unpack_from(">H", src, at + 2)[0]
    return None


def _modality_tag(ds: Dataset) -> str:
    tag = str(ds.get("Modality", "")).upper()
    body = str(ds.get("BodyPartExamined", "")).upper()
    if tag in ("CR", "DX") and body == "BREAST":
        return "MG"  # mammograms are sometimes stored as plain radiographs
    return tag


def _color_to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    """Colour samples of ``bits`` significant bits to 8: by the depth the file states, not by the frame's own
    maximum (a dark 16-bit frame would be brightened, 12-bit colour darkened, and a cine would flicker)."""
    if arr.dtype == np.uint8:
        return arr
    return (arr.astype(np.uint32) >> max(int(bits) - 8, 0)).clip(0, 255).astype(np.uint8)


def _color_bits(ds: Dataset, photometric: str) -> int:
    """Significant bits of the colour samples: the palette's entries (its descriptor) or BitsStored."""
    try:
        if photometric == "PALETTE COLOR":
            return int(ds.RedPaletteColorLookupTableDescriptor[2])
        return int(ds.get("BitsStored", ds.BitsAllocated))
    except (TypeError, ValueError, IndexError, AttributeError, KeyError):
        return 16 if int(ds.BitsAllocated) > 8 else 8


def _functional_group(ds: Dataset, sequence: str, frame: int = 0) -> Dataset | None:
    """The item of a functional-group macro that applies to ``frame`` (enhanced objects): the shared one, else that
    frame's own (a macro is either shared or per frame, PS3.3 C.7.6.16)."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0] and shared[0][sequence].value:
        return shared[0][sequence][0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if frame < len(per_frame) and sequence in per_frame[frame] and per_frame[frame][sequence].value:
        return per_frame[frame][sequence][0]
    return None


def _rescale(ds: Dataset, frame: int) -> tuple[float, float] | None:
    """(slope, intercept) of ``frame`` where an enhanced object states them in its Pixel Value Transformation
    macro rather than at the top level (where ``apply_modality_lut`` reads them): Enhanced CT's Hounsfield units;
    or where the top level states one of the two only (``apply_modality_lut`` needs both and had ignored a PET's
    slope): the other as the identity (slope 1, intercept 0), which the loader's warning says."""
    if "ModalityLUTSequence" in ds:
        return None
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        if _one_rescale_attribute(ds) is None:
            return None
        return _number(ds.get("RescaleSlope"), 1.0), _number(ds.get("RescaleIntercept"), 0.0)
    item = _functional_group(ds, "PixelValueTransformationSequence", frame)
    if item is None or "RescaleSlope" not in item:
        return None
    return float(item.RescaleSlope), float(item.get("RescaleIntercept", 0) or 0)


def _one_rescale_attribute(ds: Dataset) -> str | None:
    """The one of RescaleSlope and RescaleIntercept the top level states without the other (None: both or none)."""
    present = [name for name in ("RescaleSlope", "RescaleIntercept") if ds.get(name) not in (None, "")]
    return present[0] if len(present) == 1 else None


def _number(value, default: float) -> float:
    return default if value in (None, "") else float(value)


def _modality_values(arr: np.ndarray, ds: Dataset, frame: int) -> np.ndarray:
    """Stored values to the modality's own (HU for CT), from the top-level attributes or the frame's macro."""
    rescale = _rescale(ds, frame)
    if rescale is None:
        return apply_modality_lut(arr, ds).astype(np.float32, copy=False)
    slope, intercept = rescale
    return (arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32, copy=False)


VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")  # the VOILUTFunction values DICOM defines (C.11.2.1.3)


def _voi_function(source: Dataset) -> tuple[str, str | None]:
    """(the VOI LUT function a window is drawn with, the value stated where it is none DICOM defines): LINEAR, as
    where none is stated, for a value no viewer knows (a vendor's 'FOO' had made every picture of the file fail)."""
    stated = str(source.get("VOILUTFunction", "") or "").strip().upper()
    if not stated or stated in VOI_FUNCTIONS:
        return stated or "LINEAR", None
    return "LINEAR", stated


def _window_presets(ds: Dataset, keep_invalid: bool = False, frame: int = 0) -> list[WindowPreset]:
    """The windows the file states (top level), else those ``frame`` states in its Frame VOI LUT macro (enhanced
    objects: shared by all frames or each frame's own)."""
    source = ds if "WindowCenter" in ds else _functional_group(ds, "FrameVOILUTSequence", frame)
    if source is None or "WindowCenter" not in source or "WindowWidth" not in source:
        return []
    centers = _as_list(source.WindowCenter)
    widths = _as_list(source.WindowWidth)
    names = _as_list(source.get("WindowCenterWidthExplanation", []))
    function = _voi_function(source)[0]
    presets = []
    for i, (c, w) in enumerate(zip(centers, widths)):
        name = str(names[i]) if i < len(names) and str(names[i]).strip() else f"DICOM window {i + 1}"
        try:
            preset = WindowPreset(name, float(c), float(w), function)
        except (TypeError, ValueError):
            preset = WindowPreset(name, math.nan, math.nan, function)
        if _valid_window(preset):
            preset = drawable_window(name, preset.center, preset.width, function)
        if keep_invalid or _valid_window(preset):
            presets.append(preset)
    return presets


def _default_renderer(ds: Dataset, padding: tuple[float, float] | None) -> tuple[DefaultRenderer, FrameWindow]:
    """The VOI the file asks for (its VOI LUT sequence, else the first window it states for that frame, else the
    full stored range of 8-bit data as stored, else each frame's automatic window, ``padding`` left out), and the
    window each frame's picture is thereby drawn in (for a VOI LUT, the line through the values it maps to a quarter
    and three quarters of full brightness: exact for a linear LUT)."""
    try:
        table, first = _voi_table(ds, ds.VOILUTSequence[0]) if ds.get("VOILUTSequence") else (None, 0)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        table = None  # a damaged VOI LUT: the file's window, else auto, as if it had none
    if table is not None:
        lo, hi = float(table.min()), float(table.max())

        def render(values: np.ndarray, frame: int) -> np.ndarray:
            index = np.clip(np.rint(values) - first, 0, table.size - 1).astype(np.intp)
            return rescale_to_uint8(table[index], lo, hi)

        levels = rescale_to_uint8(table, lo, hi).astype(np.float32)
        quarter, three = int(np.argmax(levels >= 63.75)), int(np.argmax(levels >= 191.25))
        rising = levels[-1] > levels[0] and three >= quarter
        equivalent = (WindowPreset(VOI_LUT, first + (quarter + three) / 2.0, max(2.0 * (three - quarter), 1.0),
                                   "LINEAR_EXACT") if rising else WindowPreset(VOI_LUT, first + table.size / 2.0,
                                                                               float(table.size), "LINEAR_EXACT"))
        return render, lambda values, frame: equivalent
    stored = _stored_range_preset(ds)
    owns: dict[int, WindowPreset | None] = {}  # each frame's own window (an enhanced object's frames state theirs)

    def window(values: np.ndarray, frame: int) -> WindowPreset:
        if frame not in owns:
            found = _window_presets(ds, frame=frame)
            owns[frame] = found[0] if found else None
        if owns[frame] is not None:
            return owns[frame]
        if stored is not None and _identity_rescale(ds, frame):
            return stored  # 8-bit data without a window is shown as stored, as the same picture in a PNG is
        return auto_preset(_without_padding(values, padding))

    def render(values: np.ndarray, frame: int) -> np.ndarray:
        preset = window(values, frame)
        return apply_window(values, preset.center, preset.width, preset.function)

    return render, window


def _identity_rescale(ds: Dataset, frame: int) -> bool:
    """The modality values of ``frame`` are its stored values: no Modality LUT, no rescale other than 1 and 0 (at the
    top level, both or one of them: ``_rescale``, or in the frame's own macro)."""
    if ds.get("ModalityLUTSequence"):
        return False
    try:
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            return float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0
        rescale = _rescale(ds, frame)
    except (TypeError, ValueError, AttributeError, IndexError, KeyError):
        return False
    return rescale is None or (rescale[0] == 1.0 and rescale[1] == 0.0)


def _stored_range_preset(ds: Dataset) -> WindowPreset | None:
    """The window over the whole stored range 0..2**BitsStored - 1 of unsigned integer greyscale data of at most
    8 bits whose values are the stored ones: the default picture of such a file without a window or VOI LUT (for
    8 bits, the pixels as they are, as a PNG or JPEG of the same picture is shown; an automatic window would stretch
    a dim sonogram's contrast, which the models never saw in training). None for any other data."""
    try:
        bits = int(ds.get("BitsStored", ds.BitsAllocated))
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    except (TypeError, ValueError, AttributeError):
        return None
    if "PixelData" not in ds or signed or not 1 <= bits <= 8 or not _identity_rescale(ds, 0):
        return None
    top = float(2**bits - 1)
    return WindowPreset("Full range", top / 2.0, top, "LINEAR_EXACT")


def _padding(ds: Dataset) -> tuple[float, float] | None:
    """The modality values (after rescale) that PixelPaddingValue (to PixelPaddingRangeLimit) marks as no patient:
    the air outside a CT's scan circle, which would otherwise pull an automatic window far below the tissue."""
    try:
        if "PixelPaddingValue" not in ds:
            return None
        ends = [float(ds.PixelPaddingValue), float(ds.get("PixelPaddingRangeLimit", ds.PixelPaddingValue))]
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        return None
    lo, hi = sorted(v * slope + intercept for v in ends)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def _without_padding(values: np.ndarray, padding: tuple[float, float] | None) -> np.ndarray:
    """The values that show the patient (all of them where padding is unknown or would leave almost nothing)."""
    if padding is None:
        return values
    kept = values[(values < padding[0]) | (values > padding[1])]
    return kept.reshape(1, -1) if kept.size >= 16 else values  # 2-D, as a picture is


def _voi_table(ds: Dataset, item: Dataset) -> tuple[np.ndarray, int]:
    """A VOI LUT's entries and the first value it maps (PS3.3 C.11.2.1.1). Read here rather than through pydicom's
    ``apply_voi``, which indexes the table with integers of the entries' own 8 bits when the output is 8-bit:
    a 4096-entry 8-bit LUT (12-bit CR/DX) then wraps every 256 values into a sawtooth."""
    entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
    if first >= 32768 and int(ds.get("PixelRepresentation", 0) or 0) == 1:
        first -= 65536  # the first value mapped is signed where the pixels are (read as US here)
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):  # OW: one 16-bit word per entry, whatever the entries' bit depth
        little = (getattr(ds, "original_encoding", None) or (None, True))[1] is not False
        table = np.frombuffer(bytes(data), "<u2" if little else ">u2", count=min(entries, len(data) // 2))
    else:
        table = np.asarray(_as_list(data), np.float64)
    if table.size == 0:
        raise ValueError("the VOI LUT holds no entries")
    return table.astype(np.float32), first


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


# A pixel between 10 nm (beyond any microscope's) and 10 cm (no picture): outside, the header is wrong.
MIN_SPACING_MM, MAX_SPACING_MM = 1e-5, 100.0


def _safe_spacing(ds: Dataset) -> tuple[float, float] | None:
    try:
        return _pixel_spacing(ds)
    except (TypeError, ValueError, IndexError, AttributeError, KeyError):
        return None  # an unreadable spacing is no spacing: lengths are then given in pixels


def _slide_size(ds: Dataset) -> tuple[int, int] | None:
    """(rows, columns) of a whole-slide image's total pixel matrix where it is larger than one frame (VL Whole
    Slide Microscopy stores the slide as tiles); None for any other image."""
    try:
        rows, columns = int(ds.get("TotalPixelMatrixRows", 0) or 0), int(ds.get("TotalPixelMatrixColumns", 0) or 0)
    except (TypeError, ValueError):
        return None
    if rows > int(ds.Rows) or columns > int(ds.Columns):
        return rows, columns
    return None


def _magnification(ds: Dataset) -> float | None:
    """The Estimated Radiographic Magnification Factor, where the spacing in use is the detector's
    (ImagerPixelSpacing, no PixelSpacing calibrated to the patient) and the factor is a plausible one above 1."""
    if "PixelSpacing" in ds or "ImagerPixelSpacing" not in ds:
        return None
    try:
        factor = float(ds.get("EstimatedRadiographicMagnificationFactor", 0) or 0)
    except (TypeError, ValueError):
        return None
    return factor if math.isfinite(factor) and 1.0 < factor <= 4.0 else None


def _frame_spacings(ds: Dataset, frames: int) -> set[tuple[float, ...]]:
    """The distinct pixel spacings the first ``frames`` frames of an enhanced object state in their own Pixel
    Measures macros (empty where the macro is shared, absent or unreadable)."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and "PixelMeasuresSequence" in shared[0]:
        return set()
    found = set()
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    for index in range(min(frames, len(per_frame))):
        item = per_frame[index]
        measures = item.get("PixelMeasuresSequence")
        try:
            found.add(tuple(round(float(v), 6) for v in _as_list(measures[0].PixelSpacing)))
        except (TypeError, ValueError, IndexError, AttributeError, KeyError):
            continue
    return found


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from the attribute the modality actually uses."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        if keyword in ds and ds[keyword].value:
            values = _as_list(ds[keyword].value)
            if len(values) >= 2 and float(values[0]) > 0 and float(values[1]) > 0:
                return float(values[0]), float(values[1])
    measures = _functional_group(ds, "PixelMeasuresSequence")
    if measures is not None and "PixelSpacing" in measures:
        values = _as_list(measures.PixelSpacing)
        return float(values[0]), float(values[1])
    scales = _region_scales(ds)
    return next(iter(scales)) if len(scales) == 1 else None  # regions of several scales: none fits the image


def _pixel_aspect(ds: Dataset) -> float | None:
    """A pixel's height over its width from PixelAspectRatio (vertical\\horizontal), where it states two positive
    numbers other than equal ones; else None."""
    try:
        values = [float(v) for v in _as_list(ds.get("PixelAspectRatio") or [])]
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or min(values) <= 0 or not all(math.isfinite(v) for v in values) or values[0] == values[1]:
        return None
    return values[0] / values[1]


HEADER_TEXTS = ("Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName",
                "ProcessingFunction", "TransducerType")


def _header_texts(ds: Dataset) -> dict[str, str]:
    """The HEADER_TEXTS the file states (non-empty), for ``ImageRecord.header_texts``."""
    texts = {keyword: str(ds.get(keyword, "") or "").strip() for keyword in HEADER_TEXTS}
    return {keyword: text for keyword, text in texts.items() if text}


def _region_boxes(ds: Dataset, factor: int) -> tuple[tuple[int, int, int, int], ...]:
    """The ultrasound regions' boxes (y0, y1, x0, x1), end-exclusive, in the picture as loaded (``factor``)."""
    boxes = []
    try:
        for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
            x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
            x1, y1 = int(region.RegionLocationMaxX1), int(region.RegionLocationMaxY1)
            if x1 > x0 >= 0 and y1 > y0 >= 0:
                boxes.append((y0 // factor, y1 // factor + 1, x0 // factor, x1 // factor + 1))
    except (TypeError, ValueError, AttributeError, KeyError):
        return ()
    return tuple(boxes)


def _safe_region_scales(ds: Dataset) -> set[tuple[float, float]]:
    try:
        return _region_scales(ds)
    except (TypeError, ValueError, AttributeError, KeyError):
        return set()


def _region_scales(ds: Dataset) -> set[tuple[float, float]]:
    """The (row, column) mm per pixel of the ultrasound regions calibrated in cm (units code 3, PS3.3
    C.8.5.5.1.15; regions in other units carry no length). Several for a dual view of two depths."""
    scales = set()
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        if region.get("PhysicalUnitsXDirection") == 3 and region.get("PhysicalUnitsYDirection") == 3:
            dy, dx = abs(float(region.PhysicalDeltaY)), abs(float(region.PhysicalDeltaX))
            if dx > 0 and dy > 0:
                scales.add((round(dy * 10.0, 9), round(dx * 10.0, 9)))
    return scales


def _study(ds: Dataset) -> StudyInfo:
    def text(keyword: str) -> str:
        return str(ds.get(keyword, "") or "")

    return StudyInfo(
        patient_name=text("PatientName"),
        patient_id=text("PatientID"),
        birth_date=text("PatientBirthDate"),
        sex=text("PatientSex"),
        study_date=text("StudyDate"),
        institution=text("InstitutionName"),
        accession_number=text("AccessionNumber"),
        study_instance_uid=text("StudyInstanceUID"),
        series_instance_uid=text("SeriesInstanceUID"),
        sop_instance_uid=text("SOPInstanceUID"),
        study_description=text("StudyDescription"),
    )


def _tag_list(ds: Dataset, limit: int = 160) -> list[tuple[str, str, str]]:
    """Flat (tag, keyword, value) rows for the metadata browser; sequences are indented."""
    rows: list[tuple[str, str, str]] = []

    def walk(dataset: Dataset, depth: int) -> None:
        # By tag, never `for elem in dataset`: that reads every deferred element (the whole pixel data of a
        # multi-frame file, a huge private blob) into memory.
        for tag in sorted(dataset.keys()):
            if keyword_for_tag(tag) in _PIXEL_KEYWORDS or len(rows) > 2000:
                continue
            raw = dataset.get_item(tag, keep_deferred=True)
            if isinstance(raw, RawDataElement) and raw.value is None and raw.length:  # deferred: left on disk
                name = ("  " * depth) + (keyword_for_tag(tag) or "Private tag data")
                rows.append((str(Tag(tag)), name, f"<{raw.length} bytes, not read>"))
                continue
            elem = dataset[tag]
            name = ("  " * depth) + (elem.keyword or elem.name)
            if elem.VR == "SQ":
                rows.append((str(elem.tag), name, f"<sequence of {len(elem.value)} item(s)>"))
                for item in elem.value[:4]:
                    walk(item, depth + 1)
                continue
            value = elem.repval if elem.VR in ("OB", "OW", "UN", "OF", "OD") else str(elem.value)
            rows.append((str(elem.tag), name, value[:limit]))

    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        walk(meta, 0)
    walk(ds, 0)
    return rows
