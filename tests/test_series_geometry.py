"""Orientation markers from direction cosines (core.series.geometry) and the window's series read-outs
(strip curves, verdict lines) from core.series.analysis: Qt-free."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from core.series.analysis import ABNORMAL_THRESHOLD, SeriesAnalysis, SliceOutcome, strip_curves, verdict, verdict_text
from core.series.geometry import direction_letters, orientation_markers
from core.series.index import Series, SliceRef
from tests.series_data import AXIAL, CORONAL, SAGITTAL


@pytest.mark.parametrize("orientation, expected", [
    (AXIAL, {"left": "R", "right": "L", "top": "A", "bottom": "P"}),  # patient's right on the screen's left
    (SAGITTAL, {"left": "A", "right": "P", "top": "H", "bottom": "F"}),
    (CORONAL, {"left": "R", "right": "L", "top": "H", "bottom": "F"}),
    ((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0), {"left": "L", "right": "R", "top": "P", "bottom": "A"}),  # prone / rotated
])
def test_markers_of_the_standard_planes(orientation, expected):
    assert orientation_markers(orientation) == expected


def test_mirrored_view_swaps_left_and_right_only():
    assert orientation_markers(AXIAL, flip_horizontal=True) == {"left": "L", "right": "R", "top": "A", "bottom": "P"}


def test_oblique_directions_name_the_main_components_largest_first():
    a = math.radians(30)  # axial tilted 30 degrees about the left-right axis
    markers = orientation_markers((1.0, 0.0, 0.0, 0.0, math.cos(a), -math.sin(a)))
    assert markers == {"left": "R", "right": "L", "top": "AH", "bottom": "PF"}
    assert direction_letters((0.0, 0.1, -1.0)) == "F"  # 6 degrees off the axis: one letter
    assert direction_letters((0.6, -0.6, 0.53)) == "LAH"
    assert direction_letters((2.0, 0.0, 0.0)) == "L"  # not unit length: normalised


def test_missing_or_degenerate_orientation_has_no_markers():
    assert orientation_markers(None) is None
    assert orientation_markers((1.0, 0.0, 0.0)) is None
    assert orientation_markers((0.0, 0.0, 0.0, 0.0, 1.0, 0.0)) is None
    assert direction_letters((float("nan"), 0.0, 1.0)) == ""


# ----------------------------------------------------------------------------------------------- strip and verdict
def _series(n: int) -> Series:
    return Series("k", "1.2.3", "dicom", modality="MR",
                  slices=[SliceRef(f"s{i}.dcm", position_mm=3.0 * i) for i in range(n)], spacing_mm=3.0,
                  spacing_source="positions")


def _yesno(p_yes: float) -> SliceOutcome:
    return SliceOutcome("yes" if p_yes >= 0.5 else "no", {"no": 1 - p_yes, "yes": p_yes})


def _analysis() -> SeriesAnalysis:
    series = _series(6)
    cls = [_yesno(0.1), _yesno(0.7), _yesno(0.9), SliceOutcome(error="damaged"), _yesno(0.2), _yesno(0.3)]
    areas = [0.0, 20.0, 40.0, None, 0.0, 0.0]
    seg = [SliceOutcome(error="damaged") if a is None else
           SliceOutcome("lesion" if a else "no lesion", lesions=int(a > 0), lesion_area_mm2=a) for a in areas]
    results = [verdict("yesno", "1", "classification", ["no", "yes"], cls, series),
               verdict("seg", "1", "segmentation", ["lesion"], seg, series)]
    return SeriesAnalysis(series, results, [], False, 1.0, 6)


def test_strip_curves_plot_what_the_verdict_rule_reads():
    yesno, seg = strip_curves(_analysis(), {"yesno": ["no", "yes"]})
    assert yesno.title == "P(not no)" and yesno.threshold == ABNORMAL_THRESHOLD
    assert yesno.values == pytest.approx([0.1, 0.7, 0.9, None, 0.2, 0.3])
    assert yesno.runs == [(2, 3)]
    assert seg.values == pytest.approx([0.0, 0.5, 1.0, None, 0.0, 0.0]) and seg.title == "lesion area (1 = 40 mm²)"
    assert seg.threshold is None and seg.runs == [(2, 3)]


def test_strip_curve_of_a_classifier_without_a_normal_class_follows_the_series_label():
    series = _series(3)
    outcomes = [SliceOutcome("b", {"a": 0.2, "b": 0.8}), SliceOutcome("a", {"a": 0.6, "b": 0.4}),
                SliceOutcome("b", {"a": 0.1, "b": 0.9})]
    v = verdict("ab", "1", "classification", ["a", "b"], outcomes, series)
    (curve,) = strip_curves(SeriesAnalysis(series, [v], [], False, 0.0, 3))
    assert (curve.title, curve.threshold) == ("P(b)", None)
    assert curve.values == pytest.approx([0.8, 0.4, 0.9])


def test_verdict_lines_give_label_slices_and_volume():
    yesno, seg = _analysis().results
    assert verdict_text(yesno) == f"yesno: yes ({np.mean([0.7, 0.9]):.0%}), slices 2-3 of 6"
    assert verdict_text(seg) == f"seg: lesion on slices 2-3 of 6, volume {(20 + 40) * 3.0 / 1000:.2f} ml"
    series = _series(4)
    normal = verdict("yesno", "1", "classification", ["no", "yes"], [_yesno(0.8), _yesno(0.1), _yesno(0.2),
                                                                      _yesno(0.1)], series)
    assert verdict_text(normal) == "yesno: no (20%), no 2 adjacent abnormal slices of 4"
    none = verdict("seg", "1", "segmentation", ["lesion"], [None] * 4, series)
    assert verdict_text(none) == "seg: no result"


# ----------------------------------------------------------------------------------------------- the PDF page
def test_key_slices_are_the_ends_and_peaks_of_the_verdict_ranges():
    from core.series.pdf import key_slices

    assert key_slices(_analysis()) == [1, 2]  # both verdicts: slices 2-3, peak at 3 (0-based 1, 2)
    series = _series(5)
    normal = verdict("yesno", "1", "classification", ["no", "yes"], [_yesno(p) for p in (0.1, 0.2, 0.45, 0.1, 0.3)],
                     series)
    assert key_slices(SeriesAnalysis(series, [normal], [], False, 0.0, 5)) == [2]  # no range: the peak slice


def test_series_report_has_a_page_per_series_with_verdicts_rule_and_no_identifiers(tmp_path):
    pdfium = pytest.importorskip("pypdfium2")
    from core.series import index_folder
    from core.series.pdf import write_series_report
    from tests.series_data import ramp_images, write_series

    write_series(tmp_path / "a", ramp_images(6), patient_id="LGG-1", description="AX FLAIR")
    write_series(tmp_path / "b", ramp_images(4), patient_id="LGG-1", description="SAG T1", orientation=SAGITTAL)
    first, second = index_folder(tmp_path).series
    hand = _analysis()
    analyses = [SeriesAnalysis(first, [verdict(v.model, "1", v.task, ["no", "yes"] if v.task == "classification"
                                               else ["lesion"], v.slices, first) for v in hand.results], [], False,
                               1.0, 6),
                SeriesAnalysis(second, [], ["No model is installed for Other images; choose a model."], False, 0.1, 0)]
    out = write_series_report(tmp_path / "r.pdf", analyses)
    pdf = pdfium.PdfDocument(str(out))
    assert len(pdf) == 2
    pages = [pdf[i].get_textpage().get_text_range() for i in range(2)]
    assert "Series analysis report" in pages[0] and "yesno: yes" in pages[0] and "lesion on slices 2-3 of 6" in pages[0]
    for k in (2, 3):  # the key slices' captions: where each lies, on the patient axis its plane faces
        assert re.search(rf"slice {k}, [xyz] = -?\d+\.\d mm", pages[0]), pages[0]
    assert "adjacent" in pages[0] and "Decision support only" in pages[0]
    assert "No model ran on this series." in pages[1] and "No model is installed" in pages[1]
    assert all("LGG-1" not in p and "AX FLAIR" not in p for p in pages)
    identified = pdfium.PdfDocument(str(write_series_report(tmp_path / "id.pdf", analyses[:1], anonymise=False)))
    assert "LGG-1" in identified[0].get_textpage().get_text_range()
