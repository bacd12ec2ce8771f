"""Scrolling speed of the real window: ``python bench/series_scroll.py [--slices 200] [--size 512] [--passes 2]``.

Builds a series of ``--slices`` MR files (as ``bench/series_index.py`` does), opens its folder in the
``MainWindow`` offscreen (no models), then steps through every slice as the wheel does
(``ViewerState.set_slice``) and makes the viewport paint each one (``repaint``) before the next: the first
pass reads and decodes the files (the stack's prefetch), the later passes show cached slices. Prints slices
per second of each pass and the time from ``open_folder`` to the first slice shown. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/series_scroll.py")
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args(argv)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from bench.series_index import build
    from core.history import History
    from core.models.registry import Registry
    from gui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        build(folder, args.slices, args.size)
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        settings.setValue("auto_analyse", False)
        window = MainWindow(registry=Registry([]), settings=settings, history=History(Path(tmp) / "h.sqlite"))
        window.resize(1000, 760)
        window.show()
        started = time.perf_counter()
        window.open_folder(folder)
        while window.state.series is None or window.is_busy:
            app.processEvents()
            time.sleep(0.002)  # not a busy loop: millions of processEvents() calls wear out None's refcount
            if time.perf_counter() - started > 60:
                print("the series did not open within 60 s")
                return 1
        window.viewer.viewport().repaint()
        print(f"{args.slices} slices of {args.size}x{args.size}: folder opened and first slice shown in "
              f"{time.perf_counter() - started:.2f} s (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")
        state = window.state
        for run in range(args.passes):
            order = range(state.slice_count) if run % 2 == 0 else range(state.slice_count - 1, -1, -1)
            t0 = time.perf_counter()
            for index in order:
                state.set_slice(index)
                app.processEvents()
                window.viewer.viewport().repaint()
            seconds = time.perf_counter() - t0
            print(f"pass {run + 1} ({'files read' if run == 0 else 'cached or prefetched'}): "
                  f"{state.slice_count / seconds:.1f} slices/s")
        window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
