"""What series and batch outputs report (found by a helper's hunt; each test failed before its fix)."""

from __future__ import annotations

import numpy as np
import pytest

from core.inference.results import Finding, Lesion, ModelResult
from core.series.analysis import SeriesAnalysis, SliceOutcome, segmenter_verdict, verdict
from core.series.index import Series, SliceRef, index_folder
from core.series.report import series_rows
from tests.series_data import ramp_images, write_series


def _series(positions, spacing=3.0) -> Series:
    return Series("k", "1.2.3", "dicom", slices=[SliceRef(f"s{i}.dcm", position_mm=p) for i, p in enumerate(positions)],
                  spacing_mm=spacing, spacing_source="positions")


def test_lesion_volume_counts_each_position_once_where_slices_repeat_a_position():
    """A repeated acquisition under one UID (no echo numbers: not split) doubled the volume."""
    positions = [0.0, 0.0, 4.0, 4.0, 8.0, 8.0]
    outcomes = [SliceOutcome("lesion", lesions=1, lesion_area_mm2=30.0)] * 6
    label, first, last, volume, warnings = segmenter_verdict(outcomes, _series(positions, 4.0))
    assert volume == pytest.approx(3 * 30.0 * 4.0 / 1000)
    assert any("share a position" in w for w in warnings)


def test_batch_series_verdicts_keep_the_slices_untested_sequence_warning(tmp_path):
    """series.csv said nothing where analyze --series said 'Untested sequence ... (n of n slices)'."""
    write_series(tmp_path, ramp_images(3), description="AX DWI b1000")
    index = index_folder(tmp_path)
    said = "Untested sequence: the header says DWI (from SeriesDescription word 'dwi'); 'm' was fitted on FLAIR"
    rows = [{"file": ref.path.name, "frame": 0, "model": "m", "task": "classification", "label": "yes",
             "p_yes": "0.9", "p_no": "0.1", "warnings": said} for ref in index.series[0].slices]
    (row,) = series_rows(index, rows)
    assert f"{said} (3 of 3 slices)" in row["warnings"]


def test_a_series_none_of_whose_slices_could_be_read_carries_an_error():
    series = _series([0.0, 3.0])
    broken = [SliceOutcome(error="Cannot open 'IM0.dcm': the pixel data is truncated")] * 2
    analysis = SeriesAnalysis(series, [verdict("m", "1", "segmentation", ["lesion"], broken, series)], [], False, 0, 2)
    assert analysis.error.startswith("no slice of this series could be analysed: Cannot open 'IM0.dcm'")
    assert analysis.to_dict()["error"] == analysis.error
    fine = [SliceOutcome("no lesion", lesions=0, lesion_area_mm2=0.0)] * 2
    assert SeriesAnalysis(series, [verdict("m", "1", "segmentation", ["lesion"], fine, series)], [], False, 0,
                          2).error is None


def test_no_lesion_reads_0_mm2_where_the_spacing_is_known_and_unknown_where_it_is_not():
    known = ModelResult("seg", "1", "segmentation", "CPU", spacing_known=True)
    unknown = ModelResult("seg", "1", "segmentation", "CPU")
    assert known.to_dict()["lesion_area_mm2"] == 0.0 and unknown.to_dict()["lesion_area_mm2"] is None


def test_marks_and_lesion_pixels_are_given_on_the_files_grid_when_it_was_read_smaller():
    mark = Finding(96.0, 263.0, 28.0, 0.8)
    assert mark.to_dict(2) == {"x": 192.0, "y": 526.0, "r": 56.0, "score": 0.8, "kind": None}
    lesion = Lesion(1, 100, 25.0, (10, 12, 10, 10), 14.0, 7.0, np.array([[10, 10], [20, 20]]), (0.5, 0.5))
    out = lesion.to_dict(2)
    assert out["area_px"] == 400 and out["bbox"] == [20, 24, 20, 20] and out["area_mm2"] == 25.0


def test_info_gives_the_files_own_pixel_spacing_beside_its_own_rows(tmp_path, monkeypatch, pydicom_file):
    import pydicom

    from core.imaging import load_image

    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))  # 64 x 64, 0.3125 mm
    monkeypatch.setattr("core.imaging.dicom.downsample_factor", lambda rows, columns: 2)
    ds.save_as(tmp_path / "mr.dcm")
    info = load_image(tmp_path / "mr.dcm").info()
    assert info["rows"] == 64 and info["downsample_factor"] == 2
    assert info["pixel_spacing_mm"] == pytest.approx([0.3125, 0.3125])
    assert info["loaded_pixel_spacing_mm"] == pytest.approx([0.625, 0.625])


def test_a_cancelled_series_report_says_partial_whatever_the_number_of_warnings(tmp_path):
    """The cancel notice came last and was cut with the 13th line; the page then read as a whole series' verdict."""
    from matplotlib.figure import Figure

    from core.series.pdf import _page

    write_series(tmp_path, ramp_images(4))
    (series,) = index_folder(tmp_path).series
    results = [verdict(f"model-{k}", "1", "segmentation", ["lesion"],
                       [SliceOutcome("lesion", lesions=1, lesion_area_mm2=10.0, warnings=[
                           f"Untested sequence: the header says DWI; 'model-{k}' was fitted on FLAIR only"])] * 2
                       + [None, None], series) for k in range(8)]
    cancelled = "Cancelled: the verdicts cover only the slices analysed before the cancel."
    fig = Figure()
    _page(fig, SeriesAnalysis(series, results, [cancelled], True, 0.0, 2), anonymise=True)
    text = "\n".join(t.get_text() for t in fig.texts)
    assert "PARTIAL" in text and "Cancelled" in text and "more line(s)" in text


def test_a_series_keeps_masks_of_lesion_slices_only():
    from core.series.analysis import _outcome

    empty = ModelResult("seg", "1", "segmentation", "CPU", mask=np.zeros((512, 512), np.uint8), spacing_known=True)
    lesion = Lesion(1, 100, 25.0, (10, 10, 10, 10), 14.0, 7.0, np.array([[10, 10], [20, 20]]), (0.5, 0.5))
    mask = np.zeros((512, 512), np.uint8)
    mask[10:20, 10:20] = 1
    found = ModelResult("seg", "1", "segmentation", "CPU", mask=mask, lesions=[lesion], spacing_known=True)
    assert _outcome(empty).mask is None and _outcome(empty).lesion_area_mm2 == 0.0
    assert _outcome(found).mask.sum() == 100


def test_a_warning_holding_the_separator_stays_one_warning_in_its_csv_cell():
    from core.result_cells import join_warnings, split_warnings

    cell = join_warnings(["history not saved: disk I/O error | retry", "", "Low confidence"])
    assert split_warnings(cell) == ["history not saved: disk I/O error / retry", "Low confidence"]
