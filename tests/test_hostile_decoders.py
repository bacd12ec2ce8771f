"""Bad input that used to cost memory out of all proportion to the file, or results already computed.

Small files (sparse where they claim gigabytes) that a decoder or the tag browser would have expanded before
any check: a TIFF strip that inflates without bound, a compressed DICOM frame bigger than its header says, the
whole pixel data of a multi-frame DICOM read for the tag list; and a batch frame loop that threw away the
frames it had analysed when a later one could not be read.
"""

from __future__ import annotations

import csv
import io
import json
import lzma
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from core.errors import ImageLoadError
from core.imaging import load_image
from tests.conftest import REPO
from tests.series_data import bare_mr_dicom


def _tiff_one_strip(path: Path, strip: bytes, compression: int, side: int = 64) -> None:
    """A ``side`` x ``side`` 8-bit grey TIFF whose one strip holds ``strip`` as written."""
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, compression), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, len(strip))]
    pad = len(strip) & 1
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(strip) + pad) + strip + b"\x00" * pad + ifd + b"\x00" * 4)


def _compressed_zeros(n: int, codec) -> bytes:
    parts = [codec.compress(b"\x00" * (1 << 22)) for _ in range(n >> 22)]
    return b"".join(parts) + codec.flush()


def test_tiff_strip_bombs_are_refused_before_inflating(tmp_path):
    """A 64 x 64 TIFF whose one strip inflates to 64 MiB (deflate, LZMA) is a bomb; an honest one still loads."""
    for name, compression, codec in (("deflate.tif", 8, zlib.compressobj(9)), ("lzma.tif", 34925, lzma.LZMACompressor())):
        _tiff_one_strip(tmp_path / name, _compressed_zeros(64 << 20, codec), compression)
        with pytest.raises(ImageLoadError, match="too large"):
            load_image(tmp_path / name)
    honest = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    tifffile.imwrite(tmp_path / "honest.tif", honest, compression="zlib", rowsperstrip=5)
    assert np.array_equal(load_image(tmp_path / "honest.tif").values(0), honest)


def test_unsupported_tiff_compression_is_named(tmp_path):
    """LZW or JPEG TIFF without imagecodecs: a valid file whose compression is not supported, not 'corrupt'."""
    try:
        import imagecodecs  # noqa: F401
        pytest.skip("imagecodecs is installed: LZW decodes")
    except ImportError:
        pass
    _tiff_one_strip(tmp_path / "lzw.tif", b"\x80\x00\x20\x00", 5)
    with pytest.raises(ImageLoadError, match=r"compression \(LZW\) is not supported"):
        load_image(tmp_path / "lzw.tif")


def test_compressed_frame_larger_than_its_header_is_not_decoded(tmp_path):
    """A JPEG (JPEG 2000) frame of 4000 x 4000 pixels in a file that declares 64 x 64 is refused by its own header."""
    big = io.BytesIO()
    Image.new("L", (4000, 4000), 0).save(big, "JPEG", quality=10)
    codestreams = [(JPEGBaseline8Bit, big.getvalue())]
    try:
        import openjpeg

        codestreams.append(("1.2.840.10008.1.2.4.90", openjpeg.encode(np.zeros((4000, 4000), np.uint8), codec_format=0)))
    except (ImportError, AttributeError):
        pass
    for syntax, codestream in codestreams:
        ds = bare_mr_dicom(64, 64, syntax=syntax)
        ds.PixelData = encapsulate([codestream])
        ds["PixelData"].VR = "OB"
        ds.save_as(tmp_path / "lie.dcm", enforce_file_format=True)
        with pytest.raises(ImageLoadError, match="4000 x 4000 pixel compressed image, larger than the 64 x 64"):
            load_image(tmp_path / "lie.dcm")
    small = np.random.default_rng(3).integers(0, 255, (64, 64), dtype=np.uint8)
    honest = io.BytesIO()
    Image.fromarray(small).save(honest, "JPEG", quality=95)
    ds = bare_mr_dicom(64, 64, syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([honest.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "honest.dcm", enforce_file_format=True)
    assert load_image(tmp_path / "honest.dcm").values(0).shape == (64, 64)


def _sparse_multiframe(path: Path, frames: int, blob: int) -> None:
    """1024 x 1024 x 16-bit frames (all zero) after a private blob of ``blob`` bytes; both sparse on disk."""
    ds = bare_mr_dicom(1024, 1024, frames, bits=16)
    ds.add_new(0x00290010, "LO", "HOSTILE")
    ds.save_as(path, enforce_file_format=True)
    pixels = 1024 * 1024 * 2 * frames
    with open(path, "r+b") as fh:
        fh.seek(0, 2)
        fh.write(struct.pack("<HH2sHI", 0x0029, 0x1010, b"OB", 0, blob))
        fh.seek(blob, 1)
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixels))
        fh.truncate(fh.tell() + pixels)


def test_multiframe_dicom_is_not_read_whole_for_its_tag_list(tmp_path):
    """1.2 GB of frames and a 0.5 GB private blob (sparse): opening it reads one frame, and the tag list shows the
    blob's size instead of its bytes."""
    path = tmp_path / "cine.dcm"
    _sparse_multiframe(path, frames=600, blob=512 * 1024**2)
    # VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak over fork and exec into the child's
    # ru_maxrss, so a child of a pytest process that has grown reports that process's size.
    code = ("import json, sys\nfrom core.imaging import load_image\nr = load_image(sys.argv[1])\n"
            "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
            "print(json.dumps({'frames': r.frames, 'metadata': r.metadata, 'peak_mb': int(hwm.split()[1]) / 1024}))\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["frames"] == 600
    assert out["peak_mb"] < 450, f"opening the file took {out['peak_mb']:.0f} MB"
    blob = [row for row in out["metadata"] if row[0] == "(0029,1010)"]
    assert blob and "536870912 bytes" in blob[0][2]
    assert not any(row[1] == "PixelData" for row in out["metadata"])


class _FrameReader:
    """Stands in for the models in a batch: reads each frame as an analysis does, and finds nothing."""

    registry = SimpleNamespace(bundles={}, get=lambda bundle_id: None)

    def analyze(self, record, frame=0, **_):
        from core.inference.results import Analysis

        record.display(frame)
        return Analysis(str(record.path), record.modality.value, record.modality_source, frame)


def test_batch_all_frames_keeps_the_frames_read_before_a_missing_one(tmp_path):
    """NumberOfFrames says 5, the pixel data holds 2: frames 0 and 1 keep their rows, frame 2 is the error row, the
    other files are analysed as usual."""
    from core.batch.runner import BatchRun

    folder = tmp_path / "in"
    folder.mkdir()
    ds = bare_mr_dicom(32, 32, frames=5)
    ds.PixelData = np.random.default_rng(1).integers(0, 255, (2, 32, 32), dtype=np.uint8).tobytes()
    ds.save_as(folder / "a_short.dcm", enforce_file_format=True)
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(folder / "b_good.png")
    summary = BatchRun(folder, tmp_path / "out", analyzer=_FrameReader(), all_frames=True, heatmaps=False).run()
    assert summary["complete"]
    with (tmp_path / "out" / "results.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    short = [(r["frame"], r["error"]) for r in rows if r["file"] == "a_short.dcm"]
    assert [frame for frame, _ in short] == ["0", "1", "2"]
    assert short[0][1] == short[1][1] == ""
    assert short[2][1].startswith("frame 2 of 5:") and "not analysed" in short[2][1]
    assert [r["error"] for r in rows if r["file"] == "b_good.png"] == [""]
