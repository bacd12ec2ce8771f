"""Window defects from a hunt with real Qt events (each test failed before its fix): a click on the slice slider gave
it the keys, which ran the other way (Down to the slice before, Page Down ten back); Down after choosing a modality
chose the next modality (the series re-read as a mammogram, its analysis dropped); a series of non-square pixels had
a square thumbnail."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from tests.conftest import open_window
from tests.series_data import ramp_images, write_series


def _thirty_slices(qtbot, tiny_models, tmp_path):
    write_series(tmp_path / "study", ramp_images(30), spacing=3.0, description="AX FLAIR")
    window = open_window(qtbot, tiny_models, tmp_path)
    window.open_folder(tmp_path / "study")
    qtbot.waitUntil(lambda: window.state.series is not None and not window.is_busy, timeout=20000)
    window.activateWindow()
    window.viewer.setFocus()
    QApplication.processEvents()
    return window


def _key(key) -> None:
    QTest.keyClick(QApplication.focusWidget(), key)
    QApplication.processEvents()


def test_slice_keys_move_alike_after_a_click_on_the_slice_slider(qtbot, tiny_models, tmp_path):
    window = _thirty_slices(qtbot, tiny_models, tmp_path)
    expected = {}
    for key in (Qt.Key.Key_Down, Qt.Key.Key_PageDown, Qt.Key.Key_Up, Qt.Key.Key_PageUp):
        window.state.set_slice(15)
        _key(key)
        expected[key] = window.state.slice_index
    assert expected[Qt.Key.Key_Down] == 16 and expected[Qt.Key.Key_Up] == 14
    for key, index in expected.items():
        QTest.mouseClick(window.frame_slider, Qt.MouseButton.LeftButton, pos=QPoint(window.frame_slider.width() // 2, 5))
        window.state.set_slice(15)
        assert QApplication.focusWidget() is not window.frame_slider
        _key(key)
        assert window.state.slice_index == index, key


def test_down_after_choosing_a_modality_is_the_next_slice(qtbot, tiny_models, tmp_path):
    window = _thirty_slices(qtbot, tiny_models, tmp_path)
    window.state.set_slice(3)
    QTest.mouseClick(window.modality_box, Qt.MouseButton.LeftButton)  # opens its list; Escape closes it
    QTest.keyClick(window.modality_box.view(), Qt.Key.Key_Escape)
    window.activateWindow()  # as the desktop gives it back when the list closes (offscreen does not)
    QApplication.processEvents()
    modality = window.state.record.modality
    assert QApplication.focusWidget() is not window.modality_box
    _key(Qt.Key.Key_Down)
    assert window.state.slice_index == 4 and window.state.record.modality == modality


def test_a_thumbnail_keeps_the_proportions_the_viewer_draws(tmp_path):
    import pydicom

    from core.series.index import index_folder
    from gui.study_browser import thumbnail

    paths = write_series(tmp_path / "coronal", ramp_images(3), description="COR")
    for path in paths:  # rows 1.5 mm apart, columns 0.75: the picture is twice as tall as wide
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [1.5, 0.75]
        ds.save_as(path)
    (series,) = index_folder(tmp_path / "coronal").series
    picture = thumbnail(series, 48)
    assert picture.shape[:2] == (48, 24)


def test_slice_keys_move_the_compared_series_when_its_view_was_clicked(qtbot, tiny_models, tmp_path):
    """The keys had always moved the main series: a crossing series compared beside it scrolled by wheel only."""
    from tests.series_data import SAGITTAL

    window = _thirty_slices(qtbot, tiny_models, tmp_path)
    write_series(tmp_path / "study" / "sag", ramp_images(5), orientation=SAGITTAL, description="SAG",
                 positions=[(-105.0 + 3 * k, -120.0, 0.0) for k in range(5)])
    window.open_folder(tmp_path / "study")
    qtbot.waitUntil(lambda: window.study_index is not None and len(window.study_index.series) == 2
                    and not window.is_busy, timeout=20000)
    sagittal = next(s for s in window.study_index.series if s.description == "SAG")
    axial = next(s for s in window.study_index.series if s.description == "AX FLAIR")
    window.open_series(axial)  # the folder may open at either: the axial one is the main series here
    qtbot.waitUntil(lambda: window.state.series is axial and not window.is_busy, timeout=20000)
    window.compare_series(sagittal)
    qtbot.waitUntil(lambda: window.compare.state.series is sagittal and not window.is_busy, timeout=20000)
    window.activateWindow()
    other = window.compare.state
    other.set_slice(1)
    main_before = window.state.slice_index
    port = window.compare.viewer.viewport()
    QTest.mouseClick(port, Qt.MouseButton.LeftButton, pos=port.rect().center())
    QApplication.processEvents()
    _key(Qt.Key.Key_Down)
    assert other.slice_index == 2 and window.state.slice_index == main_before
    window.viewer.setFocus()  # back on the main image: the main series again
    QApplication.processEvents()
    _key(Qt.Key.Key_Down)
    assert window.state.slice_index == main_before + 1 and other.slice_index == 2


def test_the_studies_tree_selects_no_series_while_a_file_alone_is_shown(qtbot, tiny_models, tmp_path, monkeypatch):
    """A series clicked, then a file opened before the series arrived: the file is shown, the series row stayed
    selected."""
    import threading

    import gui.main_window as main_window
    from pydicom.uid import generate_uid

    from tests.series_data import write_slice

    window = _thirty_slices(qtbot, tiny_models, tmp_path)
    single = write_slice(tmp_path / "single.dcm", ramp_images(1)[0], series_uid=generate_uid(),
                         study_uid=generate_uid(), description="SINGLE")
    window.open_path(single)
    qtbot.waitUntil(lambda: window.state.series is None and not window.is_busy, timeout=20000)
    release = threading.Event()
    real = main_window.open_stack
    monkeypatch.setattr(main_window, "open_stack", lambda series: (release.wait(10), real(series))[1])
    (series,) = window.study_index.series
    window.studies.rows[series.key].setSelected(True)  # the reader clicks the series (a slow share)
    QApplication.processEvents()
    other = write_slice(tmp_path / "other.dcm", ramp_images(1)[0], series_uid=generate_uid(),
                        study_uid=generate_uid(), description="OTHER")
    window.open_path(other)  # ... and opens a file before it arrives
    qtbot.waitUntil(lambda: window.state.record is not None and window.state.record.path.name == "other.dcm",
                    timeout=20000)
    release.set()
    qtbot.waitUntil(lambda: not window.is_busy, timeout=20000)
    qtbot.wait(100)
    assert window.state.series is None and window.studies.selectedItems() == []
