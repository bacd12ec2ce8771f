"""The window with DICOM series, offscreen: the study browser, wheel/keys/slider scrolling, orientation markers,
series analysis with progress and cancel, the strip plot and overlays that follow the slice (tiny real models)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from tests.conftest import open_window  # noqa: E402
from tests.series_data import PLANTED_LESION_SLICES  # noqa: E402


def _pixels(window) -> np.ndarray:
    image = window.viewer.viewport().grab().toImage()
    ptr = image.constBits()
    return np.array(ptr, dtype=np.uint8).reshape(image.height(), image.bytesPerLine())[:, : image.width() * 4].copy()


def _mask_drawn(window) -> bool:
    """Whether the mask layer shows any pixel (an empty mask is drawn fully transparent)."""
    from PySide6.QtGui import QImage

    pixmap = window.viewer.mask_item.pixmap()
    if pixmap.isNull():
        return False
    image = pixmap.toImage().convertToFormat(QImage.Format.Format_RGBA8888)
    pixels = np.array(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return bool(pixels[:, 3: image.width() * 4: 4].any())


@pytest.fixture
def window(qtbot, mr_models, tmp_path):
    win = open_window(qtbot, mr_models, tmp_path, (1000, 760))
    win.settings_dir = tmp_path
    return win


def _open_folder(qtbot, window, folder):
    window.open_folder(folder)
    qtbot.waitUntil(lambda: window.state.series is not None and not window.is_busy, timeout=20000)


def _wheel(window, notches: int, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    viewport = window.viewer.viewport()
    centre = QPointF(viewport.width() / 2, viewport.height() / 2)
    event = QWheelEvent(centre, QPointF(viewport.mapToGlobal(centre.toPoint())), QPoint(0, 0),
                        QPoint(0, 120 * notches), Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase,
                        False)
    QApplication.sendEvent(viewport, event)


def test_open_folder_lists_the_study_and_selecting_a_series_shows_it(qtbot, window, study):
    _open_folder(qtbot, window, study)
    tree = window.studies
    assert window.docks["Studies"].isVisible() and tree.topLevelItemCount() == 1
    patient = tree.topLevelItem(0)
    assert patient.text(0) == "Test Series  (LGG-1)"
    study_row = patient.child(0)
    assert study_row.text(0) == "2001-08-12  MR BRAIN  Acc. A1" and study_row.childCount() == 2
    rows = [(study_row.child(i).text(0), study_row.child(i).text(1), study_row.child(i).text(2)) for i in range(2)]
    assert rows == [("1: AX FLAIR", "MR", "6"), ("2: SAG T1", "MR", "3")]
    assert window.state.series.description == "AX FLAIR" and study_row.child(0).isSelected()
    qtbot.waitUntil(lambda: all(tree.has_thumbnail(s.key) for s in window.study_index.series), timeout=10000)
    study_row.child(1).setSelected(True)  # the reader picks the sagittal series
    study_row.child(0).setSelected(False)
    qtbot.waitUntil(lambda: window.state.series is not None and window.state.series.description == "SAG T1",
                    timeout=10000)
    assert window.frame_slider.maximum() == 2 and window.frame_label.text().startswith("slice 1 / 3")
    assert window.viewer.markers() == {"left": "A", "right": "P", "top": "H", "bottom": "F"}


def test_wheel_keys_and_slider_move_through_the_slices(qtbot, window, study):
    _open_folder(qtbot, window, study)
    state = window.state
    assert state.slice_count == 6 and window.frame_slider.maximum() == 5
    window.state.adjust(40.0, -100.0)  # a window of the reader's own, kept while scrolling
    chosen, before = state.window, _pixels(window)
    _wheel(window, -1)  # one notch towards the reader: next slice
    assert state.slice_index == 1 and window.frame_label.text() == "slice 2 / 6 · z = -27.5 mm"
    assert window.frame_slider.value() == 1 and np.abs(_pixels(window).astype(int) - before).sum() > 0
    _wheel(window, -3)
    assert state.slice_index == 4
    _wheel(window, 2)
    assert state.slice_index == 2 and state.window == chosen
    zoom = window.viewer.transform().m11()
    _wheel(window, 1, Qt.KeyboardModifier.ControlModifier)  # Ctrl+wheel zooms instead
    assert state.slice_index == 2 and window.viewer.transform().m11() == pytest.approx(zoom * 1.25)
    window.activateWindow()
    window.viewer.setFocus()
    for key, expected in ((Qt.Key.Key_PageDown, 3), (Qt.Key.Key_Down, 4), (Qt.Key.Key_Up, 3), (Qt.Key.Key_PageUp, 2),
                          (Qt.Key.Key_End, 5), (Qt.Key.Key_Home, 0)):
        qtbot.keyClick(window.viewer, key)
        assert state.slice_index == expected, key
    window.frame_slider.setValue(3)
    assert state.slice_index == 3 and state.window == chosen


def test_orientation_markers_are_drawn_at_the_edges(qtbot, window, study):
    _open_folder(qtbot, window, study)
    assert window.viewer.markers() == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    pixels = _pixels(window)
    h, w = pixels.shape[0], pixels.shape[1] // 4
    bgra = pixels[:, : w * 4].reshape(h, w, 4)  # QImage ARGB32 in memory on little-endian machines
    yellow = (bgra[..., 2] > 200) & (bgra[..., 1] > 170) & (bgra[..., 0] < 150)  # the picture itself is grey
    assert yellow[h // 2 - 30: h // 2 + 30, :40].any() and yellow[:40, w // 2 - 30: w // 2 + 30].any()
    assert not yellow[h // 2 - 30: h // 2 + 30, w // 2 - 30: w // 2 + 30].any()


def test_series_analysis_verdict_strip_plot_and_overlays_follow_the_slice(qtbot, window, planted_series):
    _open_folder(qtbot, window, planted_series)
    panel = window.series_panel
    progress = []
    panel.progressed.connect(lambda done, total: progress.append((done, total)))
    window.analyse_series()
    assert window.docks["Series"].isVisible() and panel.cancel.isVisibleTo(panel)
    qtbot.waitUntil(lambda: window.state.series_analysis is not None, timeout=120000)
    assert progress[-1] == (10, 10) and not panel.cancel.isVisibleTo(panel)
    verdict = window.series_verdict.text()
    assert "Series: tiny-mr-yesno: yes" in verdict and "slices 4-7 of 10" in verdict
    assert "Series: tiny-mr-segmenter: lesion on slices 4-7 of 10, volume" in verdict
    assert "VERDICT_RULE" not in verdict and "adjacent" in window.series_verdict.toolTip()
    strip = panel.strip
    assert sorted(c.model for c in strip.curves) == ["tiny-mr-segmenter", "tiny-mr-yesno"]
    # overlays and findings follow the slice from the cached per-slice results
    assert window.state.slice_index == 0 and not _mask_drawn(window) and not window.viewer.lesion_items
    assert window.probabilities.bars[("tiny-mr-yesno", "no")].value() > 500
    qtbot.mouseClick(strip, Qt.MouseButton.LeftButton, pos=QPoint(round(strip.x_of(PLANTED_LESION_SLICES[1])),
                                                                    strip.height() // 2))
    assert window.state.slice_index == PLANTED_LESION_SLICES[1]
    assert _mask_drawn(window) and window.viewer.lesion_items
    assert window.probabilities.bars[("tiny-mr-yesno", "yes")].value() > 500
    assert window.frame_slider.value() == PLANTED_LESION_SLICES[1]
    _wheel(window, -4)
    assert window.state.slice_index == 8 and not _mask_drawn(window) and not window.viewer.lesion_items
    # a second run takes every slice from the cache
    window.analyse_series()
    qtbot.waitUntil(lambda: window.series_cancel is None, timeout=60000)
    assert window.state.series_analysis.slices_analysed == 0 and "kept from the earlier analysis" in panel.status.text()
    window.export_series_report(window.settings_dir / "series.pdf")
    qtbot.waitUntil(lambda: window.last_export is not None, timeout=30000)
    assert window.last_export.name == "series.pdf" and window.last_export.stat().st_size > 10000
    window.last_export = None
    window.export_series_sr(window.settings_dir / "series.sr.dcm")
    qtbot.waitUntil(lambda: window.last_export is not None, timeout=30000)
    import highdicom as hd

    assert len(hd.sr.srread(window.last_export).content.get_planar_roi_measurement_groups()) == 4  # slices 4-7
    # each completed series analysis is one history entry, listed in the History dock
    table = window.history_panel.table
    qtbot.waitUntil(lambda: table.rowCount() == 2, timeout=10000)
    entries = window.history.all()
    assert [e.kind for e in entries] == ["series", "series"] and entries[0].slices == 10
    assert entries[0].series_uid == window.state.series.uid and entries[0].path == str(planted_series)
    assert "tiny-mr-segmenter: lesion on slices 4-7 of 10, volume" in entries[0].labels
    texts = [table.item(0, j).text() for j in range(table.columnCount())]
    assert texts[1] == "series, 10 slices" and str(planted_series) in texts[2]
    assert "tiny-mr-yesno: yes" in texts[4] and "tiny-mr-segmenter: lesion on slices 4-7 of 10" in texts[4]


def test_series_analysis_can_be_cancelled(qtbot, window, planted_series):
    _open_folder(qtbot, window, planted_series)
    window.series_panel.progressed.connect(lambda done, total: window.cancel_series_analysis() if done == 2 else None)
    window.analyse_series()
    qtbot.waitUntil(lambda: window.series_cancel is None, timeout=120000)
    analysis = window.state.series_analysis
    assert analysis.cancelled and 2 <= analysis.slices_analysed < 10
    assert window.series_panel.status.text().startswith("Cancelled: ")
    assert "Cancelled" in window.series_verdict.text()
    qtbot.wait(200)  # a history write would have been queued with the result
    assert window.history.all() == []  # a cancelled series analysis is not recorded


def test_a_slice_analysis_with_its_heatmap_comes_back_with_its_slice(qtbot, window, planted_series):
    _open_folder(qtbot, window, planted_series)
    window.state.set_slice(PLANTED_LESION_SLICES[0])
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None, timeout=120000)
    assert not window.viewer.heatmap_item.pixmap().isNull()
    window.state.step(-2)
    assert window.state.analysis is None and window.viewer.heatmap_item.pixmap().isNull()
    window.state.step(2)
    assert not window.viewer.heatmap_item.pixmap().isNull()


def test_open_file_after_a_series_leaves_series_mode(qtbot, window, study, planted_png):
    _open_folder(qtbot, window, study)
    window.open_path(planted_png[0])
    qtbot.waitUntil(lambda: window.state.series is None and window.state.record is not None, timeout=20000)
    assert window.frame_label.text() == "1/1" and window.viewer.markers() is None
    assert not window.studies.selectedItems() and not window.docks["Series"].isVisibleTo(window)


def test_a_screening_exam_hangs_its_four_views_with_the_chest_walls_facing(qtbot, window, tmp_path):
    from pydicom.uid import generate_uid

    from tests.series_data import breast, write_mammo

    study = generate_uid()
    for name in ("RCC", "LCC", "RMLO"):  # the L MLO view is missing; every chest wall is on the left as stored
        write_mammo(tmp_path / "exam" / f"{name}.dcm", breast("left", 120, 80), study_uid=study, laterality=name[0],
                    view=name[1:])
    _open_folder(qtbot, window, tmp_path / "exam")
    view = window.exam_view  # a mammography folder hangs itself
    assert view is not None and view.isVisible()
    qtbot.waitUntil(view.loaded, timeout=20000)
    assert view.mirrored == {"RCC": True, "LCC": False, "RMLO": True}
    assert [view.captions[n].text() for n in ("RCC", "LCC", "RMLO", "LMLO")] == [
        "R CC  (mirrored)", "L CC", "R MLO  (mirrored)", "L MLO: not in this exam"]
    # on screen: the R CC picture is brighter at its right edge, the L CC picture at its left: back to back
    for name, bright_edge in (("RCC", "right"), ("LCC", "left")):
        image = view.pictures[name].pixmap().toImage()
        grey = np.array([[image.pixelColor(x, y).value() for x in range(image.width())]
                         for y in range(0, image.height(), 4)], float)
        edge = max(1, grey.shape[1] // 8)
        left, right = grey[:, :edge].mean(), grey[:, -edge:].mean()
        assert (right > left) if bright_edge == "right" else (left > right), name
    view.close()
    window.state.set_slice(0)
    assert window.show_exam() is view and view.isVisible()


def test_the_series_chosen_last_is_the_one_shown(qtbot, window, study):
    _open_folder(qtbot, window, study)
    axial, sagittal = window.study_index.series
    window.open_series(sagittal)
    window.open_series(axial)  # changed their mind before the sagittal slice arrived
    qtbot.wait(300)
    qtbot.waitUntil(lambda: not window.is_busy, timeout=10000)
    assert window.state.series is axial and window.studies.selectedItems()[0].text(0) == "1: AX FLAIR"
    window.open_series(sagittal)
    qtbot.waitUntil(lambda: window.state.series is sagittal, timeout=10000)
    assert not window.docks["Series"].isVisibleTo(window) or len(sagittal) > 1


def test_tags_shown_again_are_those_of_the_slice_on_screen(qtbot, window, study):
    def instance(metadata) -> str:
        return next(str(value) for _, keyword, value in metadata if keyword == "InstanceNumber")

    _open_folder(qtbot, window, study)
    first = instance(window.state.record.metadata)
    window.state.set_slice(4)  # scrolled while the tags were hidden
    shown = instance(window.state.record.metadata)
    assert shown != first
    window.docks["DICOM tags"].show()
    window.docks["DICOM tags"].raise_()  # its tab brought to the front
    table = window.metadata.table
    tags = {table.item(r, 1).text(): table.item(r, 2).text() for r in range(table.rowCount())}
    assert tags["InstanceNumber"] == shown


def test_automatic_modality_on_a_slice_that_cannot_be_read(qtbot, window, study):
    """Back to the files' own modality while a damaged slice is shown: the series opens again, nothing raised."""
    from core.imaging import Modality

    from core.series.index import index_folder

    ax = next(s for s in index_folder(study).series if s.description == "AX FLAIR")
    damaged = ax.slices[4].path
    damaged.write_bytes(damaged.read_bytes()[:-1000])  # its pixel data cut short (32 x 32 x 2 bytes)
    _open_folder(qtbot, window, study)
    window.state.set_slice(4)
    assert window.state.slice_error
    window.modality_box.setCurrentIndex(window.modality_box.findData(Modality.US.value))
    window._modality_chosen()
    assert window.state.record.modality_source == "user"
    window.modality_box.setCurrentIndex(0)  # Automatic
    window._modality_chosen()
    assert window.state.record.modality_source == "dicom" and window.state.series is not None


