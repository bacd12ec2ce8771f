"""Viewer interaction defects a hunt reproduced with real Qt events; each test failed before its fix.

A header's LINEAR window narrower than 1 was drawn as a threshold and a narrowing drag widened it; a fine wheel
zoomed 25 % per event; a series slice of another size was shown in part; the width doubled to inf and the centre
to NaN; the readout kept the old pixel after Fit or Actual size; a picture of one grey level was drawn black.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, QSettings, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from core.history import History
from core.imaging import load_image
from core.series import index_folder
from tests.series_data import bare_mr_dicom, write_series


@pytest.fixture
def win(qtbot, tmp_path):
    from core.models.registry import Registry
    from gui.main_window import MainWindow

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    settings.setValue("auto_analyse", False)
    window = MainWindow(registry=Registry([tmp_path / "no-models"]), settings=settings,
                        history=History(tmp_path / "h.sqlite"))
    qtbot.addWidget(window)
    window.resize(900, 700)
    window.show()
    qtbot.waitExposed(window)
    return window


def _load(window, path):
    record = load_image(path)
    window._loaded(record)
    QApplication.processEvents()
    return record


def _png(tmp_path, picture, name="a.png"):
    cv2.imwrite(str(tmp_path / name), picture)
    return tmp_path / name


def _mouse(viewer, kind, where, button=Qt.MouseButton.NoButton):
    where = QPointF(where)
    event_type, changed, held = {"press": (QEvent.Type.MouseButtonPress, button, button),
                                 "move": (QEvent.Type.MouseMove, Qt.MouseButton.NoButton, button),
                                 "release": (QEvent.Type.MouseButtonRelease, button, Qt.MouseButton.NoButton)}[kind]
    QApplication.sendEvent(viewer.viewport(), QMouseEvent(event_type, where, QPointF(viewer.viewport().mapToGlobal(
        where.toPoint())), changed, held, Qt.KeyboardModifier.NoModifier))


def _wheel(viewer, delta):
    port = viewer.viewport()
    where = QPointF(port.rect().center())
    QApplication.sendEvent(port, QWheelEvent(where, QPointF(port.mapToGlobal(where.toPoint())), QPoint(0, 0),
                                             QPoint(0, delta), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                                             Qt.ScrollPhase.NoScrollPhase, False))


def test_a_linear_window_narrower_than_one_is_drawn_as_stated_and_narrows_further(win, tmp_path):
    ds = bare_mr_dicom(32, 32, bits=16)
    ds.PixelData = np.tile(np.arange(32, dtype=np.uint16) * 30, (32, 1)).tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = "0.001", "0"  # values 0 .. 0.93
    ds.WindowCenter, ds.WindowWidth = "0.5", "0.4"  # LINEAR (the default function)
    ds.save_as(tmp_path / "w.dcm", enforce_file_format=True)
    values = _load(win, tmp_path / "w.dcm").values(0)[0]
    shown = win.state.display()[0].astype(int)
    assert shown[values <= 0.3].max() == 0 and shown[values >= 0.7].min() == 255
    middle = (values > 0.32) & (values < 0.68)
    assert middle.any() and 0 < shown[middle].min() and shown[middle].max() < 255 and np.all(np.diff(shown) >= 0)
    assert win.wl_label.text() == "C 0.5 / W 0.4"
    win.state.adjust(0, -128)  # a narrowing drag: half the width, not widened to DICOM LINEAR's 1
    assert win.state.effective_window.width == pytest.approx(0.2)


def test_a_fine_wheel_zooms_by_its_share_of_a_notch(win, tmp_path):
    _load(win, _png(tmp_path, (np.arange(256 * 256) % 256).astype(np.uint8).reshape(256, 256)))
    viewer = win.viewer
    start = viewer.transform().m11()
    for _ in range(15):  # 15 x 8 = 120: one notch of a coarse wheel
        _wheel(viewer, 8)
    assert viewer.transform().m11() / start == pytest.approx(1.25, rel=1e-6)


def test_a_series_slice_of_another_size_is_fitted_whole_and_a_fitted_picture_follows_the_window(win, tmp_path):
    write_series(tmp_path / "s", [np.full((256, 256), 100, np.uint16), np.full((512, 512), 200, np.uint16)])
    (series,) = index_folder(tmp_path / "s").series
    win.state.open_series(series)
    QApplication.processEvents()
    viewer = win.viewer
    _wheel(viewer, -120)
    assert win.state.slice_index == 1
    assert viewer.mapToScene(viewer.viewport().rect()).boundingRect().contains(QRectF(0, 0, 512, 512))
    zoom = viewer.transform().m11()
    win.resize(1400, 1000)
    QApplication.processEvents()
    assert viewer.transform().m11() > zoom  # still the whole picture, now larger
    viewer.zoom(2.0)
    zoomed = viewer.transform().m11()
    win.resize(900, 700)
    QApplication.processEvents()
    assert viewer.transform().m11() == zoomed  # zoomed by hand: a resize keeps it


def test_window_level_drags_stay_finite(win, tmp_path):
    _load(win, _png(tmp_path, (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)))
    viewer, centre = win.viewer, win.viewer.viewport().rect().center()
    for dx in [2000] * 70 + [3]:  # 70 long drags to the right (the width doubles 15 times each), then a short one
        _mouse(viewer, "press", centre, Qt.MouseButton.RightButton)
        _mouse(viewer, "move", QPointF(centre.x() + dx, centre.y()), Qt.MouseButton.RightButton)
        _mouse(viewer, "release", QPointF(centre.x() + dx, centre.y()), Qt.MouseButton.RightButton)
    window = win.state.effective_window
    assert math.isfinite(window.width) and math.isfinite(window.center) and "nan" not in win.wl_label.text()
    for _ in range(10):  # and back down again
        _mouse(viewer, "press", centre, Qt.MouseButton.RightButton)
        _mouse(viewer, "move", QPointF(centre.x() - 20000, centre.y()), Qt.MouseButton.RightButton)
        _mouse(viewer, "release", QPointF(centre.x() - 20000, centre.y()), Qt.MouseButton.RightButton)
    assert 0 < win.state.effective_window.width < 1


@pytest.mark.parametrize("key", [Qt.Key.Key_1, Qt.Key.Key_F])
def test_the_readout_follows_the_pixel_under_the_mouse_after_fit_or_actual_size(win, tmp_path, key):
    _load(win, _png(tmp_path, (np.arange(300 * 200) % 251).astype(np.uint8).reshape(200, 300)))
    viewer = win.viewer
    viewer.zoom(3.0)
    where = QPoint(200, 300)
    _mouse(viewer, "move", where)
    viewer.setFocus()
    QTest.keyClick(viewer, key)
    QApplication.processEvents()
    point = viewer.mapToScene(where)
    assert win.cursor_label.text().startswith(f"x {int(point.x())}, y {int(point.y())}")


def test_a_picture_of_one_grey_level_is_drawn_mid_grey_not_black(win, tmp_path):
    ds = bare_mr_dicom(40, 50, bits=16)
    ds.PixelData = np.full((40, 50), 1000, np.uint16).tobytes()
    ds.save_as(tmp_path / "c.dcm", enforce_file_format=True)
    _load(win, tmp_path / "c.dcm")
    assert set(np.unique(win.state.display())) == {128}
    from core.viewer_state import mr_brain_preset

    preset = mr_brain_preset(np.full((40, 50), 1000.0, np.float32))
    assert preset.center == 1000.0 and preset.width == 1.0
