"""Mammography exam view: the four screening views side by side, chest walls facing (core.series.hanging).

The window hangs an ``Exam`` in ``HANGING_ORDER``; each film arrives later (``set_film``), loaded, mirrored and
turned upright off the GUI thread by the main window. Films keep their aspect ratio as the window resizes. The
views zoom (wheel), pan (drag) and window (right-drag) together through one ``ExamViewport`` (core.series.
exam_display); a double-click or "Reset view" fits them again in their own windows.
The title names the patient as the Studies panel does, the exam's date and, where she has several exams in the
folder, which one is hung ('latest of 2 exams'): a prior exam must not be read for the current one.
"Analyse exam" asks the main window to analyse every view (``analyse_requested``); each view's result arrives
in ``show_analysis``: its CAD marks drawn on the hung picture, its probability in the caption.
"Compare with" hangs another exam of hers (a prior) in a second row under the first, its films at the same scale
per millimetre and moved with them, as a reader looks for what changed (``prior_requested``: the main window
loads its films into ``set_film(..., prior=True)``).
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from core.inference.results import Analysis
from core.measurements import Ruler, ruler_within
from core.series.exam_display import (ExamViewport, HungFilm, Rect, draw_marks, draw_rulers, film_point,
                                      fitted_rect, marks_on_view, render, ruler_text, view_point)
from core.series.hanging import HANGING_ORDER, Exam, exam_to_hang
from gui.qimage import to_pixmap


PAIRS = (("RCC", "LCC"), ("RMLO", "LMLO"))  # the views shown back to back, at one scale


def caption(name: str) -> str:
    return f"{name[0]} {name[1:]}"


def _date(text: str) -> str:
    """A DICOM date as the Studies panel shows it (YYYY-MM-DD); 'date unknown' when there is none."""
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or "date unknown"


def exam_title(exam: Exam, exams: list[Exam] | tuple = ()) -> str:
    """'Mammography exam — SMITH ALICE  (W1) — 2021-03-01, latest of 2 exams': the patient as the Studies panel
    shows her, the exam's date and, where ``exams`` (hers, ``exam`` among them, oldest first) are several, which
    one this is."""
    name = exam.patient_name.replace("^", " ").strip() or "(no patient)"
    who = name + (f"  ({exam.patient_id})" if exam.patient_id and exam.patient_id != name else "")
    when = _date(exam.date)
    others = list(exams)
    if len(others) > 1:
        latest = exam_to_hang(others)
        if same_exam(exam, latest):
            when += f", latest of {len(others)} exams"
        else:
            place = next((k for k, e in enumerate(others, 1) if same_exam(e, exam)), 0)
            when += f", exam {place} of {len(others)} by date (the latest: {_date(latest.date)})"
    return f"Mammography exam — {who} — {when}"


def same_exam(a: Exam | None, b: Exam | None) -> bool:
    """Whether two exams found in the study index (each search builds new ones) are one: the same key and each view
    the same file and frame."""
    def views(exam: Exam) -> tuple:
        return exam.key, sorted((name, str(view.ref.path), view.ref.frame) for name, view in exam.views.items())

    return a is not None and b is not None and views(a) == views(b)


class FilmPlace(QLabel):
    """One view's place: wheel, drags and double-click go to the exam window, which moves every view; in measure
    mode a left drag draws a ruler on this view's film."""

    def __init__(self, name: str, row: "ExamRow") -> None:
        super().__init__()
        self.name, self.row, self.exam_view = name, row, row.exam_view
        self._drag: tuple[Qt.MouseButton, QPointF] | None = None

    def _fraction(self, point: QPointF) -> tuple[float, float]:
        return point.x() / max(1, self.width()), point.y() / max(1, self.height())

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt API
        steps = event.angleDelta().y() / 120  # a fine wheel's share of a notch, as the main viewer zooms
        if steps:
            self.exam_view.zoom_at(self.name, 1.25 ** steps, self._fraction(event.position()))
        event.accept()

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt API
        measuring = event.button() == Qt.MouseButton.LeftButton and self.exam_view.measuring
        if measuring:
            self.exam_view.start_ruler(self.row, self.name, event.position())
        if event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            self._drag = (event.button(), event.position())
        self.exam_view.setFocus()  # the keys then zoom and pan (they may have been with the buttons)
        event.accept()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self._drag is None:
            return
        button, start = self._drag
        dx, dy = self._fraction(event.position() - start)
        self._drag = (button, event.position())
        if button == Qt.MouseButton.LeftButton and self.exam_view.ruler_started:
            self.exam_view.drag_ruler(event.position())
        elif button == Qt.MouseButton.LeftButton:
            self.exam_view.pan(self.name, dx, dy)
        else:
            self.exam_view.window_by(dx, dy)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self._drag is not None and self._drag[0] == Qt.MouseButton.LeftButton and self.exam_view.ruler_started:
            self.exam_view.end_ruler(event.position())
        self._drag = None

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.exam_view.reset_view()

    def contextMenuEvent(self, event) -> None:  # noqa: N802 - Qt API
        event.accept()  # the right button windows

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)  # the layout resizes a place when a caption's length changes, not only the window
        self.exam_view.redraw_soon()