def test_automatic_modality_keeps_the_slice_window_and_rulers_of_the_series(qtbot, window, study):
    from core.imaging import Modality

    _open_folder(qtbot, window, study)
    state = window.state
    state.set_slice(2)
    state.adjust(30, -20)
    state.add_ruler(1, 1, 20, 20)
    chosen, rulers, series = state.window, state.rulers, state.series
    window.modality_box.setCurrentIndex(window.modality_box.findData(Modality.US.value))
    window._modality_chosen()
    window.modality_box.setCurrentIndex(0)  # Automatic
    window._modality_chosen()
    assert state.record.modality_source == "dicom" and state.series is series
    assert state.slice_index == 2 and state.window == chosen and state.rulers == rulers


def test_a_series_whose_first_slice_is_damaged_opens_on_the_first_it_can_read(qtbot, window, planted_series, tmp_path):
    import shutil

    from core.series.index import index_path

    folder = tmp_path / "planted"
    shutil.copytree(planted_series, folder)
    first = index_path(folder).series[0].slices[0].path
    first.write_bytes(first.read_bytes()[:-3000])  # its pixel data cut short
    _open_folder(qtbot, window, folder)  # the error alone was shown; the nine good slices could not be reached
    assert window.state.slice_index == 1 and window.state.slice_error is None
    assert window.statusBar().currentMessage().startswith("Showing slice 2, the first that can be read; slice 1:")
    window.state.set_slice(0)
    assert window.state.slice_error  # shown black with its reason, as any damaged slice


