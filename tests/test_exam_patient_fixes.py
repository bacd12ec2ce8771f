"""The exam window hangs the exam of the film shown, never another woman's: defects a hunt reproduced.

Each failed before its fix: a folder opened at another woman's film (from History) hung the first woman's exam, a
prior opened from History hung the current exam, Ctrl+Shift+M over a single file of another woman hung the folder's
first woman, an exam stayed up over another folder, and Analyse stayed off for an exam hung while another's ran.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from core.inference.results import Analysis, ModelResult
from core.series import index_folder
from core.series.hanging import HANGING_ORDER
from tests.conftest import open_window
from tests.series_data import breast, write_mammo


def _window(qtbot, tmp_path):
    (tmp_path / "models").mkdir(exist_ok=True)
    return open_window(qtbot, tmp_path / "models", tmp_path)


def _four(folder: Path, patient: str, name: str, date: str = "20200101") -> None:
    """A woman's four screening views (DICOM MG) of one study."""
    study = generate_uid()
    for view in HANGING_ORDER:
        path = write_mammo(folder / f"{patient}_{date}_{view}.dcm", breast("left"), study_uid=study,
                           laterality=view[0], view=view[1:], patient_id=patient)
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.StudyDate = name, date
        ds.save_as(path)


def _hung(qtbot, window) -> None:
    qtbot.waitUntil(lambda: window.exam_view is not None and window.exam_view.loaded()
                    and window.state.series is not None, timeout=20000)


def test_a_folder_opened_at_another_womans_film_hangs_her_exam(qtbot, tmp_path):
    _four(tmp_path / "two", "WA", "ALPHA^ANN")
    _four(tmp_path / "two", "WB", "BETA^BEA")
    second = next(s for s in index_folder(tmp_path / "two").series if s.patient_id == "WB")
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path / "two", second.history_key)  # as History reopens it
    _hung(qtbot, window)
    assert window.state.series.patient_id == "WB" and window.exam_view.exam.patient_id == "WB"


def test_a_prior_opened_from_history_hangs_the_prior(qtbot, tmp_path):
    _four(tmp_path / "pc", "WA", "ALPHA^ANN", "20190301")
    _four(tmp_path / "pc", "WA", "ALPHA^ANN", "20210301")
    prior = next(s for s in index_folder(tmp_path / "pc").series if "20190301" in s.slices[0].path.name)
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path / "pc", prior.history_key)
    _hung(qtbot, window)
    assert window.exam_view.exam.date == "20190301"


def test_a_single_file_of_another_woman_hangs_nothing_and_closes_the_exam_up(qtbot, tmp_path, monkeypatch):
    _four(tmp_path / "A", "WA", "ALPHA^ANN")
    _four(tmp_path / "B", "WB", "BETA^BEA")
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path / "A")
    _hung(qtbot, window)
    window.open_path(tmp_path / "B" / "WB_20200101_RCC.dcm")
    qtbot.waitUntil(lambda: window.state.record is not None and "WB_" in window.state.record.path.name, timeout=20000)
    assert not window.exam_view.isVisible()  # woman A's exam no longer up beside woman B's film
    errors = []
    monkeypatch.setattr(window, "_error", errors.append)
    assert window.show_exam() is None and "in no mammography exam" in errors[0]


