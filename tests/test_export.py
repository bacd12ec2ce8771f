"""Exports: DICOM SEG / SC reference the source and carry no patient name; PDF reports render; history."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from core.export.dicom_export import export_overlay_sc, export_seg
from core.export.report import overlay_picture, write_batch_report, write_image_report
from core.history import History
from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.registry import Registry
from tests.conftest import bright_block_ultrasound

PATIENT = "Doe^Jane"


@pytest.fixture(scope="module")
def analyzer(tiny_models):
    return Analyzer(Registry([tiny_models]))


@pytest.fixture
def identified_dicom(tmp_path, pydicom_file):
    ds = bright_block_ultrasound(pydicom_file)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT, "PID-123", "19600101"
    ds.InstitutionName = "General Hospital"
    path = tmp_path / "identified.dcm"
    ds.save_as(path)
    return path


def _no_identifiers(ds: pydicom.Dataset) -> None:
    text = str(ds)
    assert PATIENT.split("^")[0] not in text and "PID-123" not in text and "19600101" not in text
    assert "General Hospital" not in text and str(ds.PatientName) == "ANONYMOUS"


def test_seg_matches_predicted_mask_and_references_study(analyzer, identified_dicom, tmp_path):
    record = load_image(identified_dicom)
    result = analyzer.analyze(record).results[0]
    assert result.mask.sum() > 0
    out = export_seg(record, result, tmp_path / "out" / "seg.dcm")
    seg = hd.seg.segread(out)
    stored = np.asarray(seg.pixel_array).reshape(result.mask.shape)
    np.testing.assert_array_equal(stored.astype(np.uint8), result.mask)
    source = pydicom.dcmread(identified_dicom)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert referenced == source.SOPInstanceUID
    _no_identifiers(pydicom.dcmread(out))


def test_overlay_secondary_capture_is_anonymised(analyzer, identified_dicom, tmp_path):
    record = load_image(identified_dicom)
    analysis = analyzer.analyze(record)
    out = export_overlay_sc(record, overlay_picture(record, analysis), tmp_path / "sc.dcm")
    ds = pydicom.dcmread(out)
    _no_identifiers(ds)
    assert ds.StudyInstanceUID == pydicom.dcmread(identified_dicom).StudyInstanceUID
    assert ds.pixel_array.shape == (64, 64, 3)


def test_seg_from_png_and_cine(analyzer, tmp_path, deid_file, planted_png):
    record = load_image(planted_png[0], modality="US")
    result = analyzer.analyze(record).results[0]
    assert hd.seg.segread(export_seg(record, result, tmp_path / "png_seg.dcm")).NumberOfFrames >= 1
    cine = load_image(deid_file("ultrasounds/ultrasound-multiframe.dcm"))
    cine_result = analyzer.analyze(cine, frame=3, model_ids=["tiny-us-segmenter"]).results[0]
    out = export_seg(cine, cine_result, tmp_path / "cine_seg.dcm", frame=3)
    _no_identifiers(pydicom.dcmread(out))
    from core.export.anonymise import pseudonym

    # the same pseudonym as the report and every other export of this patient, not one of the pseudonym
    source = pydicom.dcmread(deid_file("ultrasounds/ultrasound-multiframe.dcm"), stop_before_pixels=True)
    assert pydicom.dcmread(out).PatientID == pseudonym(str(source.PatientID))


@pytest.mark.parametrize("anonymise", [False, True])
def test_a_seg_keeps_its_frame_capture_when_a_secondary_capture_of_that_frame_follows(analyzer, tmp_path, deid_file,
                                                                                       anonymise):
    """A cine frame is exported through a capture written beside the export; the overlay's export of the same frame
    wrote a new capture over it under the same name, and the SEG then referenced an instance no file held."""
    cine = load_image(deid_file("ultrasounds/ultrasound-multiframe.dcm"))
    analysis = analyzer.analyze(cine, frame=3, model_ids=["tiny-us-segmenter"])
    seg = pydicom.dcmread(export_seg(cine, analysis.results[0], tmp_path / "seg.dcm", 3, anonymise))
    export_overlay_sc(cine, overlay_picture(cine, analysis), tmp_path / "sc.dcm", 3, anonymise)
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    held = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f.name for f in tmp_path.glob("*.dcm")}
    assert referenced in held and held[referenced] not in ("seg.dcm", "sc.dcm")
    assert len(held) == 3  # the SEG, the overlay and the one capture of frame 4 both reference


def _algorithm_names(group) -> list[str]:
    """The Algorithm Name items of a TID 1500 measurement group (its container's own content)."""
    return [item.TextValue for item in group[0].ContentSequence
            if item.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Name"]


def test_structured_report_holds_the_label_probabilities_and_each_outlined_lesion(analyzer, identified_dicom, tmp_path):
    from pydicom.sr.codedict import codes

    from core.export.structured_report import export_sr

    record = load_image(identified_dicom)
    analysis = analyzer.analyze(record, model_ids=["tiny-mr-classifier", "tiny-us-segmenter"])
    classifier, segmenter = analysis.results
    (lesion,) = segmenter.lesions
    assert lesion.area_mm2 is not None  # MR_small states its pixel spacing
    sr = hd.sr.srread(export_sr(record, analysis, tmp_path / "out" / "findings.sr.dcm"))
    _no_identifiers(sr)
    source = pydicom.dcmread(identified_dicom)
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.Modality == "SR"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    image_group, found = sr.content.get_image_measurement_groups()
    assert image_group.tracking_identifier == "tiny-mr-classifier classification"
    assert found.tracking_identifier == "tiny-us-segmenter segmentation" and _algorithm_names(found) == [
        "tiny-us-segmenter"]
    assert [(m.name.meaning, m.value) for m in found.get_measurements()] == [("Lesions outlined", 1)]
    assert _algorithm_names(image_group) == ["tiny-mr-classifier"]
    assert {m.name.meaning: m.value for m in image_group.get_measurements()} == pytest.approx(
        {f"Probability of {c}": p for c, p in classifier.probabilities.items()})
    assert image_group.finding_type.meaning == classifier.label
    (roi,) = sr.content.get_planar_roi_measurement_groups()
    assert _algorithm_names(roi) == ["tiny-us-segmenter"]
    assert roi.finding_type == codes.SCT.Lesion and roi.tracking_identifier == "tiny-us-segmenter lesion 1"
    assert {m.name: m.value for m in roi.get_measurements()} == pytest.approx(
        {codes.SCT.Area: lesion.area_mm2, codes.SCT.LongAxis: lesion.max_diameter_mm})
    outline = roi.roi.value
    assert roi.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE and (outline[0] == outline[-1]).all()
    x, y, w, h = lesion.bbox
    assert x <= outline[:, 0].min() and outline[:, 0].max() <= x + w + 1  # the outline's pixel centres, 0.5 in
    assert y <= outline[:, 1].min() and outline[:, 1].max() <= y + h + 1
    assert roi.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_analyze_command_writes_a_structured_report(tiny_models, identified_dicom, tmp_path, monkeypatch, capsys):
    import json

    from core.cli import main

    monkeypatch.setenv("MIDA_USER_MODELS", str(tiny_models))
    target = tmp_path / "r.sr.dcm"
    assert main(["analyze", str(identified_dicom), "--model", "tiny-us-segmenter", "--model", "tiny-mr-classifier",
                 "--dicom-sr-out", str(target), "--json", "--no-history"]) == 0
    assert json.loads(capsys.readouterr().out)["dicom_sr_file"] == str(target)
    sr = hd.sr.srread(target)
    _no_identifiers(sr)
    assert len(sr.content.get_image_measurement_groups()) == 2 and len(sr.content.get_planar_roi_measurement_groups()) == 1
    blank = tmp_path / "blank.png"  # nothing outlined: a negative result is reported, not a failed export
    Image.fromarray(np.full((64, 64), 30, np.uint8)).save(blank)
    assert main(["analyze", str(blank), "--modality", "US", "--model", "tiny-us-segmenter", "--dicom-sr-out",
                 str(tmp_path / "blank.sr.dcm"), "--json", "--no-history"]) == 0
    capsys.readouterr()
    (found,) = hd.sr.srread(tmp_path / "blank.sr.dcm").content.get_image_measurement_groups()
    assert [(m.name.meaning, m.value) for m in found.get_measurements()] == [("Lesions outlined", 0)]


def test_structured_report_codes_are_one_per_name_whatever_the_names(planted_png, tmp_path):
    """Private code values are cut to 16 characters: names sharing their start shared a code with two meanings, a
    backslash split a value and a name in another script was written without a character set."""
    from core.export.structured_report import export_sr
    from core.inference.results import Analysis, ModelResult

    names = ["adenocarcinoma_lung", "adenocarcinoma_colon", "Ödem", "a\\b"]
    result = ModelResult("user-model", "1.0", "classification", "cpu", names, dict(zip(names, (0.1, 0.2, 0.3, 0.4))),
                         "a\\b")
    record = load_image(planted_png[0])
    sr = hd.sr.srread(export_sr(record, Analysis(str(record.path), "OT", "guess", 0, [result]), tmp_path / "c.dcm"))
    (group,) = sr.content.get_image_measurement_groups()
    measured = {m.name.meaning: (m.name.value, m.value) for m in group.get_measurements()}
    assert set(measured) == {"Probability of adenocarcinoma_lung", "Probability of adenocarcinoma_colon",
                             "Probability of Ödem", "Probability of a/b"}
    assert len({value for value, _ in measured.values()}) == 4 and measured["Probability of Ödem"][1] == 0.3
    assert group.finding_type.meaning == "a/b" and sr.SpecificCharacterSet == "ISO_IR 192"


def _render(pdf_path, tmp_path):
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf_path))
    pages = []
    for i in range(len(document)):
        image = document[i].render(scale=1).to_pil()
        image.save(tmp_path / f"page{i}.png")
        pages.append(np.asarray(image.convert("L")))
    return pages


