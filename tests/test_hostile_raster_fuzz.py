"""Raster files from a fuzz hunt that got past the guards: decompression bombs in compressions or tiles the inflation
check did not look at, a PackBits decoder that holds 8 bytes a byte, TIFFs of thousands of pages (or an endless
chain of them), pictures whose data ends long before the size their header declares, and a memory budget that let
1 MB files peak near 3 GB.

Every file is crafted small in tmp_path; where a memory bound is at stake the refusal comes before decoding and the
message is asserted, not the memory.
"""

from __future__ import annotations

import functools
import io
import lzma
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from core.errors import ImageLoadError
from core.imaging import load_image

MiB = 1024**2


def _tiff(path, entries, data: bytes) -> None:
    """A little-endian TIFF: ``data`` at offset 8, then one IFD of ``entries`` (tag, type 3 or 4, value);
    a value "data" is the offset of ``data``, "len" its length."""
    pad = len(data) & 1
    resolved = sorted((tag, kind, 8 if value == "data" else len(data) if value == "len" else value)
                      for tag, kind, value in entries)
    ifd = struct.pack("<H", len(resolved))
    for tag, kind, value in resolved:
        ifd += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(data) + pad) + data + b"\x00" * pad + ifd + b"\x00" * 4)


def _one_strip(path, strip: bytes, compression: int, side: int = 64) -> None:
    """A ``side`` x ``side`` 8-bit grey TIFF in one strip."""
    _tiff(path, [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, compression), (262, 3, 1), (273, 4, "data"),
                 (277, 3, 1), (278, 4, side), (279, 4, "len")], strip)


def _zeros(n: int, codec) -> bytes:
    return b"".join(codec.compress(b"\x00" * (1 << 22)) for _ in range(n >> 22)) + codec.flush()


def _refused(path, words: str) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert words in str(info.value), str(info.value)
    return str(info.value)


# --- 1. TIFF decompression bombs past the inflation check


def test_pixtiff_deflate_strip_bomb_is_refused_before_inflating(tmp_path):
    """Compression 50013 (PIXTIFF) is zlib to tifffile but was not checked: a 1 MB file of 64 x 64 pixels peaked at
    2.1 GB. Here 64 KB of it inflate to 64 MiB."""
    _one_strip(tmp_path / "pixtiff.tif", _zeros(64 * MiB, zlib.compressobj(9)), 50013)
    _refused(tmp_path / "pixtiff.tif", "inflates to more than")


def test_lzma_streams_one_after_another_count_together(tmp_path):
    """lzma decodes every stream of a strip one after another; the check stopped at the end of the first."""
    stream = lzma.compress(b"\x00" * MiB)  # under the bound of a 64 x 64 strip alone
    _one_strip(tmp_path / "streams.tif", stream * 70, 34925)
    _refused(tmp_path / "streams.tif", "too large")
    _one_strip(tmp_path / "one.tif", lzma.compress(bytes(range(64)) * 64), 34925)
    assert load_image(tmp_path / "one.tif").values(0)[0, :3].tolist() == [0, 1, 2]


def test_a_tile_far_larger_than_its_image_is_refused(tmp_path):
    """A 100 x 100 image in one tile declared 8192 x 8192: its inflation was bounded by the tile (64 MiB here, 1 GiB
    in the hunt's file, which peaked at 2.1 GB), not by the image. An honest tile a little larger than its
    image still loads."""
    entries = [(256, 4, 100), (257, 4, 100), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1), (322, 4, 8192),
               (323, 4, 8192), (324, 4, "data"), (325, 4, "len")]
    _tiff(tmp_path / "tile.tif", entries, _zeros(64 * MiB, zlib.compressobj(9)))
    _refused(tmp_path / "tile.tif", "far larger than its 100 x 100 image: too large")
    picture = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    tifffile.imwrite(tmp_path / "honest.tif", picture, tile=(256, 256), compression="zlib")
    assert np.array_equal(load_image(tmp_path / "honest.tif").values(0), picture)


def _packbits_literal_rows(picture: np.ndarray) -> bytes:
    """Each row as literal runs of at most 128 bytes."""
    runs = (row[i:i + 128] for row in picture for i in range(0, row.size, 128))
    return b"".join(bytes([run.size - 1]) + run.tobytes() for run in runs)


