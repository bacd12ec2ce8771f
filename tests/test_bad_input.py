"""Bad files raise ImageLoadError with a message naming the file and the problem; never a crash."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image

from core.errors import ImageLoadError
from core.imaging import load_image
from tests.conftest import REPO


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size: a decompression bomb in miniature."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")


def _expect(path, words: str):
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = str(info.value)
    assert path.name in message and words in message, message
    return message


def test_empty_file(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    _expect(tmp_path / "empty.dcm", "empty")


def test_random_bytes(tmp_path):
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _expect(tmp_path / "noise.png", "not a recognised image format")


def test_truncated_png(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    _expect(tmp_path / "t.png", "truncated")


def test_truncated_dicom(pydicom_file):
    _expect(pydicom_file("MR_truncated.dcm"), "truncated")


def test_dicom_without_pixels(pydicom_file):
    _expect(pydicom_file("rtplan.dcm"), "no image")


def test_rows_columns_that_lie(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.Rows = 128
    ds.save_as(tmp_path / "liar.dcm")
    _expect(tmp_path / "liar.dcm", "does not match the header")


def test_dicom_decompression_bomb(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 1
    ds.save_as(tmp_path / "bomb.dcm")
    _expect(tmp_path / "bomb.dcm", "too large")


def test_png_decompression_bomb(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    _expect(tmp_path / "bomb.png", "too large")


def test_missing_codec_is_named(pydicom_file, monkeypatch):
    class NoPlugin:
        is_available = False
        missing_dependencies = ["pylibjpeg-openjpeg (not installed)"]

    monkeypatch.setattr("core.imaging.dicom.get_decoder", lambda uid: NoPlugin())
    message = _expect(pydicom_file("MR_small_jp2klossless.dcm"), "codec plugin")
    assert "JPEG 2000" in message and "pylibjpeg-openjpeg" in message


def test_folder_and_missing_file(tmp_path):
    _expect(tmp_path, "folder")
    _expect(tmp_path / "nothing.dcm", "does not exist")


def _cli(*args):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True, cwd=REPO)


def test_cli_info_json(pydicom_file):
    run = _cli("info", str(pydicom_file("MR_small.dcm")))
    assert run.returncode == 0
    info = json.loads(run.stdout)
    assert info["modality"] == "MR" and info["rows"] == 64 and info["columns"] == 64 and info["frames"] == 1
    assert info["photometric"] == "MONOCHROME2" and info["bits_stored"] == 16
    assert info["pixel_spacing_mm"] == [0.3125, 0.3125]
    assert "tensorflow" not in run.stderr.lower()


def test_cli_info_error_is_clean_json(tmp_path):
    (tmp_path / "broken.dcm").write_bytes(b"DICM" * 10)
    run = _cli("info", str(tmp_path / "broken.dcm"))
    assert run.returncode != 0
    payload = json.loads(run.stdout)
    assert payload["path"].endswith("broken.dcm") and "broken.dcm" in payload["error"]
    assert "Traceback" not in run.stdout + run.stderr


def test_info_does_not_import_tensorflow_or_qt(pydicom_file):
    code = ("import sys; from core.cli import main; main(['info', %r]); "
            "assert 'tensorflow' not in sys.modules and 'PySide6' not in sys.modules, 'heavy import'") % str(pydicom_file("MR_small.dcm"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
