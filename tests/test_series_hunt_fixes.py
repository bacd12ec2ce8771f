"""Series defects a helper's hunt reproduced on variants of an LGG FLAIR series (each test failed before its fix):
slice thickness of a wrong sign, files cut short inside the header, slices repeated at one position, unread slices
inside a lesion, gaps and irregular steps, and what the SR, the PDF page and the verdict line left out."""

from __future__ import annotations

import pytest

from core.series.analysis import SeriesAnalysis, SliceOutcome, segmenter_verdict, verdict, verdict_text
from core.series.index import Series, SliceRef, index_folder
from core.series.report import series_rows
from tests.series_data import ramp_images, write_series


def _lesion(area: float = 100.0) -> SliceOutcome:
    return SliceOutcome("lesion", lesions=1, lesion_area_mm2=area)


def _clear() -> SliceOutcome:
    return SliceOutcome("no lesion", lesions=0, lesion_area_mm2=0.0)


def _yesno(p_yes: float) -> SliceOutcome:
    return SliceOutcome("yes" if p_yes >= 0.5 else "no", {"no": 1 - p_yes, "yes": p_yes})


def _series(positions: list[float], spacing: float = 3.0, breaks: tuple[int, ...] = ()) -> Series:
    return Series("k", "1.2.3", "dicom", slices=[SliceRef(f"s{i}.dcm", position_mm=p) for i, p in enumerate(positions)],
                  spacing_mm=spacing, spacing_source="positions", breaks=list(breaks))


def _row(name: str, **cells) -> dict:
    """A batch results.csv row of a segmenter's lesion on slice file ``name``."""
    return dict({"file": name, "frame": "0", "model": "seg", "task": "segmentation", "label": "lesion", "lesions": "1",
                 "lesion_area_mm2": "10"}, **cells)


# ----------------------------------------------------------------------------------------------- 1: slice thickness
@pytest.mark.parametrize("thickness, length", [(-3.0, 3.0), (0.0, None)])
def test_slice_thickness_is_a_length_or_unknown(tmp_path, thickness, length):
    """Without positions a negative SliceThickness gave a negative lesion volume (-78.93 ml), zero gave 0.0 ml."""
    write_series(tmp_path, ramp_images(4), positions=[None] * 4, thickness=thickness)
    (series,) = index_folder(tmp_path).series
    assert (series.thickness_mm, series.spacing_mm) == (length, length)
    *_, volume, warnings = segmenter_verdict([_lesion()] * 4, series)
    if length is None:
        assert volume is None and "Slice spacing unknown: no lesion volume." in warnings
    else:
        assert volume == pytest.approx(4 * 100.0 * 3.0 / 1000)


@pytest.mark.parametrize("thickness", [3.0, -3.0, 0.0])
def test_a_one_slice_volume_rests_on_its_thickness_and_says_so(tmp_path, thickness):
    write_series(tmp_path, ramp_images(1), thickness=thickness)
    (series,) = index_folder(tmp_path).series
    *_, volume, warnings = segmenter_verdict([_lesion()], series)
    if thickness:
        assert volume == pytest.approx(100.0 * 3.0 / 1000)
        assert "Lesion volume uses the slice spacing from SliceThickness (3.00 mm), not from slice positions." \
            in warnings
    else:
        assert volume is None and "Slice spacing unknown: no lesion volume." in warnings


