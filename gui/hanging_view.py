"""Mammography exam view: the four screening views side by side, chest walls facing (core.series.hanging).

The window hangs an ``Exam`` in ``HANGING_ORDER``; each picture arrives later (``set_picture``), loaded, mirrored
and turned upright off the GUI thread by the main window. Pictures keep their aspect ratio as the window resizes.
The title names the patient as the Studies panel does, the exam's date and, where she has several exams in the
folder, which one is hung ('latest of 2 exams'): a prior exam must not be read for the current one.
"Analyse exam" asks the main window to analyse every view (``analyse_requested``); each view's result arrives
in ``show_analysis``: its CAD marks drawn on the hung picture, its probability in the caption.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from core.export.report import draw_findings
from core.inference.results import Analysis
from core.series.hanging import HANGING_ORDER, Exam, exam_to_hang, hung_findings, needs_flip
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


class ExamView(QWidget):
    analyse_requested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setStyleSheet("background: black; color: #f0e6a0")
        self.resize(1400, 820)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        self.analyse_button = QPushButton("Analyse exam")
        self.analyse_button.setToolTip("Every view through the mammography model, each scored against the other "
                                       "breast's view; CAD marks drawn on the views")
        self.analyse_button.setStyleSheet("background: #303030; color: #f0e6a0; padding: 3px 12px")
        self.analyse_button.clicked.connect(self.analyse_requested)
        outer.addWidget(self.analyse_button, 0, Qt.AlignmentFlag.AlignLeft)
        row = QHBoxLayout()
        row.setSpacing(2)
        outer.addLayout(row, 1)
        self.exam: Exam | None = None
        self.analysing: list[Exam] = []  # exams whose views are being analysed (MainWindow.analyse_exam)
        self.captions: dict[str, QLabel] = {}
        self.pictures: dict[str, QLabel] = {}
        self.mirrored: dict[str, bool] = {}
        self.flipped: dict[str, bool] = {}  # turned upright (core.series.hanging.needs_flip)
        self.results: dict[str, Analysis] = {}
        self._source_shapes: dict[str, tuple[int, ...]] = {}  # each analysed picture's shape (its marks' pixels)
        self._pictures: dict[str, np.ndarray] = {}
        self._pixmaps: dict[str, QPixmap] = {}
        for k, name in enumerate(HANGING_ORDER):
            column = QVBoxLayout()
            title = QLabel(caption(name))
            title.setAlignment(Qt.AlignmentFlag.AlignCenter)
            picture = QLabel()
            picture.setMinimumSize(80, 120)
            picture.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
            # right-breast pictures hug their right edge, left-breast ones their left: the pair meets back to back
            picture.setAlignment(Qt.AlignmentFlag.AlignVCenter | (Qt.AlignmentFlag.AlignRight if name[0] == "R"
                                                                  else Qt.AlignmentFlag.AlignLeft))
            column.addWidget(title)
            column.addWidget(picture, 1)
            row.addLayout(column, 1)
            if k == 1:
                row.addSpacing(24)  # CC pair | MLO pair
            self.captions[name], self.pictures[name] = title, picture

    def show_exam(self, exam: Exam, exams: list[Exam] | tuple = ()) -> None:
        """Hang ``exam`` (``exams``: its woman's exams, for the title); the same exam hung again (the window closed
        and reopened) keeps its analyses, drawn again as its pictures arrive."""
        if not same_exam(self.exam, exam):
            self.results, self._source_shapes = {}, {}
        # Analyse is offered for an exam not being analysed (another exam's analyses may still be running)
        self.analyse_button.setEnabled(not any(same_exam(exam, running) for running in self.analysing))
        self.exam, self.mirrored, self.flipped, self._pixmaps, self._pictures = exam, {}, {}, {}, {}
        self.setWindowTitle(exam_title(exam, exams))
        for name in HANGING_ORDER:
            self.pictures[name].clear()
            view = exam.views.get(name)
            self.captions[name].setText(caption(name) + ("" if view is not None else ": not in this exam"))
            self.pictures[name].setToolTip("" if view is None else f"{view.ref.path.name} (view from {view.source})")

    def set_picture(self, name: str, picture: np.ndarray, mirrored: bool) -> None:
        """A view's hung picture (``core.series.hanging.hung_picture``: mirrored as said, turned upright where its
        PatientOrientation asks, which its marks follow)."""
        view = self.exam.views.get(name) if self.exam is not None else None
        self.mirrored[name] = mirrored
        self.flipped[name] = view is not None and needs_flip(view.laterality, view.view, view.ref.patient_orientation)
        self._pictures[name] = picture
        self._pixmaps[name] = to_pixmap(picture)
        self.captions[name].setText(self._caption(name))
        self._scale_pair(name)
        if name in self.results:  # the analysis came first
            self.show_analysis(name, self.results[name], self._source_shapes[name])

    def show_analysis(self, name: str, analysis: Analysis, source_shape: tuple[int, ...]) -> None:
        """A view's analysis: the film detector's marks on its hung picture, its call in the caption, what it
        was compared with (and any warning) in the tooltip."""
        self.results[name], self._source_shapes[name] = analysis, source_shape
        result = next((r for r in analysis.results if r.findings is not None), None)
        picture = self._pictures.get(name)
        base = self._caption(name)
        if result is None:
            self.captions[name].setText(base + " — no mammography model ran")
            return
        p = result.probabilities.get(result.classes[-1], 0.0)
        self.captions[name].setText(f"{base} — {result.classes[-1]} {p:.0%}, {len(result.findings)} mark(s)")
        self.pictures[name].setToolTip("\n".join([self.pictures[name].toolTip().split("\n")[0]] + result.warnings))
        if picture is not None:
            marks = hung_findings(result.findings, source_shape, picture.shape, self.mirrored.get(name, False),
                                  self.flipped.get(name, False))
            grey = picture if picture.ndim == 3 else np.repeat(picture[..., None], 3, axis=2)
            self._pixmaps[name] = to_pixmap(draw_findings(grey, marks))
            self._scale(name)

    def _caption(self, name: str) -> str:
        """'R CC', with what the hanging did to the picture: '  (mirrored)', '  (flipped)', '  (mirrored, flipped)';
        where the exam holds more films of the view, which one is hung ('  · 2 films: RCC_2.dcm hung')."""
        done = [word for word, did in (("mirrored", self.mirrored.get(name)), ("flipped", self.flipped.get(name)))
                if did]
        others = self.exam.others.get(name, 0) if self.exam is not None else 0
        hung = self.exam.views.get(name) if others else None
        return (caption(name) + (f"  ({', '.join(done)})" if done else "")
                + (f"  · {others + 1} films: {hung.ref.path.name} hung" if hung is not None else ""))

    def loaded(self) -> bool:
        return self.exam is not None and set(self._pixmaps) == set(self.exam.views)

    def _extent(self, name: str) -> tuple[float, float, bool] | None:
        """(height, width) of a view's film: in mm (True) where it states its pixel spacing, else in its pixels
        (False); None where its size is not known."""
        view = self.exam.views.get(name) if self.exam is not None else None
        if view is None or not view.ref.rows or not view.ref.columns:
            return None
        spacing = view.ref.pixel_spacing_mm
        row_mm, column_mm = spacing if spacing else (1.0, 1.0)
        return view.ref.rows * row_mm, view.ref.columns * column_mm, bool(spacing)

    def _scale(self, name: str) -> None:
        """The view's picture fitted to its place at the scale of its pair (R and L CC, R and L MLO): both breasts
        at one size per millimetre (per pixel where neither states a spacing), as a reader compares them; a film
        2400 rows tall beside one of 1800 at the same pixel size had been drawn at the same height."""
        pixmap = self._pixmaps.get(name)
        label = self.pictures[name]
        if pixmap is None:
            return
        pair = next(p for p in PAIRS if name in p)
        extents = {n: self._extent(n) for n in pair if n in self._pixmaps}
        size = label.size()
        if all(e is not None for e in extents.values()) and len({e[2] for e in extents.values()}) == 1:
            per_unit = min(min(self.pictures[n].width() / e[1], self.pictures[n].height() / e[0])
                           for n, e in extents.items())
            height, width, _ = extents[name]
            size = QSize(max(1, round(width * per_unit)), max(1, round(height * per_unit)))
        label.setPixmap(pixmap.scaled(size, Qt.AspectRatioMode.KeepAspectRatio,
                                      Qt.TransformationMode.SmoothTransformation))

    def _scale_pair(self, name: str) -> None:
        """The view and the other breast's same view (their common scale changes as a picture arrives)."""
        for other in next(p for p in PAIRS if name in p):
            self._scale(other)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        for name in self._pixmaps:
            self._scale(name)
