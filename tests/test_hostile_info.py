"""A hostile corpus (generated at test time, small files only) through `info` under a 4 GiB address space.

Every file must end with exit 0 or 2, strict JSON (no NaN/Infinity) and no traceback, quickly.
``make_corpus`` is shared with the batch hostile tests.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.dataset import FileMetaDataset

from tests.conftest import REPO

MR_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small.dcm"
RTPLAN = Path(pydicom.__file__).parent / "data" / "test_files" / "rtplan.dcm"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, colour: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 100))
            + _chunk(b"IEND", b""))


def tiff_header(width: int, height: int, samples: int, planar: int, bits: int = 8) -> bytes:
    """A little-endian TIFF whose tags declare the size; its one strip holds 16 bytes."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, 1),
               (262, 3, 1, 2 if samples == 3 else 1), (273, 4, 1, 8), (277, 3, 1, samples), (278, 4, 1, height),
               (279, 4, 1, 16), (284, 3, 1, planar)]
    ifd_offset = 8 + 16
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    return b"II*\x00" + struct.pack("<I", ifd_offset) + b"\x00" * 16 + ifd + struct.pack("<I", 0)


def _mr(**changes) -> pydicom.Dataset:
    ds = pydicom.dcmread(MR_SMALL)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def _save_raw_ds(ds: pydicom.Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=False)


