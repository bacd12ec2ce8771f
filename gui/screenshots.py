"""Screenshots of the main states for the README: ``python -m gui.screenshots OUT_DIR SPEC ...``.

Each SPEC is ``IMAGE:NAME`` or ``IMAGE:NAME:OPTIONS``: the window opens IMAGE, analyses it and saves
``OUT_DIR/<NAME>.png`` once the analysis is shown. OPTIONS, comma-separated, act through the viewer
state as a user would:

- ``slice=N``: show frame N (counted from 0) and analyse it;
- ``wl=DC/DW``: drag the window/level by DC (vertical) and DW (horizontal) display pixels;
- ``mag=N``: a microscopy image's magnification set to N (40, 100, 200 or 400) and the image analysed again;
- ``hide=LAYER``: hide an overlay layer (heatmap, mask or lesions);
- ``ruler=X0/Y0/X1/Y1``: measure a distance between two image points, as a drag in measure mode does;
- ``region=X0/Y0/X1/Y1``: measure the ellipse in that box of image points, as a drag in region mode does;
- ``menu=export``: the File ▸ Export menu open (the screen is grabbed, so this needs a real display);
- ``batch=1``: IMAGE is a folder: the Analyse folder dialog runs over it and is saved when done;
- ``series=1``: IMAGE is a folder (or DICOMDIR) opened in the study browser; its first series is analysed
  as a series, then ``slice=N`` shows slice N (counted from 0) with its series results, ``analyse=1``
  also analyses that slice on its own (for its heatmap);
- ``compare=TEXT`` (with ``series=1``): the folder's series whose description holds TEXT shown beside it.

Run it under a real display (Xvfb works).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEvent, QEventLoop, QPoint, QSettings
from PySide6.QtWidgets import QApplication

from core.history import History
from core.models.scale import um_at_magnification
from gui.main_window import MainWindow


def _wait(app: QApplication, condition, timeout_s: float) -> bool:
    """Keep the event loop turning until ``condition()`` holds or the time is up."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        app.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # processEvents leaves deleteLater() undone
        time.sleep(0.02)
    return condition()


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``IMAGE:NAME[:k=v,...]`` as (image, name, options)."""
    parts = spec.split(":")
    options: dict[str, str] = {}
    if len(parts) > 2 and "=" in parts[-1]:
        options = dict(item.split("=", 1) for item in parts.pop().split(","))
    name = parts.pop()
    return ":".join(parts), name, options


def _analysed(app: QApplication, window: MainWindow) -> bool:
    ok = _wait(app, lambda: window.state.analysis is not None and not window.is_busy, 600)
    _wait(app, lambda: False, 0.5)
    return ok


def _batch(app: QApplication, window: MainWindow, folder: str, target: Path) -> bool:
    dialog = window.batch()
    with tempfile.TemporaryDirectory() as out:
        dialog.folder.setText(folder)
        dialog.out.setText(out)
        dialog.start()
        ok = _wait(app, lambda: dialog.summary is not None and not dialog.running, 1200)
        _wait(app, lambda: False, 0.5)
        dialog.grab().save(str(target))
    dialog.close()
    return ok


def _series(app: QApplication, window: MainWindow, folder: str, options: dict[str, str]) -> bool:
    window.open_folder(folder)
    ok = _wait(app, lambda: window.state.series is not None and not window.is_busy, 120)
    _wait(app, lambda: bool(window.study_index) and all(window.studies.has_thumbnail(s.key)
                                                        for s in window.study_index.series), 30)
    if window.state.series_analysis is None:
        window.analyse_series()
    ok = ok and _wait(app, lambda: window.state.series_analysis is not None and window.series_cancel is None, 1200)
    if "slice" in options:
        window.state.set_slice(int(options["slice"]))
    if options.get("analyse"):
        window.analyse()
        ok = ok and _wait(app, lambda: window.state.analysis is not None and window.state.analysis.modality_source
                          != "series" and not window.is_busy, 600)
    if "compare" in options:
        other = next(s for s in window.study_index.series if options["compare"] in s.description)
        window.compare_series(other)
        ok = ok and _wait(app, lambda: window.compare.state.series is other and not window.is_busy, 60)
    _wait(app, lambda: False, 0.5)
    return ok


def _with_export_menu(app: QApplication, window: MainWindow, target: Path) -> None:
    file_menu = window.menuBar().actions()[0].menu()
    export_menu = next(a.menu() for a in file_menu.actions() if a.menu() is not None and "Export" in a.text())
    export_menu.popup(window.mapToGlobal(QPoint(40, window.menuBar().height() + 10)))
    _wait(app, lambda: False, 0.5)
    frame = window.frameGeometry()
    app.primaryScreen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height()).save(str(target))
    export_menu.hide()


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:  # the user's own settings and history stay untouched
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        settings.setValue("auto_analyse", True)
        window = MainWindow(settings=settings, history=History(Path(tmp) / "history.sqlite"))
        window.resize(1500, 950)
        window.show()
        for spec in argv[1:]:
            image, name, options = parse_spec(spec)
            target = out / f"{name}.png"
            if options.get("batch"):
                ok = _batch(app, window, image, target)
                print(f"{name}: {'done' if ok else 'timed out'} -> {target}")
                continue
            window.state.clear_analysis()
            if options.get("series"):
                ok = _series(app, window, image, options)
            else:
                window.open_path(image)
                ok = _analysed(app, window)
            if "slice" in options and not options.get("series"):
                window.state.set_slice(int(options["slice"]))
                window.analyse()
                ok = _analysed(app, window)
            if "mag" in options:
                window.state.set_microns_per_pixel(um_at_magnification(int(options["mag"])))
                window.analyse()
                ok = _analysed(app, window)
            if "hide" in options:
                getattr(window.state.overlays, options["hide"]).visible = False
            if "wl" in options:
                d_center, d_width = (float(v) for v in options["wl"].split("/"))
                window.state.adjust(d_center, d_width)
                _wait(app, lambda: False, 0.3)
            if "ruler" in options:
                window.state.add_ruler(*(float(v) for v in options["ruler"].split("/")))
                _wait(app, lambda: False, 0.3)
            if "region" in options:
                window.state.add_region(*(float(v) for v in options["region"].split("/")))
                _wait(app, lambda: False, 0.3)
            if options.get("menu") == "export":
                _with_export_menu(app, window, target)
            else:
                window.grab().save(str(target))
            print(f"{name}: {'analysed' if ok else 'timed out'} -> {target}")
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