class ExamRow:
    """One exam's four places in ``HANGING_ORDER`` (the hung exam's, or the prior's under it): their captions, the
    films drawn on them and where (``rects``), as hung (``mirrored``, ``flipped``)."""

    def __init__(self, exam_view: "ExamView", prior: bool) -> None:
        self.prior = prior
        self.exam_view = exam_view
        self.widget = QWidget()
        row = QHBoxLayout(self.widget)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        self.exam: Exam | None = None
        self.captions: dict[str, QLabel] = {}
        self.pictures: dict[str, FilmPlace] = {}
        self.films: dict[str, HungFilm] = {}
        self.rects: dict[str, Rect] = {}  # where each film is drawn on its view, in the view's pixels
        self.rulers: dict[str, list[Ruler]] = {}  # the reader's rulers on each view's hung film, in its pixels
        for k, name in enumerate(HANGING_ORDER):
            column = QVBoxLayout()
            title = QLabel(caption(name))
            title.setAlignment(Qt.AlignmentFlag.AlignCenter)
            # wrapped within its column: a long caption (an error, a repeat's file name) had widened its column,
            # misaligning the rows, shrinking every film (one scale) and pushing the window past the screen
            title.setWordWrap(True)
            title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            picture = FilmPlace(name, self)
            picture.setMinimumSize(80, 120)
            picture.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
            column.addWidget(title)
            column.addWidget(picture, 1)
            row.addLayout(column, 1)
            if k == 1:
                row.addSpacing(24)  # CC pair | MLO pair
            self.captions[name], self.pictures[name] = title, picture

    def hang(self, exam: Exam | None) -> None:
        """Its places emptied for ``exam``'s films (None: none), each captioned, the missing views said."""
        self.exam = exam
        for table in (self.films, self.rects, self.rulers):
            table.clear()
        for name in HANGING_ORDER:
            self.pictures[name].clear()
            view = exam.views.get(name) if exam is not None else None
            self.captions[name].setText(self.caption(name) + ("" if view is not None else ": not in this exam"))
            self.pictures[name].setToolTip("" if view is None else f"{view.ref.path.name} (view from {view.source})")

    @property
    def mirrored(self) -> dict[str, bool]:
        """By view: whether its film was mirrored for the hanging (as each film arrived)."""
        return {name: film.mirrored for name, film in self.films.items()}

    @property
    def flipped(self) -> dict[str, bool]:
        """By view: whether its film was turned upright (core.series.hanging.needs_flip)."""
        return {name: film.flipped for name, film in self.films.items()}

    def caption(self, name: str) -> str:
        """'R CC', with what the hanging did to the picture: '  (mirrored)', '  (flipped)', '  (mirrored, flipped)';
        where the exam holds more films of the view, which one is hung ('  · 2 films: RCC_2.dcm hung'); the second
        row's places begin with its exam's date ('Prior 2019-03-01: R CC', 'Later 2023-03-01: R CC')."""
        film = self.films.get(name)
        done = [word for word, did in (("mirrored", film and film.mirrored), ("flipped", film and film.flipped)) if did]
        others = self.exam.others.get(name, 0) if self.exam is not None else 0
        hung = self.exam.views.get(name) if others else None
        when = ""
        if self.prior and self.exam is not None:
            current = self.exam_view.exam
            later = current is not None and self.exam.date > current.date
            when = f"{'Later' if later else 'Prior'} {_date(self.exam.date)}: "
        return (when + caption(name) + (f"  ({', '.join(done)})" if done else "")
                + (f"  · {others + 1} films: {hung.ref.path.name} hung" if hung is not None else ""))

    def extent(self, name: str) -> tuple[float, float, bool] | None:
        """(height, width) of a view's hung film (``HungFilm.extent``: in mm where its spacing is known, as the main
        viewer measures, ImagerPixelSpacing included); None before it is read."""
        film = self.films.get(name)
        return film.extent if film is not None else None

    def loaded(self) -> bool:
        return self.exam is not None and set(self.films) == set(self.exam.views)


