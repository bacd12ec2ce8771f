"""Compare with series: a second series beside the first, scrolled with it where parallel, reference lines where
the planes cross (gui.compare_view over core.series.linking)."""

from __future__ import annotations

import pydicom
import pytest

pytest.importorskip("pytestqt")

from pydicom.uid import generate_uid  # noqa: E402

from tests.conftest import open_window  # noqa: E402
from tests.series_data import SAGITTAL, ramp_images, write_series  # noqa: E402


def _study(tmp_path, other_frame: bool = False):
    """AX FLAIR (6 slices, 3 mm), AX T1 (4 slices, 5 mm) and SAG T2 (3 slices) of one frame of reference."""
    study, frame = generate_uid(), generate_uid()
    folder = tmp_path / "study"
    files = write_series(folder / "flair", ramp_images(6), spacing=3.0, study_uid=study, description="AX FLAIR",
                         series_number=1)
    files += write_series(folder / "t1", ramp_images(4), spacing=5.0, study_uid=study, description="AX T1",
                          series_number=2)
    sag = write_series(folder / "sag", ramp_images(3), orientation=SAGITTAL, study_uid=study, description="SAG T2",
                       series_number=3, positions=[(-105.0 + 3 * k, -120.0, -10.0) for k in range(3)])
    for path in files + sag:
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = generate_uid() if other_frame and path in sag else frame
        ds.save_as(path)
    return folder


def _open(qtbot, win, folder, name):
    win.open_folder(folder)
    qtbot.waitUntil(lambda: win.state.series is not None and not win.is_busy, timeout=20000)
    return {s.description: s for s in win.study_index.series}


def test_a_parallel_series_beside_scrolls_with_the_main_one_both_ways(qtbot, tiny_models, tmp_path):
    win = open_window(qtbot, tiny_models, tmp_path)
    series = _open(qtbot, win, _study(tmp_path), "AX FLAIR")
    assert win.state.series is series["AX FLAIR"] and win.compare.isHidden()
    win.compare_series(series["AX T1"])
    other = win.compare.state
    qtbot.waitUntil(lambda: other.series is series["AX T1"] and not win.is_busy, timeout=20000)
    assert win.compare.isVisible() and "scrolled with the main view" in win.compare.title.text()
    z = lambda state: state.current_slice.position[2]  # noqa: E731
    for k in range(6):  # FLAIR every 3 mm from -30, T1 every 5 mm from -30
        win.state.set_slice(k)
        assert abs(z(other) - z(win.state)) <= 2.5, (k, z(win.state), z(other))
    other.set_slice(1)  # T1 at -25 mm: FLAIR at -24
    assert z(win.state) == pytest.approx(-24.0)
    assert not win.viewer.reference_items and not win.compare.viewer.reference_items  # parallel: no lines


def test_a_crossing_series_draws_each_slice_as_a_line_on_the_other(qtbot, tiny_models, tmp_path):
    win = open_window(qtbot, tiny_models, tmp_path)
    series = _open(qtbot, win, _study(tmp_path), "AX FLAIR")
    win.compare_series(series["SAG T2"])
    qtbot.waitUntil(lambda: win.compare.state.series is series["SAG T2"] and not win.is_busy, timeout=20000)
    assert "reference lines" in win.compare.title.text()
    column = lambda: (win.compare.state.current_slice.position[0] + 120) / 0.9375 + 0.5  # noqa: E731 - x to column
    for k in (0, 2):  # the sagittals at x = -105, -102, -99: columns 16, 19.2, 22.4 of the axial picture
        win.compare.state.set_slice(k)
        (line,) = win.viewer.reference_items
        assert line.line().x1() == pytest.approx(column()) and line.line().x2() == pytest.approx(column())
    (back,) = win.compare.viewer.reference_items  # the axial at z = -30 on the sagittal: row (-10 + 30) / 0.9375
    assert back.line().y1() == pytest.approx(20 / 0.9375 + 0.5)
    win.close_comparison()
    assert win.compare.isHidden() and not win.viewer.reference_items