def test_packbits_bomb_is_counted_before_decoding(tmp_path):
    """tifffile's PackBits decoder holds 8 bytes a decoded byte, unbounded (an 8 MB file reached 4.7 GB): the runs
    are counted first (18 KB here decode to 1.1 MiB, far beyond a 64 x 64 strip), and a strip stored in far more
    bytes than it can decode to is refused unread."""
    _one_strip(tmp_path / "runs.tif", b"\x81\x00" * 9000, 32773)
    _refused(tmp_path / "runs.tif", "PackBits-compressed strips or tiles inflates to more than")
    _one_strip(tmp_path / "stored.tif", b"\x80" * (MiB + 64 * 1024), 32773)  # no-operation bytes
    _refused(tmp_path / "stored.tif", "is stored in")
    picture = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    _one_strip(tmp_path / "honest.tif", _packbits_literal_rows(picture), 32773)
    assert np.array_equal(load_image(tmp_path / "honest.tif").values(0), picture)


def test_packbits_strip_is_measured_as_its_decoder_holds_it(tmp_path, monkeypatch):
    """One 1 MB PackBits strip costs its decoder some 9 MB: with 5 MiB for one image it does not fit (the strip's
    bytes alone, 3 MB with their copies, did)."""
    picture = np.indices((1000, 1000)).sum(axis=0).astype(np.uint8)
    _one_strip(tmp_path / "big.tif", _packbits_literal_rows(picture), 32773, side=1000)
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "5")
    _refused(tmp_path / "big.tif", "too large to decode here")
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "64")
    assert np.array_equal(load_image(tmp_path / "big.tif").values(0), picture)


# --- 2. TIFFs of many pages


def test_more_pages_than_the_limit_read_only_the_first(tmp_path, monkeypatch):
    """10,000 one-pixel pages took 56 s (tifffile's grouping of pages into series grows with their square); beyond
    the limit only the first pages are read, as frames, with a warning."""
    monkeypatch.setattr("core.imaging.raster.MAX_TIFF_PAGES", 20)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as writer:
        for i in range(50):
            writer.write(np.full((2, 3), i, np.uint8), contiguous=False)
    record = load_image(tmp_path / "pages.tif")
    assert record.frames == 20 and record.values(19)[0, 0] == 19
    assert any("more than 20 pages" in w for w in record.warnings), record.warnings


def _loop_back(path, pages: int, to: int) -> None:
    with tifffile.TiffWriter(path) as writer:
        for i in range(pages):
            writer.write(np.full((2, 2), i, np.uint8), contiguous=False, metadata=None)
    with tifffile.TiffFile(path) as tif:
        offsets = [page.offset for page in tif.pages]
    data = bytearray(path.read_bytes())
    entries = struct.unpack_from("<H", data, offsets[-1])[0]
    struct.pack_into("<I", data, offsets[-1] + 2 + 12 * entries, offsets[to])
    path.write_bytes(bytes(data))


def test_a_chain_of_pages_that_loops_back_late_is_cut_where_it_loops(tmp_path, monkeypatch):
    """tifffile looks for a loop in the chain of image directories once, at its hundredth: a chain of 150 pages
    whose last points back to page 120 was followed without end."""
    monkeypatch.setattr("core.imaging.raster.MAX_TIFF_PAGES", 1000)  # (before the fix: no limit, no loop check)
    _loop_back(tmp_path / "loop.tif", 150, 120)
    record = load_image(tmp_path / "loop.tif")
    assert record.frames == 150 and record.values(149)[0, 0] == 149
    assert any("loops back on itself after page 150" in w for w in record.warnings), record.warnings


@pytest.mark.parametrize("kind", [{"ome": True}, {"imagej": True}, {}])  # {}: tifffile's own shape metadata
def test_stacks_whose_metadata_give_their_series_keep_all_their_pages(tmp_path, kind):
    """A 1,200-page OME-TIFF was cut to 1,000 frames with a warning: tifffile works out the series of OME, ImageJ
    and shaped files in time that grows with the pages (only its generic grouping grows with their square)."""
    stack = (np.arange(1200, dtype=np.uint16)[:, None, None] * np.ones((1, 2, 3), np.uint16))
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack", **kind)
    record = load_image(tmp_path / "stack.tif")
    assert record.frames == 1200, record.warnings
    assert not any("pages (image directories)" in w for w in record.warnings), record.warnings
    assert np.asarray(record.values(1199)).shape == (2, 3)


def test_the_series_is_worked_out_once_per_file(tmp_path, monkeypatch):
    """Each page read opened the file again and grouped all its pages into series again."""
    tifffile.imwrite(tmp_path / "stack.tif", np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5),
                     photometric="minisblack")
    calls = []
    original = tifffile.TiffFile.series.func

    def counted(self):
        calls.append(1)
        return original(self)

    series = functools.cached_property(counted)
    series.__set_name__(tifffile.TiffFile, "series")
    monkeypatch.setattr(tifffile.TiffFile, "series", series)
    record = load_image(tmp_path / "stack.tif")
    assert [int(record.values(i)[0, 0]) for i in range(4)] == [0, 30, 60, 90]
    assert len(calls) == 1, len(calls)


