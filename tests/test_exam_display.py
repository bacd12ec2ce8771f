"""The mammography exam window's zoom, pan and window (core.series.exam_display, gui.hanging_view): films held at full
resolution so a 1-pixel speck is seen when magnified, every view moved together (the left breast as the mirror of the
right), each film windowed from its own window, marks following the film. The window had no zoom, pan or window of
its own and held each film at 1,200 rows."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from core.imaging.windowing import WindowPreset
from core.inference.results import Finding
from core.series.exam_display import (ExamViewport, HungFilm, Rect, fitted_rect, hung_film, marks_on_view, render)
from core.series.hanging import HANGING_ORDER
from tests.series_data import breast, write_mammo
from tests.test_exam_patient_fixes import _hung, _window

VIEW = (200, 400)  # a view's place: width, height


def _film(values: np.ndarray, center: float = 2000.0, width: float = 4000.0) -> HungFilm:
    return HungFilm(values.astype(np.float32), WindowPreset("File", center, width), False, False, False, values.shape)


def _film_pixel(rect: Rect, film: HungFilm, x: float, y: float) -> tuple[float, float]:
    rows, columns = film.values.shape
    return (x - rect.x) * columns / rect.width, (y - rect.y) * rows / rect.height


def test_a_one_pixel_speck_of_a_full_resolution_film_is_seen_when_magnified():
    values = np.full((3600, 1800), 1000, np.uint16)
    values[1800, 900] = 4000  # a calcification one film pixel across
    film = _film(values)
    viewport = ExamViewport()
    fitted = fitted_rect(VIEW, (VIEW[1] / 2, VIEW[1]), right=True)  # 1,800 x 3,600 fitted to 400 rows
    background = 64  # 1,000 in the window 0-4,000
    assert render(film, viewport.place(fitted, VIEW, True), VIEW, viewport.window(film)).max() < background + 15
    centre = ((fitted.x + fitted.width / 2) / VIEW[0], 0.5)
    viewport.zoom_at(18.0, centre)  # 2 view pixels per film pixel
    rect = viewport.place(fitted, VIEW, True)
    assert rect.height / 3600 == pytest.approx(2.0)
    shown = render(film, rect, VIEW, viewport.window(film))
    assert shown.max() > background + 100  # the speck stands out (linear sampling shares it among 2 x 2 pixels)
    y, x = np.unravel_index(np.argmax(shown), shown.shape)
    assert _film_pixel(rect, film, x + 0.5, y + 0.5) == pytest.approx((900.5, 1800.5), abs=0.6)


def test_zoom_keeps_the_film_under_the_pointer_and_the_left_breast_moves_as_the_mirror_of_the_right():
    film = _film(np.arange(300 * 150).reshape(300, 150) % 4000)
    viewport = ExamViewport()
    right = fitted_rect(VIEW, (150, 300), True)
    left = fitted_rect(VIEW, (150, 300), False)
    point = (0.8, 0.3)
    before = _film_pixel(viewport.place(right, VIEW, True), film, point[0] * VIEW[0], point[1] * VIEW[1])
    viewport.zoom_at(3.0, point)
    viewport.zoom_at(1.5, point)
    r, l_ = viewport.place(right, VIEW, True), viewport.place(left, VIEW, False)
    assert viewport.zoom == pytest.approx(4.5)
    assert _film_pixel(r, film, point[0] * VIEW[0], point[1] * VIEW[1]) == pytest.approx(before)
    assert (l_.x, l_.y, l_.width, l_.height) == pytest.approx((VIEW[0] - r.x - r.width, r.y, r.width, r.height))
    viewport.pan(0.1, -0.05)  # dragged right on the right breast: the left breast moves left, both up
    r2, l2 = viewport.place(right, VIEW, True), viewport.place(left, VIEW, False)
    assert (r2.x - r.x, r2.y - r.y) == pytest.approx((20, -20)) and (l2.x - l_.x, l2.y - l_.y) == pytest.approx((-20, -20))
    viewport.pan(0.1, 0.0, right=False)  # the same drag on the left breast: the mirror again
    assert viewport.place(right, VIEW, True).x == pytest.approx(r2.x - 20)
    viewport.zoom_at(0.01, point)  # out past the fitted size: fitted again
    assert viewport.place(right, VIEW, True) == right and not viewport.moved
    viewport.pan(0.3, 0.3)  # a fitted exam does not pan off its places
    assert viewport.place(right, VIEW, True) == right


def test_a_magnified_film_is_sampled_at_each_view_pixel_and_black_beyond_its_edge():
    values = (np.indices((20, 10)).sum(axis=0) % 2) * 4000  # a checkerboard of single film pixels
    film = _film(values)
    rect = Rect(5.5, 7.5, 100.0, 200.0)  # 10 view pixels per film pixel, film pixel centres on view pixel centres
    shown = render(film, rect, VIEW, film.window)
    for fy, fx in [(0, 0), (0, 1), (7, 3), (19, 9)]:
        y, x = int(7 + fy * 10 + 5), int(5 + fx * 10 + 5)  # the view pixel at the film pixel's centre
        assert shown[y, x] == (255 if values[fy, fx] else 0)
    assert shown[:7].max() == 0 and shown[:, :5].max() == 0 and shown[208:].max() == 0 and shown[:, 106:].max() == 0
    assert shown[7:208, 5:106].min() == 0 and shown[7:208, 5:106].max() == 255


def test_one_window_drag_moves_every_film_from_its_own_window():
    bright, faint = _film(np.full((40, 20), 3000), 2000, 4000), _film(np.full((40, 20), 750), 500, 1000)
    viewport = ExamViewport()
    assert viewport.window(bright).center == 2000 and viewport.window(faint).width == 1000
    viewport.window_by(0.0, -0.1)  # dragged up: darker, the centre up by a tenth of each film's width
    assert (viewport.window(bright).center, viewport.window(faint).center) == pytest.approx((2400, 600))
    viewport.window_by(-0.2, 0.0)  # dragged left: narrower, more contrast, by one factor
    ratio = viewport.window(bright).width / 4000
    assert ratio < 1 and viewport.window(faint).width / 1000 == pytest.approx(ratio)
    rect = Rect(0, 0, 20, 40)
    assert render(bright, rect, VIEW, viewport.window(bright))[20, 10] == render(faint, rect, VIEW,
                                                                                viewport.window(faint))[20, 10]
    viewport.reset()
    assert viewport.window(bright) is bright.window


def test_marks_follow_the_film_zoomed_and_mirrored():
    values = np.full((300, 150), 1000, np.uint16)
    values[200:210, 30:40] = 4000
    film = HungFilm(values[:, ::-1].astype(np.float32), WindowPreset("File", 2000, 4000), False, True, False,
                    values.shape)  # hung mirrored; the analysis saw the film as stored
    viewport = ExamViewport()
    viewport.zoom_at(4.0, (0.8, 0.6))
    rect = viewport.place(fitted_rect(VIEW, (150, 300), True), VIEW, True)
    (mark,) = marks_on_view([Finding(34.5, 204.5, 5.0, 0.9)], film, rect)
    shown = render(film, rect, VIEW, film.window)
    ys, xs = np.nonzero(shown == 255)
    assert (mark.x, mark.y) == pytest.approx((xs.mean(), ys.mean()), abs=0.6)
    assert mark.r == pytest.approx(5.0 * rect.width / 150)


def _send_wheel(widget, where: QPointF, notches: float) -> None:
    QApplication.sendEvent(widget, QWheelEvent(where, QPointF(widget.mapToGlobal(where.toPoint())), QPoint(0, 0),
                                               QPoint(0, round(120 * notches)), Qt.MouseButton.NoButton,
                                               Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False))


def _drag(widget, button, start: QPointF, end: QPointF) -> None:
    for kind, where, buttons in ((QMouseEvent.Type.MouseButtonPress, start, button),
                                 (QMouseEvent.Type.MouseMove, end, button),
                                 (QMouseEvent.Type.MouseButtonRelease, end, Qt.MouseButton.NoButton)):
        QApplication.sendEvent(widget, QMouseEvent(kind, where, QPointF(widget.mapToGlobal(where.toPoint())), button,
                                                   buttons, Qt.KeyboardModifier.NoModifier))


def test_the_exam_window_zooms_pans_and_windows_every_view_together(qtbot, tmp_path):
    pixels = breast("left", 1800, 1200)
    pixels[900, 100] = 4095  # a one-pixel speck near each chest wall
    view = _exam_window(qtbot, tmp_path, pixels, 0.1, (1200, 700))
    assert all(view.films[n].values.shape == (1800, 1200) for n in HANGING_ORDER)  # not cut to 1,200 rows
    fitted = dict(view.rects)
    before = {n: view.pictures[n].pixmap().toImage() for n in HANGING_ORDER}
    place = view.pictures["RCC"]
    rect = fitted["RCC"]
    speck = QPointF(rect.x + (1200 - 1 - 100 + 0.5) * rect.width / 1200, rect.y + 900.5 * rect.height / 1800)
    _send_wheel(place, speck, 8)  # 1.25 ** 8 = 5.96x about the speck of the mirrored right breast
    assert view.viewport.zoom == pytest.approx(1.25 ** 8)
    for name in HANGING_ORDER:  # every view magnified
        assert view.rects[name].height == pytest.approx(fitted[name].height * 1.25 ** 8)
    image = place.pixmap().toImage()
    tissue = 191  # 3,000 in the window 0-4,000; the speck 4,095 is 255
    assert image.pixelColor(int(speck.x()), int(speck.y())).value() > tissue + 30  # still under the pointer
    left = view.pictures["LCC"].pixmap().toImage()  # and the left breast's speck under the mirror point
    assert left.pixelColor(int(place.width() - speck.x()), int(speck.y())).value() > tissue + 30
    assert view.view_label.text().startswith("Zoom 6.0×")
    r0, l0 = view.rects["RCC"].x, view.rects["LMLO"].x
    _drag(place, Qt.MouseButton.LeftButton, speck, speck + QPointF(30, 0))  # the right breast follows the mouse,
    assert view.rects["RCC"].x == pytest.approx(r0 + 30)  # the left breast moves as its mirror
    assert view.rects["LMLO"].x == pytest.approx(l0 - 30 * view.pictures["LMLO"].width() / place.width())
    grey = {n: view.pictures[n].pixmap().toImage() for n in HANGING_ORDER}
    _drag(place, Qt.MouseButton.RightButton, speck, speck + QPointF(0, -60))  # up: darker on every view
    assert "window moved on every film" in view.view_label.text()
    for name in HANGING_ORDER:
        assert view.pictures[name].pixmap().toImage() != grey[name]
    QApplication.sendEvent(place, QMouseEvent(QMouseEvent.Type.MouseButtonDblClick, speck, speck,
                                              Qt.MouseButton.LeftButton, Qt.MouseButton.LeftButton,
                                              Qt.KeyboardModifier.NoModifier))
    assert view.rects == fitted and view.view_label.text().startswith("Fitted")
    assert {n: view.pictures[n].pixmap().toImage() for n in HANGING_ORDER} == before


def test_a_prior_exam_is_hung_under_the_current_one_at_one_scale_and_moves_with_it(qtbot, tmp_path):
    """'Compare with' hangs another exam of hers in a second row: the window had shown one exam at a time."""
    for date, rows in (("20190301", 2000), ("20210301", 1600)):  # the prior's films taller at the same 0.1-mm pixel
        study = generate_uid()
        for view in HANGING_ORDER:
            path = write_mammo(tmp_path / f"{date}_{view}.dcm", breast("left", rows, 800), study_uid=study,
                               laterality=view[0], view=view[1:], patient_id="WP")
            ds = pydicom.dcmread(path)
            ds.PixelSpacing, ds.StudyDate = [0.1, 0.1], date
            ds.save_as(path)
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path)
    _hung(qtbot, window)
    view = window.exam_view
    assert view.exam.date == "20210301" and not view.prior.widget.isVisibleTo(view)
    assert [view.compare.itemText(i) for i in range(view.compare.count())] == ["No prior", "2019-03-01: 4 view(s)"]
    view.compare.setCurrentIndex(1)
    view.compare.activated.emit(1)
    qtbot.waitUntil(view.prior.loaded, timeout=20000)
    assert view.prior.widget.isVisibleTo(view) and view.prior.exam.date == "20190301"
    assert view.prior.captions["RCC"].text() == "Prior 2019-03-01: R CC  (mirrored)"
    qtbot.wait(50)
    for name in HANGING_ORDER:  # one scale per mm across the rows: the prior drawn 2000/1600 as tall
        assert view.prior.rects[name].height / view.rects[name].height == pytest.approx(2000 / 1600, rel=0.02)
    before = {name: (view.rects[name].height, view.prior.rects[name].height) for name in HANGING_ORDER}
    place = view.pictures["LMLO"]
    _send_wheel(place, QPointF(place.width() / 3, place.height() / 2), 4)
    for name in HANGING_ORDER:  # both rows magnified alike
        assert view.rects[name].height == pytest.approx(before[name][0] * 1.25 ** 4)
        assert view.prior.rects[name].height == pytest.approx(before[name][1] * 1.25 ** 4)
    view.compare.setCurrentIndex(0)
    view.compare.activated.emit(0)
    assert not view.prior.widget.isVisibleTo(view) and view.prior.exam is None and not view.prior.films
    window.open_folder(tmp_path)  # hung again: no prior until one is chosen
    _hung(qtbot, window)
    assert view.prior.exam is None and view.compare.currentIndex() == 0


def test_a_film_presented_through_a_voi_lut_is_hung_as_the_file_presents_it(tmp_path):
    """The exam window had drawn it through the LUT's linear stand-in: the file's black shown as grey 55."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from core.imaging import load_image
    from core.series.exam_display import hung_film
    from core.series.hanging import screening_exams
    from core.series.index import index_folder

    pixels = np.tile(np.linspace(0, 4095, 400).astype(np.uint16), (600, 1))
    path = write_mammo(tmp_path / "RCC.dcm", pixels, study_uid=generate_uid(), laterality="R", view="CC")
    ds = pydicom.dcmread(path)
    for name in ("WindowCenter", "WindowWidth"):
        if name in ds:
            delattr(ds, name)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = np.array([round(4095 * (v / 4095) ** 0.4) for v in range(4096)], "<u2").tobytes()
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(path)
    (exam,) = screening_exams(index_folder(tmp_path))
    film = hung_film(exam.views["RCC"])
    shown = film.picture()[:, ::-1] if film.mirrored else film.picture()
    np.testing.assert_array_equal(shown, load_image(path).display(0))
    viewport = ExamViewport()
    viewport.window_by(0.0, 0.1)  # a drag down still brightens it
    assert render(film, Rect(0, 0, 400, 600), (400, 600), viewport.window(film)).mean() > film.picture().mean()