def test_another_folder_closes_the_exam_of_the_one_before(qtbot, tmp_path):
    _four(tmp_path / "A", "WA", "ALPHA^ANN")
    (tmp_path / "B").mkdir()
    cv2.imwrite(str(tmp_path / "B" / "other.png"), (breast("left", 120, 80) // 12).astype(np.uint8))
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path / "A")
    _hung(qtbot, window)
    window.open_folder(tmp_path / "B")
    qtbot.waitUntil(lambda: window.state.record is not None and "other" in window.state.record.path.name,
                    timeout=20000)
    assert not window.exam_view.isVisible()


def test_analyse_is_offered_for_an_exam_hung_while_another_is_analysed(qtbot, tmp_path, monkeypatch):
    _four(tmp_path / "A", "WA", "ALPHA^ANN")
    _four(tmp_path / "B", "WB", "BETA^BEA")
    window = _window(qtbot, tmp_path)

    def slow(record, frame=0, **_):
        time.sleep(0.3)
        result = ModelResult("mg", "1", "classification", "cpu", classes=["normal", "abnormal"],
                             probabilities={"normal": 0.2, "abnormal": 0.8}, label="abnormal")
        return Analysis(str(record.path), "MG", "dicom", frame, results=[result])

    monkeypatch.setattr(window.engine.analyzer, "analyze", slow)
    window.open_folder(tmp_path / "A")
    _hung(qtbot, window)
    view = window.exam_view
    view.analyse_button.click()
    assert not view.analyse_button.isEnabled()
    window.open_folder(tmp_path / "B")
    qtbot.waitUntil(lambda: view.exam.patient_id == "WB" and view.loaded(), timeout=20000)
    assert view.analyse_button.isEnabled() and view.analysing  # A's views still under way
    qtbot.waitUntil(lambda: not view.analysing, timeout=20000)
    assert view.analyse_button.isEnabled() and not view.results  # A's results are not drawn on B


def test_a_lone_side_letter_in_the_patient_id_does_not_decide_the_side(tmp_path):
    """PatientID 'R-1047', no laterality in the header: all four films had been read as right (two hung, two lost)."""
    from core.series.hanging import screening_exams

    study = generate_uid()
    for view in HANGING_ORDER:
        write_mammo(tmp_path / f"img_{view[0]}_{view[1:]}.dcm", breast("left"), study_uid=study, view=view[1:],
                    patient_id="R-1047")
    (exam,) = screening_exams(index_folder(tmp_path))
    assert {name: v.ref.path.stem for name, v in exam.views.items()} == {
        name: f"img_{name[0]}_{name[1:]}" for name in HANGING_ORDER}
    assert {v.source for v in exam.views.values()} == {"file name"}


def test_a_film_for_presentation_is_hung_before_raw_data_and_a_repeat_is_said(qtbot, tmp_path):
    """Both kinds of each view present: a presentation film had been hung beside a raw ('FOR PROCESSING') one, and
    of two LCC films the first in index order was hung with nothing said."""
    from core.series.hanging import screening_exams

    study = generate_uid()
    for view in HANGING_ORDER:
        for intent in ("FOR PROCESSING", "FOR PRESENTATION"):
            path = write_mammo(tmp_path / f"{view}_{intent.split()[1]}.dcm", breast("left"), study_uid=study,
                               laterality=view[0], view=view[1:], patient_id="W5")
            ds = pydicom.dcmread(path)
            ds.PresentationIntentType = intent
            ds.save_as(path)
    repeat = write_mammo(tmp_path / "LCC_repeat.dcm", breast("left", 80, 50), study_uid=study, laterality="L",
                         view="CC", patient_id="W5")
    ds = pydicom.dcmread(repeat)
    ds.PresentationIntentType, ds.InstanceNumber = "FOR PRESENTATION", 2
    ds.save_as(repeat)
    (exam,) = screening_exams(index_folder(tmp_path))
    assert {name: v.ref.path.stem for name, v in exam.views.items()} == {
        "RCC": "RCC_PRESENTATION", "LCC": "LCC_repeat", "RMLO": "RMLO_PRESENTATION", "LMLO": "LMLO_PRESENTATION"}
    assert exam.others == {"RCC": 1, "LCC": 2, "RMLO": 1, "LMLO": 1}
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path)
    _hung(qtbot, window)
    assert window.exam_view.captions["LCC"].text().endswith("3 films: LCC_repeat.dcm hung")


def test_the_two_breasts_are_shown_at_one_scale(qtbot, tmp_path):
    """Right films 2400 x 1600 and left 1800 x 1200, both 0.1-mm pixels: each had been fitted to the same height,
    the left breast drawn 1.33 times larger."""
    study = generate_uid()
    sizes = {"R": (2400, 1600), "L": (1800, 1200)}
    for view in HANGING_ORDER:
        path = write_mammo(tmp_path / f"{view}.dcm", breast("left", *sizes[view[0]]), study_uid=study,
                           laterality=view[0], view=view[1:], patient_id="WS")
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [0.1, 0.1]
        ds.save_as(path)
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path)
    _hung(qtbot, window)
    shown = {name: window.exam_view.rects[name].height for name in HANGING_ORDER}
    for right, left in (("RCC", "LCC"), ("RMLO", "LMLO")):
        assert shown[right] / shown[left] == pytest.approx(2400 / 1800, rel=0.02)


@pytest.mark.parametrize("pattern", ["alice_{view}_{side}", "alice_{side}_{view}_2020", "{side}{view}_alice"])
def test_a_png_exam_named_with_side_and_view_anywhere_is_one_exam_and_hangs_itself(qtbot, tmp_path, pattern):
    """Only a trailing side and view had been taken off the woman's name: four one-view exams."""
    from core.series.hanging import screening_exams

    for view in HANGING_ORDER:
        name = pattern.format(side=view[0], view=view[1:]) + ".png"
        cv2.imwrite(str(tmp_path / name), (breast("left", 120, 80) // 12).astype(np.uint8))
    (exam,) = screening_exams(index_folder(tmp_path))
    assert sorted(exam.views) == sorted(HANGING_ORDER)
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path)
    _hung(qtbot, window)
    assert sorted(window.exam_view.exam.views) == sorted(HANGING_ORDER)