def test_series_of_another_frame_of_reference_are_shown_but_not_linked(qtbot, tiny_models, tmp_path):
    win = open_window(qtbot, tiny_models, tmp_path)
    series = _open(qtbot, win, _study(tmp_path, other_frame=True), "AX FLAIR")
    win.compare_series(series["SAG T2"])
    qtbot.waitUntil(lambda: win.compare.state.series is series["SAG T2"] and not win.is_busy, timeout=20000)
    assert "not linked" in win.compare.title.text() and not win.viewer.reference_items


def test_opening_another_folder_closes_the_comparison(qtbot, tiny_models, tmp_path):
    win = open_window(qtbot, tiny_models, tmp_path)
    series = _open(qtbot, win, _study(tmp_path), "AX FLAIR")
    win.compare_series(series["AX T1"])
    qtbot.waitUntil(lambda: win.compare.state.series is series["AX T1"] and not win.is_busy, timeout=20000)
    write_series(tmp_path / "other", ramp_images(2), study_uid=generate_uid(), description="Another patient")
    win.open_folder(tmp_path / "other")
    qtbot.waitUntil(lambda: win.state.series is not None and win.state.series.description == "Another patient"
                    and not win.is_busy, timeout=20000)
    assert win.compare.isHidden() and win.compare.state.series is None


def test_a_comparison_asked_for_later_or_closed_meanwhile_wins_over_a_slow_one(qtbot, tiny_models, tmp_path,
                                                                                monkeypatch):
    import threading

    import gui.main_window as mw

    win = open_window(qtbot, tiny_models, tmp_path)
    series = _open(qtbot, win, _study(tmp_path), "AX FLAIR")
    release = threading.Event()
    real = mw.open_stack

    def slow_for_t1(s):
        if s.description == "AX T1":
            release.wait(10)  # a large series on a network share
        return real(s)

    monkeypatch.setattr(mw, "open_stack", slow_for_t1)
    win.compare_series(series["AX T1"])
    win.compare_series(series["SAG T2"])  # the reader changes their mind
    qtbot.waitUntil(lambda: win.compare.state.series is series["SAG T2"], timeout=20000)
    release.set()
    qtbot.waitUntil(lambda: not win.is_busy, timeout=20000)
    qtbot.wait(200)
    assert win.compare.state.series is series["SAG T2"], "the slower, earlier request replaced the later one"
    release.clear()
    win.compare_series(series["AX T1"])
    win.close_comparison()  # closed before it arrives
    release.set()
    qtbot.waitUntil(lambda: not win.is_busy, timeout=20000)
    qtbot.wait(200)
    assert win.compare.isHidden(), "a closed comparison came back"


def test_only_the_shown_patients_series_are_compared_and_another_patient_closes_it(qtbot, tiny_models, tmp_path):
    win = open_window(qtbot, tiny_models, tmp_path)
    folder = _study(tmp_path)
    write_series(folder / "other", ramp_images(2), study_uid=generate_uid(), description="Other patient",
                 patient_id="SOMEONE-ELSE")
    series = _open(qtbot, win, folder, "AX FLAIR")
    win.compare_series(series["Other patient"])
    qtbot.wait(300)
    assert win.compare.isHidden() and "another patient" in (win.last_error or "")
    win.compare_series(series["AX T1"])
    qtbot.waitUntil(lambda: win.compare.state.series is series["AX T1"] and not win.is_busy, timeout=20000)
    win.open_series(series["Other patient"])  # the main view moves to another patient
    qtbot.waitUntil(lambda: win.state.series is series["Other patient"] and not win.is_busy, timeout=20000)
    assert win.compare.isHidden() and win.compare.state.series is None


def test_the_title_says_not_linked_where_slices_have_no_positions(qtbot, tiny_models, tmp_path):
    win = open_window(qtbot, tiny_models, tmp_path)
    folder = _study(tmp_path)
    for path in (folder / "t1").iterdir():
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    series = _open(qtbot, win, folder, "AX FLAIR")
    win.compare_series(series["AX T1"])
    qtbot.waitUntil(lambda: win.compare.state.series is series["AX T1"] and not win.is_busy, timeout=20000)
    assert "not linked (slice positions" in win.compare.title.text()