def test_one_drag_brightens_monochrome1_and_monochrome2_films_alike():
    """MONOCHROME1 films had darkened while the others brightened (inverted after the window was moved)."""
    values = np.full((40, 20), 2000.0, np.float32)
    plain = HungFilm(values, WindowPreset("File", 2000, 4000), False, False, False, values.shape)
    inverted = HungFilm(values, WindowPreset("File", 2000, 4000), True, False, False, values.shape)
    viewport = ExamViewport()
    before = [render(f, Rect(0, 0, 20, 40), (20, 40), viewport.window(f))[20, 10] for f in (plain, inverted)]
    viewport.window_by(0.0, 0.2)
    after = [render(f, Rect(0, 0, 20, 40), (20, 40), viewport.window(f))[20, 10] for f in (plain, inverted)]
    assert after[0] > before[0] + 20 and after[1] > before[1] + 20


def test_extreme_drags_and_zooms_leave_the_viewport_usable():
    viewport = ExamViewport()
    viewport.window_by(-400.0, 0.0)  # had raised OverflowError
    viewport.window_by(float("nan"), float("inf"))
    viewport.zoom_at(4.0, (0.5, 0.5))
    viewport.pan(float("inf"), 0.0)  # had made render raise
    viewport.zoom_at(float("nan"), (0.5, 0.5))
    film = _film(np.full((40, 20), 1000))
    assert math.isfinite(viewport.window(film).width) and viewport.zoom == 4.0
    assert render(film, viewport.place(Rect(0, 0, 20, 40), VIEW, True), VIEW, viewport.window(film)).shape == (400, 200)


