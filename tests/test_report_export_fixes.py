"""The PDF report and the exported view, as a reader and a privacy officer see them: every result, warning and failure
on a page of its own size (never over the disclaimer), the file's own pixels and shape, nothing identifying in an
anonymised export, and writes that never leave a broken file or replace the input (each test failed before its fix)."""

from __future__ import annotations

import json
import os
import re

import cv2
import numpy as np
import pydicom
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest

from core.export.report import draw_findings, write_image_report
from core.imaging import load_image
from core.inference.results import Analysis, Finding, Lesion, ModelFailure, ModelResult
from tests.conftest import bright_block_ultrasound, open_window

DISCLAIMER = "Decision support only"


def _document(pdf) -> pdfium.PdfDocument:
    return pdfium.PdfDocument(str(pdf))


def _text(pdf) -> str:
    """Every page's text, lines joined by spaces (a wrapped sentence reads as one)."""
    return " ".join(" ".join(page.get_textpage().get_text_range().split()) for page in _document(pdf))


def _classifier(model_id: str, **fields) -> ModelResult:
    return ModelResult(model_id, "1.0", "classification", "cpu", ["a", "b", "c"], {"a": 0.7, "b": 0.2, "c": 0.1},
                       "a", **fields)


def _lesion(k: int, spacing=None) -> Lesion:
    return Lesion(k, 100 + k, None, (10 * k, 10 * k, 5, 5), 7.0, None, np.zeros((0, 2)), spacing)


@pytest.fixture
def picture(tmp_path):
    """A 128 x 128 grey picture file (an MR slice as far as the report is concerned)."""
    path = tmp_path / "slice.png"
    pixels = np.full((128, 128), 90, np.uint8)
    cv2.circle(pixels, (64, 64), 30, 200, -1)
    cv2.imwrite(str(path), pixels)
    return path


def _analysis(record, results=(), **fields) -> Analysis:
    """As the Analyzer makes one: of the file as read (its downsample and warnings)."""
    return Analysis(str(record.path), "MR", "user", 0, list(results), downsample=record.downsample,
                    file_warnings=list(record.warnings), **fields)


# ----- 3, 4: every result, warning and failure printed, on as many pages as it takes

def test_a_model_that_failed_is_named_in_the_report(picture, tmp_path):
    record = load_image(picture, modality="MR")
    failure = ModelFailure("broken-model", "9.9", "classification", "its weights are damaged")
    pdf = write_image_report(tmp_path / "r.pdf", record, _analysis(record, [_classifier("fine")], failures=[failure]))
    assert "broken-model did not run: its weights are damaged" in _text(pdf)


def _overlaps(page) -> list[tuple]:
    """Pairs of text runs drawn over each other on ``page`` (a line over the disclaimer, a chart over the text)."""
    textpage = page.get_textpage()
    rects = [textpage.get_rect(i) for i in range(textpage.count_rects())]
    found = []
    for i, (l1, b1, r1, t1) in enumerate(rects):
        for l2, b2, r2, t2 in rects[i + 1:]:
            width, height = min(r1, r2) - max(l1, l2), min(t1, t2) - max(b1, b2)
            if width > 1 and height > 1:
                found.append(((l1, b1, r1, t1), (l2, b2, r2, t2)))
    return found


def test_a_long_report_goes_on_over_pages_each_with_the_disclaimer_and_nothing_drawn_over_another(picture,
                                                                                                  tmp_path):
    record = load_image(picture, modality="MR")
    classifiers = [_classifier(f"classifier-model-number-{i}",
                               warnings=[f"classifier {i} warning " + "lorem ipsum dolor sit amet " * 8 + f"END{i}"])
                   for i in range(1, 6)]
    seg = ModelResult("seg-model", "2.0", "segmentation", "cpu", lesions=[_lesion(k) for k in range(12)],
                      warnings=[f"seg warning {k}" for k in range(12)],
                      findings=[Finding(40 + 5 * k, 40 + 4 * k, 4, 0.9 - 0.05 * k, "mass") for k in range(12)])
    analysis = _analysis(record, [*classifiers, seg], warnings=[f"analysis warning {k}" for k in range(30)]
                         + ["LAST ANALYSIS WARNING"])
    pdf = write_image_report(tmp_path / "r.pdf", record, analysis)
    document = _document(pdf)
    assert len(document) > 1
    for page in document:
        assert DISCLAIMER in page.get_textpage().get_text_range()
        assert _overlaps(page) == []
    text = _text(pdf)
    assert "END5" in text and "LAST ANALYSIS WARNING" in text and "seg warning 11" in text
    assert "12 lesion(s)" in text and "#8: " in text and "#9: " not in text and "... and 4 more" in text
    assert all(f"classifier-model-number-{i}: a (70.0%)" in text for i in range(1, 6))  # every chart drawn


