"""The history when its database cannot be used, and the batch dialog's rows: defects a hunt reproduced.

The window opens without a history it cannot open; `history --csv` never writes over the database and writes
UTF-8 whatever the locale; an unreadable or newer database is an error, not a traceback; a batch stops trying to
record after the first failure; batch rows open names that are not UTF-8 at their frame; a resume ticks the models
it uses; a History entry of a name that is not UTF-8 opens its file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.errors import DiagnosticError
from core.history import History
from tests.conftest import REPO
from tests.tiny_models import planted_images

NOT_UTF8 = os.fsdecode(b"scan_\xff.png")  # a name whose bytes are not UTF-8


def _png(path: Path) -> Path:
    Image.fromarray(planted_images(1, seed=3)[0][0]).save(path)
    return path


def _history_with_entry(db: Path, image: Path) -> History:
    """A history holding one image entry of ``image`` (a tiny classifier's result, no model run)."""
    from core.inference.results import Analysis, ModelResult

    history = History(db)
    result = ModelResult("tiny-mr-classifier", "0.0.1", "classification", "cpu", classes=["lesion", "normal"],
                         probabilities={"lesion": 0.9, "normal": 0.1}, label="lesion")
    history.add(Analysis(path=str(image), modality="MR", modality_source="header", frame=0, results=[result]))
    return history


# 1: the window without a history
def test_the_window_opens_without_a_history_it_cannot_open_and_still_analyses(qtbot, tiny_models, tmp_path,
                                                                              monkeypatch, planted_png):
    from PySide6.QtCore import QSettings

    from core.inference.analyzer import Analyzer, Engine
    from core.models.registry import Registry
    from gui.main_window import MainWindow

    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "history.sqlite").write_bytes(b"not a database at all" * 100)
    registry = Registry([tiny_models])
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("auto_analyse", False)
    window = MainWindow(engine=Engine(Analyzer(registry)), registry=registry, settings=settings)
    qtbot.addWidget(window)
    assert window.history is None
    panel = window.history_panel
    assert "history is unavailable" in panel.unavailable.text() and "cannot be opened" in panel.unavailable.text()
    assert not panel.export.isEnabled() and "History unavailable" in window.statusBar().currentMessage()
    errors = []
    monkeypatch.setattr(window, "_error", errors.append)
    window.export_history()
    assert errors and "unavailable" in errors[0]
    window.open_path(planted_png[0])
    qtbot.waitUntil(lambda: window.state.record is not None and not window.is_busy, timeout=20000)
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None, timeout=60000)
    opened = []
    monkeypatch.setattr(window, "open_path", lambda path, view=None: opened.append((path, view.slice)))
    window.batch().openRequested.emit(Path("/x/a.dcm"), 2)  # 8: a batch row opens at its frame
    assert opened == [(Path("/x/a.dcm"), 2)]


# 2 and 7: the CSV export
def test_the_csv_export_refuses_the_database_and_its_journal(tmp_path):
    db = tmp_path / "history.sqlite"
    history = _history_with_entry(db, _png(tmp_path / "a.png"))
    os.link(db, tmp_path / "alias.csv")
    before = db.read_bytes()
    for out in (db, tmp_path / "alias.csv", Path(f"{db}-journal"), Path(f"{db}-wal")):
        with pytest.raises(DiagnosticError, match="history database itself"):
            history.export_csv(out)
    assert db.read_bytes() == before and len(history.all()) == 1


def test_history_csv_onto_the_database_is_refused_on_the_command_line(tmp_path, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))
    _history_with_entry(tmp_path / "home" / "history.sqlite", _png(tmp_path / "a.png"))
    assert main(["history", "--csv", str(tmp_path / "home" / "history.sqlite")]) == 2
    assert "history database itself" in json.loads(capsys.readouterr().out)["error"]
    assert len(History().all()) == 1


def test_the_csv_is_utf8_in_an_ascii_locale(tmp_path):
    db = tmp_path / "history.sqlite"
    _history_with_entry(db, _png(tmp_path / "Müller_脑.png"))
    code = f"from core.history import History; History({str(db)!r}).export_csv(__import__('pathlib').Path({str(tmp_path / 'h.csv')!r}))"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Müller_脑.png" in (tmp_path / "h.csv").read_text(encoding="utf-8")