def test_a_fitted_film_is_drawn_from_a_halved_level_as_from_the_film(monkeypatch):
    """Averaged from a level of a quarter of the rows (a quarter of the work per view and wheel step), within a grey
    level of the film itself averaged."""
    rng = np.random.default_rng(0)
    values = cv2.GaussianBlur(rng.uniform(0, 4000, (4096, 3328)).astype(np.float32), (0, 0), 6)
    film = _film(values)
    rect = Rect(10.0, 5.0, 816 * 3328 / 4096, 816.0)  # about 5 film pixels per view pixel
    from_level = render(film, rect, (700, 900), film.window)
    assert set(film.levels) == {1, 2} and film.levels[2].shape == (1024, 832)
    monkeypatch.setattr(HungFilm, "level", lambda self, shrink: self.values)
    from_film = render(film, rect, (700, 900), film.window)
    assert np.abs(from_level.astype(int) - from_film.astype(int)).max() <= 1


def test_a_prior_without_pixel_spacing_leaves_the_current_breasts_at_one_scale(qtbot, tmp_path):
    """A prior stating no spacing under an exam that does had sent every place to 'fitted to its own place': the
    current right breast (2400 rows at 0.1 mm) drawn as tall as the left (1800 rows). A later exam is captioned so."""
    from core.series.hanging import exams_of_woman, screening_exams
    from core.series.index import index_folder

    for date, sizes, spacing in (("20190301", {"R": 1000, "L": 1000}, None),
                                 ("20210301", {"R": 2400, "L": 1800}, [0.1, 0.1])):
        study = generate_uid()
        for view in HANGING_ORDER:
            path = write_mammo(tmp_path / f"{date}_{view}.dcm", breast("left", sizes[view[0]], 800), study_uid=study,
                               laterality=view[0], view=view[1:], patient_id="WS")
            ds = pydicom.dcmread(path)
            ds.StudyDate = date
            if spacing:
                ds.PixelSpacing = spacing
            elif "PixelSpacing" in ds:
                del ds.PixelSpacing
            ds.save_as(path)
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path)
    _hung(qtbot, window)
    view = window.exam_view
    view.compare.setCurrentIndex(1)
    view.compare.activated.emit(1)
    qtbot.waitUntil(view.prior.loaded, timeout=20000)
    qtbot.wait(50)
    for right, left in (("RCC", "LCC"), ("RMLO", "LMLO")):
        assert view.rects[right].height / view.rects[left].height == pytest.approx(2400 / 1800, rel=0.02)
    assert view.prior.captions["RCC"].text().startswith("Prior 2019-03-01: R CC")
    exams = screening_exams(index_folder(tmp_path))
    older = next(e for e in exams if e.date == "20190301")
    view.show_exam(older, exams_of_woman(exams, older))
    assert view.compare.itemText(1) == "2021-03-01 (later): 4 view(s)"
    view.compare.setCurrentIndex(1)
    view.compare.activated.emit(1)
    assert view.prior.captions["RCC"].text().startswith("Later 2021-03-01: R CC")