def test_grad_cam_for_another_class_reaches_its_slice_after_the_reader_scrolled_away(qtbot, window, planted_series):
    _open_folder(qtbot, window, planted_series)
    window.state.set_slice(PLANTED_LESION_SLICES[1])
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None and not window.is_busy, timeout=120000)
    result = window.state.heatmap_result
    other = next(c for c in result.classes if c != result.heatmap_class)
    window._gradcam_for_class(result.model_id, other)
    window.state.step(1)  # a look at the next slice while it computes
    qtbot.waitUntil(lambda: not window.is_busy, timeout=60000)
    window.state.step(-1)
    assert window.state.heatmap_result.heatmap_class == other


def test_a_series_chosen_while_another_is_analysed_is_analysed_next(qtbot, window, study, monkeypatch):
    """Automatic analysis on: the reader picks the sagittal series while the axial one is still running. The axial
    result is kept for the axial series; the sagittal one is analysed when the run ends (runs are one at a time)."""
    from concurrent.futures import Future

    from core.series.analysis import SeriesAnalysis

    runs: list[tuple] = []

    def submit(series, engine, **options):  # each run waits until the test ends it
        future = Future()
        runs.append((series, future))
        return future

    monkeypatch.setattr("gui.main_window.submit_series", submit)
    window.auto_analyse = True
    window.open_folder(study)
    qtbot.waitUntil(lambda: window.state.series is not None and len(runs) == 1, timeout=20000)
    ax = window.state.series
    sag = next(s for s in window.study_index.series if s is not ax)
    window.open_series(sag)
    qtbot.waitUntil(lambda: window.state.series is sag, timeout=10000)
    assert len(runs) == 1  # one run at a time
    runs[0][1].set_result(SeriesAnalysis(ax, [], [], False, 0.1, len(ax)))
    qtbot.waitUntil(lambda: len(runs) == 2, timeout=10000)
    assert runs[1][0] is sag and window.state.series_analysis is None
    assert window.series_panel.status.text() != f"{len(ax)} slice(s) analysed in 0.1 s"  # not the axial run's
    runs[1][1].set_result(SeriesAnalysis(sag, [], [], False, 0.1, len(sag)))
    qtbot.waitUntil(lambda: window.state.series_analysis is not None, timeout=10000)
    window.open_series(ax)
    qtbot.waitUntil(lambda: window.state.series is ax and not window.is_busy, timeout=10000)
    assert window.state.series_analysis is runs[0][1].result()  # kept for the axial series


