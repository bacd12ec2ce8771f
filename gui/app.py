"""Application start-up: the window shows first; TensorFlow loads only when a model runs."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication

from gui.main_window import MainWindow


def run(paths: list[str]) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Medical Image Diagnostic Assistant")
    app.setOrganizationName("MIDA")
    window = MainWindow()
    window.show()
    if paths:
        window.open_path(paths[0])
    return app.exec()