def _exam(folder, date: str, views=HANGING_ORDER) -> None:
    study = generate_uid()
    for view in views:
        path = write_mammo(folder / f"{date}_{view}.dcm", breast("left", 600, 400), study_uid=study,
                           laterality=view[0], view=view[1:], patient_id="WP")
        ds = pydicom.dcmread(path)
        ds.StudyDate, ds.PixelSpacing = date, [0.1, 0.1]
        ds.save_as(path)


def _choose(view, index: int) -> None:
    view.compare.setCurrentIndex(index)
    view.compare.activated.emit(index)


def test_a_film_failing_after_another_exam_was_hung_says_nothing_there(qtbot, tmp_path):
    """A hunt: the error of the exam hung before landed in the caption of the exam hung since."""
    _exam(tmp_path, "20190301", views=("LCC", "RMLO", "LMLO"))  # no R CC
    _exam(tmp_path, "20210301")
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path)
    _hung(qtbot, window)
    view = window.exam_view
    latest = view.exam.views["LCC"].series
    _choose(view, 1)
    qtbot.waitUntil(view.prior.loaded, timeout=20000)
    older = view.prior.exam.views["LCC"].series
    (tmp_path / "20210301_RCC.dcm").write_bytes(b"garbage" * 100)
    window.show_exam(latest)  # its R CC fails ...
    window.show_exam(older)  # ... after the reader moved on
    qtbot.waitUntil(view.loaded, timeout=20000)
    qtbot.wait(500)
    assert view.exam.date == "20190301" and view.captions["RCC"].text() == "R CC: not in this exam"


