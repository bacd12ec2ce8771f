"""The window's widgets follow its ViewerState (and each other) in the cases a GUI review found them not to: the
Modality box after a failed open, the pixel readout after a scroll, the batch dialog's empty folder, a folder
without images, navigation keys in panels, zooming in on tiny pictures, a series run of another series or of old
settings, worker results for a closed window, closing with a batch running, and R with inverted grey levels."""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QEvent, QObject, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication, QComboBox  # noqa: E402
from shiboken6 import isValid  # noqa: E402

from tests.conftest import open_window  # noqa: E402


@pytest.fixture
def window(qtbot, tiny_models, tmp_path):
    return open_window(qtbot, tiny_models, tmp_path)


def _open(qtbot, window, path) -> None:
    window.open_path(path)
    qtbot.waitUntil(lambda: window.state.record is not None and window.state.record.path.name == Path(path).name
                    and not window.is_busy, timeout=20000)


def _open_folder(qtbot, window, folder) -> dict:
    window.open_folder(folder)
    qtbot.waitUntil(lambda: window.state.series is not None and not window.is_busy, timeout=20000)
    return {s.description: s for s in window.study_index.series}


def _choose_modality(window, index: int) -> None:
    """The reader picks an entry of the Modality box (``activated`` fires for a user's choice only)."""
    window.modality_box.setCurrentIndex(index)
    window._modality_chosen()