def test_history_path_csv_exports_that_files_entries_only(tmp_path, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))
    history = _history_with_entry(tmp_path / "home" / "history.sqlite", _png(tmp_path / "a.png"))
    other = tmp_path / "b.png"
    Image.fromarray(planted_images(1, seed=9)[0][0]).save(other)
    _history_with_entry(history.db, other)
    assert main(["history", str(other), "--csv", str(tmp_path / "b.csv")]) == 0
    lines = (tmp_path / "b.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "b.png" in lines[1]


# 3: a database that cannot be read
def _malformed(db: Path) -> None:
    """Entries whose data pages (not the first page) are overwritten: 'database disk image is malformed'."""
    History(db)
    con = sqlite3.connect(db)
    results = json.dumps({"results": [{"model": "m", "label": "lesion"}]})
    con.executemany("INSERT INTO analyses (file_sha256, path, analysed_at, frame, modality, models, results) "
                    "VALUES (?,?,?,?,?,?,?)",
                    [(f"{i:064x}", f"/img{i}.png", "2026-01-01T00:00:00", 0, "MR", '{"m": "1"}', results)
                     for i in range(3000)])
    con.commit()
    con.close()
    with open(db, "r+b") as fh:
        fh.seek(db.stat().st_size // 2)
        fh.write(b"\xa5" * 4096 * 4)


def _newer(db: Path) -> None:
    """A database a newer version wrote: schema 4, a column renamed."""
    History(db)
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE analyses RENAME COLUMN models TO model_versions")
    con.execute("PRAGMA user_version = 4")
    con.commit()
    con.close()


@pytest.mark.parametrize("spoil, says", [(_malformed, "malformed"), (_newer, "newer version")])
@pytest.mark.parametrize("argv", [["history"], ["history", "--csv", "OUT"]])
def test_an_unreadable_history_is_an_error_not_a_traceback(tmp_path, monkeypatch, capsys, spoil, says, argv):
    from core.cli import main

    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    spoil(tmp_path / "home" / "history.sqlite")
    out = tmp_path / "h.csv"
    out.write_text("earlier export\n")
    assert main([str(tmp_path / "h.csv") if a == "OUT" else a for a in argv]) == 2
    printed = json.loads(capsys.readouterr().out)
    assert says in printed["error"] and printed["path"]
    assert out.read_text() == "earlier export\n"  # an export that failed leaves the file that was there


# 4: a batch over a history that cannot record
def test_a_batch_stops_recording_after_the_first_failure_and_says_it_once(tmp_path, tiny_models):
    from core.batch.runner import BatchRun
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    class LockedHistory:
        calls = 0

        def add(self, analysis, file_sha256=None):
            LockedHistory.calls += 1
            raise DiagnosticError("the analysis could not be recorded in the history (database is locked)")

    folder = tmp_path / "in"
    folder.mkdir()
    for i, image in enumerate(planted_images(3, seed=4)[0]):
        Image.fromarray(image).save(folder / f"c{i}.png")
    summary = BatchRun(folder, tmp_path / "out", Analyzer(Registry([tiny_models])),
                       model_ids=["tiny-mr-classifier"], history=LockedHistory()).run()
    assert LockedHistory.calls == 1
    assert sum("database is locked" in w for w in summary["run_warnings"]) == 1
    rows = (tmp_path / "out" / "results.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(rows) == 3 and sum("database is locked" in r for r in rows) == 1  # where it failed, not after


# 5, 8 and 9: the batch dialog
@pytest.fixture
def dialog(qtbot, tiny_models):
    from core.inference.analyzer import Analyzer, Engine
    from core.models.registry import Registry
    from gui.batch_dialog import BatchDialog

    dlg = BatchDialog(Engine(Analyzer(Registry([tiny_models]))), ["tiny-us-segmenter"])
    qtbot.addWidget(dlg)
    return dlg


def test_a_batch_row_opens_a_name_that_is_not_utf8_at_its_frame(dialog, tmp_path):
    from core.result_cells import file_key

    image = _png(tmp_path / NOT_UTF8)
    dialog.input_folder, dialog.output_folder = tmp_path, tmp_path / "out"
    dialog._clear_table()
    dialog._add_rows([{"file": file_key(NOT_UTF8), "frame": 4, "model": "m", "label": "yes"}])
    dialog._fill_table(everything=True)
    opened = []
    dialog.openRequested.connect(lambda *args: opened.append(args))
    dialog._open_row(0, 2)
    assert opened[0][0] == image and opened[0][0].is_file()
    assert opened == [(image, 4)] and dialog.table.item(0, 1).text() == "4"  # 8: the frame column


def test_resume_ticks_the_models_of_the_run_it_resumes(dialog, tmp_path, monkeypatch):
    import gui.batch_dialog as batch_dialog

    monkeypatch.setattr(batch_dialog, "run_settings", lambda out: {"model_ids": ["tiny-mr-classifier"]})
    asked = []

    def no_run(*args, **kwargs):
        asked.append(kwargs["model_ids"])
        raise DiagnosticError("not run here")

    monkeypatch.setattr(batch_dialog, "BatchRun", no_run)
    dialog.folder.setText(str(tmp_path))
    dialog.out.setText(str(tmp_path / "out"))
    dialog.start(resume=True)
    ticked = [dialog.models.item(i).data(256) for i in range(dialog.models.count())
              if dialog.models.item(i).checkState() == batch_dialog.Qt.CheckState.Checked]
    assert asked == [["tiny-mr-classifier"]] and ticked == ["tiny-mr-classifier"]


# 6: the History panel
def test_a_history_entry_opens_a_name_that_is_not_utf8(qtbot, tmp_path):
    from gui.history_panel import HistoryPanel

    image = _png(tmp_path / NOT_UTF8)
    entry = _history_with_entry(tmp_path / "history.sqlite", image).all()[0]
    panel = HistoryPanel()
    qtbot.addWidget(panel)
    panel.show_entries([entry])
    asked = []
    panel.openRequested.connect(lambda *args: asked.append(args))
    panel._open(0, 0)
    assert asked == [(str(image), "", 0)]