# ----------------------------------------------------------------------------------------------- 2: cut in the header
def test_an_image_cut_short_inside_its_header_is_listed_and_its_series_warns(tmp_path):
    """A slice cut before its Rows vanished from the series; series.csv gave a clean verdict over the rest."""
    paths = write_series(tmp_path, ramp_images(6))
    data = paths[5].read_bytes()
    paths[5].write_bytes(data[:data.index(b"\x28\x00\x10\x00US")])  # ends before Rows: its series UID is read
    paths[2].write_bytes(paths[2].read_bytes()[:300])  # ends before its series UID: its series is unknown
    paths[1].write_bytes(paths[1].read_bytes()[:140])  # ends inside the file meta, before the SOP class
    index = index_folder(tmp_path)
    (series,) = index.series
    assert len(series) == 3 and index.skipped == 0
    assert [p.split(":")[0] for p in index.problems] == ["IM0001.dcm", "IM0002.dcm", "IM0005.dcm"]
    assert "cut short or damaged before it says what it holds" in index.problems[0]
    assert all("truncated DICOM image (MR Image Storage)" in p for p in index.problems[1:])
    assert [w for w in series.warnings if "could not be read" in w] == [
        "1 file of this series could not be read and is not among its slices: 'IM0005.dcm'."]
    (row,) = series_rows(index, [_row(ref.path.name) for ref in series.slices])  # a lesion on the slices read: it stands
    assert (row["label"], row["first_slice"], row["last_slice"]) == ("lesion", 1, 3) and "IM0005.dcm" in row["warnings"]
    assert row["lesion_volume_ml"] != ""  # the unread file lies outside the slices of the lesion
    (row,) = series_rows(index, [_row(ref.path.name, label="no lesion", lesions="0", lesion_area_mm2="0")
                                 for ref in series.slices])  # 'no lesion' over 3 of 4: the unread one could hold it
    assert row["label"] == row["first_slice"] == ""
    assert "3 of 4 slices analysed: no verdict for the whole series ('no lesion' needs every slice)" in row["warnings"]


# ----------------------------------------------------------------------------------------------- 3: one position twice
def test_two_slices_at_one_position_are_not_two_adjacent_slices():
    """The series written twice under one UID: a lesion at one level became a 2-slice run and a verdict."""
    series = _series([0.0, 0.0, 3.0, 3.005, 6.0, 6.0, 9.0, 9.0])  # within DUPLICATE_MM: one position
    one_level = [_clear(), _clear(), _lesion(), _lesion(), _clear(), _clear(), _clear(), _clear()]
    seg = verdict("seg", "1", "segmentation", ["lesion"], one_level, series)
    assert (seg.label, seg.runs, seg.lesion_volume_ml) == ("no lesion", [], 0.0)
    yesno = [_yesno(0.1)] * 2 + [_yesno(0.9)] * 2 + [_yesno(0.1)] * 4
    assert verdict("yesno", "1", "classification", ["no", "yes"], yesno, series).label == "no"
    two_levels = one_level[:4] + [_lesion(), _lesion()] + one_level[6:]
    seg = verdict("seg", "1", "segmentation", ["lesion"], two_levels, series)
    assert (seg.label, seg.runs, seg.lesion_volume_ml) == ("lesion", [(3, 6)], pytest.approx(2 * 100.0 * 3.0 / 1000))


# ----------------------------------------------------------------------------------------------- 4: unread slices
def test_an_unread_slice_inside_the_lesion_withholds_the_volume_and_is_named():
    """Slices 16 and 18 cut short shrank the volume from 78.93 to 48.46 ml; the warning named no slice."""
    series = _series([3.0 * k for k in range(8)])
    cut = "Cannot open 'IM0003.dcm': the pixel data is truncated"
    outcomes = [_clear(), _lesion(), _lesion(), SliceOutcome(error=cut), _lesion(), _lesion(), _clear(), None]
    seg = verdict("seg", "1", "segmentation", ["lesion"], outcomes, series)
    assert (seg.label, seg.first_slice, seg.last_slice, seg.runs) == ("lesion", 2, 6, [(2, 3), (5, 6)])
    assert seg.lesion_volume_ml is None
    assert "No result on slices 4, 8." in seg.warnings
    assert "Slice 4 lies inside the lesion's slices 2-6 but has no result: no lesion volume (it would leave that " \
           "slice out)." in seg.warnings
    outside = outcomes[:3] + [_clear()] + outcomes[4:6] + [SliceOutcome(error=cut), _clear()]
    kept = verdict("seg", "1", "segmentation", ["lesion"], outside, series)
    assert kept.lesion_volume_ml == pytest.approx(4 * 100.0 * 3.0 / 1000)


