"""Anonymised exports of a file whose header and name identify the patient carry neither (PS3.15 Basic
Profile); the pseudonym is keyed, not a plain hash; the history database is private."""

from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
import pydicom
import pytest

from core.export.anonymise import pseudonym
from core.export.dicom_export import export_overlay_sc, export_seg
from core.export.report import overlay_picture, write_image_report
from core.history import History
from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.registry import Registry
from tests.conftest import bright_block_ultrasound

MRN = "1234567"
SECRETS = ["Doe", "Jane", MRN, "19600101", "045Y", "20240102", "STU-998", "ACC-4471", "Smith", "General Hospital",
           "Scanner Room 3", "Brain MRI for"]


@pytest.fixture(scope="module")
def analyzer(tiny_models):
    return Analyzer(Registry([tiny_models]))


@pytest.fixture
def identified(tmp_path, pydicom_file):
    ds = bright_block_ultrasound(pydicom_file)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", MRN, "19600101"
    ds.StudyDescription = "Brain MRI for Jane Doe"
    ds.SeriesDescription = "Doe follow-up"
    ds.PatientAge, ds.PatientWeight, ds.PatientSize = "045Y", 71.5, 1.68
    ds.StudyDate, ds.SeriesDate, ds.AcquisitionDate, ds.ContentDate = "20240102", "20240102", "20240102", "20240102"
    ds.StudyID, ds.AccessionNumber = "STU-998", "ACC-4471"
    ds.ReferringPhysicianName = "Smith^Bob"
    ds.InstitutionName, ds.StationName = "General Hospital", "Scanner Room 3"
    ds.OtherPatientIDs = MRN
    block = ds.private_block(0x0011, "ACME private", create=True)
    block.add_new(0x01, "LO", "Doe Jane 1234567")
    path = tmp_path / "Doe_Jane_1234567.dcm"
    ds.save_as(path)
    return path


def _leaks(data: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in data]


def test_seg_and_overlay_sc_carry_no_identifier(analyzer, identified, tmp_path):
    record = load_image(identified)
    analysis = analyzer.analyze(record)
    result = next(r for r in analysis.results if r.mask is not None)
    seg_path = export_seg(record, result, tmp_path / "out" / "seg.dcm")
    sc_path = export_overlay_sc(record, overlay_picture(record, analysis), tmp_path / "out" / "sc.dcm")
    for path in (seg_path, sc_path):
        assert _leaks(path.read_bytes()) == [], path.name
        ds = pydicom.dcmread(path)
        for keyword in ("StudyDescription", "PatientAge", "PatientWeight", "PatientSize", "OtherPatientIDs"):
            assert keyword not in ds, (path.name, keyword)
        assert ds.StudyDate == "" and ds.StudyID == "" and ds.PatientIdentityRemoved == "YES"
        assert {c.CodeValue for c in ds.DeidentificationMethodCodeSequence} == {"113100", "113110"}
        assert ds.PatientID == pseudonym(MRN)
        assert ds.StudyInstanceUID == pydicom.dcmread(identified).StudyInstanceUID  # Retain UIDs Option
    assert not any("Doe" in p.name for p in (tmp_path / "out").iterdir())


def test_png_source_wrapper_is_not_named_after_the_patient(analyzer, tmp_path, planted_png):
    source = tmp_path / "Doe_Jane_1234567.png"
    source.write_bytes(planted_png[0].read_bytes())
    record = load_image(source, modality="US")
    result = analyzer.analyze(record).results[0]
    export_seg(record, result, tmp_path / "out" / "seg.dcm")
    names = [p.name for p in (tmp_path / "out").iterdir()]
    assert len(names) == 2 and not any("Doe" in n or MRN in n for n in names), names
    for path in (tmp_path / "out").iterdir():
        assert _leaks(path.read_bytes()) == [], path.name


def test_pdf_report_has_neither_name_nor_header_identifiers(analyzer, identified, tmp_path):
    import pypdfium2 as pdfium

    record = load_image(identified)
    pdf = write_image_report(tmp_path / "report.pdf", record, analyzer.analyze(record))
    document = pdfium.PdfDocument(str(pdf))
    text = "".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    assert "Image analysis report" in text and pseudonym(MRN) in text
    leaks = [s for s in SECRETS if s in text] + _leaks(pdf.read_bytes())
    assert leaks == [], leaks
    identified_pdf = write_image_report(tmp_path / "id.pdf", record, analyzer.analyze(record), anonymise=False)
    id_text = "".join(p.get_textpage().get_text_range() for p in pdfium.PdfDocument(str(identified_pdf)))
    assert "Doe_Jane_1234567.dcm" in id_text  # the test would see a leak: identified reports do print it
    # an identified report names the study as the department does: accession, description, institution
    assert all(s in id_text for s in ("ACC-4471", "Brain MRI for Jane Doe", "General Hospital", MRN)), id_text


def test_pseudonym_is_keyed_and_private(tmp_path):
    value = pseudonym(MRN)
    assert value == pseudonym(MRN) and value != pseudonym("1234568")
    digest = hashlib.sha256(MRN.encode()).hexdigest()
    assert digest[:12] not in value and digest[-12:] not in value
    key = tmp_path.parent / "unused"
    from core.export.anonymise import _key_file

    key = _key_file()
    assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_history_database_is_private(tmp_path):
    old = os.umask(0o022)
    try:
        History(tmp_path / "h" / "history.sqlite")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "h" / "history.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "h").stat().st_mode) == 0o700


def test_history_that_cannot_be_opened_is_a_clean_error(tmp_path):
    from core.errors import DiagnosticError

    (tmp_path / "file").write_text("x")
    with pytest.raises(DiagnosticError, match="cannot be opened"):
        History(tmp_path / "file" / "history.sqlite")  # its folder is a file


def test_anonymised_exports_black_out_a_scanner_screens_patient_bar(analyzer, deid_file, tmp_path):
    """deid-data's ultrasound screen capture carries the patient's name, ID and birth date burned into its top bar
    (BurnedInAnnotation YES): an anonymised export keeps the scan and blacks out the bars and panels around it."""
    from core.export.dicom_export import export_overlay_sc
    from core.export.report import overlay_picture

    record = load_image(deid_file("ultrasounds/GREYSCALE_IMAGE.dcm"))
    analysis = analyzer.analyze(record)
    picture = overlay_picture(record, analysis)
    assert picture[:20].max() > 100  # the patient bar is drawn in the source picture
    anonymous = pydicom.dcmread(export_overlay_sc(record, picture, tmp_path / "anon.dcm")).pixel_array
    identified = pydicom.dcmread(export_overlay_sc(record, picture, tmp_path / "id.dcm", anonymise=False)).pixel_array
    assert anonymous[:20].max() == 0 and identified[:20].max() > 100
    middle = (slice(300, 500), slice(300, 600))  # inside the scan: kept
    assert np.array_equal(anonymous[middle], identified[middle])