def test_arrow_keys_move_the_focused_list_not_the_slice(qtbot, window, study):
    from PySide6.QtTest import QTest

    _open_folder(qtbot, window, study)
    tree = window.studies
    tree.setFocus()
    start = tree.currentItem()
    QTest.keyClick(tree, Qt.Key.Key_Down)
    assert window.state.slice_index == 0 and tree.currentItem() is not start  # the tree's selection moved
    window.viewer.setFocus()
    QTest.keyClick(window.viewer, Qt.Key.Key_Down)
    assert window.state.slice_index == 1  # on the image the key still steps the slice


def test_a_history_series_entry_opens_that_series_not_the_folders_first(qtbot, window, study):
    from core.history import HistoryEntry
    from core.series.index import index_folder

    sag = next(s for s in index_folder(study).series if s.description == "SAG T1")
    entry = HistoryEntry(1, "", str(study), "2026-12-06 20:00", None, "MR", {}, {"description": "SAG T1"},
                         kind="series", series_uid=sag.uid, slices=3)
    asked = []
    window.history_panel.openRequested.connect(lambda *args: asked.append(args))
    window.history_panel.show_entries([entry])
    window.history_panel._open(0, 0)  # a double-click on the entry
    assert asked == [(str(study), sag.uid, 0)]
    qtbot.waitUntil(lambda: window.state.series is not None and not window.is_busy, timeout=20000)
    assert window.state.series.description == "SAG T1"