def test_one_rule_for_a_series_partly_analysed_in_series_csv_and_analyze_series():
    """series.csv had withheld every verdict of a series partly analysed, analyze --series (and the window) none: a
    finding on the slices analysed stands in both, a call that needs every slice in neither."""
    series = _series([3.0 * k for k in range(4)])
    failed = SliceOutcome(error="the pixel data is damaged")
    seg = verdict("seg", "1", "segmentation", ["lesion"], [_lesion(), _lesion(), _clear(), failed], series)
    assert (seg.label, seg.first_slice, seg.last_slice) == ("lesion", 1, 2) and "No result on slice 4." in seg.warnings
    seg = verdict("seg", "1", "segmentation", ["lesion"], [_clear(), _clear(), None, _clear()], series)
    assert (seg.label, seg.lesion_volume_ml, seg.runs) == (None, None, [])
    assert "3 of 4 slices analysed: no verdict for the whole series ('no lesion' needs every slice)" in seg.warnings
    assert verdict_text(seg) == "seg: no verdict for the whole series (3 of 4 slices analysed)"
    yesno = verdict("yesno", "1", "classification", ["no", "yes"], [_yesno(0.1)] * 3 + [failed], series)
    assert (yesno.label, yesno.probability) == (None, None)
    assert "3 of 4 slices analysed: no verdict for the whole series ('no' needs every slice)" in yesno.warnings
    yesno = verdict("yesno", "1", "classification", ["no", "yes"], [_yesno(0.9)] * 3 + [failed], series)
    assert (yesno.label, yesno.first_slice, yesno.last_slice) == ("yes", 1, 3)
    means = verdict("stain", "1", "classification", ["benign", "malignant"], [_yesno(0.9)] * 3 + [None], series)
    assert means.label is None  # a mean over all slices is no mean over three


# ----------------------------------------------------------------------------------------------- 5: gaps, steps
def test_lesion_volume_counts_each_slice_to_halfway_to_its_neighbours():
    """Irregular steps (2.4-4.2 mm) were counted at the median step: 11 % over each slice's own extent."""
    series = _series([0.0, 2.0, 6.0, 7.0, 10.0])  # the ends reach half the 3 mm spacing outward
    *_, volume, _ = segmenter_verdict([_lesion()] * 5, series)
    assert volume == pytest.approx(100.0 * (10.0 + 3.0) / 1000)


def test_a_gap_inside_the_lesion_is_counted_across_and_warned():
    """A slice missing inside the lesion was left out of the volume, and the verdict said nothing of it."""
    series = _series([0.0, 3.0, 6.0, 12.0, 15.0], breaks=(2,))
    seg = verdict("seg", "1", "segmentation", ["lesion"], [_lesion()] * 5, series)
    assert (seg.first_slice, seg.last_slice, seg.runs) == (1, 5, [(1, 3), (4, 5)])
    assert seg.lesion_volume_ml == pytest.approx(100.0 * 18.0 / 1000)  # 15 mm of positions, 1.5 mm past each end
    assert "Gap inside the lesion's slices 1-5: 6.00 mm between slices 3 and 4 (spacing 3.00 mm): about 1 slice(s) " \
           "missing; the volume counts the lesion across it, halfway from each side." in seg.warnings
    beside = [_lesion(), _lesion(), _lesion(), _clear(), _clear()]  # what lies beyond the gap is not counted
    *_, volume, warnings = segmenter_verdict(beside, series)
    assert volume == pytest.approx(100.0 * 9.0 / 1000) and not [w for w in warnings if w.startswith("Gap")]


def test_a_regular_alternation_of_two_steps_is_irregular_spacing_not_gaps(tmp_path):
    """Steps alternating 2.5 and 4.0 mm: every 4.0 mm step was 'a gap, about 1 slice missing'."""
    steps = [2.5 if k % 2 else 4.0 for k in range(1, 10)]
    z = [sum(steps[:k]) for k in range(10)]
    write_series(tmp_path, ramp_images(10), positions=[(-120.0, -120.0, -30.0 + v) for v in z])
    (series,) = index_folder(tmp_path).series
    assert series.breaks == [] and not [w for w in series.warnings if w.startswith("Gap")]
    assert "Irregular spacing: steps from 2.50 to 4.00 mm." in series.warnings