def _two_exams_hung(qtbot, tmp_path):
    """Her exams of 2019 and 2021 in one folder, the window open at the 2021 one."""
    _exam(tmp_path, "20190301")
    _exam(tmp_path, "20210301")
    window = _window(qtbot, tmp_path)
    window.open_folder(tmp_path)
    _hung(qtbot, window)
    return window, window.exam_view


def test_a_long_caption_neither_widens_the_window_nor_misaligns_the_rows(qtbot, tmp_path):
    window, view = _two_exams_hung(qtbot, tmp_path)
    view.resize(1000, 700)
    qtbot.wait(100)
    (tmp_path / "20190301_RMLO.dcm").write_bytes(b"garbage" * 100)
    _choose(view, 1)
    qtbot.waitUntil(lambda: "Cannot open" in view.prior.captions["RMLO"].text(), timeout=20000)
    qtbot.wait(200)
    assert view.prior.captions["RMLO"].text().startswith("Prior 2019-03-01: R MLO")
    assert view.width() == 1000
    widths = [view.prior.pictures[n].width() for n in HANGING_ORDER]
    assert widths == [view.pictures[n].width() for n in HANGING_ORDER]  # the rows' places one under the other


def test_a_closed_exam_window_lets_its_films_go(qtbot, tmp_path):
    window, view = _two_exams_hung(qtbot, tmp_path)
    _choose(view, 1)
    qtbot.waitUntil(view.prior.loaded, timeout=20000)
    view.close()
    qtbot.wait(300)
    assert not view.films and not view.prior.films and view.prior.exam is None
    assert window.show_exam() is view
    qtbot.waitUntil(view.loaded, timeout=20000)  # hung again: read again


