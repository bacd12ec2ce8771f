"""Study browser: a study index (core.series) as a tree, patient -> study -> series with a thumbnail each.

Selecting a series row emits ``seriesChosen(key)`` (its context menu also ``compareRequested(key)``);
``bind(state)`` makes the tree select the series the viewer state shows. Thumbnails (the middle slice, 48 px)
are made on the window's I/O threads.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QHeaderView, QMenu, QTreeWidget, QTreeWidgetItem

from core.series.index import Series, StudyIndex
from core.viewer_state import ViewerState
from gui.qimage import to_pixmap

THUMB_PX = 48
KEY_ROLE = Qt.ItemDataRole.UserRole


def thumbnail(series: Series, size: int = THUMB_PX) -> np.ndarray:
    """The middle slice of ``series`` as a uint8 picture at most ``size`` pixels on its longer side, in the
    proportions the viewer draws it (non-square pixels: ``row_to_column``)."""
    import cv2

    from core.imaging import load_image

    ref = series.slices[len(series.slices) // 2]
    record = load_image(ref.path)
    picture = record.display(ref.frame)
    rows, columns = picture.shape[0] * record.row_to_column(), picture.shape[1]
    scale = size / max(rows, columns)
    width, height = max(1, round(columns * scale)), max(1, round(rows * scale))
    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)


class StudyBrowser(QTreeWidget):
    """Columns: description (with the thumbnail), modality, slices; series rows carry their key."""

    seriesChosen = Signal(str)
    compareRequested = Signal(str)  # the context menu's "Compare beside the series shown"

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setColumnCount(3)
        self.setHeaderLabels(["Series", "Modality", "Slices"])
        header = self.header()  # the short columns as wide as their words ('Modality' had been clipped)
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.setUniformRowHeights(False)
        self.setMinimumWidth(280)
        self.index: StudyIndex | None = None
        self.rows: dict[str, QTreeWidgetItem] = {}
        self.itemSelectionChanged.connect(self._chosen)

    def show_index(self, index: StudyIndex) -> None:
        self.blockSignals(True)
        try:
            self.clear()
            self.index, self.rows = index, {}
            for patient in index.patients:
                name = patient.name.replace("^", " ").strip() or "(no patient)"
                patient_row = QTreeWidgetItem(self, [f"{name}" + (f"  ({patient.id})" if patient.id else "")])
                for study in patient.studies:
                    date = f"{study.date[:4]}-{study.date[4:6]}-{study.date[6:]}" if len(study.date) == 8 else study.date
                    accession = f"Acc. {study.accession}" if study.accession else ""  # how a department names a study
                    label = "  ".join(part for part in (date, study.description, accession) if part) or "(no study)"
                    study_row = QTreeWidgetItem(patient_row, [label])
                    for series in study.series:
                        self._series_row(study_row, series)
            self.expandAll()
            for column in (0, 1, 2):
                self.resizeColumnToContents(column)
        finally:
            self.blockSignals(False)

    def _series_row(self, parent: QTreeWidgetItem, series: Series) -> None:
        number = f"{series.number}: " if series.number is not None else ""
        text = f"{number}{series.description or series.slices[0].path.name}"
        row = QTreeWidgetItem(parent, [text, series.modality or "-", str(len(series))])
        row.setData(0, KEY_ROLE, series.key)
        row.setTextAlignment(2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        facts = [f"{len(series)} slice(s)", series.plane or "orientation unknown"]
        if series.spacing_mm is not None:
            facts.append(f"spacing {series.spacing_mm:.2f} mm")
        tip = ", ".join(facts) + "".join(f"\n⚠ {w}" for w in series.warnings)
        for column in range(3):
            row.setToolTip(column, tip)
        self.rows[series.key] = row

    def set_thumbnail(self, key: str, picture: np.ndarray) -> None:
        row = self.rows.get(key)
        if row is not None:
            row.setIcon(0, QIcon(to_pixmap(picture)))

    def has_thumbnail(self, key: str) -> bool:
        row = self.rows.get(key)
        return row is not None and not row.icon(0).isNull()

    def _chosen(self) -> None:
        items = self.selectedItems()
        key = items[0].data(0, KEY_ROLE) if items else None
        if key:
            self.seriesChosen.emit(key)

    def contextMenuEvent(self, event) -> None:  # noqa: N802 - Qt API
        item = self.itemAt(event.pos())
        key = item.data(0, KEY_ROLE) if item is not None else None
        if not key:
            return
        menu = QMenu(self)
        menu.addAction("Open").triggered.connect(lambda: self.seriesChosen.emit(key))
        menu.addAction("Compare beside the series shown").triggered.connect(lambda: self.compareRequested.emit(key))
        menu.exec(event.globalPos())

    def select(self, key: str | None) -> None:
        """Select the row of series ``key`` without emitting ``seriesChosen``."""
        self.blockSignals(True)
        try:
            self.clearSelection()
            row = self.rows.get(key) if key else None
            if row is not None:
                row.setSelected(True)
                self.setCurrentItem(row)
                self.scrollToItem(row)
        finally:
            self.blockSignals(False)

    def bind(self, state: ViewerState) -> None:
        """The row selected follows the series shown, and none is while a file alone is (a series clicked, then
        superseded by a file opened before it arrived, had stayed selected)."""
        state.events.series.connect(lambda series: self.select(series.key if series is not None else None))
        state.events.record.connect(lambda _: self.select(state.series.key if state.series is not None else None))