def test_image_report_renders_and_is_anonymised(analyzer, identified_dicom, tmp_path):
    record = load_image(identified_dicom)
    analysis = analyzer.analyze(record)
    pdf = write_image_report(tmp_path / "report.pdf", record, analysis)
    pages = _render(pdf, tmp_path)
    assert len(pages) == 1 and pages[0].std() > 10  # text and picture drawn, not a blank page
    # What it names and withholds: test_hostile_export (its text layer; the raw bytes are compressed).


def test_batch_report_renders(analyzer, tmp_path, planted_png):
    from core.batch.runner import BatchRun

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(planted_png[0].read_bytes())
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    BatchRun(folder, tmp_path / "out", analyzer, model_ids=["tiny-mr-classifier"]).run()
    pages = _render(write_batch_report(tmp_path / "out"), tmp_path)
    assert len(pages) == 2 and all(p.std() > 5 for p in pages)


def test_a_long_batch_report_is_quick_and_every_row_stays_on_its_page(tmp_path):
    """A matplotlib table of cells took 1.4 s a page: a 2,000-file batch sat minutes on its report."""
    import csv
    import json
    import time

    import pypdfium2 as pdfium

    columns = ["file", "model", "label", "probability", "lesions", "lesion_area_mm2", "findings", "error"]
    rows = [{"file": f"patient_{k:04d}/series_with_a_long_folder_name/IM{k:05d}.dcm", "model": "brain-mri-tumor-4class",
             "label": "notumor", "probability": "0.981234", "lesions": "", "lesion_area_mm2": "", "findings": "",
             "error": "" if k % 50 else f"Cannot open 'IM{k:05d}.dcm': the pixel data is truncated at byte 1024"}
            for k in range(500)]
    rows[260]["file"] = "Ασθενής_7/IM00260.dcm"  # beyond Windows-1252: its page keeps an embedded font
    (tmp_path / "summary.json").write_text(json.dumps({"folder": "in", "files": 500, "files_done": 500, "errors": 10,
                                                       "warnings": 0, "labels_by_model": {}}))
    with (tmp_path / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    start = time.perf_counter()
    pdf = write_batch_report(tmp_path)
    assert time.perf_counter() - start < 10  # 4 table pages; the cell table took about 17 s for 500 rows
    document = pdfium.PdfDocument(str(pdf))
    assert len(document) == 5
    text = "".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    assert "IM00499.dcm" in text and "Cannot open 'IM00050.dcm'" in text  # a file's end, an error's start
    assert "Ασθενής_7/IM00260.dcm" in text
    page = document[1]
    textpage = page.get_textpage()
    boxes = [textpage.get_charbox(i) for i in range(textpage.count_chars())]
    assert boxes and max(right for _, _, right, _ in boxes) <= page.get_width()
    assert min(bottom for _, bottom, _, _ in boxes) >= 0


def test_history_survives_restart_and_finds_same_image(analyzer, planted_png, tmp_path):
    db = tmp_path / "history.sqlite"
    record = load_image(planted_png[0], modality="MR")
    History(db).add(analyzer.analyze(record))
    copy = tmp_path / "renamed.png"
    copy.write_bytes(planted_png[0].read_bytes())
    reopened = History(db)  # a new process would open the same file
    found = reopened.for_file(copy)
    assert len(found) == 1 and found[0].models == {"tiny-mr-classifier": "0.0.1"}
    assert "tiny-mr-classifier: lesion" in found[0].labels
    History(db).add(analyzer.analyze(record))
    assert len(History(db).for_file(planted_png[0])) == 2
    csv_text = reopened.export_csv(tmp_path / "history.csv").read_text()
    assert "tiny-mr-classifier@0.0.1" in csv_text


def test_identified_report_keeps_long_study_fields_on_the_page(analyzer, identified_dicom, tmp_path):
    """DICOM allows 64 characters of study description and institution: wrapped, every character stays on the page
    (the text layer would hold words drawn beyond its edge too)."""
    import pypdfium2 as pdfium

    ds = pydicom.dcmread(identified_dicom)
    ds.StudyDescription = "MR HEAD WITH AND WITHOUT CONTRAST, PERFUSION AND SPECTROSCOPY 3T"[:64]
    ds.InstitutionName = "Northern General University Hospital and Regional Cancer Centre"[:64]
    ds.save_as(identified_dicom)
    record = load_image(identified_dicom)
    pdf = write_image_report(tmp_path / "id.pdf", record, analyzer.analyze(record), anonymise=False)
    page = pdfium.PdfDocument(str(pdf))[0]
    text = page.get_textpage()
    words = text.get_text_range()
    assert "SPECTROSCOPY 3T" in words and "Regional Cancer" in words.replace("\r\n", " ")
    width = page.get_width()
    boxes = [text.get_charbox(i) for i in range(text.count_chars())]
    assert boxes and max(right for _, _, right, _ in boxes) <= width


def test_report_states_the_scale_a_result_was_read_at(tmp_path, planted_png):
    """A microscopy or film result depends on the scale it was read at: the report says which, as the panel does."""
    import pypdfium2 as pdfium

    from core.inference.results import Analysis, ModelResult

    record = load_image(planted_png[0], modality="SM")
    result = ModelResult("histo", "1.0", "classification", "cpu", ["benign", "malignant"],
                         {"benign": 0.3, "malignant": 0.7}, "malignant",
                         scale={"um_y": 2.0, "um_x": 2.0, "source": "user", "text": "2.0 um per pixel (100x, set)"})
    pdf = write_image_report(tmp_path / "r.pdf", record, Analysis(str(record.path), "SM", "user", 0, [result]))
    assert "scale: 2.0 um per pixel (100x, set)" in pdfium.PdfDocument(str(pdf))[0].get_textpage().get_text_range()


def test_a_dicom_seg_opened_shows_its_segments_over_the_image_it_segments(analyzer, identified_dicom, tmp_path):
    import shutil

    from core.errors import DiagnosticError
    from core.imaging.loader import read_header
    from core.series.opening import read_for_viewer
    from core.series.segmentation_file import is_segmentation, open_segmentation

    record = load_image(identified_dicom)
    result = analyzer.analyze(record, model_ids=["tiny-us-segmenter"]).results[0]
    folder = tmp_path / "pacs" / "study"  # not under the fixture's own copy of the image
    seg_path = export_seg(record, result, folder / "lesion.seg.dcm", anonymise=False)
    shutil.copy(identified_dicom, folder / "image.dcm")  # the SEG beside its image, as a PACS export
    assert is_segmentation(read_header(seg_path, ["SOPClassUID"])) and not is_segmentation(read_header(identified_dicom, []))
    shown, analysis = read_for_viewer(seg_path)
    assert shown.path == folder / "image.dcm" and analysis.frame == 0
    (segment,) = analysis.results
    assert segment.model_id == "Lesion (DICOM SEG)" and segment.device == "file"
    np.testing.assert_array_equal(segment.mask, result.mask)
    assert [l.area_px for l in segment.lesions] == [l.area_px for l in result.lesions]
    assert analysis.warnings[0].startswith("Outlines read from lesion.seg.dcm (a DICOM SEG by Medical Image")
    assert read_for_viewer(identified_dicom)[1] is None  # an image is an image
    (folder / "image.dcm").unlink()
    with pytest.raises(DiagnosticError, match="is not in its folder"):
        open_segmentation(seg_path)


def test_a_dicom_seg_of_a_picture_file_is_shown_over_its_capture(analyzer, planted_png, tmp_path):
    from core.series.segmentation_file import open_segmentation

    record = load_image(planted_png[0], modality="US")
    result = analyzer.analyze(record).results[0]
    seg_path = export_seg(record, result, tmp_path / "png.seg.dcm")  # its capture written beside it
    shown, analysis = open_segmentation(seg_path)
    assert shown.path.name.startswith("source_sc_") and shown.modality.value == "US"
    np.testing.assert_array_equal(analysis.results[0].mask, result.mask)


def test_a_dicom_seg_of_a_volume_is_refused_with_what_to_open_instead(analyzer, identified_dicom, tmp_path):
    import copy

    from core.errors import DiagnosticError
    from core.series.segmentation_file import open_segmentation

    record = load_image(identified_dicom)
    result = analyzer.analyze(record, model_ids=["tiny-us-segmenter"]).results[0]
    seg_path = export_seg(record, result, tmp_path / "seg" / "volume.seg.dcm", anonymise=False)
    ds = pydicom.dcmread(seg_path)
    instances = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    second = copy.deepcopy(instances[0])
    second.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    instances.append(second)  # as a SEG of two slices of a series references them
    ds.save_as(seg_path)
    with pytest.raises(DiagnosticError, match="segments 2 images: open the folder of its series instead"):
        open_segmentation(seg_path)


def test_structured_report_groups_carry_the_warnings_that_qualify_them(analyzer, identified_dicom, tmp_path):
    """An ultrasound picture sent to an MR classifier: the PACS reading the SR sees the 'Wrong modality' caveat
    beside the classifier's label, not the label alone; the segmenter's group has its own warnings only."""
    from core.export.structured_report import export_sr

    record = load_image(identified_dicom)
    analysis = analyzer.analyze(record, model_ids=["tiny-mr-classifier", "tiny-us-segmenter"])
    classifier, segmenter = analysis.results
    assert any(w.startswith("Wrong modality") for w in classifier.warnings)
    sr = hd.sr.srread(export_sr(record, analysis, tmp_path / "findings.sr.dcm"))
    image_group, found = sr.content.get_image_measurement_groups()

    def comments(group) -> list[str]:
        return [item.TextValue for item in group[0].ContentSequence
                if item.ConceptNameCodeSequence[0].CodeMeaning == "Comment"]

    assert comments(image_group) == list(dict.fromkeys(record.warnings + analysis.warnings + classifier.warnings))
    assert comments(found) == list(dict.fromkeys(record.warnings + analysis.warnings + segmenter.warnings))
    assert not any(w.startswith("Wrong modality") for w in comments(found))


# Exports written as the reports are (found by a hunt of the day's exports; each failed before its fix)
@pytest.fixture
def non_square(pydicom_file, tmp_path):
    """MR_small as a slice of pixels twice as tall as wide (PixelSpacing 0.8 \\ 0.4 mm)."""
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.PixelSpacing = [0.8, 0.4]
    ds.save_as(tmp_path / "tall.dcm")
    return tmp_path / "tall.dcm"


def test_an_overlay_capture_states_its_pixels_spacing(non_square, tmp_path):
    """Without it a PACS draws the capture's non-square pixels square: the head squeezed 2:1."""
    import numpy as np

    from core.export.dicom_export import export_overlay_sc

    record = load_image(non_square)
    overlay = np.zeros((record.rows, record.columns, 3), np.uint8)
    sc = pydicom.dcmread(export_overlay_sc(record, overlay, tmp_path / "out" / "sc.dcm"))
    assert [float(v) for v in sc.PixelSpacing] == [0.8, 0.4]


def test_a_dicom_export_whose_write_fails_leaves_the_earlier_file(analyzer, identified_dicom, tmp_path):
    """Under a file-size limit (a full disk) the SR was cut to 8 kB and still opened as a DICOM file."""
    from core.export import files
    from core.export.structured_report import export_sr

    record = load_image(identified_dicom)
    analysis = analyzer.analyze(record, model_ids=["tiny-us-segmenter"])
    out = export_sr(record, analysis, tmp_path / "x.sr.dcm")
    before = out.read_bytes()

    def full_disk(path, data):
        raise files.WriteError(path, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, "write_bytes_atomic", full_disk)
        with pytest.raises(files.WriteError, match="No space left"):
            export_sr(record, analysis, out)
    assert out.read_bytes() == before


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    from core.export.files import WriteError, write_bytes_atomic

    (tmp_path / "afile").write_bytes(b"x")
    with pytest.raises(WriteError, match="afile' is a file, not a folder"):
        write_bytes_atomic(tmp_path / "afile" / "deeper" / "x.dcm", b"data")


def test_a_seg_or_mask_asked_for_where_no_segmenter_ran_is_an_error(cli, identified_dicom, tmp_path):
    code, said = cli("analyze", str(identified_dicom), "--model", "tiny-mr-classifier", "--no-history", "--json",
                     "--dicom-seg-out", str(tmp_path / "s.dcm"), "--mask-out", str(tmp_path / "m.png"))
    assert code == 2 and said["dicom_seg_error"] == "--dicom-seg-out: no segmentation model ran on this image"
    assert said["mask_error"] == "--mask-out: no segmentation model ran on this image"
    assert not (tmp_path / "s.dcm").exists() and not (tmp_path / "m.png").exists()


def test_a_seg_reopened_measures_by_the_segmenters_spacing_rule(analyzer, identified_dicom, tmp_path):
    """A SEG beside a picture whose stated spacing is a header error (10-mm pixels): the segmenter gave its lesion in
    pixels, the SEG reopened gave it in square metres."""
    from core.export.dicom_export import export_seg
    from core.series.segmentation_file import open_segmentation

    ds = pydicom.dcmread(identified_dicom)
    ds.PixelSpacing = [10.0, 10.0]
    (tmp_path / "wide").mkdir()
    ds.save_as(tmp_path / "wide" / "wide.dcm")
    record = load_image(tmp_path / "wide" / "wide.dcm")
    (result,) = analyzer.analyze(record, model_ids=["tiny-us-segmenter"]).results
    assert result.lesions and result.lesion_area_mm2 is None
    export_seg(record, result, tmp_path / "wide" / "wide.seg.dcm")
    _, reopened = open_segmentation(tmp_path / "wide" / "wide.seg.dcm")
    (read,) = reopened.results
    assert read.lesions and all(lesion.area_mm2 is None for lesion in read.lesions)
    assert any(w.startswith("Implausible pixel spacing") for w in read.warnings)