class ExamView(QWidget):
    analyse_requested = Signal()
    prior_requested = Signal(object)  # the Exam to hang under the current one

    def __init__(self, parent=None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setStyleSheet("background: black; color: #f0e6a0")
        screen = self.screen().availableGeometry()  # 1,400 x 820 had run off a 1,280 x 800 screen (and at 2x)
        self.resize(min(1400, int(screen.width() * 0.95)), min(820, int(screen.height() * 0.9)))
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        button_style = "background: #303030; color: #f0e6a0; padding: 3px 12px"
        self.analyse_button = QPushButton("Analyse exam")
        self.analyse_button.setToolTip("Every view through the mammography model, each scored against the other "
                                       "breast's view; CAD marks drawn on the views")
        self.analyse_button.setStyleSheet(button_style)
        self.analyse_button.clicked.connect(self.analyse_requested)
        self.reset_button = QPushButton("Reset view")
        self.reset_button.setToolTip("Every view fitted again, each film in its own window (or double-click a view)")
        self.reset_button.setStyleSheet(button_style)
        self.reset_button.clicked.connect(self.reset_view)
        self.compare = QComboBox()
        self.compare.setToolTip("Another exam of hers hung under this one, at the same scale, moved with it")
        self.compare.setStyleSheet(button_style)
        self.compare.activated.connect(self._compare_chosen)
        self.measure_button = QPushButton("Measure (D)")
        self.measure_button.setToolTip("A left drag on a view draws a ruler on its film, in mm where the film states its "
                                       "pixel spacing (Shift+D clears them)")
        self.measure_button.setStyleSheet(f"QPushButton {{{button_style}}} QPushButton:checked {{background: #7a6420}}")
        self.measure_button.setCheckable(True)
        self.view_label = QLabel()
        self.view_label.setWordWrap(True)  # its key list never widens the window
        self.view_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        top = QHBoxLayout()
        for widget in (self.analyse_button, self.reset_button, self.measure_button, QLabel("Compare with:"),
                       self.compare):
            top.addWidget(widget)
        top.addWidget(self.view_label, 1)
        outer.addLayout(top)
        for widget in (self.analyse_button, self.reset_button, self.measure_button, self.compare):  # keys: the views
            widget.setFocusPolicy(Qt.FocusPolicy.TabFocus)  # (arrows on the chooser would hang another prior)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.analysing: list[Exam] = []  # exams whose views are being analysed (MainWindow.analyse_exam)
        self.results: dict[str, Analysis] = {}
        self.viewport = ExamViewport()
        self.current, self.prior = ExamRow(self, prior=False), ExamRow(self, prior=True)
        self.rows = (self.current, self.prior)
        outer.addWidget(self.current.widget, 1)
        outer.addWidget(self.prior.widget, 1)
        self.prior.widget.hide()
        self._others: list[Exam] = []  # her other exams, as listed in ``compare`` after "No prior"
        # the ruler being drawn (its row, view, start on the film, the ruler so far) and the last one drawn
        self._ruler: tuple[ExamRow, str, tuple[float, float], Ruler | None] | None = None
        self._last_ruler: tuple[ExamRow, str, Ruler] | None = None
        self._redraw = QTimer(self)  # places resized together (a window resize) are drawn once, after the layout
        self._redraw.setSingleShot(True)
        self._redraw.timeout.connect(self._draw_all)
        # the hung exam's places, as callers and tests name them
        self.captions, self.pictures = self.current.captions, self.current.pictures
        self.films, self.rects = self.current.films, self.current.rects

    @property
    def exam(self) -> Exam | None:
        """The exam hung (the first row's)."""
        return self.current.exam

    @property
    def mirrored(self) -> dict[str, bool]:
        return self.current.mirrored

    @property
    def flipped(self) -> dict[str, bool]:
        return self.current.flipped

    def show_exam(self, exam: Exam, exams: list[Exam] | tuple = ()) -> None:
        """Hang ``exam`` (``exams``: its woman's exams, for the title and "Compare with"); the same exam hung again
        (the window closed and reopened) keeps its analyses, drawn again as its pictures arrive. No prior is hung
        under it until one is chosen."""
        if not same_exam(self.exam, exam):
            self.results = {}
        # Analyse is offered for an exam not being analysed (another exam's analyses may still be running)
        self.analyse_button.setEnabled(not any(same_exam(exam, running) for running in self.analysing))
        self._ruler = None
        self.current.hang(exam)
        self._hang_prior(None)
        self._others = [e for e in exams if not same_exam(e, exam)]
        self.compare.clear()
        self.compare.addItem("No prior")
        for other in self._others:
            later = " (later)" if other.date > exam.date else ""
            self.compare.addItem(f"{_date(other.date)}{later}: {len(other.views)} view(s)")
        self.compare.setEnabled(bool(self._others))
        self.viewport.reset()
        self._say_view()
        self.setWindowTitle(exam_title(exam, exams))

    def _compare_chosen(self, index: int) -> None:
        prior = self._others[index - 1] if 0 < index <= len(self._others) else None
        if same_exam(prior, self.prior.exam):
            return
        self._hang_prior(prior)
        if prior is not None:
            self.prior_requested.emit(prior)

    def _hang_prior(self, prior: Exam | None) -> None:
        self.prior.hang(prior)
        self.prior.widget.setVisible(prior is not None)
        if prior is None and self.compare.count():
            self.compare.setCurrentIndex(0)
        for pair in PAIRS:  # the current films' common scale includes the prior's
            self.redraw_pair(pair[0])
        self._say_view()  # a ruler on the prior went with it

    def set_film(self, name: str, film: HungFilm, prior: bool = False) -> None:
        """A view's hung film (core.series.exam_display.hung_film: mirrored as said, turned upright where its
        PatientOrientation asks, which its marks follow), of the hung exam or of the prior under it."""
        row = self.prior if prior else self.current
        row.films[name] = film
        row.captions[name].setText(row.caption(name))
        if not prior and name in self.results:  # the analysis came first
            self.show_analysis(name, self.results[name])
        self.redraw_pair(name)  # the pair's common scale changes as a film arrives

    def film_failed(self, name: str, error: BaseException, prior: bool = False) -> None:
        """A view's film that could not be read: said in its caption (and its tooltip, whole)."""
        row = self.prior if prior else self.current
        text = f"{row.caption(name)}: {error}"
        row.captions[name].setText(text)
        row.captions[name].setToolTip(text)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Closed: the films are let go (hanging again reads them again; an exam's analyses are kept) and the prior
        dropped, so a closed window does not hold eight films."""
        for row in self.rows:
            row.films.clear()
            row.rects.clear()
        self._hang_prior(None)
        super().closeEvent(event)

    def redraw_pair(self, name: str) -> None:
        """The view and the other breast's same view, in every row shown (drawn at one scale per mm: each depends
        on every place of the pair)."""
        for row in self.rows:
            for other in next(p for p in PAIRS if name in p):
                self._draw(row, other)

    def show_analysis(self, name: str, analysis: Analysis) -> None:
        """A view's analysis: the film detector's marks on its hung film, its call in the caption, what it was
        compared with (and any warning) in the tooltip."""
        self.results[name] = analysis
        result = self._finding_result(name)
        base = self.current.caption(name)
        if result is None:
            self.captions[name].setText(base + " — no mammography model ran")
            return
        p = result.probabilities.get(result.classes[-1], 0.0)
        self.captions[name].setText(f"{base} — {result.classes[-1]} {p:.0%}, {len(result.findings)} mark(s)")
        self.pictures[name].setToolTip("\n".join([self.pictures[name].toolTip().split("\n")[0]] + result.warnings))
        self._draw(self.current, name)

    def _finding_result(self, name: str):
        analysis = self.results.get(name)
        return next((r for r in analysis.results if r.findings is not None), None) if analysis else None

    # ----- zoom, pan and window, every view together
    def zoom_at(self, name: str, factor: float, point: tuple[float, float]) -> None:
        self.viewport.zoom_at(factor, point, right=name[0] == "R")
        self._draw_all()

    def pan(self, name: str, dx: float, dy: float) -> None:
        self.viewport.pan(dx, dy, right=name[0] == "R")
        self._draw_all()

    def window_by(self, dx: float, dy: float) -> None:
        self.viewport.window_by(dx, dy)
        self._draw_all()

    def reset_view(self) -> None:
        self.viewport.reset()
        self._draw_all()

    # the keys, as the main viewer's: + and - zoom about the views' middle, the arrows move the views over the films
    # (the left breast's as the mirror of the right's), F fits them, R gives each film its own window again
    PAN_STEP = 0.1  # of a view's width or height per arrow press

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self.setFocus()  # the keys to the views from the start (the Analyse button had taken them: Space analysed)

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt API
        key, step = event.key(), self.PAN_STEP
        if event.modifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier):
            super().keyPressEvent(event)  # Ctrl+F, Alt+R ... are not these keys
            return
        pans = {Qt.Key.Key_Left: (step, 0.0), Qt.Key.Key_Right: (-step, 0.0),
                Qt.Key.Key_Up: (0.0, step), Qt.Key.Key_Down: (0.0, -step)}
        if key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal, Qt.Key.Key_Minus):
            self.viewport.zoom_at(1.25 if key != Qt.Key.Key_Minus else 1 / 1.25, (0.5, 0.5))
        elif key in pans:
            self.viewport.pan(*pans[key])
        elif key == Qt.Key.Key_D and event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.clear_rulers()
        elif key == Qt.Key.Key_D:
            self.measure_button.toggle()
        elif key == Qt.Key.Key_F:
            self.viewport.fit()
        elif key == Qt.Key.Key_R:
            self.viewport.own_window()
        else:
            super().keyPressEvent(event)
            return
        self._draw_all()

    # ----- rulers, each on one view's film (moved with it), as the main viewer's Measure distance
    @property
    def measuring(self) -> bool:
        return self.measure_button.isChecked()

    def rulers_of(self, name: str) -> list[Ruler]:
        """The rulers on the hung exam's view ``name``, on its film."""
        return self.current.rulers.get(name, [])

    @property
    def ruler_started(self) -> bool:
        return self._ruler is not None

    def start_ruler(self, row: ExamRow, name: str, point: QPointF) -> None:
        """A ruler begun at ``point`` of ``row``'s view ``name`` (nothing where no film is drawn there yet)."""
        film, rect = row.films.get(name), row.rects.get(name)
        if film is not None and rect is not None:
            self._ruler = (row, name, film_point(rect, film, point.x(), point.y()), None)

    def drag_ruler(self, point: QPointF) -> None:
        """The ruler being drawn, to ``point`` (within the film: a drag past its edge stops there)."""
        row, name, start, _ = self._ruler
        film, rect = row.films.get(name), row.rects.get(name)
        if film is None or rect is None:  # the exam was hung again under the drag
            self._ruler = None
            return
        end = film_point(rect, film, point.x(), point.y())
        rows, columns = film.values.shape[:2]
        self._ruler = (row, name, start, ruler_within(*start, *end, columns, rows))
        self._draw(row, name)

    def end_ruler(self, point: QPointF) -> None:
        """The ruler kept (a click without a drag keeps none) and its length said."""
        self.drag_ruler(point)
        if self._ruler is None:
            return
        row, name, _, ruler = self._ruler
        self._ruler = None
        if ruler is not None:
            row.rulers.setdefault(name, []).append(ruler)
            self._last_ruler = (row, name, ruler)
            self._say_view()
        self._draw(row, name)

    def clear_rulers(self) -> None:
        for row in self.rows:
            row.rulers.clear()
        self._draw_all()

    @property
    def distance(self) -> str:
        """The last ruler's length and view ('Distance on R CC: 18.0 mm'), while it is drawn (a film hung again,
        or Shift+D, clears it)."""
        if self._last_ruler is None:
            return ""
        row, name, ruler = self._last_ruler
        if ruler not in row.rulers.get(name, []) or name not in row.films:
            return ""
        where = f"the prior's {caption(name)}" if row.prior else caption(name)
        return f"Distance on {where}: {ruler_text(ruler, row.films[name])}"

    def _say_view(self) -> None:
        """What the views show: zoom, and the window where it was moved from each film's own."""
        v = self.viewport
        text = f"Zoom {v.zoom:.1f}×" if v.moved else "Fitted"
        if v.windowed:
            text += (f" · window moved on every film: centre {v.centre_shift:+.0%} of its width, width ×{1 / v.contrast:.2f}")
        if self.distance:
            text += f" · {self.distance}"
        self.view_label.setText(text + "   (wheel or +/-: zoom · drag or arrows: pan · right-drag: window · F: fit · "
                                       "R: own windows · double-click: both · D: measure)")

    def redraw_soon(self) -> None:
        self._redraw.start(0)

    def _draw_all(self) -> None:
        self._say_view()
        for row in self.rows:
            for name in list(row.films):
                self._draw(row, name)

    def loaded(self) -> bool:
        return self.current.loaded()

    def _fitted_size(self, row: ExamRow, name: str) -> tuple[float, float]:
        """(width, height) the film is drawn at when fitted: at the scale of its pair (R and L CC, R and L MLO),
        both breasts at one size per millimetre (per pixel where neither states a spacing), as a reader compares
        them (a film 2400 rows tall beside one of 1800 at the same pixel size had been drawn at the same height),
        and the two rows' pairs at one scale where their units agree (a prior without a spacing keeps its own);
        else fitted to its own place."""
        label = row.pictures[name]
        pair = next(p for p in PAIRS if name in p)
        scales = {r: self._pair_scale(r, pair) for r in self.rows if r.exam is not None}
        own = scales.get(row)
        if own is None:
            rows, columns = row.films[name].values.shape[:2]
            fit = min(label.width() / columns, label.height() / rows)
            return columns * fit, rows * fit
        per_unit = min(s[0] for s in scales.values() if s is not None and s[1] == own[1]) if \
            all(s is None or s[1] == own[1] for s in scales.values()) else own[0]
        height, width, _ = row.extent(name)
        return width * per_unit, height * per_unit

    @staticmethod
    def _pair_scale(row: ExamRow, pair: tuple[str, str]) -> tuple[float, bool] | None:
        """(view pixels per unit that fits both films of ``pair`` in ``row``, whether the unit is the mm), or None
        where a film's size is unknown or the two films' units differ."""
        extents = {n: row.extent(n) for n in pair if n in row.films}
        if not extents or any(e is None for e in extents.values()) or len({e[2] for e in extents.values()}) != 1:
            return None
        per_unit = min(min(row.pictures[n].width() / e[1], row.pictures[n].height() / e[0]) for n, e in extents.items())
        return per_unit, next(iter(extents.values()))[2]

    def _draw(self, row: ExamRow, name: str) -> None:
        """The view drawn: its film where the viewport puts it, in the viewport's window, with its marks."""
        film = row.films.get(name)
        if film is None:
            return
        label = row.pictures[name]
        size, right = (max(1, label.width()), max(1, label.height())), name[0] == "R"
        rect = row.rects[name] = self.viewport.place(fitted_rect(size, self._fitted_size(row, name), right), size, right)
        ratio = label.devicePixelRatioF()  # drawn in the screen's own pixels: a HiDPI screen shows twice the detail
        pixels = Rect(rect.x * ratio, rect.y * ratio, rect.width * ratio, rect.height * ratio)
        canvas = render(film, pixels, (round(size[0] * ratio), round(size[1] * ratio)), self.viewport.window(film))
        result = self._finding_result(name) if row is self.current else None
        if result is not None and result.findings:  # at one size on the screen, as the rulers
            canvas = draw_marks(canvas, marks_on_view(result.findings, film, pixels), ratio)
        rulers = list(row.rulers.get(name, []))
        if self._ruler is not None and self._ruler[:2] == (row, name) and self._ruler[3] is not None:
            rulers.append(self._ruler[3])
        on_view = []
        for ruler in rulers:
            ends = view_point(pixels, film, ruler.x0, ruler.y0) + view_point(pixels, film, ruler.x1, ruler.y1)
            on_view.append((Ruler(*ends), ruler_text(ruler, film)))
        canvas = draw_rulers(canvas, on_view, ratio)
        pixmap = to_pixmap(canvas)
        pixmap.setDevicePixelRatio(ratio)
        label.setPixmap(pixmap)
