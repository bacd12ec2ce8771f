"""DICOM files from a fuzz hunt, each written small in the test's folder: a stray byte that made GDCM abort the
process, a second transfer syntax that hid a deflate bomb, lying frame counts, sequences of millions of items or
nested a thousand deep, files of zeros, size headers hidden behind a big JP2 box or a stray byte, frames cut short,
and damaged lookup tables. Each is refused with a clear message or loaded with a warning, quickly and in little
memory; never a crash."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

import core.imaging.dicom as dicom
from core.errors import ImageLoadError
from core.imaging import load_image
from tests.conftest import REPO

EXPLICIT, DEFLATED, JPEG_BASELINE, J2K = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50",
                                          "1.2.840.10008.1.2.4.90")
SC = "1.2.840.10008.5.1.4.1.1.7"
_LONG = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"}


def el(group: int, element: int, vr: str, value: bytes | str, length: int | None = None) -> bytes:
    """One explicit VR little-endian element."""
    code = vr.encode()
    if isinstance(value, str):
        value = value.encode()
        value += (b"\0" if code == b"UI" else b" ") * (len(value) % 2)
    n = len(value) if length is None else length
    if code in _LONG:
        return struct.pack("<HH", group, element) + code + b"\0\0" + struct.pack("<I", n) + value
    return struct.pack("<HH", group, element) + code + struct.pack("<H", n) + value


def meta(*syntaxes: str) -> bytes:
    body = el(2, 1, "OB", b"\0\1") + el(2, 2, "UI", SC) + el(2, 3, "UI", "1.2.3.4.5")
    body += b"".join(el(2, 0x10, "UI", syntax) for syntax in syntaxes) + el(2, 0x12, "UI", "1.2.3.999")
    return b"\0" * 128 + b"DICM" + el(2, 0, "UL", struct.pack("<I", len(body))) + body


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def image_header(rows: int, columns: int, bits: int = 8, frames: int | None = None, photometric: str = "MONOCHROME2",
                 extra: bytes = b"", tail: bytes = b"") -> bytes:
    """Elements in tag order: ``extra`` between (0008) and (0028), ``tail`` after (0028) (before the pixels)."""
    header = el(8, 0x16, "UI", SC) + el(8, 0x18, "UI", "1.2.3.4.5") + el(8, 0x60, "CS", "OT") + extra
    header += el(0x28, 2, "US", us(1)) + el(0x28, 4, "CS", photometric)
    if frames is not None:
        header += el(0x28, 8, "IS", str(frames))
    header += (el(0x28, 0x10, "US", us(rows)) + el(0x28, 0x11, "US", us(columns)) + el(0x28, 0x100, "US", us(bits))
               + el(0x28, 0x101, "US", us(bits)) + el(0x28, 0x102, "US", us(bits - 1)) + el(0x28, 0x103, "US", us(0)))
    return header + tail


def native(rows: int, columns: int, data: bytes, bits: int = 8, **kw) -> bytes:
    data += b"\0" * (len(data) % 2)
    return meta(EXPLICIT) + image_header(rows, columns, bits, **kw) + el(0x7FE0, 0x10, "OB", data)


def encapsulated(frames: list[bytes]) -> bytes:
    out = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
    for frame in frames:
        frame += b"\0" * (len(frame) % 2)
        out += struct.pack("<HHI", 0xFFFE, 0xE000, len(frame)) + frame
    out += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return struct.pack("<HH", 0x7FE0, 0x10) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFFF) + out


def small_jpeg(side: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.arange(side * side) % 251).astype(np.uint8).reshape(side, side)).save(buffer, "JPEG",
                                                                                               quality=90)
    return buffer.getvalue()


def with_sof(jpeg: bytes, height: int, width: int) -> bytes:
    data, at = bytearray(jpeg), 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def sequence(tag: tuple[int, int], items: bytes) -> bytes:
    return struct.pack("<HH", *tag) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF) + items + \
        struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def empty_items(n: int) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, 0) * n


def nested(depth: int) -> bytes:
    inner = el(0x10, 0x10, "PN", "X")
    for _ in range(depth):
        inner = sequence((0x40, 0x275), struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner +
                         struct.pack("<HHI", 0xFFFE, 0xE00D, 0))
    return inner


def deflated(body: bytes, *syntaxes: str) -> bytes:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    return meta(*syntaxes) + squeeze.compress(body) + squeeze.flush()


def _refused(path: Path, words: str) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert words in str(info.value), str(info.value)
    return str(info.value)


# ----- 1: a stray byte after SOI made GDCM throw a C++ exception: the process aborted (SIGABRT)

def test_a_stray_byte_in_a_jpeg_frame_is_decoded_without_gdcm(tmp_path):
    jpeg = small_jpeg()
    path = tmp_path / "junk.dcm"
    path.write_bytes(meta(JPEG_BASELINE) + image_header(64, 64) + encapsulated([jpeg[:2] + b"\0" + jpeg[2:]]))
    run = subprocess.run([sys.executable, str(REPO / "main.py"), "info", str(path)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-800:])
    assert json.loads(run.stdout)["rows"] == 64
    for syntax in (JPEG_BASELINE, "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"):
        assert "gdcm" not in dicom._decoding_plugins(pydicom.uid.UID(syntax))


def test_plugins_are_ordered_per_syntax_with_gdcm_last_outside_the_jpeg_processes(monkeypatch):
    class Decoder:
        available_plugins = ("gdcm", "pillow", "pyjpegls", "pylibjpeg", "pydicom")

    monkeypatch.setattr(dicom, "get_decoder", lambda syntax: Decoder)
    order = {syntax: dicom._decoding_plugins(pydicom.uid.UID(syntax)) for syntax in (
        JPEG_BASELINE, "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", J2K,
        "1.2.840.10008.1.2.5")}
    assert order[JPEG_BASELINE][:2] == ["pillow", "pylibjpeg"] and "gdcm" not in order[JPEG_BASELINE]
    assert "gdcm" not in order["1.2.840.10008.1.2.4.70"]
    for jpeg_ls in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"):  # pyjpegls: 3x faster than pylibjpeg
        assert order[jpeg_ls][:2] == ["pyjpegls", "pylibjpeg"] and order[jpeg_ls][-1] == "gdcm"
    assert order[J2K][:2] == ["pylibjpeg", "pydicom"] and order[J2K][-1] == "gdcm"
    assert order["1.2.840.10008.1.2.5"][:2] == ["pylibjpeg", "pydicom"] and order["1.2.840.10008.1.2.5"][-1] == "gdcm"
    Decoder.available_plugins = ("gdcm",)  # the only one installed: tried, JPEG or not
    assert dicom._decoding_plugins(pydicom.uid.UID(JPEG_BASELINE)) == ["gdcm"]


# ----- 2: a second (0002,0010) hid a deflated data set from the inflation guard

def test_a_meta_group_stating_two_transfer_syntaxes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "10")  # inflation limit 2 MiB; the data set inflates to 8 MiB
    body = image_header(64, 64, tail=el(0x29, 0x1000, "OB", bytes(8 << 20))) + el(0x7FE0, 0x10, "OB", bytes(4096))
    (tmp_path / "twice.dcm").write_bytes(deflated(body, EXPLICIT, DEFLATED))
    _refused(tmp_path / "twice.dcm", "transfer syntax twice")
    (tmp_path / "once.dcm").write_bytes(deflated(body, DEFLATED))
    _refused(tmp_path / "once.dcm", "too large")


# ----- 3: NumberOfFrames of 2,147,483,647 on a few bytes

def test_a_lying_frame_count_is_bounded_by_the_pixel_data(tmp_path):
    path = tmp_path / "frames.dcm"
    path.write_bytes(native(1, 1, b"\1\2", frames=2147483647))
    record = load_image(path)
    assert record.frames == 2
    assert any("holds only 2" in w for w in record.warnings), record.warnings
    full = pydicom.dcmread(path, defer_size="512 KB", force=True)
    assert dicom.frame_counts(full)[0] == 2
    with open(path, "rb") as fh:  # as the series index reads it: no pixel data in the data set
        header = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
        assert dicom.frame_counts(header, fh)[0] == 2
    # encapsulated: one fragment cannot hold 100,000 frames
    (tmp_path / "jpeg.dcm").write_bytes(meta(JPEG_BASELINE) + image_header(64, 64, frames=100000)
                                        + encapsulated([small_jpeg()]))
    assert load_image(tmp_path / "jpeg.dcm").frames == 1
    # a few frames missing (a file cut short) are still listed, each named when read
    (tmp_path / "short.dcm").write_bytes(native(8, 8, bytes(128), frames=5))
    short = load_image(tmp_path / "short.dcm")
    assert short.frames == 5 and short.values(1).shape == (8, 8)
    with pytest.raises(ImageLoadError, match="frame 3 is missing"):
        short.values(2)


# ----- 4: two million empty per-frame items took 84 s and 2.7 GB

def test_sequence_items_beyond_the_frames_are_refused_before_parsing(tmp_path, monkeypatch):
    per_frame = sequence((0x5200, 0x9230), empty_items(20000))
    (tmp_path / "per_frame.dcm").write_bytes(meta(EXPLICIT) + image_header(8, 8, frames=2, tail=per_frame)
                                             + el(0x7FE0, 0x10, "OB", bytes(128)))
    _refused(tmp_path / "per_frame.dcm", "per-frame functional groups hold more than 1,002 items for the 2 frame(s)")
    monkeypatch.setattr(dicom, "MAX_SEQUENCE_ITEMS", 1000)
    other = sequence((0x40, 0x275), empty_items(1500))
    (tmp_path / "items.dcm").write_bytes(meta(EXPLICIT) + image_header(8, 8, extra=other)
                                         + el(0x7FE0, 0x10, "OB", bytes(64)))
    _refused(tmp_path / "items.dcm", "more than 1,000 sequence items")


def test_an_enhanced_mr_of_many_frames_and_functional_groups_loads(tmp_path, monkeypatch):
    # a Philips 4D fMRI / DCE: some 20 functional group items a frame; 12,000 frames hold 240,000 items
    monkeypatch.setattr(dicom, "MAX_SEQUENCE_ITEMS", 20_000)  # the same proportions, ten times smaller
    one = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + el(0x20, 0x9157, "UL", struct.pack("<I", 1)) + \
        struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    group = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + \
        b"".join(sequence((0x20, 0x9111 + i), one) for i in range(19)) + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    frames = 1200
    path = tmp_path / "fmri.dcm"
    path.write_bytes(native(1, 1, bytes(frames), frames=frames, tail=sequence((0x5200, 0x9230), group * frames)))
    record = load_image(path)
    assert record.frames == frames and not any("frames" in w for w in record.warnings), record.warnings
    # the frames a header declares count only as far as the file can hold them: 20,000 empty items and a
    # hundred thousand 64 x 64 frames declared on 160 KB are refused
    per_frame = sequence((0x5200, 0x9230), empty_items(30_000))
    (tmp_path / "liar.dcm").write_bytes(meta(EXPLICIT) + image_header(64, 64, bits=16, frames=100_000, tail=per_frame)
                                        + el(0x7FE0, 0x10, "OB", bytes(8192)))
    _refused(tmp_path / "liar.dcm", "sequence items: too large to read")


# ----- 5: a file of zeros went through pydicom element by empty element (11 s per 10 MB), twice

def test_zeros_are_not_parsed_as_headerless_dicom(tmp_path, monkeypatch):
    (tmp_path / "zeros.dcm").write_bytes(bytes(2 << 20))
    calls = []
    monkeypatch.setattr(dicom.pydicom, "dcmread", lambda *a, **k: calls.append(a) or pytest.fail("parsed"))
    _refused(tmp_path / "zeros.dcm", "not a recognised image format")
    assert calls == []
    monkeypatch.undo()
    # a real headerless data set whose first group is not 0002/0008 (here 0010) still loads
    data = image_header(4, 4)
    body = el(0x10, 0x20, "LO", "ID") + data[data.index(struct.pack("<HH", 0x28, 2)):]
    body += el(0x7FE0, 0x10, "OB", bytes(16))
    (tmp_path / "headerless.dcm").write_bytes(body)
    assert load_image(tmp_path / "headerless.dcm").rows == 4


# ----- 6: a deflated data set within the guard took twice its inflated size and more

def test_the_inflation_limit_counts_the_copies_pydicom_keeps(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "10")  # was 10/3 MiB inflated; now 10/5
    body = image_header(64, 64, tail=el(0x29, 0x1000, "OB", bytes(3 << 20))) + el(0x7FE0, 0x10, "OB", bytes(4096))
    (tmp_path / "three_mb.dcm").write_bytes(deflated(body, DEFLATED))
    _refused(tmp_path / "three_mb.dcm", "too large")
    honest = image_header(64, 64) + el(0x7FE0, 0x10, "OB", bytes(range(256)) * 16)
    (tmp_path / "honest.dcm").write_bytes(deflated(honest, DEFLATED))
    assert load_image(tmp_path / "honest.dcm").values(0).max() == 255


# ----- 7: the size of a codestream hidden behind a 70 KB JP2 box or a stray byte

def test_codestream_sizes_are_found_behind_boxes_and_stray_bytes(tmp_path):
    siz = b"\xff\x4f\xff\x51" + struct.pack(">HH8IH", 41, 0, 2000, 2000, 0, 0, 2000, 2000, 0, 0, 1) + b"\x07\x01\x01"

    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    jp2 = (box(b"jP  ", b"\r\n\x87\n") + box(b"ftyp", b"jp2 \0\0\0\0jp2 ") + box(b"xml ", b" " * 70000)
           + box(b"jp2c", siz + b"\xff\xd9"))
    assert dicom._codestream_shape(jp2) == (2000, 2000, 1)
    (tmp_path / "jp2.dcm").write_bytes(meta(J2K) + image_header(64, 64) + encapsulated([jp2]))
    _refused(tmp_path / "jp2.dcm", "2000 x 2000 pixel compressed image, larger than the 64 x 64")
    lie = with_sof(small_jpeg(), 2000, 2000)
    assert dicom._codestream_shape(lie[:2] + b"\0\0" + lie[2:]) == (2000, 2000, 1)
    (tmp_path / "jpeg.dcm").write_bytes(meta(JPEG_BASELINE) + image_header(64, 64)
                                        + encapsulated([lie[:2] + b"\0" + lie[2:]]))
    _refused(tmp_path / "jpeg.dcm", "larger than the 64 x 64")


# ----- 8: frames cut short, or pixel data far larger than the header says, analysed without a word

def test_truncated_and_oversized_pixel_data_are_warned(tmp_path):
    jpeg = small_jpeg()
    (tmp_path / "half.dcm").write_bytes(meta(JPEG_BASELINE) + image_header(64, 64)
                                        + encapsulated([jpeg[: len(jpeg) // 2]]))
    assert any("ends before its end marker" in w for w in load_image(tmp_path / "half.dcm").warnings)
    (tmp_path / "big.dcm").write_bytes(native(16, 16, bytes(512 * 512)))
    assert any("more than the 256" in w for w in load_image(tmp_path / "big.dcm").warnings)
    (tmp_path / "small.dcm").write_bytes(native(64, 64, bytes(100)))
    _refused(tmp_path / "small.dcm", "less than one 64 x 64 frame")


# ----- 9: messages that named numpy, struct or Python instead of the damaged part of the file

def test_damaged_parts_are_named(tmp_path):
    lut = struct.pack("<HHH", 0, 0, 16)
    palette = (el(0x28, 0x1101, "US", lut) + el(0x28, 0x1102, "US", lut) + el(0x28, 0x1103, "US", lut)
               + el(0x28, 0x1201, "OW", b"\0\0") + el(0x28, 0x1202, "OW", b"\0\0") + el(0x28, 0x1203, "OW", b"\0\0"))
    (tmp_path / "palette.dcm").write_bytes(native(8, 8, bytes(64), photometric="PALETTE COLOR", tail=palette))
    _refused(tmp_path / "palette.dcm", "palette colour lookup tables are damaged")
    item = (struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + el(0x28, 0x3002, "US", lut)
            + el(0x28, 0x3006, "OW", b"\0\0") + struct.pack("<HHI", 0xFFFE, 0xE00D, 0))
    (tmp_path / "modality_lut.dcm").write_bytes(native(8, 8, bytes(128), bits=16,
                                                       tail=sequence((0x28, 0x3000), item)))
    _refused(tmp_path / "modality_lut.dcm", "Modality LUT is damaged")
    for depth in (80, 400):
        (tmp_path / f"nested{depth}.dcm").write_bytes(meta(EXPLICIT) + image_header(8, 8, extra=nested(depth))
                                                      + el(0x7FE0, 0x10, "OB", bytes(64)))
        _refused(tmp_path / f"nested{depth}.dcm", "nests sequences more than 64 deep")
    (tmp_path / "j2k.dcm").write_bytes(meta(J2K) + image_header(64, 64) + encapsulated([b"\xff\x4f" + bytes(300)]))
    message = _refused(tmp_path / "j2k.dcm", "could not be decoded")
    assert "gdcm" not in message and "NoneType" not in message


def test_megabytes_of_empty_elements_after_a_valid_header_are_refused_at_once(tmp_path, pydicom_file):
    """pydicom parsed 8-byte empty elements at about 1 s per MB; a data set's tags increase (PS3.5 7.1)."""
    import time

    from core.imaging import load_image
    from core.imaging.loader import ImageLoadError

    data = pydicom_file("MR_small.dcm").read_bytes()
    pixels = data.index(b"\xe0\x7f\x10\x00")
    path = tmp_path / "padded.dcm"
    path.write_bytes(data[:pixels] + bytes(8_000_000) + data[pixels:])
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="repeats or misorders"):
        load_image(path)
    assert time.perf_counter() - start < 3
    (tmp_path / "trailing.dcm").write_bytes(data + bytes(4096))  # a writer's block padding after the pixels
    assert load_image(tmp_path / "trailing.dcm").rows == 64