def test_the_strip_plot_draws_its_curves_once_not_at_every_slice_step(qtbot, monkeypatch):
    """Every point of every model was drawn again at each scroll step: 227 ms per step on 1,000 slices (offscreen)."""
    from core.series.analysis import StripCurve
    from gui.strip_plot import StripPlot

    plot = StripPlot()
    qtbot.addWidget(plot)
    plot.resize(600, 100)
    plot.curves = [StripCurve("m", "P(not no)", [k / 1000 for k in range(1000)], 0.5, [(10, 40)])]
    plot.count = 1000
    drawn = []
    real = plot._draw_curves
    monkeypatch.setattr(plot, "_draw_curves", lambda painter: drawn.append(1) or real(painter))
    first = plot.grab().toImage()
    for k in range(20):
        plot._follow_slice(k)
        plot.grab()
    assert len(drawn) == 1
    plot._follow_slice(0)
    assert plot.grab().toImage() == first  # the same picture as drawn whole
    plot.resize(700, 100)
    plot.grab()
    assert len(drawn) == 2  # a new size is drawn again


def test_the_strip_plot_rings_the_slices_a_models_input_check_flagged(qtbot):
    from core.models.novelty import novelty_warning
    from core.series.analysis import SeriesAnalysis, SeriesVerdict, SliceOutcome, strip_curves
    from core.series.index import Series
    from gui.strip_plot import UNUSUAL_RING, StripPlot

    slices = [SliceOutcome("no", {"no": 0.9, "yes": 0.1}, warnings=[novelty_warning("m", 1.0)] if i == 2 else [])
              for i in range(5)]
    verdict = SeriesVerdict("m", "1", "classification", "no", 0.9, None, None, None, slices)
    segmented = [SliceOutcome("lesion", lesions=1, lesion_area_mm2=10.0, warnings=o.warnings) for o in slices]
    outline = SeriesVerdict("s", "1", "segmentation", "lesion", None, 1, 5, None, segmented)
    curve, lesion_curve = strip_curves(SeriesAnalysis(Series("k", "1.2", "dicom"), [verdict, outline], [], False, 0.0, 5))
    assert curve.unusual == lesion_curve.unusual == [False, False, True, False, False]
    plot = StripPlot()
    qtbot.addWidget(plot)
    plot.resize(400, 100)

    def ring_pixels(unusual: list[bool]) -> int:
        plot.curves, plot.count, plot._drawn = [dataclasses.replace(curve, unusual=unusual)], 5, None
        image = plot.grab().toImage()
        return sum(1 for x in range(image.width()) for y in range(image.height())
                   if image.pixelColor(x, y).red() > 200 and image.pixelColor(x, y).green() < 110
                   and image.pixelColor(x, y).blue() < 110)

    assert ring_pixels(curve.unusual) > 10 and ring_pixels([False] * 5) == 0 and UNUSUAL_RING.red() == 255


def test_the_series_verdict_panel_keeps_the_series_own_warnings(qtbot, window, tmp_path):
    """A gap in the series qualifies its verdicts (a lesion's volume, which slices are adjacent): said beside them,
    not only for ten seconds in the status bar when the series opened."""
    from core.series.analysis import SeriesAnalysis
    from core.series.index import index_folder
    from tests.series_data import write_series

    images = [np.full((32, 32), 40 * k, np.uint8) for k in range(5)]
    write_series(tmp_path / "gap", images, positions=[(0, 0, z) for z in (0, 3, 6, 15, 18)])
    (series,) = index_folder(tmp_path / "gap").series
    (gap,) = [w for w in series.warnings if w.startswith("Gap")]
    window._show_series_analysis(SeriesAnalysis(series, [], [], False, 0.0, 5))
    assert f"⚠ {gap}" in window.series_verdict.text()