def deflated_bomb(path: Path, inflated_bytes: int) -> None:
    """A deflate-compressed DICOM whose data set inflates to ``inflated_bytes`` (mostly zero pixel data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    header = pydicom.Dataset()
    header.file_meta = meta
    header.preamble = b"\x00" * 128
    buffer = pydicom.filebase.DicomBytesIO()
    pydicom.filewriter.write_file_meta_info(buffer, meta, enforce_standard=True)
    side = int((inflated_bytes // 2) ** 0.5)
    body = pydicom.Dataset()
    body.Modality, body.SamplesPerPixel, body.PhotometricInterpretation = "OT", 1, "MONOCHROME2"
    body.Rows, body.Columns, body.BitsAllocated, body.BitsStored, body.HighBit = side, side, 16, 16, 15
    body.PixelRepresentation = 0
    out = pydicom.filebase.DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(out, body)
    pixels = side * side * 2
    out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixels))
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM" + buffer.getvalue())
        fh.write(deflater.compress(out.getvalue()))
        zeros = b"\x00" * (1 << 22)
        left = pixels
        while left > 0:
            fh.write(deflater.compress(zeros[: min(left, len(zeros))]))
            left -= len(zeros)
        fh.write(deflater.flush())


def make_corpus(root: Path, bombs: bool = True) -> dict[str, str]:
    """Write the corpus under ``root``; returns {name: expected outcome ('ok', 'error' or 'either')}."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (48, 40), dtype=np.uint8)
    rgb = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    expect: dict[str, str] = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (root / name).write_bytes(data)
        expect[name] = outcome

    # --- plain valid pictures
    for name, arr, kw in (("grey.png", grey, {}), ("rgb.png", rgb, {}), ("rgb.jpg", rgb, {}), ("grey.bmp", grey, {}),
                          ("rgba.png", np.dstack([rgb, grey]), {})):
        Image.fromarray(arr).save(root / name, **kw)
        expect[name] = "ok"
    Image.fromarray((grey.astype(np.uint16) * 200)).save(root / "grey16.png")
    expect["grey16.png"] = "ok"
    Image.fromarray(grey).convert("P").save(root / "palette.png")
    expect["palette.png"] = "ok"
    Image.fromarray(grey > 128).save(root / "bilevel.png")
    expect["bilevel.png"] = "ok"
    tifffile.imwrite(root / "planar_small.tif", np.moveaxis(rgb, -1, 0), planarconfig="separate", photometric="rgb")
    expect["planar_small.tif"] = "ok"
    tifffile.imwrite(root / "contig_small.tif", rgb, photometric="rgb")
    expect["contig_small.tif"] = "ok"
    tifffile.imwrite(root / "pages.tif", np.stack([grey, grey, grey]))
    expect["pages.tif"] = "ok"
    tifffile.imwrite(root / "float_nan.tif", np.where(grey > 200, np.nan, grey).astype(np.float32))
    expect["float_nan.tif"] = "ok"
    tifffile.imwrite(root / "grey16.tif", grey.astype(np.uint16) * 250)
    expect["grey16.tif"] = "ok"
    put("mr.dcm", MR_SMALL.read_bytes(), "ok")
    # --- odd names
    put("name with spaces.png", (root / "grey.png").read_bytes(), "ok")
    put("new\nline.png", (root / "grey.png").read_bytes(), "ok")
    put("ünïcödé.png", (root / "grey.png").read_bytes(), "ok")
    put("x" * 200 + ".png", (root / "grey.png").read_bytes(), "ok")
    bad_name = os.fsdecode(b"latin1-\xe9\xff.png")
    (root / bad_name).write_bytes((root / "grey.png").read_bytes())
    expect[bad_name] = "ok"
    put("png_named.dcm", (root / "grey.png").read_bytes(), "ok")
    # --- broken and bombs
    put("empty.dcm", b"", "error")
    put("noise.png", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "error")
    put("noise.dcm", b"DICM" * 50, "error")
    put("truncated.png", (root / "rgb.png").read_bytes()[:200], "error")
    put("truncated.jpg", (root / "rgb.jpg").read_bytes()[:300], "either")
    put("truncated.tif", (root / "contig_small.tif").read_bytes()[:100], "error")
    put("truncated.dcm", MR_SMALL.read_bytes()[:3000], "error")
    put("png_bomb.png", png_header(100_000, 100_000), "error")
    put("png_841mp.png", png_header(29_000, 29_000, colour=2), "error")
    put("bmp_bomb.bmp", b"BM" + struct.pack("<IHHIIiiHHIIiiII", 0, 0, 0, 54, 40, 60000, 60000, 1, 24, 0, 0, 0, 0, 0, 0), "error")
    put("planar_bomb.tif", tiff_header(30_000, 29_000, 3, 2), "error")
    put("contig_bomb.tif", tiff_header(30_000, 29_000, 3, 1), "error")
    put("tiff_zero.tif", tiff_header(0, 10, 1, 1), "error")
    put("tiff_noifd.tif", b"II*\x00" + struct.pack("<I", 10_000_000), "error")
    put("jpeg_junk.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 500, "error")

    def dcm(name: str, outcome: str, **changes) -> None:
        _save_raw_ds(_mr(**changes), root / name)
        expect[name] = outcome

    dcm("dcm_bomb.dcm", "error", Rows=60000, Columns=60000)
    dcm("dcm_frames_bomb.dcm", "error", NumberOfFrames=100_000_000)
    dcm("dcm_rows_zero.dcm", "error", Rows=0)
    dcm("dcm_rows_lie.dcm", "error", Rows=128)
    dcm("dcm_nan_window.dcm", "ok", WindowCenter="NaN", WindowWidth="NaN")
    dcm("dcm_inf_window.dcm", "ok", WindowCenter="Infinity", WindowWidth="400")
    dcm("dcm_zero_width.dcm", "ok", WindowCenter="100", WindowWidth="0")
    dcm("dcm_nan_slope.dcm", "error", RescaleSlope="NaN", RescaleIntercept="0")
    dcm("dcm_inf_intercept.dcm", "error", RescaleSlope="1", RescaleIntercept="-Infinity")
    dcm("dcm_inf_spacing.dcm", "ok", PixelSpacing=["Infinity", "1"])
    dcm("dcm_bits64.dcm", "error", BitsAllocated=64)
    no_rows = _mr()
    del no_rows.Rows
    _save_raw_ds(no_rows, root / "dcm_no_rows.dcm")
    expect["dcm_no_rows.dcm"] = "error"
    put("rtplan.dcm", RTPLAN.read_bytes(), "error")
    data = bytearray(MR_SMALL.read_bytes())
    at = data.find(b"\x08\x00\x60\x00CS")
    data[at + 6 : at + 8] = struct.pack("<H", 0xFFF0)
    put("dcm_bad_length.dcm", bytes(data), "error")
    if bombs:
        deflated_bomb(root / "deflate_bomb.dcm", 3 * 1024**3)  # about 3 MB on disk, 3 GiB inflated
        expect["deflate_bomb.dcm"] = "error"
    # --- things that are not regular files
    os.mkfifo(root / "fifo.dcm")
    expect["fifo.dcm"] = "error"
    for name, target in (("zero.dcm", "/dev/zero"), ("urandom.png", "/dev/urandom"), ("loop.dcm", "loop.dcm"),
                         ("dangling.png", "nowhere.png")):
        os.symlink(target, root / name)
        expect[name] = "error"
    (root / "folder.png").mkdir()
    expect["folder.png"] = "error"
    return expect


_DRIVER = r"""
import contextlib, io, json, os, resource, signal, sys, time
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
sys.path.insert(0, sys.argv[1])
from core.cli import main
results = {}
def alarm(*_):
    raise TimeoutError("hung")
signal.signal(signal.SIGALRM, alarm)
for name in sorted(os.listdir(sys.argv[2])):
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    signal.alarm(20)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["info", os.path.join(sys.argv[2], name)])
    except BaseException as exc:
        rc = "crash: %s: %s" % (type(exc).__name__, exc)
    signal.alarm(0)
    results[name] = [rc, out.getvalue(), err.getvalue(), round(time.perf_counter() - started, 2)]
print(json.dumps(results))
"""


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def test_hostile_corpus_through_info_under_4gib(tmp_path):
    corpus = tmp_path / "corpus"
    expect = make_corpus(corpus)
    assert len(expect) >= 55
    started = time.time()
    run = subprocess.run([sys.executable, "-c", _DRIVER, str(REPO), str(corpus)], capture_output=True, text=True,
                         timeout=300, errors="surrogateescape")
    elapsed = time.time() - started
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    problems = []
    for name, outcome in expect.items():
        rc, out, err, seconds = results[name]
        if rc not in (0, 2):
            problems.append(f"{name!r}: {rc}")
            continue
        payload = _strict(out)
        if "Traceback" in out + err:
            problems.append(f"{name!r}: traceback")
        if outcome == "ok" and rc != 0 or outcome == "error" and rc != 2:
            problems.append(f"{name!r}: expected {outcome}, got {rc}: {payload.get('error')}")
        if rc == 2 and not payload.get("error"):
            problems.append(f"{name!r}: exit 2 without a message")
    assert not problems, "\n".join(problems)
    assert elapsed < 60, f"the corpus took {elapsed:.0f} s"
    errors = {name: _strict(results[name][1]).get("error", "") for name in expect}
    assert "FIFO" in errors["fifo.dcm"] and "device" in errors["zero.dcm"] and "device" in errors["urandom.png"]
    assert "loops" in errors["loop.dcm"] and "link" in errors["dangling.png"]
    assert "inflates" in errors["deflate_bomb.dcm"]
    assert "too large" in errors["planar_bomb.tif"] and "too large" in errors["png_841mp.png"]
    assert "runs past the end" in errors["dcm_bad_length.dcm"]
    assert "RescaleSlope" in errors["dcm_nan_slope.dcm"]
    nan_window = _strict(results["dcm_nan_window.dcm"][1])
    assert nan_window["warnings"] and all(w["width"] > 0 for w in nan_window["window_presets"])
    planar = _strict(results["planar_small.tif"][1])
    assert (planar["rows"], planar["columns"], planar["samples_per_pixel"]) == (48, 40, 3)


def test_planar_tiff_pixels_match_contiguous(tmp_path):
    from core.imaging import load_image

    make_corpus(tmp_path / "c", bombs=False)
    planar = load_image(tmp_path / "c" / "planar_small.tif").values(0)
    contig = load_image(tmp_path / "c" / "contig_small.tif").values(0)
    assert planar.shape == (48, 40, 3) and np.array_equal(planar, contig)


def test_big_legal_images_load_downsampled(tmp_path, monkeypatch):
    """With 8 MiB for one image, a 1200 x 1000 picture (28 MiB loaded whole) loads at 1/2 or less."""
    from core.imaging import load_image

    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "8")
    pattern = np.indices((1000, 1200)).sum(axis=0).astype(np.uint8)
    Image.fromarray(pattern).save(tmp_path / "big.png")
    Image.fromarray(np.dstack([pattern] * 3)).save(tmp_path / "big.jpg", quality=90)
    tifffile.imwrite(tmp_path / "big.tif", pattern)
    colour = np.dstack([pattern, 255 - pattern, pattern // 2])
    tifffile.imwrite(tmp_path / "big_planar.tif", np.moveaxis(colour, -1, 0), planarconfig="separate",
                     photometric="rgb", rowsperstrip=7, compression="zlib")
    tifffile.imwrite(tmp_path / "big_tiled.tif", colour, photometric="rgb", tile=(64, 96))
    ds = _mr()
    ds.Rows, ds.Columns = 1000, 1200
    ds.PixelData = (pattern.astype(np.uint16) * 10).tobytes()
    ds.PixelSpacing = [0.5, 0.25]
    ds.save_as(tmp_path / "big.dcm")
    for name in ("big_planar.tif", "big_tiled.tif"):  # streamed strip by strip / tile by tile
        record = load_image(tmp_path / name)
        f = record.downsample
        assert f >= 2 and np.array_equal(record.values(0), colour[::f, ::f][: 1000 // f, : 1200 // f]), name
    for name in ("big.png", "big.jpg", "big.tif", "big.dcm"):
        record = load_image(tmp_path / name)
        info = record.info()
        assert info["rows"] == 1000 and info["columns"] == 1200, name
        assert record.downsample >= 2 and record.values(0).shape[:2] == (1000 // record.downsample, 1200 // record.downsample), name
        assert record.rows * record.columns * 28 <= 8 * 1024**2, name
        assert any("1/" in w for w in info["warnings"]), name
    record = load_image(tmp_path / "big.dcm")
    assert record.pixel_spacing_mm == (0.5 * record.downsample, 0.25 * record.downsample)
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "2")  # now even decoding the 16-bit frame does not fit
    with pytest.raises(Exception, match="too large to decode"):
        load_image(tmp_path / "big.dcm")


def test_unreadable_folder_is_a_clean_error(tmp_path, monkeypatch):
    """(Tests run as root, where chmod does not bite: the permission error is injected.)"""
    from core.errors import ImageLoadError
    from core.imaging import load_image

    real_stat = os.stat

    def denied(path, *a, **kw):
        if "locked" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *a, **kw)

    monkeypatch.setattr(os, "stat", denied)
    with pytest.raises(ImageLoadError, match="permission denied"):
        load_image(tmp_path / "locked" / "a.png")


def test_cli_info_on_fifo_and_dev_zero_returns(tmp_path):
    os.mkfifo(tmp_path / "f.dcm")
    os.symlink("/dev/zero", tmp_path / "z.dcm")
    for name in ("f.dcm", "z.dcm"):
        run = subprocess.run([sys.executable, str(REPO / "main.py"), "info", str(tmp_path / name)], capture_output=True,
                             text=True, timeout=60, cwd=REPO)
        assert run.returncode == 2 and "not a regular file" in _strict(run.stdout)["error"]
