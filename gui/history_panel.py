"""History dock: earlier analyses from the local SQLite history, newest first: images and whole series.

A series entry shows its folder and description, its slice count and each model's verdict line as the
window showed it; double-clicking it opens the folder again (the study browser), an image entry the image at
the frame that was analysed.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from core.history import HistoryEntry

MAX_ROWS = 500


class HistoryPanel(QWidget):
    openRequested = Signal(str, str, int)  # the image or series folder, the series' UID ("" for an image), the frame
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
        export = QPushButton("Export history as CSV…")
        export.clicked.connect(self.exportRequested)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(export)

    def show_entries(self, entries: list[HistoryEntry]) -> None:
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
            self.openRequested.emit(*item.data(Qt.ItemDataRole.UserRole))
