"""Screenshots of the main states for the README: ``python -m gui.screenshots OUT_DIR [IMAGE:NAME ...]``.

Run it under a real display (Xvfb works): it opens the window, analyses each image and saves
``OUT_DIR/<NAME>.png`` once the analysis is shown.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings
from PySide6.QtWidgets import QApplication

from gui.main_window import MainWindow


def _wait(app: QApplication, condition, timeout_s: float) -> bool:
    """Keep the event loop turning until ``condition()`` holds or the time is up."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.02)
    return condition()


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:  # the user's own settings stay untouched
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        settings.setValue("auto_analyse", True)
        window = MainWindow(settings=settings)
        window.resize(1500, 950)
        window.show()
        for spec in argv[1:]:
            image, name = spec.rsplit(":", 1)
            window.state.clear_analysis()
            window.open_path(image)
            ok = _wait(app, lambda: window.state.analysis is not None and not window.is_busy, 600)
            _wait(app, lambda: False, 0.5)
            window.grab().save(str(out / f"{name}.png"))
            print(f"{name}: {'analysed' if ok else 'timed out'} -> {out / (name + '.png')}")
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