def _exam_window(qtbot, folder, pixels: np.ndarray, mm: float, size: tuple[int, int] = (1000, 600)):
    """An exam of four films of ``pixels`` at ``mm`` per pixel (window 2,000 / 4,000), hung in the exam window of
    ``size``."""
    study = generate_uid()
    for view in HANGING_ORDER:
        path = write_mammo(folder / f"{view}.dcm", pixels, study_uid=study, laterality=view[0], view=view[1:],
                           patient_id="EW")
        ds = pydicom.dcmread(path)
        ds.PixelSpacing, ds.WindowCenter, ds.WindowWidth = [mm, mm], 2000, 4000
        ds.save_as(path)
    window = _window(qtbot, folder)
    window.open_folder(folder)
    _hung(qtbot, window)
    view = window.exam_view
    view.resize(*size)
    qtbot.wait(50)
    return view


def test_the_exam_window_keys_zoom_pan_fit_and_window_every_view(qtbot, tmp_path):
    """The exam window had no keys: + and - zoom, the arrows pan (the left breast as the mirror), F fits keeping the
    window, R gives each film its own window keeping the zoom; a click on the prior chooser leaves the keys to it."""
    view = _exam_window(qtbot, tmp_path, breast("left", 600, 400), 0.1)
    fitted = dict(view.rects)
    view.hide()
    view.show()  # opened: the keys go to the views, not to the first button (Space had analysed, arrows hung a prior)
    view.activateWindow()
    qtbot.waitUntil(lambda: view.focusWidget() is not None, timeout=2000)
    assert view.focusWidget() is view
    qtbot.keyClick(view.focusWidget(), Qt.Key.Key_Plus)
    assert view.viewport.zoom == pytest.approx(1.25)
    qtbot.keyClick(view.focusWidget(), Qt.Key.Key_F)
    assert view.compare.focusPolicy() == Qt.FocusPolicy.TabFocus  # clicks do not take the keys to the chooser
    _drag(view.pictures["RCC"], Qt.MouseButton.RightButton, QPointF(50, 50), QPointF(50, 10))  # and focuses the view
    assert view.viewport.windowed and view.focusWidget() is view
    windowed = view.pictures["RCC"].pixmap().toImage()
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    assert view.viewport.zoom == pytest.approx(1.25 ** 2)
    assert view.rects["RCC"].height == pytest.approx(fitted["RCC"].height * 1.25 ** 2)
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    assert view.viewport.zoom == pytest.approx(1.25)
    r0, l0 = view.rects["RCC"].x, view.rects["LCC"].x
    width = view.pictures["RCC"].width()
    qtbot.keyClick(view, Qt.Key.Key_Right)  # the views move right over the films: the right breast's film goes left
    assert view.rects["RCC"].x == pytest.approx(r0 - 0.1 * width)
    assert view.rects["LCC"].x == pytest.approx(l0 + 0.1 * view.pictures["LCC"].width())  # the mirror
    y0 = view.rects["RCC"].y
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert view.rects["RCC"].y == pytest.approx(y0 - 0.1 * view.pictures["RCC"].height())
    qtbot.keyClick(view, Qt.Key.Key_F)  # fitted again, the window kept
    assert view.rects == fitted and view.viewport.windowed
    assert view.pictures["RCC"].pixmap().toImage() == windowed
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    qtbot.keyClick(view, Qt.Key.Key_R)  # each film's own window, the zoom kept
    assert not view.viewport.windowed and view.viewport.zoom == pytest.approx(1.25)
    assert view.view_label.text().startswith("Zoom 1.2×") and "window moved" not in view.view_label.text()