def _fail_an_open(qtbot, window, tmp_path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, not an image")
    window.last_error = None
    window.open_path(bad)
    qtbot.waitUntil(lambda: window.last_error is not None and not window.is_busy, timeout=20000)


def _fake_series_runs(monkeypatch) -> list[dict]:
    """Series analyses that wait until the test ends them: each run's series, options and future."""
    runs: list[dict] = []

    def submit(series, engine, **options):
        runs.append({"series": series, "future": Future(), **options})
        return runs[-1]["future"]

    monkeypatch.setattr("gui.main_window.submit_series", submit)
    return runs


# 1
def test_the_modality_box_follows_the_state_after_a_failed_open_and_series_analysis_reads_the_state(
        qtbot, window, pydicom_file, study, tmp_path, monkeypatch):
    _open(qtbot, window, pydicom_file("MR_small.dcm"))
    _choose_modality(window, 3)  # Breast ultrasound
    _fail_an_open(qtbot, window, tmp_path)
    assert window.state.record.modality.value == "US" and window.state.record.modality_source == "user"
    assert window.modality_box.currentData() == "US"  # not Automatic: the image is still read as ultrasound
    _open(qtbot, window, pydicom_file("CT_small.dcm"))  # another image: its own modality, the box Automatic
    assert window.modality_box.currentData() is None and window.state.record.modality_source != "user"

    runs = _fake_series_runs(monkeypatch)
    _open_folder(qtbot, window, study)
    _choose_modality(window, 3)
    _fail_an_open(qtbot, window, tmp_path)
    window.modality_box.setCurrentIndex(0)  # the box alone says Automatic: the series is still ultrasound
    window.analyse_series()
    assert runs[-1]["modality"] == "US"


# 2
def test_the_pixel_readout_follows_the_slice_and_the_image_under_a_still_cursor(qtbot, window, pydicom_file):
    _open(qtbot, window, pydicom_file("rtdose.dcm"))  # 15 frames of 10 x 10, values differing frame to frame
    viewer, state = window.viewer, window.state
    local = QPointF(viewer.mapFromScene(QPointF(5.5, 5.5)))
    move = QMouseEvent(QEvent.Type.MouseMove, local, QPointF(viewer.viewport().mapToGlobal(local.toPoint())),
                       Qt.MouseButton.NoButton, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewer.viewport(), move)
    first = window.cursor_label.text()
    assert first == state.pixel_text(5, 5) and first.startswith("x 5, y 5: 978000")
    state.set_slice(7)  # a key or the wheel: the mouse has not moved
    assert window.cursor_label.text() == state.pixel_text(5, 5) != first
    _open(qtbot, window, pydicom_file("CT_small.dcm"))  # another image under the cursor: its value, not the dose
    point = viewer.mapToScene(local.toPoint())
    assert window.cursor_label.text() == state.pixel_text(int(point.x()), int(point.y()))
    assert "978000" not in window.cursor_label.text() and "975000" not in window.cursor_label.text()


# 3
def test_the_batch_dialog_refuses_an_empty_folder_or_output_folder(qtbot, window, tmp_path, monkeypatch):
    def no_run(*args, **kwargs):
        raise AssertionError(f"a run was started on {args[0]!r}")

    monkeypatch.setattr("gui.batch_dialog.BatchRun", no_run)
    dialog = window.batch()
    for folder, out in (("", str(tmp_path / "out")), ("   ", str(tmp_path / "out")), (str(tmp_path), "  ")):
        dialog.folder.setText(folder)
        dialog.out.setText(out)
        dialog.start()
        assert not dialog.running and dialog.status.text().startswith("Not started: choose")
    assert "a folder to analyse" in dialog.status.text() or "an output folder" in dialog.status.text()
    dialog.close()


# 4
def test_a_folder_or_drop_without_images_keeps_the_studies_and_the_comparison(qtbot, window, study, tmp_path):
    series = _open_folder(qtbot, window, study)
    window.compare_series(series["SAG T1"])
    qtbot.waitUntil(lambda: window.compare.state.series is series["SAG T1"] and not window.is_busy, timeout=20000)
    index, rows = window.study_index, window.studies.topLevelItemCount()
    (tmp_path / "empty").mkdir()
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    for ask in (lambda: window.open_folder(tmp_path / "empty"),
                lambda: window.open_files([tmp_path / "a.txt", tmp_path / "b.txt"])):
        window.last_error = None
        ask()
        qtbot.waitUntil(lambda: window.last_error is not None and not window.is_busy, timeout=20000)
        assert window.last_error.startswith("No images found")
        assert window.study_index is index and window.studies.topLevelItemCount() == rows == 1
        assert not window.compare.isHidden() and window.compare.state.series is series["SAG T1"]
        assert window.state.series is series["AX FLAIR"]


# 5
def test_navigation_keys_go_to_the_focused_control_not_the_slice(qtbot, window, pydicom_file):
    from core.inference.results import Analysis, ModelResult

    _open(qtbot, window, pydicom_file("rtdose.dcm"))
    window.activateWindow()
    state = window.state

    def press(widget, key) -> None:
        widget.setFocus()
        QApplication.processEvents()
        QTest.keyClick(widget, key)
        QApplication.processEvents()

    slider = window.overlays.heatmap_opacity
    before = slider.value()
    press(slider, Qt.Key.Key_Right)
    assert state.slice_index == 0 and slider.value() != before
    colormap = window.overlays.colormap
    before = colormap.currentIndex()
    press(colormap, Qt.Key.Key_Down)
    assert state.slice_index == 0 and colormap.currentIndex() == before + 1
    window.warnings.show_warnings(["one", "two"])
    for panel in (window.warnings, window.model_info):
        press(panel, Qt.Key.Key_PageDown)
        assert state.slice_index == 0
    # the Grad-CAM class chooser, made when an analysis is shown: Down picks the next class, not the next frame
    heat = np.zeros((10, 10), np.float32)
    result = ModelResult("tiny-mr-classifier", "1", "classification", "cpu", classes=["no", "yes"],
                         probabilities={"no": 0.3, "yes": 0.7}, label="yes", heatmap=heat, heatmap_class="yes")
    analysis = Analysis(str(state.record.path), state.record.modality.value, "dicom", 0, [result])
    state.set_analysis(analysis)
    chooser = window.probabilities.findChild(QComboBox)
    chosen = []
    window.probabilities.gradcamClassChosen.disconnect()  # no Grad-CAM run: only which class was asked for
    window.probabilities.gradcamClassChosen.connect(lambda model, name: chosen.append(name))
    press(chooser, Qt.Key.Key_Up)
    assert state.slice_index == 0 and state.analysis is analysis and chosen == ["no"]
    press(window.overlays.heatmap, Qt.Key.Key_Space)  # a tick box: Space ticks it, cine does not start
    assert not window.cine.isActive()
    press(window.viewer, Qt.Key.Key_Down)  # on the image the keys still step the slices
    assert state.slice_index == 1


# 6
@pytest.mark.parametrize("shape", [(1, 1), (2, 3)])
def test_zoom_in_never_zooms_out_and_zoom_out_never_in(qtbot, window, tmp_path, shape):
    from PIL import Image

    path = tmp_path / "tiny.png"
    Image.fromarray((np.arange(np.prod(shape)).reshape(shape) * 40).astype(np.uint8)).save(path)
    _open(qtbot, window, path)
    viewer = window.viewer
    fitted = viewer.transform().m11()
    assert fitted > 64  # a fitted tiny picture is beyond what + zooms to (64x)
    viewer.zoom(1.25)
    assert viewer.transform().m11() >= fitted
    viewer.fit()
    viewer.zoom(0.8)
    assert viewer.transform().m11() == pytest.approx(0.8 * fitted)
    viewer.actual_size()
    viewer.zoom(1.25)
    assert viewer.transform().m11() == pytest.approx(1.25)


# 7
def test_a_series_run_names_its_series_and_stops_when_the_modality_or_models_change(qtbot, window, study,
                                                                                   monkeypatch):
    from core.series.analysis import SeriesAnalysis

    runs = _fake_series_runs(monkeypatch)
    series = _open_folder(qtbot, window, study)
    ax, sag = series["AX FLAIR"], series["SAG T1"]
    panel = window.series_panel
    window.analyse_series()
    runs[0]["progress"](type("P", (), {"done": 2, "total": 6})())
    QApplication.processEvents()
    assert panel.status.text() == "Analysing the series…" and panel.progress.value() == 2
    window.open_series(sag)
    qtbot.waitUntil(lambda: window.state.series is sag, timeout=10000)  # busy: the run goes on
    assert "AX FLAIR" in panel.status.text() and "not the one shown" in panel.status.text()
    window.open_series(ax)
    qtbot.waitUntil(lambda: window.state.series is ax, timeout=10000)  # busy: the run goes on
    assert panel.status.text() == "Analysing the series…"
    _choose_modality(window, 3)  # ultrasound: the run for MR is not wanted any more
    assert runs[0]["cancel"].is_set()
    runs[0]["future"].set_result(SeriesAnalysis(ax, [], [], True, 0.1, 2))
    qtbot.waitUntil(lambda: window.series_cancel is None, timeout=10000)
    assert panel.status.text().startswith("Cancelled: the modality, the models or the scale changed")
    assert window.state.series_analysis is None
    window.analyse_series()
    assert runs[1]["modality"] == "US"
    window.state.set_chosen_models(["tiny-mr-classifier"])  # other models: that run stops too
    assert runs[1]["cancel"].is_set()
    runs[1]["future"].set_result(SeriesAnalysis(ax, [], [], False, 0.1, 6))  # it had ended before it heard
    qtbot.waitUntil(lambda: window.series_cancel is None, timeout=10000)
    assert panel.status.text().startswith("Discarded: ") and window.state.series_analysis is None


# 8
def test_results_for_a_deleted_window_are_dropped_without_errors(qtbot, tiny_models, tmp_path, study, monkeypatch,
                                                                 caplog):
    from PySide6.QtCore import QSettings

    from core.history import History
    from core.inference.analyzer import Analyzer, Engine
    from core.models.registry import Registry
    from gui.main_window import MainWindow
    from gui.workers import FutureBridge

    owner = QObject()
    bridge = FutureBridge(owner)
    future = Future()
    bridge.watch(future, lambda _: None, lambda _: None)
    owner.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert not isValid(bridge)
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        future.set_result(1)  # the done callback runs here: it must not try the deleted bridge's signal
    assert not [r for r in caplog.records if "callback" in r.getMessage()]

    runs = _fake_series_runs(monkeypatch)
    registry = Registry([tiny_models])
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("auto_analyse", False)
    win = MainWindow(engine=Engine(Analyzer(registry)), registry=registry, settings=settings,
                     history=History(tmp_path / "history.sqlite"))  # not qtbot's: this one is deleted here
    win.show()
    _open_folder(qtbot, win, study)
    win.analyse_series()
    progress = runs[0]["progress"]
    win.close()
    win.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    progress(type("P", (), {"done": 1, "total": 6})())  # the engine thread's next slice: nobody to tell, no error
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        runs[0]["future"].set_result(None)
    assert not [r for r in caplog.records if "callback" in r.getMessage()]


# 9
def test_closing_the_window_asks_about_a_running_batch_and_stops_and_deletes_its_dialog(qtbot, window, tmp_path,
                                                                                        monkeypatch):
    from gui.batch_dialog import BatchDialog

    answers = [False, True]
    asked = []
    monkeypatch.setattr(BatchDialog, "ask_to_stop", lambda self: asked.append(self) or answers.pop(0))
    idle = window.batch()
    idle.close()  # closed with nothing running: deleted when the next one is made
    dialog = window.batch()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert not isValid(idle) and isValid(dialog)
    dialog.output_folder = tmp_path
    run = Future()  # a folder being analysed
    dialog.bridge.watch(run, dialog._finished, dialog._failed)
    assert dialog.running
    assert not window.close()  # No: the window and the dialog stay, the run goes on
    assert asked == [dialog] and window.isVisible() and dialog.isVisible() and not dialog.cancel_event.is_set()
    assert window.close()  # Yes: the run is cancelled and its dialog closed with the window
    assert len(asked) == 2 and dialog.cancel_event.is_set() and not dialog.isVisible()
    window.batch().close()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert isValid(dialog)  # kept while its run has not come back
    run.set_result({"cancelled": True, "files_done": 1, "files": 3, "errors": 0})
    qtbot.waitUntil(lambda: dialog.summary is not None, timeout=5000)
    window.batch().close()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert not isValid(dialog)


# 10
def test_r_goes_back_to_the_files_rendering_and_the_exported_json_states_the_rendering(qtbot, window,
                                                                                      pydicom_file, tmp_path):
    _open(qtbot, window, pydicom_file("MR_small.dcm"))
    state = window.state
    state.adjust(40, 20)
    window.invert_action.trigger()
    window.reset_window()  # R
    assert state.window is None and not state.inverted and not window.invert_action.isChecked()
    state.adjust(40, 20)
    window.invert_action.trigger()
    window.save_view(tmp_path / "view.png")
    view = json.loads((tmp_path / "view.json").read_text())["view"]
    window_used = state.effective_window
    assert view["inverted"] is True and view["window_chosen"] is True and view["frame"] == 0
    assert view["window"]["center"] == pytest.approx(window_used.center)
    assert view["window"]["width"] == pytest.approx(window_used.width)
    window.reset_window()
    window.save_view(tmp_path / "view.png")  # the file's own rendering, nothing found or measured: no JSON
    assert not (tmp_path / "view.json").exists()
