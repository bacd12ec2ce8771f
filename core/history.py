"""Local history of every analysis (SQLite): what ran on which file content, when, and what it said.

Files are identified by the sha256 of their bytes, so the same image analysed again (even renamed
or moved) is found. The database holds patient file names: it is created readable by its owner only
(0600, in a 0700 folder when the folder is created here).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from core.app_paths import app_home
from core.errors import DiagnosticError
from core.inference.results import Analysis
from core.models.storage import sha256_file


SCHEMA = """
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


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    file_sha256: str
    path: str
    analysed_at: str
    frame: int
    modality: str
    models: dict[str, str]  # model id -> version
    results: dict

    @property
    def labels(self) -> str:
        parts = []
        for r in self.results.get("results", []):
            parts.append(f"{r['model']}: {r['label']}" if r.get("label") else f"{r['model']}: {r.get('lesions', 0)} lesion(s)")
        return "; ".join(parts)


class History:
    def __init__(self, db: Path | str | None = None) -> None:
        self.db = Path(db) if db is not None else app_home() / "history.sqlite"
        try:
            if not self.db.parent.exists():
                self.db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.db, os.O_CREAT | os.O_RDWR, 0o600)  # before SQLite creates it with the umask
            os.close(fd)
            os.chmod(self.db, 0o600)  # also a database an older version left world-readable
            with self._connect() as con:
                con.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise DiagnosticError(f"the history database {self.db} cannot be opened ({exc})") from exc

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db, timeout=10)

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
                (sha, os.fsencode(str(analysis.path)).decode("utf-8", "backslashreplace"), dt.datetime.now().isoformat(timespec="seconds"), analysis.frame, analysis.modality,
                 json.dumps(models), json.dumps(analysis.to_dict())),
            )
            return int(cursor.lastrowid)

    def _entries(self, where: str = "", args: tuple = ()) -> list[HistoryEntry]:
        with self._connect() as con:
            rows = con.execute(f"SELECT id, file_sha256, path, analysed_at, frame, modality, models, results "
                               f"FROM analyses {where} ORDER BY id DESC", args).fetchall()
        return [HistoryEntry(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), json.loads(r[7])) for r in rows]

    def all(self) -> list[HistoryEntry]:
        return self._entries()

    def for_file(self, path: Path | str) -> list[HistoryEntry]:
        """Earlier analyses of the same content, wherever the file lived then."""
        return self._entries("WHERE file_sha256 = ?", (sha256_file(path),))

    def export_csv(self, out: Path) -> Path:
        with open(out, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "analysed_at", "path", "file_sha256", "frame", "modality", "models", "findings"])
            for e in self.all():
                writer.writerow([e.id, e.analysed_at, e.path, e.file_sha256, e.frame, e.modality,
                                 " ".join(f"{k}@{v}" for k, v in e.models.items()), e.labels])
        return out