@pytest.mark.parametrize("z, breaks", [
    ([0, 3, 6, 9, 12, 18, 24, 30, 33], [4, 5, 6]),  # three of eight steps miss a slice: still gaps
    ([0, 3, 6, 9, 15, 21], [3, 4]),
    ([0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 36], [9]),
])
def test_steps_that_miss_a_slice_are_gaps_however_many(tmp_path, z, breaks):
    """Measured against the upper quartile of the steps, a series of which a quarter of the steps missed a slice
    had no gap at all (its verdict bridged the missing slices, its volume counted them)."""
    write_series(tmp_path, ramp_images(len(z)), positions=[(-120.0, -120.0, float(v)) for v in z])
    (series,) = index_folder(tmp_path).series
    assert series.breaks == breaks and series.spacing_mm == pytest.approx(3.0)


def test_irregular_spacing_is_warned_beside_a_gap(tmp_path):
    z = [0.0, 3.0, 6.5, 9.0, 12.0, 21.0, 24.0, 27.5, 30.0]
    write_series(tmp_path, ramp_images(9), positions=[(-120.0, -120.0, v) for v in z])
    (series,) = index_folder(tmp_path).series
    assert series.breaks == [4] and series.spacing_mm == pytest.approx(3.0)
    assert "Irregular spacing: steps from 2.50 to 3.50 mm." in series.warnings


# ----------------------------------------------------------------------------------------------- 6: the SR
def test_the_series_sr_carries_each_verdicts_warnings(tmp_path):
    import highdicom as hd

    from core.series.structured_report import export_series_sr

    write_series(tmp_path / "s", ramp_images(4), positions=[None] * 4, thickness=0.0)
    (series,) = index_folder(tmp_path / "s").series
    seg = verdict("seg", "1", "segmentation", ["lesion"], [_clear(), _lesion(), _lesion(), _clear()], series)
    sr = hd.sr.srread(export_series_sr(SeriesAnalysis(series, [seg], [], False, 0.0, 4), tmp_path / "s.sr.dcm"))
    (group,) = sr.content.get_image_measurement_groups()
    texts = [item.TextValue for item in group[0].ContentSequence if item.ValueType == "TEXT"]
    assert "Slice spacing unknown: no lesion volume." in texts
    assert any("ordered by InstanceNumber" in t for t in texts)  # the series' own warnings qualify it too


# ----------------------------------------------------------------------------------------------- 7-9: the PDF page
def _page_text(series: Series, results: list, anonymise: bool = True) -> str:
    from matplotlib.figure import Figure

    from core.series.pdf import _page

    fig = Figure()
    _page(fig, SeriesAnalysis(series, results, [], False, 0.0, len(series)), anonymise)
    return "\n".join(t.get_text() for t in fig.texts)


def test_the_series_pdf_gives_the_series_own_geometry_warnings(tmp_path):
    write_series(tmp_path, ramp_images(4), positions=[None] * 4)
    (series,) = index_folder(tmp_path).series
    seg = verdict("seg", "1", "segmentation", ["lesion"], [_clear()] * 4, series)
    assert "ordered by InstanceNumber" in _page_text(series, [seg]).replace("\n", " ")


def test_a_long_series_description_has_lines_of_its_own_that_fit_the_page(tmp_path):
    description = "Very long series description " + "lorem ipsum " * 20
    write_series(tmp_path, ramp_images(2), description=description)
    (series,) = index_folder(tmp_path).series
    text = _page_text(series, [], anonymise=False)
    identity = text.split("\n")[1:8]
    assert "Series: Very long series description lorem ipsum" in text and "…" in text
    assert all(len(line) <= 105 for line in identity), identity
    from core.series.pdf import _wrapped

    wide = _wrapped("Series: " + "脑" * 120)  # each takes two columns of the monospace line
    assert len(wide) == 2 and all(len(line) <= 60 for line in wide) and wide[1].endswith("…")