# --- 3. Pictures whose data ends long before their declared size


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, raw: bytes, interlace: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b""))


def _adam7(picture: np.ndarray) -> bytes:
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    return b"".join(b"\x00" + row.tobytes() for x, y, dx, dy in passes for row in picture[y::dy, x::dx] if row.size)


def test_png_whose_data_ends_before_its_last_rows_is_refused(tmp_path):
    """A complete zlib stream holding 10 rows of 4000: Pillow took its end for the end of the picture and the rest
    was analysed as a blank picture. Interlaced too; a whole (uniform, tiny on disk) picture still loads."""
    (tmp_path / "rows.png").write_bytes(_png(400, 400, b"\x00" * (401 * 10)))
    _refused(tmp_path / "rows.png", "the file ends before its last rows (its compressed data holds 10 of the 400 rows")
    picture = np.random.default_rng(5).integers(0, 256, (37, 29), dtype=np.uint8)
    (tmp_path / "interlaced.png").write_bytes(_png(29, 37, _adam7(picture), interlace=1))
    assert np.array_equal(load_image(tmp_path / "interlaced.png").values(0), picture)
    (tmp_path / "interlaced_short.png").write_bytes(_png(29, 37, _adam7(picture)[:-40], interlace=1))
    _refused(tmp_path / "interlaced_short.png", "truncated")
    (tmp_path / "uniform.png").write_bytes(_png(3000, 3000, b"\x00" * (3001 * 3000)))
    assert load_image(tmp_path / "uniform.png").values(0).shape == (3000, 3000)


def _jpeg(picture: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def test_jpeg_too_small_for_its_declared_size_is_refused(tmp_path, monkeypatch):
    """A 64 x 64 JPEG whose frame header says 8000 x 8000 (the hunt's said 29000 x 29000 in 380 bytes and peaked
    at 2.7 GB): every 8 x 8 block costs a Huffman-coded JPEG at least one bit. A real uniform picture, progressive,
    is far above that and still loads."""
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "64")  # (before the fix it loaded, downsampled)
    data = bytearray(_jpeg(np.zeros((64, 64), np.uint8)))
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, 8000, 8000)
    (tmp_path / "lie.jpg").write_bytes(bytes(data))
    _refused(tmp_path / "lie.jpg", "of coded picture cannot hold the 8000 x 8000 pixels its header declares")
    (tmp_path / "uniform.jpg").write_bytes(_jpeg(np.zeros((4000, 4000), np.uint8), progressive=True, quality=50))
    assert load_image(tmp_path / "uniform.jpg").info()["rows"] == 4000


def test_progressive_jpeg_coefficients_count_against_the_budget(tmp_path, monkeypatch):
    """A progressive JPEG keeps the coefficients of the whole picture while it decodes, whatever its DCT scale
    (30000 x 30000 grey: 1.8 GB); the same picture in one scan decodes scaled down."""
    picture = np.random.default_rng(2).integers(0, 256, (2000, 2000), dtype=np.uint8)
    (tmp_path / "progressive.jpg").write_bytes(_jpeg(picture, progressive=True, quality=80))
    (tmp_path / "baseline.jpg").write_bytes(_jpeg(picture, quality=80))
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "6")
    _refused(tmp_path / "progressive.jpg", "a progressive JPEG of 2000 x 2000 pixels needs about")
    assert load_image(tmp_path / "baseline.jpg").downsample > 1


# --- 4. The budget of one image


def test_bomb_sized_pictures_are_refused_before_decoding_and_mammograms_load_whole(tmp_path, monkeypatch):
    """With 4 GiB for one image, 1 MB PNG/JPEG/BMP files of 30000 x 30000 pixels peaked at 2.9-3.1 GB while they
    loaded downsampled; 1.5 GiB keeps them under 2 GB (refused, or loaded smaller), and a 4688 x 2592 16-bit
    mammogram still loads whole."""
    from core.imaging.limits import MAX_IMAGE_BUDGET, check_size, downsample_factor

    monkeypatch.delenv("MIDA_MEMORY_BUDGET_MB", raising=False)
    (tmp_path / "bomb.png").write_bytes(_png(25000, 25000, b"\x00" * 25001))  # the header, the first row
    _refused(tmp_path / "bomb.png", "too large to decode here")
    assert MAX_IMAGE_BUDGET <= 1.5 * 1024**3
    assert check_size(4688, 2592, 1, 1, 2, budget=MAX_IMAGE_BUDGET) is None
    assert downsample_factor(4688, 2592, budget=MAX_IMAGE_BUDGET) == 1
