"""Mammography exam view: the four screening views side by side, chest walls facing (core.series.hanging).

The window hangs an ``Exam`` in ``HANGING_ORDER``; each picture arrives later (``set_picture``), loaded and
mirrored off the GUI thread by the main window. Pictures keep their aspect ratio as the window resizes.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from core.series.hanging import HANGING_ORDER, Exam
from gui.qimage import to_pixmap


def caption(name: str) -> str:
    return f"{name[0]} {name[1:]}"


class ExamView(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setStyleSheet("background: black; color: #f0e6a0")
        self.resize(1400, 820)
        row = QHBoxLayout(self)
        row.setSpacing(2)
        row.setContentsMargins(4, 4, 4, 4)
        self.exam: Exam | None = None
        self.captions: dict[str, QLabel] = {}
        self.pictures: dict[str, QLabel] = {}
        self.mirrored: dict[str, bool] = {}
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

    def show_exam(self, exam: Exam) -> None:
        self.exam, self.mirrored, self._pixmaps = exam, {}, {}
        self.setWindowTitle(f"Mammography exam — {exam.patient_id or 'unknown patient'}")
        for name in HANGING_ORDER:
            self.pictures[name].clear()
            view = exam.views.get(name)
            self.captions[name].setText(caption(name) + ("" if view is not None else ": not in this exam"))
            self.pictures[name].setToolTip("" if view is None else f"{view.ref.path.name} (view from {view.source})")

    def set_picture(self, name: str, picture: np.ndarray, mirrored: bool) -> None:
        self.mirrored[name] = mirrored
        self._pixmaps[name] = to_pixmap(picture)
        self.captions[name].setText(caption(name) + ("  (mirrored)" if mirrored else ""))
        self._scale(name)

    def loaded(self) -> bool:
        return self.exam is not None and set(self._pixmaps) == set(self.exam.views)

    def _scale(self, name: str) -> None:
        pixmap = self._pixmaps.get(name)
        label = self.pictures[name]
        if pixmap is not None:
            label.setPixmap(pixmap.scaled(label.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                          Qt.TransformationMode.SmoothTransformation))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        for name in self._pixmaps:
            self._scale(name)
