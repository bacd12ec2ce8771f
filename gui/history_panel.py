"""History dock: earlier analyses from the local SQLite history, newest first."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from core.history import History


class HistoryPanel(QWidget):
    openRequested = Signal(str)
    exportRequested = Signal()

    def __init__(self, history: History, parent=None) -> None:
        super().__init__(parent)
        self.history = history
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["When", "File", "Modality", "Findings"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.cellDoubleClicked.connect(self._open)
        export = QPushButton("Export history as CSV…")
        export.clicked.connect(self.exportRequested)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(export)

    def refresh(self) -> None:
        entries = self.history.all()[:500]
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(entries))
        for i, entry in enumerate(entries):
            for j, text in enumerate((entry.analysed_at, entry.path, entry.modality, entry.labels)):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, entry.path)
                self.table.setItem(i, j, item)
        self.table.setSortingEnabled(True)

    def _open(self, row: int, _column: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.openRequested.emit(item.data(Qt.ItemDataRole.UserRole))
