"""The local history (core.history): series entries beside image entries, the schema migration of a database an
older version wrote, the CSV export with its ``kind`` column, and the file staying private (0600).

Series analyses are built from verdicts directly (the rule of core.series.analysis, no model runs here); the
command line and the window adding them are tested with the tiny models in test_series_analysis.py and
test_gui_series.py.
"""

from __future__ import annotations

import csv
import sqlite3
import stat
from pathlib import Path

import pytest

from core.history import SCHEMA_VERSION, History
from core.series.analysis import SeriesAnalysis, SliceOutcome, verdict, verdict_text
from core.series.index import Series, SliceRef

# The schema of the first version, as it created history.sqlite (core/history.py before series entries).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS analyses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    analysed_at TEXT NOT NULL,
    frame INTEGER NOT NULL,
    modality TEXT NOT NULL,
    models TEXT NOT NULL,
    results TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS analyses_sha ON analyses(file_sha256);
"""
OLD_RESULTS = ('{"path": "/scans/old.png", "frame": 2, "modality": "MR", "results": [{"model": "brain-mri-tumor-yesno",'
               ' "label": "yes", "probability": 0.9}]}')
OLD_INSERT = ("INSERT INTO analyses (file_sha256, path, analysed_at, frame, modality, models, results) "
              "VALUES (?,?,?,?,?,?,?)")


def _old_database(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.executescript(OLD_SCHEMA)
    con.execute(OLD_INSERT, ("ab" * 32, "/scans/old.png", "2025-01-02T03:04:05", 2, "MR",
                             '{"brain-mri-tumor-yesno": "2.0"}', OLD_RESULTS))
    con.commit()
    con.close()
    path.chmod(0o644)  # as a version before the 0600 rule left it
    return path


def _series_analysis(folder: Path, cancelled: bool = False) -> SeriesAnalysis:
    """Six slices: a classifier calling slices 2-4 abnormal, a segmenter finding a lesion on slices 3-4."""
    series = Series("1.2.3.4|5.6.7", "5.6.7", "dicom", modality="MR", description="AX FLAIR", plane="axial",
                    slices=[SliceRef(folder / f"IM{i}.dcm", instance=i + 1) for i in range(6)], spacing_mm=2.5,
                    spacing_source="positions")
    p_yes = [0.1, 0.8, 0.9, 0.7, 0.2, 0.1]
    yesno = verdict("tiny-mr-yesno", "0.0.1", "classification", ["no", "yes"],
                    [SliceOutcome("yes" if p >= 0.5 else "no", {"no": 1 - p, "yes": p}) for p in p_yes], series)
    areas = [0, 0, 40.0, 60.0, 0, 0]
    seg = verdict("tiny-mr-segmenter", "0.0.1", "segmentation", [],
                  [SliceOutcome("lesion" if a else "no lesion", lesions=int(a > 0), lesion_area_mm2=a) for a in areas],
                  series)
    return SeriesAnalysis(series, [yesno, seg], [], cancelled, 1.0, 6)


def test_a_series_entry_keeps_uid_folder_slices_and_each_verdict(tmp_path):
    history = History(tmp_path / "history.sqlite")
    analysis = _series_analysis(tmp_path / "scans" / "AX FLAIR")
    entry_id = history.add_series(analysis)
    (entry,) = history.all()
    assert entry.id == entry_id and entry.kind == "series" and entry.series_uid == "5.6.7" and entry.slices == 6
    assert entry.path == str(tmp_path / "scans" / "AX FLAIR") and entry.description == "AX FLAIR"
    assert entry.modality == "MR" and entry.frame is None and entry.file_sha256 == ""
    assert entry.models == {"tiny-mr-yesno": "0.0.1", "tiny-mr-segmenter": "0.0.1"}
    yesno, seg = entry.results["results"]
    assert (yesno["label"], yesno["first_slice"], yesno["last_slice"]) == ("yes", 2, 4)
    assert (seg["label"], seg["first_slice"], seg["last_slice"]) == ("lesion", 3, 4)
    assert seg["lesion_volume_ml"] == pytest.approx((40 + 60) * 2.5 / 1000)
    assert yesno["lesion_volume_ml"] is None
    assert entry.labels == "; ".join(verdict_text(v) for v in analysis.results)
    assert "tiny-mr-segmenter: lesion on slices 3-4 of 6, volume 0.25 ml" in entry.labels
    assert entry.analysed_at[:2] == "20" and "T" in entry.analysed_at
    assert [e.id for e in history.for_series("5.6.7")] == [entry_id] and history.for_series("9.9") == []


def test_a_cancelled_series_analysis_is_not_recorded(tmp_path):
    history = History(tmp_path / "history.sqlite")
    assert history.add_series(_series_analysis(tmp_path, cancelled=True)) is None
    assert history.all() == []


def test_an_old_database_opens_keeps_its_entries_and_takes_series(tmp_path):
    db = _old_database(tmp_path / "history.sqlite")
    history = History(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    (old,) = history.all()
    assert (old.kind, old.path, old.frame, old.modality, old.series_uid) == ("image", "/scans/old.png", 2, "MR", None)
    assert old.labels == "brain-mri-tumor-yesno: yes" and old.models == {"brain-mri-tumor-yesno": "2.0"}
    history.add_series(_series_analysis(tmp_path / "scans"))
    History(db)  # opened again (another window, the command line): nothing to migrate twice
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {r[1] for r in con.execute("PRAGMA table_info(analyses)")} >= {"kind", "series_uid", "slices"}
    # the old version's own statements still work on the migrated file
    con.execute(OLD_INSERT, ("cd" * 32, "/scans/new.png", "2025-01-03T00:00:00", 0, "US", "{}", '{"results": []}'))
    con.commit()
    rows = con.execute("SELECT id, file_sha256, path, analysed_at, frame, modality, models, results FROM analyses "
                       "ORDER BY id").fetchall()
    con.close()
    assert len(rows) == 3
    assert [e.kind for e in History(db).all()] == ["image", "series", "image"]
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_csv_export_lists_images_and_series_with_their_kind(tmp_path):
    db = _old_database(tmp_path / "history.sqlite")
    history = History(db)
    analysis = _series_analysis(tmp_path / "scans")
    analysis.series.description = "=HYPERLINK(\"http://x\")"  # a description is not run as a formula
    history.add_series(analysis)
    out = history.export_csv(tmp_path / "history.csv")
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["kind"] for r in rows] == ["series", "image"]
    series, image = rows
    assert (series["series_uid"], series["slices"], series["frame"], series["file_sha256"]) == ("5.6.7", "6", "", "")
    assert series["description"].startswith("'=") and "tiny-mr-yesno: yes" in series["findings"]
    assert "tiny-mr-yesno@0.0.1" in series["models"] and series["path"] == str(tmp_path / "scans")
    assert (image["path"], image["frame"], image["series_uid"], image["findings"]) == \
        ("/scans/old.png", "2", "", "brain-mri-tumor-yesno: yes")


def test_a_new_database_is_private_and_current(tmp_path):
    db = tmp_path / "h" / "history.sqlite"
    History(db).add_series(_series_analysis(tmp_path))
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_the_parts_of_a_split_series_keep_their_own_history(tmp_path):
    """A dual-echo series split in two shares one SeriesInstanceUID: the echo-2 entry reopened echo 1."""
    from dataclasses import replace

    history = History(tmp_path / "history.sqlite")
    whole = _series_analysis(tmp_path / "scans" / "PD T2")
    echo2 = replace(whole, series=replace(whole.series, part="echo 2, TE 80 ms"))
    history.add_series(echo2)
    (entry,) = history.all()
    assert entry.series_uid == "5.6.7|echo 2, TE 80 ms" == echo2.series.history_key
    assert entry.results["series_uid"] == "5.6.7" and entry.results["part"] == "echo 2, TE 80 ms"
    assert history.for_series(whole.series.history_key) == []  # echo 1 (or the whole) is another entry


def test_the_panel_reads_only_the_newest_entries_it_shows(tmp_path):
    history = History(tmp_path / "history.sqlite")
    for k in range(5):
        history.add_series(_series_analysis(tmp_path / f"s{k}"))
    newest = history.recent(3)
    assert [e.path for e in newest] == [e.path for e in history.all()[:3]] and len(newest) == 3