def test_a_ruler_on_an_exam_view_measures_the_film_in_mm_and_follows_it(qtbot, tmp_path):
    """The exam window had no ruler: a mass seen on the hung views could not be measured there. In measure mode (D) a
    left drag draws one on the view's film: its length from the file's pixel spacing, the same on a film held smaller
    than the file and on a mirrored one; it moves with the film, and Shift+D clears it."""
    view = _exam_window(qtbot, tmp_path, breast("left", 5000, 2000), 0.05)  # 5,000 rows: held at 4,096
    assert view.films["LCC"].values.shape[0] == 4096 and view.mirrored["LCC"] != view.mirrored["RCC"]
    qtbot.keyClick(view, Qt.Key.Key_D)
    assert view.measuring
    fitted = dict(view.rects)
    for name in ("RCC", "LCC"):
        place, rect = view.pictures[name], view.rects[name]
        top = QPointF(rect.x + rect.width / 2, rect.y + rect.height * 0.25)
        bottom = QPointF(rect.x + rect.width / 2, rect.y + rect.height * 0.75)  # half the film's 250 mm
        _drag(place, Qt.MouseButton.LeftButton, top, bottom)
        assert len(view.rulers_of(name)) == 1
        assert view.distance.startswith(f"Distance on {name[0]} CC") and view.distance.endswith("125.0 mm")
    assert view.rects == fitted  # the drags measured: nothing panned
    before = view.pictures["RCC"].pixmap().toImage()
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    ruler = view.rulers_of("RCC")[0]
    assert ruler.length_px == pytest.approx(4096 / 2, abs=2)  # kept on the film, in its pixels
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    assert view.pictures["RCC"].pixmap().toImage() == before  # drawn where it was on the fitted film
    qtbot.keyClick(view, Qt.Key.Key_D, Qt.KeyboardModifier.ShiftModifier)
    assert not view.rulers_of("RCC") and not view.rulers_of("LCC") and view.distance == ""
    qtbot.keyClick(view, Qt.Key.Key_D)  # measure mode off: a left drag pans again
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    x0 = view.rects["RCC"].x
    _drag(view.pictures["RCC"], Qt.MouseButton.LeftButton, QPointF(100, 100), QPointF(130, 100))
    assert view.rects["RCC"].x == pytest.approx(x0 + 30) and not view.rulers_of("RCC")