def test_a_tiled_results_tile_count_is_printed(picture, tmp_path):
    record = load_image(picture, modality="MR")
    pdf = write_image_report(tmp_path / "r.pdf", record, _analysis(record, [_classifier("tiled", tiles=22)]))
    assert "22 tiles" in _text(pdf)


# ----- 5: the file's own pixels, its size and its warnings

@pytest.fixture
def halved(tmp_path, monkeypatch):
    """A 2048 x 2048 picture read at half its size (the memory one image may use made small)."""
    path = tmp_path / "big.png"
    pixels = np.zeros((2048, 2048), np.uint8)
    cv2.circle(pixels, (1024, 1024), 300, 200, -1)
    cv2.imwrite(str(path), pixels)
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "40")
    return path


def _outlined(record) -> Analysis:
    seg = ModelResult("seg", "1.0", "segmentation", "cpu", lesions=[_lesion(1)],
                      findings=[Finding(100, 50, 8, 0.9, "mass")])
    return _analysis(record, [seg])


def test_the_report_gives_the_files_own_size_pixels_and_warnings_of_a_picture_read_smaller(halved, tmp_path):
    record = load_image(halved, modality="MR")
    assert record.downsample == 2
    text = _text(write_image_report(tmp_path / "r.pdf", record, _outlined(record)))
    assert "2048x2048" in text and "loaded at 1/2 of its 2048 x 2048 pixels" in text
    assert "#1: 404 px" in text and "box (20, 20, 10, 10)" in text  # 101 px and (10, 10, 5, 5) on the grid read
    assert "at x 200, y 100 px, Ø 32 px" in text


# ----- 7: written whole or not at all, never over the input

def test_a_report_whose_write_fails_leaves_the_earlier_one(picture, tmp_path):
    """A full disk or a file-size limit stops the write part-way: the report written before stays whole."""
    import resource
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    record = load_image(picture, modality="MR")
    out = write_image_report(tmp_path / "r.pdf", record, _analysis(record, [_classifier("fine")]))
    before = out.read_bytes()

    def small_files() -> None:  # a write past 4 kB fails with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    script = ("import sys; from pathlib import Path; from core.imaging import load_image; "
              "from core.export.report import write_image_report; from core.inference.results import Analysis; "
              "r = load_image(Path(sys.argv[1]), modality='MR'); "
              "write_image_report(Path(sys.argv[2]), r, Analysis(str(r.path), 'MR', 'user', 0, []))")
    done = subprocess.run([sys.executable, "-c", script, str(picture), str(out)], cwd=REPO, preexec_fn=small_files,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "File too large" in done.stderr
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.pdf", "slice.png"]


def test_a_report_named_as_a_hard_link_to_the_input_is_refused(cli, picture, tmp_path):
    report = tmp_path / "report.pdf"
    os.link(picture, report)
    before = picture.read_bytes()
    code, said = cli("analyze", str(picture), "--report-out", str(report), "--json", "--no-history")
    assert code == 2 and "is the input" in said["error"] and picture.read_bytes() == before


def test_a_report_named_other_than_pdf_is_refused(cli, picture, tmp_path):
    code, said = cli("analyze", str(picture), "--report-out", str(tmp_path / "report.png"), "--json",
                     "--no-history")
    assert code == 2 and said["error"].startswith("--report-out must name a .pdf file")
    assert not (tmp_path / "report.png").exists()


# ----- 8, 11, control characters: what is drawn

def test_non_square_pixels_are_drawn_at_their_shape(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    pixels = ds.pixel_array[:, ::2].copy()  # 128 rows x 64 columns, each pixel twice as wide as high
    ds.PixelData, ds.Columns, ds.PixelSpacing = pixels.tobytes(), 64, [0.5, 1.0]
    ds.save_as(tmp_path / "aniso.dcm")
    record = load_image(tmp_path / "aniso.dcm")
    pdf = write_image_report(tmp_path / "r.pdf", record, Analysis(str(record.path), "CT", "dicom", 0, []))
    (image,) = _document(pdf)[0].get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,))
    left, bottom, right, top = image.get_bounds()
    assert (right - left) / (top - bottom) == pytest.approx(1.0, rel=0.02)  # 64 mm wide, 64 mm high


