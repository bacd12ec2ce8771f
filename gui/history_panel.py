"""History dock: earlier analyses from the local SQLite history, newest first: images and whole series.

A series entry shows its folder and description, its slice count and each model's verdict line as the
window showed it; double-clicking it opens the folder again (the study browser), an image entry the image at
the frame that was analysed. Without a history (its database could not be opened or read) the panel says why.
"""

from __future__ import annotations

import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from core.history import HistoryEntry
from core.result_cells import file_relative

MAX_ROWS = 500


class HistoryPanel(QWidget):
    # the image or series folder (a str that may hold undecodable bytes: not Qt text), the series' UID ("" for an
    # image), the frame
    openRequested = Signal(object, str, int)
    exportRequested = Signal()

    COLUMNS = ["When", "Kind", "File / series", "Modality", "Findings"]

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.cellDoubleClicked.connect(self._open)
        self.export = QPushButton("Export history as CSV…")
        self.export.clicked.connect(self.exportRequested)
        self.unavailable = QLabel("")  # why there is no history, when there is none
        self.unavailable.setWordWrap(True)
        self.unavailable.hide()
        layout = QVBoxLayout(self)
        layout.addWidget(self.unavailable)
        layout.addWidget(self.table)
        layout.addWidget(self.export)

    def show_unavailable(self, reason: str) -> None:
        """No history to list or export: the reader is told why, and that analyses still run unrecorded."""
        self.unavailable.setText(f"The history is unavailable: {reason}. Analyses still run but are not recorded.")
        self.unavailable.show()
        self.table.setRowCount(0)
        self.export.setEnabled(False)

    def show_entries(self, entries: list[HistoryEntry]) -> None:
        self.unavailable.hide()
        self.export.setEnabled(True)
        entries = entries[:MAX_ROWS]
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(entries))
        for i, entry in enumerate(entries):
            for j, text in enumerate(self.cells(entry)):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, (entry.path, entry.series_uid or "", entry.frame or 0))
                if entry.kind == "series" and entry.series_uid:
                    uid, _, part = entry.series_uid.partition("|")  # Series.history_key: the part of a split one
                    item.setToolTip(f"SeriesInstanceUID {uid}" + (f" ({part})" if part else "") + f"\n{entry.path}")
                self.table.setItem(i, j, item)
        self.table.setSortingEnabled(True)

    @staticmethod
    def cells(entry: HistoryEntry) -> tuple[str, str, str, str, str]:
        if entry.kind == "series":
            where = f"{entry.description} — {entry.path}" if entry.description else entry.path
            slices = "" if entry.slices is None else f", {entry.slices} slices"
            return entry.analysed_at, f"series{slices}", where, entry.modality, entry.labels
        return entry.analysed_at, "image", entry.path, entry.modality, entry.labels

    def _open(self, row: int, _column: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            path, series_uid, frame = item.data(Qt.ItemDataRole.UserRole)
            self.openRequested.emit(stored_path(path), series_uid, frame)


def stored_path(text: str) -> str:
    """The file a history path names. The history keeps bytes that are not UTF-8 as \\xNN escapes; a path that
    does not exist as written is read with them turned back into those bytes (entries of any version)."""
    return text if os.path.lexists(text) else file_relative(text)
