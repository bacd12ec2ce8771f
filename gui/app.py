"""Application start-up: the window shows first; TensorFlow loads only when a model runs."""

from __future__ import annotations

import os
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from gui.main_window import MainWindow


def run(paths: list[str]) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Medical Image Diagnostic Assistant")
    app.setOrganizationName("MIDA")
    window = MainWindow()
    window.show()
    print("window shown", flush=True)
    if paths:
        window.open_path(paths[0])
    smoke = os.environ.get("MIDA_SMOKE_SECONDS")  # packaging smoke test: close by itself
    if smoke:
        QTimer.singleShot(int(float(smoke) * 1000), window.close)
    return app.exec()
