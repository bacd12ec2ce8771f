"""Resumable batch analysis of a folder: one CSV row per file per model, flushed file by file.

Crash safety: rows of a file are appended to ``results.csv`` and flushed, then the file is recorded
in ``done.txt``. ``--resume`` keeps only rows of files listed there (a half-written tail from a
killed run is dropped and that file redone), so an interrupted run finishes with the same CSV as an
uninterrupted one. A lock file stops two runs writing one output folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.batch.discover import discover_images
from core.errors import DiagnosticError
from core.imaging import load_image
from core.inference.analyzer import Analyzer, Cancelled
from core.inference.overlays import save_heatmap_png, save_mask_png

BASE_COLUMNS = ["file", "frame", "modality", "modality_source", "model", "model_version", "task", "device", "label",
                "probability"]
TAIL_COLUMNS = ["lesions", "lesion_area_px", "lesion_area_mm2", "mask_file", "heatmap_file", "warnings", "error"]


class OutputLocked(DiagnosticError):
    """Another batch run is writing the same output folder."""


@dataclass
class Progress:
    done: int
    total: int
    path: Path
    elapsed: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def remaining_seconds(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


class _Lock:
    def __init__(self, folder: Path) -> None:
        self.path = folder / ".batch.lock"

    def __enter__(self) -> "_Lock":
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = int(self.path.read_text().strip() or 0) if self.path.exists() else 0
            if pid and _alive(pid):
                raise OutputLocked(f"another batch run (process {pid}) is writing {self.path.parent}") from None
            self.path.unlink(missing_ok=True)  # stale lock from a killed run
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _safe_name(relative: str) -> str:
    return relative.replace(os.sep, "__").replace("/", "__")


class BatchRun:
    """Analyse every image under ``root`` into ``out``; call ``run()`` (on the TensorFlow thread)."""

    def __init__(self, root: Path, out: Path, analyzer: Analyzer | None = None, model_ids: list[str] | None = None,
                 resume: bool = False, all_frames: bool = False, heatmaps: bool = True,
                 cancel: threading.Event | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_rows: Callable[[list[dict]], None] | None = None, history=None) -> None:
        self.root, self.out = Path(root), Path(out)
        self.analyzer = analyzer or Analyzer()
        self.model_ids = model_ids or None
        self.resume, self.all_frames, self.heatmaps = resume, all_frames, heatmaps
        self.cancel = cancel or threading.Event()
        self.on_progress, self.on_rows = on_progress, on_rows
        self.history = history  # core.history.History, or None
        bundles = [self.analyzer.registry.get(m) for m in self.model_ids] if self.model_ids else \
            list(self.analyzer.registry.bundles.values())
        classes = sorted({c for b in bundles if b.task == "classification" for c in b.classes})
        self.columns = BASE_COLUMNS + [f"p_{c}" for c in classes] + TAIL_COLUMNS

    # ----- files
    @property
    def csv_path(self) -> Path:
        return self.out / "results.csv"

    def _prepare_outputs(self) -> set[str]:
        self.out.mkdir(parents=True, exist_ok=True)
        journal = self.out / "done.txt"
        if not self.resume:
            for name in ("results.csv", "results.jsonl", "done.txt", "results.json", "summary.json", "series.csv"):
                (self.out / name).unlink(missing_ok=True)
        done = set(journal.read_text().splitlines()) if journal.exists() else set()
        self._rewrite_kept("results.csv", done, csv_mode=True)
        self._rewrite_kept("results.jsonl", done, csv_mode=False)
        if not self.csv_path.exists():
            with self.csv_path.open("w", newline="") as fh:
                csv.DictWriter(fh, self.columns).writeheader()
        return done

    def _rewrite_kept(self, name: str, done: set[str], csv_mode: bool) -> None:
        """Keep only complete records of finished files (drops a torn tail after a kill)."""
        path = self.out / name
        if not path.exists():
            return
        text = path.read_text()
        if csv_mode:
            rows = list(csv.DictReader(io.StringIO(text)))
            if rows and list(rows[0].keys()) != self.columns:
                raise DiagnosticError(f"{path} was written with other models/columns; use a new output folder")
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, self.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(r for r in rows if r.get("file") in done and None not in r)
            path.write_text(buffer.getvalue())
        else:
            kept = []
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("file") in done:
                    kept.append(line)
            path.write_text("".join(f"{line}\n" for line in kept))

    # ----- run
    def run(self) -> dict:
        with _Lock(self._ensure_out()):
            done = self._prepare_outputs()
            files = discover_images(self.root)
            todo = [p for p in files if self._relative(p) not in done]
            started = time.perf_counter()
            for i, path in enumerate(todo):
                if self.cancel.is_set():
                    break
                try:
                    rows = self._analyse_file(path)
                except Cancelled:
                    break  # this file is not recorded as done: a resumed run analyses it again
                self._append(rows, self._relative(path))
                if self.on_rows:
                    self.on_rows(rows)
                if self.on_progress:
                    self.on_progress(Progress(len(files) - len(todo) + i + 1, len(files), path,
                                              time.perf_counter() - started))
            return self._finish(len(files), time.perf_counter() - started, cancelled=self.cancel.is_set())

    def _ensure_out(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _analyse_file(self, path: Path) -> list[dict]:
        relative = self._relative(path)
        try:
            record = load_image(path)
            frames = range(record.frames) if self.all_frames else [0]
            rows = []
            for frame in frames:
                analysis = self.analyzer.analyze(record, frame=frame, model_ids=self.model_ids, gradcam=self.heatmaps,
                                                 cancel=self.cancel)
                rows.extend(self._rows(relative, record, analysis))
                if self.history is not None and analysis.results:
                    self.history.add(analysis)
            return rows
        except Cancelled:
            raise
        except DiagnosticError as exc:
            return [self._row(relative, error=str(exc))]
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            return [self._row(relative, error=f"unexpected failure: {type(exc).__name__}: {exc}")]

    def _row(self, relative: str, **values) -> dict:
        row = {c: "" for c in self.columns}
        row["file"] = relative
        row.update({k: v for k, v in values.items() if k in row})
        return row

    def _rows(self, relative: str, record, analysis) -> list[dict]:
        base = dict(frame=analysis.frame, modality=analysis.modality, modality_source=analysis.modality_source)
        if not analysis.results:
            return [self._row(relative, warnings=" | ".join(analysis.warnings), **base)]
        display = record.display(analysis.frame)
        rows = []
        for result in analysis.results:
            summary = result.to_dict()
            stem = _safe_name(relative) + (f"__f{analysis.frame}" if record.frames > 1 else "") + f"__{result.model_id}"
            row = self._row(relative, model=result.model_id, model_version=result.version, task=result.task,
                            device=result.device, warnings=" | ".join(analysis.warnings + result.warnings), **base)
            if result.task == "classification":
                row.update(label=result.label, probability=f"{result.confidence:.6f}")
                row.update({f"p_{c}": f"{p:.6f}" for c, p in result.probabilities.items()})
                if result.heatmap is not None:
                    target = self.out / "heatmaps" / f"{stem}.png"
                    save_heatmap_png(display, result.heatmap, target)
                    row["heatmap_file"] = target.relative_to(self.out).as_posix()
            else:
                target = self.out / "masks" / f"{stem}.png"
                save_mask_png(result.mask, target)
                row.update(label="lesion" if result.lesions else "no lesion", lesions=summary["lesions"],
                           lesion_area_px=summary["lesion_area_px"], mask_file=target.relative_to(self.out).as_posix(),
                           lesion_area_mm2="" if summary["lesion_area_mm2"] is None else f"{summary['lesion_area_mm2']:.3f}")
            rows.append(row)
        return rows

    def _append(self, rows: list[dict], relative: str) -> None:
        with self.csv_path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, self.columns, lineterminator="\n")
            writer.writerows(rows)
            fh.flush()
            os.fsync(fh.fileno())
        with (self.out / "results.jsonl").open("a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        with (self.out / "done.txt").open("a") as fh:
            fh.write(relative + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _finish(self, total: int, seconds: float, cancelled: bool) -> dict:
        rows = list(csv.DictReader(self.csv_path.open(newline="")))
        (self.out / "results.json").write_text(json.dumps({"columns": self.columns, "rows": rows}, indent=1))
        per_model: dict[str, dict[str, int]] = {}
        for row in rows:
            if row["model"]:
                counts = per_model.setdefault(row["model"], {})
                counts[row["label"]] = counts.get(row["label"], 0) + 1
        files_done = len({r["file"] for r in rows})
        summary = {
            "folder": str(self.root),
            "files": total,
            "files_done": files_done,
            "errors": sum(1 for r in rows if r["error"]),
            "warnings": sum(1 for r in rows if r["warnings"]),
            "labels_by_model": per_model,
            "seconds_this_run": round(seconds, 2),
            "cancelled": cancelled,
            "complete": files_done == total and not cancelled,
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        if summary["complete"]:  # a cancelled run stops at once; its report comes when it is resumed
            from core.export.report import write_batch_report

            write_batch_report(self.out)
            from core.series.report import write_series_csv  # series.csv beside results.csv when DICOM series are in

            write_series_csv(self.root, self.out)
        return summary