def test_characters_no_installed_font_shows_are_named_on_the_page(tmp_path, monkeypatch):
    """A CJK patient name printed as empty boxes, nothing saying so."""
    from core.export import page_fonts

    import pydicom

    monkeypatch.setattr(page_fonts, "FALLBACK_FONTS", ())  # as on a machine without any font for them
    for path in write_series(tmp_path, ramp_images(2)):
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet, ds.SeriesDescription = "ISO_IR 192", "轴位 FLAIR"
        ds.save_as(path)
    (series,) = index_folder(tmp_path).series
    text = _page_text(series, [], anonymise=False)
    assert "轴位 FLAIR" in text and "U+8F74 U+4F4D" in text and "cannot be shown" in text


def test_an_installed_font_joins_the_fallback_and_its_characters_are_not_named(monkeypatch):
    from core.export import page_fonts

    monkeypatch.setattr(page_fonts, "FALLBACK_FONTS", ("No Such Font", "STIXGeneral"))
    assert page_fonts.page_fonts() == ["DejaVu Sans Mono", "STIXGeneral"]
    assert page_fonts.unshown("a⅀ 山") == ["山"]  # STIXGeneral draws ⅀ (U+2140), which DejaVu Sans Mono lacks


def test_anonymised_reports_withhold_the_file_names_their_warnings_give(tmp_path):
    """The single-image report withholds the file's name when anonymised (it may be the patient's); the warnings the
    series PDF and SR now carry name files."""
    from core.series.structured_report import export_series_sr

    paths = write_series(tmp_path / "s", ramp_images(4), names=[f"DOE_JANE_{k}.dcm" for k in range(4)])
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[:data.index(b"\x28\x00\x10\x00US")])
    (series,) = index_folder(tmp_path / "s").series
    outcomes = [_clear(), SliceOutcome(error="Cannot open 'DOE_JANE_1.dcm': the pixel data is truncated"), _clear()]
    seg = verdict("seg", "1", "segmentation", ["lesion"], outcomes, series)
    anonymised = _page_text(series, [seg])
    assert "DOE_JANE" not in anonymised and "(file name withheld)" in anonymised
    assert "DOE_JANE_3.dcm" in _page_text(series, [seg], anonymise=False)
    sr = export_series_sr(SeriesAnalysis(series, [seg], [], False, 0.0, 3), tmp_path / "s.sr.dcm")
    assert b"DOE_JANE" not in sr.read_bytes() and b"(file name withheld)" in sr.read_bytes()


def test_withholding_file_names_leaves_the_numbers_of_the_text(tmp_path):
    """Files named 1 to 8: 'Gap: (file name withheld).00 mm between slices (file name withheld) and ...'."""
    z = [0, 3, 6, 9, 15, 18, 21, 24]
    write_series(tmp_path, ramp_images(8), positions=[(-120.0, -120.0, v) for v in z], names=[str(k) for k in range(1, 9)])
    (series,) = index_folder(tmp_path).series
    (gap,) = [w for w in series.warnings if w.startswith("Gap")]
    assert series.without_file_names(gap) == gap
    assert series.without_file_names("Cannot open '4': truncated") == "Cannot open (file name withheld): truncated"


# ----------------------------------------------------------------------------------------------- 10: the verdict line
def test_the_verdict_line_gives_a_segmenters_separate_runs():
    """'lesion on slices 13-309 of 312' hid 12 runs; 13-23 hid the unread slices between 13-15 and 19-23."""
    series = _series([3.0 * k for k in range(8)])
    outcomes = [_clear(), _lesion(), _lesion(), _clear(), _clear(), _lesion(), _lesion(), _clear()]
    seg = verdict("seg", "1", "segmentation", ["lesion"], outcomes, series)
    assert verdict_text(seg) == "seg: lesion on slices 2-7 of 8 (runs: 2-3, 6-7), volume 1.20 ml"