def test_a_ruler_on_a_film_without_pixel_spacing_is_in_the_file_s_pixels():
    """A film held smaller than its file and stating no spacing: the ruler's length in the file's pixels, as the
    main viewer gives it, not the held film's; in mm where the file states its spacing."""
    from core.measurements import Ruler
    from core.series.exam_display import ruler_text

    held = np.zeros((4096, 1600))  # a 5,000 x 1,953 file held at 4,096 rows
    ruler = Ruler(100, 0, 100, 4096)
    unknown = HungFilm(held, None, False, False, False, (5000, 1953))
    assert ruler_text(ruler, unknown) == "5000 px"
    stated = HungFilm(held, None, False, False, False, (5000, 1953), (0.05, 0.05))
    assert ruler_text(ruler, stated) == "250.0 mm"
    read_smaller = HungFilm(held, None, False, False, False, (2500, 977), None, 2)  # the file read at 1/2
    assert ruler_text(ruler, read_smaller) == "5000 px"


def test_a_mark_off_the_view_is_not_drawn_and_scores_read_alike_on_any_view():
    """Zoomed in, a mark whose circle lay off the view had its score pushed inside over other tissue; and the score's
    text had been scaled to the view's height (7 px tall on a small view)."""
    from core.series.exam_display import draw_marks

    small, tall = np.full((200, 150), 128, np.uint8), np.full((2000, 1500), 128, np.uint8)
    off = Finding(-60.0, 50.0, 20.0, 0.61)
    assert (draw_marks(small, [off]) == 128).all()
    on = Finding(60.0, 100.0, 20.0, 0.61)
    boxes = [(draw_marks(canvas, [on]) == 0).all(axis=2).sum() for canvas in (small, tall)]
    assert boxes[0] > 0 and boxes[0] == boxes[1]  # the label's dark box: one size on the screen


def test_a_film_with_only_imager_pixel_spacing_is_measured_in_mm_as_in_the_main_viewer(tmp_path):
    """The exam window had taken its spacing from PixelSpacing alone (the study index's): a digital mammogram stating
    only ImagerPixelSpacing measured '300 px' there and '30.0 mm' in the main viewer."""
    from core.imaging import load_image
    from core.measurements import Ruler
    from core.series.exam_display import ruler_text
    from core.series.hanging import screening_exams
    from core.series.index import index_folder

    study = generate_uid()
    for view in ("RCC", "LCC"):
        path = write_mammo(tmp_path / f"{view}.dcm", breast("left", 600, 400), study_uid=study, laterality=view[0],
                           view=view[1:], patient_id="IPS")
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.ImagerPixelSpacing = [0.1, 0.1]
        ds.save_as(path)
    exam = screening_exams(index_folder(tmp_path))[0]
    film = hung_film(exam.views["RCC"])
    record = load_image(exam.views["RCC"].ref.path)
    assert film.picture_mm == pytest.approx(record.pixel_spacing_mm) and film.extent[2]
    assert ruler_text(Ruler(0, 0, 0, 300), film) == Ruler(0, 0, 0, 300).text(record.pixel_spacing_mm) == "30.0 mm"


def test_a_ruler_panned_off_the_view_leaves_no_length_behind():
    from core.measurements import Ruler
    from core.series.exam_display import draw_rulers

    canvas = np.full((200, 150), 128, np.uint8)
    assert (draw_rulers(canvas, [(Ruler(-80, 10, -20, 60), "18.0 mm")]) == 128).all()
    assert not (draw_rulers(canvas, [(Ruler(20, 10, 80, 60), "18.0 mm")]) == 128).all()