@pytest.mark.parametrize("x, y, r", [(495, 300, 12), (100, 5, 20), (20, 505, 10)])
def test_a_findings_label_stays_whole_inside_the_picture(x, y, r):
    def box(finding: Finding) -> tuple[int, int]:
        drawn = draw_findings(np.full((512, 512, 3), 60, np.uint8), [finding])
        ys, xs = np.nonzero((drawn == 0).all(axis=2))  # the label's dark box
        assert xs.min() > 0 and ys.min() > 0 and xs.max() < 511 and ys.max() < 511
        return xs.max() - xs.min(), ys.max() - ys.min()

    assert box(Finding(x, y, r, 0.87, "calcification")) == box(Finding(256, 256, r, 0.87, "calcification"))


def test_control_characters_in_the_header_are_not_drawn(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.PatientName, ds.StudyDescription = "Evil\x1b[31mName\r\nSecond^Line\x00", "Line1\nLine2\x07"
    ds.save_as(tmp_path / "ctrl.dcm")
    record = load_image(tmp_path / "ctrl.dcm")
    pdf = write_image_report(tmp_path / "r.pdf", record, Analysis(str(record.path), "CT", "dicom", 0, []),
                             anonymise=False)
    raw = "".join(page.get_textpage().get_text_range() for page in _document(pdf)).replace("\r\n", "")
    assert not re.search(r"[\x00-\x1f\x7f]", raw)
    text = _text(pdf)
    assert "Evil[31mName Second^Line" in text and "Line1 Line2" in text


# ----- 2: the other breast's film is not named

@pytest.mark.slow  # the film detector is a Keras model
def test_the_other_breasts_film_is_not_named_in_the_warnings(tmp_path):
    from PIL import Image

    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry
    from core.series.contralateral import other_breast
    from tests.test_film_detector import _film
    from tests.tiny_models import make_film_bundle

    make_film_bundle(tmp_path / "models")
    analyzer = Analyzer(Registry([tmp_path / "models"]), runtime="tensorflow")
    folder = tmp_path / "exam"
    folder.mkdir()
    Image.fromarray(_film()).save(folder / "SMITH_JOHN_L_MLO.png")
    Image.fromarray(_film(blob=False)).save(folder / "SMITH_JOHN_R_MLO.png")
    (folder / "DOE_JANE_L_CC.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a partner that cannot be read
    Image.fromarray(_film()).save(folder / "DOE_JANE_R_CC.png")
    said = []
    for name in ("SMITH_JOHN_L_MLO.png", "DOE_JANE_R_CC.png"):
        record = load_image(folder / name, modality="MG")
        analysis = analyzer.analyze(record, find_other_breast=other_breast)
        said += analysis.results[0].warnings
        text = _text(write_image_report(tmp_path / f"{name}.pdf", record, analysis))
        assert "SMITH" not in text and "DOE" not in text
    assert any("Scored against the other breast's film (paired by file name)" in w for w in said), said
    assert any(w.startswith("The other breast's film could not be read (") for w in said), said
    assert not any("SMITH" in w or "DOE" in w for w in said), said


# ----- 1, 6, 10: File ▸ Export view

def _screen_capture(pydicom_file, path, stated: bool = True):
    """A 64 x 64 ultrasound screen: 'text' burned into the top rows (the patient bar), the scan below (its region
    stated in the header, or not); identifiers in the header."""
    ds = bright_block_ultrasound(pydicom_file)
    pixels = np.zeros((64, 64), np.uint16)
    if stated:
        pixels[16:, :] = 300
        pixels[30:44, 12:30] = 2000
        pixels[2:8, 8:56] = 4000  # the patient's name, as a scanner prints it
        ds.SequenceOfUltrasoundRegions[0].RegionLocationMinY0 = 16
    else:  # the patient bar on a black screen: no scan area to find (a picture of one grey level shows mid grey)
        pixels[2:8, 8:56] = 4000
        del ds.SequenceOfUltrasoundRegions
    ds.PixelData = pixels.tobytes()
    ds.PatientName, ds.PatientID = "Doe^Jane", "PID-123"
    ds.save_as(path)
    return path


def _view_pixel(window, image, x: float, y: float) -> int:
    from PySide6.QtCore import QPointF

    point = window.viewer.mapFromScene(QPointF(x, y))
    return image.pixelColor(point).lightness()


def _open(qtbot, window, path):
    window.open_path(path)
    qtbot.waitUntil(lambda: window.state.record is not None and window.state.record.path == path
                    and not window.is_busy, timeout=20000)


@pytest.fixture
def window(qtbot, tiny_models, tmp_path):
    return open_window(qtbot, tiny_models, tmp_path)


def test_an_anonymised_view_export_blacks_out_the_screen_text_and_names_no_file(qtbot, window, pydicom_file,
                                                                                tmp_path):
    from PySide6.QtGui import QImage

    source = _screen_capture(pydicom_file, tmp_path / "Doe_Jane.dcm")
    _open(qtbot, window, source)
    window.state.set_analysis(Analysis(str(source), "US", "dicom", 0, []))
    window.state.add_ruler(10, 40, 50, 40)
    assert window.anonymise_exports  # the default
    window.save_view(tmp_path / "anon.png")
    anonymous = QImage(str(tmp_path / "anon.png"))
    assert _view_pixel(window, anonymous, 32, 5) == 0 and _view_pixel(window, anonymous, 20, 36) > 100
    found = (tmp_path / "anon.json").read_text()
    assert "Doe" not in found and "PID-123" not in found and "path" not in json.loads(found)
    assert json.loads(found)["measurements"]
    window.anonymise_exports = False
    window.save_view(tmp_path / "identified.png")
    assert _view_pixel(window, QImage(str(tmp_path / "identified.png")), 32, 5) > 100
    assert json.loads((tmp_path / "identified.json").read_text())["path"] == str(source)


def test_an_anonymised_view_export_without_a_scan_area_is_refused_with_why(qtbot, window, pydicom_file, tmp_path):
    source = _screen_capture(pydicom_file, tmp_path / "Doe_Jane.dcm", stated=False)
    _open(qtbot, window, source)
    window.save_view(tmp_path / "anon.png")
    assert "scan area" in window.last_error and not (tmp_path / "anon.png").exists()


def test_the_view_json_gives_the_files_own_pixels_and_its_warnings(qtbot, window, halved, tmp_path):
    _open(qtbot, window, halved)
    record = window.state.record
    assert record.downsample == 2
    window.state.set_analysis(_outlined(record))
    window.state.add_ruler(10, 40, 50, 40)  # on the picture read at half: 80 of the file's pixels
    window.state.add_region(10, 10, 30, 30)
    window.save_view(tmp_path / "view.png")
    found = json.loads((tmp_path / "view.json").read_text())
    (lesion,) = found["results"][0]["lesion_details"]
    assert lesion["area_px"] == 404 and lesion["bbox"] == [20, 20, 10, 10]
    assert found["results"][0]["findings"][0]["x"] == 200
    assert any("loaded at 1/2 of its 2048 x 2048 pixels" in w for w in found["warnings"])
    (ruler,) = found["measurements"]
    assert (ruler["x0"], ruler["y0"], ruler["x1"], ruler["length_px"]) == (20, 80, 100, 80)
    (region,) = found["regions"]
    assert (region["x0"], region["x1"]) == (20, 60) and region["area_px"] == pytest.approx(
        4 * window.state.regions[0].area_px, abs=0.1)


def test_a_view_json_that_cannot_be_written_is_said_not_raised(qtbot, window, picture, tmp_path):
    _open(qtbot, window, picture)
    window.state.add_ruler(10, 40, 50, 40)
    (tmp_path / "view.json").mkdir()
    window.save_view(tmp_path / "view.png")
    assert "view.json" in window.last_error and "Exported" not in window.statusBar().currentMessage()


def test_characters_no_installed_font_draws_are_named_in_the_image_report(tmp_path, monkeypatch):
    """A CJK patient name in an identified report printed as boxes, nothing saying so (as the series report did)."""
    from core.export import page_fonts
    from core.export.report import write_image_report
    from core.imaging import load_image
    from core.inference.results import Analysis

    monkeypatch.setattr(page_fonts, "FALLBACK_FONTS", ())  # as on a machine without any font for them
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.SpecificCharacterSet, ds.PatientName = "ISO_IR 192", "山田^太郎"
    ds.save_as(tmp_path / "mr.dcm")
    record = load_image(tmp_path / "mr.dcm")
    out = write_image_report(tmp_path / "r.pdf", record, Analysis(str(record.path), "MR", "dicom", 0),
                             anonymise=False)
    text = _text(out)
    assert "U+5C71 U+7530" in text and "cannot be shown" in text


def test_a_file_written_in_one_step_gets_the_mode_a_new_file_gets(tmp_path):
    """mkstemp's 0600 had made reports and view JSON unreadable to colleagues sharing the folder."""
    import os

    from core.export.files import write_bytes_atomic

    umask = os.umask(0o022)
    os.umask(umask)
    (tmp_path / "plain.txt").write_bytes(b"x")
    written = write_bytes_atomic(tmp_path / "atomic.txt", b"x")
    assert written.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~umask
