"""What anonymised exports must not carry: burned-in names in the series report's pictures, person names anywhere in
a de-identified DICOM data set; and what the image report must say of its pixel spacing."""

from __future__ import annotations

import ast
import inspect

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.datadict import DicomDictionary, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

BAR = slice(0, 26)  # the rows of the screen capture's top bar, where the scanner printed the patient's name


def _burned_in_cine(path, frames: int = 4):
    """A small ultrasound screen capture: a grey scan area on black, the patient's name burned into a top bar."""
    rng = np.random.default_rng(3)
    pixels = np.zeros((frames, 120, 160), np.uint8)
    for k, frame in enumerate(pixels):
        frame[35:115, 20:140] = rng.integers(40, 200, (80, 120), dtype=np.uint8)
        cv2.putText(frame, "SIMPSON HOMER", (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID, ds.BurnedInAnnotation = "US", "SIMPSON^HOMER", "999887722", "YES"
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames, 120, 160
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _shown_pictures(monkeypatch, write) -> list[np.ndarray]:
    """The arrays a report hands to matplotlib's imshow while ``write()`` runs."""
    import matplotlib.axes

    shown = []
    original = matplotlib.axes.Axes.imshow

    def spy(self, picture, *args, **kwargs):
        shown.append(np.asarray(picture).copy())
        return original(self, picture, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", spy)
    write()
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", original)
    return shown


def test_anonymised_series_report_blacks_out_burned_in_text_as_the_image_report_does(tmp_path, monkeypatch):
    from core.export.anonymise import without_screen_text
    from core.imaging import load_image
    from core.series.analysis import SeriesAnalysis, SeriesVerdict, SliceOutcome
    from core.series.index import index_path
    from core.series.pdf import key_slices, write_series_report

    (tmp_path / "cine").mkdir()
    cine = _burned_in_cine(tmp_path / "cine" / "cine.dcm")
    series = index_path(cine.parent).series[0]
    n = len(series)
    outcomes = [SliceOutcome("yes", {"no": 1 - p, "yes": p}) for p in np.linspace(0.1, 0.9, n)]
    analysis = SeriesAnalysis(series, [SeriesVerdict("fake-cls", "1", "classification", "yes", 0.9, None, None, None,
                                                     outcomes)], [], False, 0.0, n)
    keys = key_slices(analysis)
    identified = _shown_pictures(monkeypatch, lambda: write_series_report(tmp_path / "id.pdf", [analysis], False))
    anonymised = _shown_pictures(monkeypatch, lambda: write_series_report(tmp_path / "anon.pdf", [analysis], True))
    assert keys and len(identified) == len(anonymised) == len(keys)
    assert all((picture[BAR] > 200).any() for picture in identified)  # the name is there to be hidden
    record = load_image(cine)
    for index, shown, full in zip(keys, anonymised, identified):
        assert not (shown[BAR] > 0).any(), "the burned-in name is printed in the anonymised series report"
        # exactly what the single-image report (and the SEG / SC exports) print of that frame
        np.testing.assert_array_equal(shown, without_screen_text(full, record, series.slices[index].frame))
        assert (shown[40:110, 25:135] > 0).mean() > 0.9  # the scan area itself is kept


# Person names set on an image before anonymisation: top level and nested in a sequence the profile keeps.
NAMES = ("ConsultingPhysicianName", "EvaluatorName", "ReviewerName", "SecondaryReviewerName", "ROIInterpreter",
         "SelectorPNValue", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName")


def _named_dataset(pydicom_file) -> Dataset:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    for keyword in NAMES:
        setattr(ds, keyword, "HOUSE^GREGORY")
    # every (non-retired) PN attribute of the dictionary, so a name the lists do not know is caught too
    for tag, (vr, _vm, _name, retired, keyword) in DicomDictionary.items():
        if vr == "PN" and keyword and not retired and keyword not in ds:
            setattr(ds, keyword, "HOUSE^GREGORY")
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, generate_uid()
    item.ReviewerName = "CUDDY^LISA"
    ds.ReferencedImageSequence = Sequence([item])  # kept (UIDs retained), so its names must go
    return ds


def _names_left(ds: Dataset, keep=("PatientName",)) -> list[str]:
    left = []
    for elem in ds:
        if elem.VR == "PN" and str(elem.value or "") and elem.keyword not in keep:
            left.append(elem.keyword)
        elif elem.VR == "SQ" and elem.value is not None:
            for item in elem.value:
                left += [f"{elem.keyword}>{name}" for name in _names_left(item, ())]
    return left


def test_anonymisation_leaves_no_person_name_in_any_export(pydicom_file, tmp_path):
    from core.export.anonymise import ANONYMOUS_NAME, anonymise_dataset
    from core.export.dicom_export import export_overlay_sc, export_seg
    from core.export.report import overlay_picture
    from core.export.structured_report import export_sr
    from core.imaging import load_image
    from core.inference.lesions import find_lesions
    from core.inference.results import Analysis, ModelResult

    source = _named_dataset(pydicom_file)
    out = anonymise_dataset(source)
    assert _names_left(out) == []
    assert str(out.PatientName) == ANONYMOUS_NAME and "ConsultingPhysicianName" not in out
    assert len(out.ReferencedImageSequence) == 1  # the reference itself is kept
    assert "HOUSE" in str(source.ConsultingPhysicianName)  # the caller's data set is untouched

    path = tmp_path / "ct.dcm"
    source.save_as(path)
    record = load_image(path)
    mask = np.zeros((record.rows, record.columns), np.uint8)
    mask[40:60, 40:60] = 1
    result = ModelResult("fake-seg", "1", "segmentation", "cpu", mask=mask,
                         lesions=find_lesions(mask, record.pixel_spacing_mm))
    analysis = Analysis(str(path), record.modality.value, "dicom", 0, [result])
    written = {"SEG": export_seg(record, result, tmp_path / "x.seg.dcm", 0, True),
               "SC": export_overlay_sc(record, overlay_picture(record, analysis), tmp_path / "x.sc.dcm", 0, True),
               "SR": export_sr(record, analysis, tmp_path / "x.sr.dcm", True)}
    for kind, file in written.items():
        ds = pydicom.dcmread(file)
        assert _names_left(ds) == [], kind
        assert "HOUSE" not in str(ds) and "CUDDY" not in str(ds), kind
        assert str(ds.PatientName) == ANONYMOUS_NAME, kind


def test_every_keyword_the_profile_lists_is_a_dicom_keyword():
    """A misspelt or invented keyword in the lists would be skipped without a word: none may be there."""
    import core.export.anonymise as anonymise

    tree = ast.parse(inspect.getsource(anonymise))
    listed = [const.value for node in tree.body if isinstance(node, ast.Assign)
              and any(getattr(t, "id", None) in ("REMOVED", "EMPTIED") for t in node.targets)
              and isinstance(node.value, ast.Tuple) for const in node.value.elts if isinstance(const, ast.Constant)]
    assert len(listed) > 100
    assert [k for k in listed if tag_for_keyword(k) is None] == []


def test_overlay_comments_are_removed_with_their_overlay_group(pydicom_file):
    from core.export.anonymise import anonymise_dataset

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.add_new(0x60004000, "LT", "HOUSE^GREGORY reviewed")  # Overlay Comments (60xx,4000)
    assert 0x60004000 not in anonymise_dataset(ds)


@pytest.mark.parametrize("spacing, printed", [((0.8, 0.4), "spacing 0.800 x 0.400 mm (row x column)"),
                                              ((0.5, 0.5), "spacing 0.500 mm")])
def test_image_report_prints_both_pixel_spacings_when_they_differ(pydicom_file, tmp_path, spacing, printed):
    import pypdfium2 as pdfium

    from core.export.report import write_image_report
    from core.imaging import load_image
    from core.inference.results import Analysis, ModelResult

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.PixelSpacing = list(spacing)  # rows 0.8 mm apart, columns 0.4 mm
    path = tmp_path / "ct.dcm"
    ds.save_as(path)
    record = load_image(path)
    assert record.pixel_spacing_mm == spacing
    result = ModelResult("fake-cls", "1", "classification", "cpu", ["a", "b"], {"a": 0.4, "b": 0.6}, "b")
    pdf = write_image_report(tmp_path / "r.pdf", record, Analysis(str(path), "CT", "dicom", 0, [result]))
    text = " ".join(pdfium.PdfDocument(str(pdf))[0].get_textpage().get_text_range().split())
    assert printed in text
    if spacing[0] == spacing[1]:
        assert " x 0.500" not in text
