"""Local history of every analysis (SQLite): what ran on which file content, when, and what it said.

Two kinds of entry share one table (``kind``): ``image``, one per analysed image frame, and ``series``, one
per completed series analysis (``core.series.analysis``): its series UID, description and folder, slice
count, and per model the verdict (``verdict_text``), slice range and lesion volume. A cancelled series
analysis is not recorded (its verdicts cover only some slices); running it again records it.

Files are identified by the sha256 of their bytes, so the same image analysed again (even renamed
or moved) is found; series by their SeriesInstanceUID. The database holds patient file names: it is
created readable by its owner only (0600, in a 0700 folder when the folder is created here).

Schema versions (``PRAGMA user_version``): 0 had image entries only; 2 adds the columns ``kind`` (default
'image'), ``series_uid`` and ``slices`` (nullable). An older database is migrated in place when opened (its
rows become image entries); older versions of the program still open a migrated one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from core.app_paths import app_home
from core.errors import DiagnosticError
from core.export.files import file_key, write_bytes_atomic
from core.inference.results import Analysis
from core.models.storage import sha256_file

if TYPE_CHECKING:
    from core.series.analysis import SeriesAnalysis

SCHEMA_VERSION = 2


SCHEMA = """
CREATE TABLE IF NOT EXISTS analyses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    analysed_at TEXT NOT NULL,
    frame INTEGER NOT NULL,
    modality TEXT NOT NULL,
    models TEXT NOT NULL,
    results TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'image',
    series_uid TEXT,
    slices INTEGER
);
CREATE INDEX IF NOT EXISTS analyses_sha ON analyses(file_sha256);
"""
# Columns added since the first schema, as ALTER TABLE adds them to an older database.
_ADDED_COLUMNS = (("kind", "TEXT NOT NULL DEFAULT 'image'"), ("series_uid", "TEXT"), ("slices", "INTEGER"))
_COLUMNS = "id, file_sha256, path, analysed_at, frame, modality, models, results, kind, series_uid, slices"
CSV_COLUMNS = ["id", "kind", "analysed_at", "path", "file_sha256", "frame", "modality", "models", "findings",
               "series_uid", "description", "slices"]


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    file_sha256: str  # "" for a series entry
    path: str  # the image file; for a series entry the folder of its files
    analysed_at: str
    frame: int | None  # None for a series entry
    modality: str
    models: dict[str, str]  # model id -> version
    results: dict  # Analysis.file_dict(), or for a series entry see History.add_series
    kind: str = "image"  # "image" or "series"
    series_uid: str | None = None
    slices: int | None = None  # series entries: slices in the series

    @property
    def description(self) -> str:
        return self.results.get("description", "") if self.kind == "series" else ""

    @property
    def labels(self) -> str:
        if self.kind == "series":  # the verdict lines as the window shows them
            return "; ".join(r.get("text") or f"{r['model']}: {r.get('label')}" for r in self.results.get("results", []))
        parts = []
        for r in self.results.get("results", []):
            text = f"{r['model']}: {r['label']}" if r.get("label") else f"{r['model']}: {r.get('lesions', 0)} lesion(s)"
            if r.get("findings") is not None:  # a detector's marks; entries written before findings have no key
                text += f", {len(r['findings'])} finding(s)"
            parts.append(text)
        return "; ".join(parts)


class History:
    def __init__(self, db: Path | str | None = None) -> None:
        self.db = Path(db) if db is not None else app_home() / "history.sqlite"
        self.version = 0  # the database's user_version, read when it is opened
        try:
            if not self.db.parent.exists():
                self.db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.db, os.O_CREAT | os.O_RDWR, 0o600)  # before SQLite creates it with the umask
            os.close(fd)
            os.chmod(self.db, 0o600)  # also a database an older version left world-readable
            with self._connect() as con:
                con.executescript(SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise DiagnosticError(f"the history database {self.db} cannot be opened ({exc}){self._newer()}") from exc

    def _newer(self) -> str:
        """Why a database may not read as this version expects: a newer version of the program wrote it."""
        if self.version <= SCHEMA_VERSION:
            return ""
        return (f"; it was written by a newer version of the program (schema {self.version}, this version "
                f"knows {SCHEMA_VERSION})")

    def _read_error(self, exc: Exception) -> DiagnosticError:
        """A database that cannot be read (malformed, locked, a newer schema) as an error the reader can act on."""
        return DiagnosticError(f"the history database {self.db} cannot be read ({exc}){self._newer()}")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db, timeout=10)

    def _migrate(self) -> None:
        """Bring a database written by an older version to SCHEMA_VERSION (one writer at a time)."""
        con = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        try:
            self.version = con.execute("PRAGMA user_version").fetchone()[0]
            if self.version >= SCHEMA_VERSION:
                return
            con.execute("BEGIN IMMEDIATE")  # another process opening the same old file waits, then sees it done
            try:
                have = {row[1] for row in con.execute("PRAGMA table_info(analyses)")}
                for name, decl in _ADDED_COLUMNS:
                    if name not in have:
                        con.execute(f"ALTER TABLE analyses ADD COLUMN {name} {decl}")
                con.execute("CREATE INDEX IF NOT EXISTS analyses_series ON analyses(series_uid)")
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()

    def add(self, analysis: Analysis, file_sha256: str | None = None) -> int:
        try:
            return self._add(analysis, file_sha256)
        except (OSError, sqlite3.Error) as exc:
            raise DiagnosticError(f"the analysis could not be recorded in the history {self.db} ({exc})") from exc

    def _add(self, analysis: Analysis, file_sha256: str | None) -> int:
        sha = file_sha256 or sha256_file(analysis.path)
        models = {r.model_id: r.version for r in analysis.results}
        with self._connect() as con:
            cursor = con.execute(
                "INSERT INTO analyses (file_sha256, path, analysed_at, frame, modality, models, results) VALUES (?,?,?,?,?,?,?)",
                (sha, os.fsencode(os.path.abspath(analysis.path)).decode("utf-8", "backslashreplace"), dt.datetime.now().isoformat(timespec="seconds"), analysis.frame, analysis.modality,
                 json.dumps(models), json.dumps(analysis.file_dict())),
            )
            return int(cursor.lastrowid)

    def add_series(self, analysis: SeriesAnalysis) -> int | None:
        """One entry for a completed series analysis; a cancelled one is not recorded (None)."""
        if analysis.cancelled:
            return None
        try:
            return self._add_series(analysis)
        except (OSError, sqlite3.Error) as exc:
            raise DiagnosticError(f"the series analysis could not be recorded in the history {self.db} ({exc})") from exc

    def _add_series(self, analysis: SeriesAnalysis) -> int:
        from core.series.analysis import verdict_text

        series = analysis.series
        files = [os.path.abspath(p.parent) for p in series.files]  # a path that names the folder from anywhere
        folder = os.path.commonpath(files) if files else ""
        verdicts = [v.to_dict() | {"text": verdict_text(v)} for v in analysis.results]
        record = {"kind": "series", "series_uid": series.uid or None, "part": series.part or None,
                  "description": series.description,
                  "folder": _text(folder), "series_kind": series.kind, "modality": series.modality,
                  "plane": series.plane, "slices": len(series.slices),
                  "spacing_mm": None if series.spacing_mm is None else round(series.spacing_mm, 4),
                  "results": verdicts, "warnings": list(series.warnings) + list(analysis.warnings)}
        models = {v.model: v.version for v in analysis.results}
        with self._connect() as con:
            cursor = con.execute(
                "INSERT INTO analyses (file_sha256, path, analysed_at, frame, modality, models, results, kind, "
                "series_uid, slices) VALUES (?,?,?,?,?,?,?,?,?,?)",
                ("", _text(folder), dt.datetime.now().isoformat(timespec="seconds"), 0, series.modality or "",
                 json.dumps(models), json.dumps(record), "series", series.history_key or None, len(series.slices)),
            )
            return int(cursor.lastrowid)

    def _entries(self, where: str = "", args: tuple = (), limit: int | None = None) -> list[HistoryEntry]:
        return list(self.iter_entries(where, args, limit))

    def iter_entries(self, where: str = "", args: tuple = (), limit: int | None = None,
                     page: int = 500) -> Iterator[HistoryEntry]:
        """The entries (``where``: an SQL condition on the columns, with ``args``), newest first, read ``page`` at a
        time: an export of twenty thousand entries (some 14 kB each once read) holds a page in memory, not all of
        them. Each page is its own short read (keyed by id), so the program adding an analysis meanwhile is not
        kept waiting by a slow reader of the pages; what it adds, being newer, is not among them."""
        below: int | None = None
        left = None if not limit else int(limit)
        while left is None or left > 0:
            size = page if left is None else min(page, left)
            conditions = [f"({where})"] if where else []
            if below is not None:
                conditions.append("id < ?")
            query = (f"SELECT {_COLUMNS} FROM analyses" + (" WHERE " + " AND ".join(conditions) if conditions else "")
                     + " ORDER BY id DESC LIMIT ?")
            rows, entries = self._page(query, args + ((below,) if below is not None else ()) + (size,))
            yield from entries
            if len(rows) < size:
                return
            below = rows[-1][0]
            if left is not None:
                left -= len(rows)

    def _page(self, query: str, args: tuple) -> tuple[list[tuple], list[HistoryEntry]]:
        """One page of rows and their entries; a database that cannot be read raises a DiagnosticError, not
        sqlite3's own error, so that every reader reports it as it reports any other."""
        try:
            con = self._connect()
            try:
                rows = con.execute(query, args).fetchall()
            finally:
                con.close()
            return rows, [HistoryEntry(r[0], r[1], r[2], r[3], None if r[8] == "series" else r[4], r[5],
                                       json.loads(r[6]), json.loads(r[7]), r[8], r[9], r[10]) for r in rows]
        except (sqlite3.Error, ValueError, TypeError) as exc:  # ValueError: a results cell that is not JSON
            raise self._read_error(exc) from exc

    def all(self) -> list[HistoryEntry]:
        """Every entry, images and series, newest first."""
        return self._entries()

    def iter_all(self) -> Iterator[HistoryEntry]:
        """``all``, one entry at a time (``iter_entries``)."""
        return self.iter_entries()

    def recent(self, limit: int) -> list[HistoryEntry]:
        """The ``limit`` newest entries: a panel that shows a few hundred rows need not read twenty thousand."""
        return self._entries(limit=limit)

    def for_series(self, series_uid: str) -> list[HistoryEntry]:
        """Earlier analyses of the series with this SeriesInstanceUID (``Series.history_key``: with its part where
        the series was split), wherever its files lived then."""
        return self._entries("kind = 'series' AND series_uid = ?", (series_uid,)) if series_uid else []

    def for_file(self, path: Path | str) -> list[HistoryEntry]:
        """Earlier analyses of the same content, wherever the file lived then."""
        return list(self.iter_for_file(path))

    def iter_for_file(self, path: Path | str) -> Iterator[HistoryEntry]:
        """``for_file``, one entry at a time; the file is read (and a missing one raises) here, not at the first."""
        return self.iter_entries("kind = 'image' AND file_sha256 = ?", (sha256_file(path),))

    def export_csv(self, out: Path, of_file: Path | None = None) -> Path:
        """Every entry (``of_file``: those of that file's content), newest first; ``kind`` says image or series
        (CSV_COLUMNS). UTF-8 whatever the locale, and written whole or not at all: the file that was there stays
        if the history cannot be read. The database itself (or its journal) is refused: it would be lost."""
        self._refuse_own_files(Path(out))
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(CSV_COLUMNS)
        for e in self.iter_for_file(of_file) if of_file is not None else self.iter_all():
            writer.writerow([e.id, e.kind, e.analysed_at, e.path, e.file_sha256, "" if e.frame is None else e.frame,
                             e.modality, " ".join(f"{k}@{v}" for k, v in e.models.items()), e.labels,
                             e.series_uid or "", _cell(e.description), "" if e.slices is None else e.slices])
        return write_bytes_atomic(Path(out), text.getvalue().encode("utf-8"))

    def _refuse_own_files(self, out: Path) -> None:
        """An output that is the database or its journal under any name (hard links included) is refused."""
        own = {file_key(f"{self.db}{suffix}") for suffix in ("", "-journal", "-wal", "-shm")}
        if file_key(out) in own:
            raise DiagnosticError(f"cannot write {os.fsdecode(out)}: it is the history database itself")


def _text(path: str) -> str:
    """A path as stored: bytes that are not UTF-8 as \\xNN escapes (as ``add`` stores image paths)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _cell(text: str) -> str:
    """A free-text cell (a DICOM description) that a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
