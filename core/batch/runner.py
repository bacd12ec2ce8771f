"""Resumable batch analysis of a folder: one CSV row per file per model, flushed file by file.

Crash safety: rows of a file are appended to ``results.csv`` and flushed, then the file is recorded
in the journal ``done.jsonl`` (one JSON string per line, so any file name survives, newlines and
non-UTF-8 bytes included; ``done.txt`` is a readable copy). ``--resume`` keeps only rows of files
in the journal (a half-written tail from a killed run is dropped and that file redone), so an
interrupted run finishes with the same CSV as an uninterrupted one.

A file that kills the program (a decoder's abort, the memory killer) must not make a run unfinishable: the
journal also records, as ``{"started": name}``, each file before its analysis begins (``{"stopped": name}`` where
a cancel or Ctrl+C ends it in order). A file started ``STARTS_BEFORE_GIVING_UP`` times in earlier runs and never
finished is not analysed again: its row is an error that says so. Once is not enough: a run killed by hand stops
in some file, which its resume redoes. Older versions read these lines as no file (they keep only JSON strings).

A lock file stops two runs writing one output folder; a folder holding earlier results is refused unless
resumed or overwritten, and so is an output folder inside the input folder.

A detector's findings (CAD marks) go to ``results.jsonl`` as a list of circles, ``{"x", "y", "r", "score",
"kind"}`` in the file's own pixels of the analysed frame, origin top-left (a file read smaller to fit in memory
included: its lesion pixel counts and marks are given on the file's grid, its mask and heatmap PNGs at the size
analysed, said in the row's warnings); ``results.csv`` holds their count (empty for bundles that mark none). A
segmenter's row in ``results.jsonl`` also lists every lesion (``lesion_details``: area, box, longest diameter, width,
depth, their ratio and a reader's line), where ``results.csv`` gives the largest one's sizes. ``results.jsonl`` types
its cells: numbers (probabilities, ``p_*``, novelty, sizes) are JSON numbers at the digits ``results.csv`` gives, counts
and frames integers, an empty cell null.

Heatmap and mask names are an ASCII rendering of the file's path plus a hash of its exact bytes,
so no two files share an output and any name can be written; the row keeps the original name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.batch.discover import discover_images, mask_glob
from core.errors import DiagnosticError, ModelError, described
from core.export.files import WriteError, os_reason, write_heatmap_png, write_mask_png
from core.imaging import load_image
from core.inference.analyzer import Analyzer, Cancelled, FrameUnreadable, analyse_frames
from core.models.novelty import NoveltySpec, beyond_chance, flagged_in
from core.models.storage import sha256_file
from core.result_cells import CSV_LINE_END, file_key, file_relative, join_warnings, split_warnings
from core.series.contralateral import other_breast

BASE_COLUMNS = ["file", "frame", "modality", "modality_source", "model", "model_version", "task", "device", "label",
                "probability", "scale", "novelty"]
TAIL_COLUMNS = ["lesions", "lesion_area_px", "lesion_area_mm2", "lesion_max_diameter_mm", "lesion_width_mm", "lesion_depth_mm",
                "lesion_depth_to_width", "findings", "mask_file", "heatmap_file", "warnings", "error"]
# Columns later versions added: a results.csv written before one of them was added is resumed with the column
# empty in its earlier rows (what those rows were not analysed for), every other column as it was.
ADDED_COLUMNS = frozenset({"scale", "novelty", "lesion_max_diameter_mm", "lesion_width_mm", "lesion_depth_mm",
                           "lesion_depth_to_width", "findings"})
# Numeric cells, typed in results.jsonl (results.csv holds them as text); the p_<class> columns are numbers too.
INTEGER_COLUMNS = frozenset({"frame", "lesions", "lesion_area_px"})
NUMBER_COLUMNS = frozenset({"probability", "novelty", "lesion_area_mm2", "lesion_max_diameter_mm", "lesion_width_mm",
                            "lesion_depth_mm", "lesion_depth_to_width"})


class OutputLocked(DiagnosticError):
    """Another batch run is writing the same output folder."""


@dataclass
class Progress:
    done: int
    total: int
    path: Path
    elapsed: float
    stage: str = ""  # after the last file: what the run is still writing (a long run's report takes minutes)

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
            try:
                pid = int(self.path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0  # unreadable or garbage: not a live run's lock
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


STARTS_BEFORE_GIVING_UP = 2  # a file started this many times in earlier runs and never finished: not analysed again
RESULT_FILES = ("results.csv", "results.jsonl", "done.jsonl", "done.txt", "results.json", "summary.json", "report.pdf",
                "series.csv", "input.json")


def source_path(root: Path, file: str) -> Path:
    """The input file of a row: ``root`` joined with the path its ``file`` cell names (``file_key`` reversed),
    for opening it (a name with bytes that are not UTF-8 or backslashes included)."""
    return Path(root) / file_relative(file)


def _add_warning(rows: list[dict], warning: str) -> None:
    """``warning`` appended to each row's warnings cell."""
    for row in rows:
        row["warnings"] = join_warnings(split_warnings(row["warnings"]) + [warning])


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once: a kill or a full disk while writing leaves the old file whole."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def output_stem(relative: str) -> str:
    """A file-system-safe, collision-free stem for one input file's heatmaps and masks.

    ``coll__a.jpg`` and ``coll/a.jpg`` read alike once slashes are replaced; the hash of the exact path
    bytes keeps them apart, and the ASCII-only readable part can be written by any library.
    """
    raw = os.fsencode(relative)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", raw.decode("ascii", "replace").replace("/", "__")).strip("._")[:80]
    return f"{readable or 'file'}-{hashlib.sha256(raw).hexdigest()[:12]}"


def _mm(value: float | None) -> str:
    """A length for results.csv: two decimals, empty where the file states no pixel spacing."""
    return "" if value is None else f"{value:.2f}"


def _csv_row(row: dict) -> dict:
    """A row as results.csv holds it: the count of its findings where results.jsonl has the marks, and no lesion
    details (results.jsonl's list of every lesion; the CSV's columns give the largest)."""
    row = {k: v for k, v in row.items() if k != "lesion_details"}
    return {**row, "findings": len(row["findings"])} if isinstance(row["findings"], list) else row


def _json_cell(column: str, value):
    """A cell as results.jsonl holds it: a number as a JSON number (at the digits results.csv gives, so the two
    files agree), an empty cell as null, the rest as it is."""
    if value == "":
        return None
    if column in INTEGER_COLUMNS:
        return int(value)
    if column in NUMBER_COLUMNS or column.startswith("p_"):
        return float(value)
    return value


def _json_row(row: dict) -> dict:
    """A row as results.jsonl holds it: typed cells (``_json_cell``), where results.csv has text."""
    return {column: _json_cell(column, value) for column, value in row.items()}


def _mask_hint(found: list[str]) -> list[str]:
    """A run warning where files (``file`` keys) are named as data sets name lesion masks: analysed as images, they
    skew the run's counts. ``--exclude`` leaves them out; never done unasked (an image may have 'mask' in its name)."""
    globs = {key: mask_glob(file_relative(key).rsplit("/", 1)[-1]) for key in found}
    masks = [key for key, glob in globs.items() if glob]
    if not masks:
        return []
    suggested = " and ".join(f"--exclude '{glob}'" for glob in dict.fromkeys(filter(None, globs.values())))
    return [f"{len(masks)} file(s) are named like lesion masks (first: {_readable_line(masks[0])}) and were analysed "
            f"as images: if they are masks, leave them out with {suggested}"]


def _patterns(value) -> list[str]:
    """The ``--exclude`` patterns input.json recorded (none where it holds something else)."""
    return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []


def _excluding(patterns: list[str]) -> str:
    return "--exclude " + " ".join(f"'{p}'" for p in patterns) if patterns else "no --exclude"


def _readable_line(name: str) -> str:
    return name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


OUTPUT_FILES = (("heatmaps", "*.png"), ("masks", "*.png"), ("sr", "*.dcm"))  # (subfolder, pattern) a run writes


def run_settings(out: Path) -> dict:
    """What the run whose results ``out`` holds was started with (``input.json``: its folder, ``all_frames``,
    ``dicom_sr``, ``heatmaps``, ``microns_per_pixel``, ``models`` (id: version), ``model_ids`` (the models asked
    for; null: each file's modality's) and ``exclude`` (the patterns left out); runs before these were recorded:
    the keys they recorded, ``dicom_sr`` from results.csv's columns)."""
    try:
        settings = json.loads((Path(out) / "input.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, not JSON, not UTF-8
        settings = {}
    settings = settings if isinstance(settings, dict) else {}
    if "dicom_sr" not in settings:
        try:
            with (Path(out) / "results.csv").open(newline="", encoding="utf-8") as fh:
                settings["dicom_sr"] = "sr_file" in next(csv.reader(fh), [])
        except (OSError, ValueError, StopIteration, csv.Error):
            pass
    return settings


def earlier_results(out: Path) -> list[str]:
    """The result files of an earlier batch run in ``out``: a new run must resume or replace them, never mix."""
    return [name for name in RESULT_FILES if (Path(out) / name).exists()]


class BatchRun:
    """Analyse every image under ``root`` into ``out``; call ``run()`` (on the TensorFlow thread)."""

    def __init__(self, root: Path, out: Path, analyzer: Analyzer | None = None, model_ids: list[str] | None = None,
                 resume: bool = False, all_frames: bool = False, heatmaps: bool = True,
                 cancel: threading.Event | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_rows: Callable[[list[dict]], None] | None = None, history=None, overwrite: bool = False,
                 microns_per_pixel: float | None = None, dicom_sr: bool = False,
                 exclude: list[str] | None = None) -> None:
        self.root, self.out = Path(root), Path(out)
        # file name / relative path patterns left out (discover_images); None: a resumed run's own, else none
        self.exclude, self._exclude_given = list(exclude or []), exclude is not None
        self._excluded: list[Path] = []
        self.microns_per_pixel = microns_per_pixel  # the user's scale of every image (microscopy), else the file's
        self.analyzer = analyzer or Analyzer()
        self.model_ids = model_ids or None
        self.resume, self.all_frames, self.heatmaps, self.overwrite = resume, all_frames, heatmaps, overwrite
        self._files: list[Path] = []
        self._unfinished: dict[str, int] = {}  # files earlier runs started and never finished: how many times
        self.cancel = cancel or threading.Event()
        self.on_progress, self.on_rows = on_progress, on_rows
        self.history = history  # core.history.History, or None
        # why the history stopped recording: after one failure (a locked database waits seconds per try) the rest
        # of the run is not recorded, and the summary says so once
        self.history_error: str | None = None
        bundles = [self.analyzer.registry.get(m) for m in self.model_ids] if self.model_ids else \
            list(self.analyzer.registry.bundles.values())
        self.models = {b.id: b.version for b in bundles}  # recorded in input.json: a resume must use the same
        classes = sorted({c for b in bundles if b.task == "classification" for c in b.classes})
        self.columns = BASE_COLUMNS + [f"p_{c}" for c in classes] + TAIL_COLUMNS
        self.dicom_sr = dicom_sr  # each analysis also as a de-identified DICOM SR in sr/, named in the rows' sr_file
        if dicom_sr:
            self.columns.insert(self.columns.index("warnings"), "sr_file")

    # ----- files
    @property
    def csv_path(self) -> Path:
        return self.out / "results.csv"

    def _prepare_outputs(self) -> tuple[set[str], list[dict]]:
        """The names of the files done by the run resumed and their results.csv rows (none for a new run)."""
        if not self.resume:
            earlier = earlier_results(self.out)
            if earlier and not self.overwrite:
                raise DiagnosticError(
                    f"{os.fsdecode(self.out)} already holds the results of a batch run ({', '.join(earlier)}): "
                    "use --resume to continue it, --overwrite to replace it, or another output folder")
            if earlier:  # --overwrite of an earlier run: its outputs go; nothing else in a folder is touched
                for name in RESULT_FILES:
                    (self.out / name).unlink(missing_ok=True)
                for sub, pattern in OUTPUT_FILES:
                    for old in (self.out / sub).glob(pattern) if (self.out / sub).is_dir() else ():
                        old.unlink(missing_ok=True)
        self._check_same_input()
        done = self._journal()
        kept = self._rewrite_kept("results.csv", done, csv_mode=True)
        self._rewrite_kept("results.jsonl", done, csv_mode=False)
        if not self.csv_path.exists():
            with self.csv_path.open("w", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, self.columns, lineterminator=CSV_LINE_END).writeheader()
        if not (self.out / "done.jsonl").exists() and done:  # a run written before the JSON journal: carried over
            _write_atomically(self.out / "done.jsonl", "".join(json.dumps(name) + "\n" for name in sorted(done)))
        for name in ("results.jsonl", "done.jsonl", "done.txt"):  # one set of files, whatever the folder holds
            (self.out / name).touch()
        return done, kept

    def _check_same_input(self) -> None:
        """The results folder records the input folder it holds results of (``input.json``): a resumed run over
        another folder would take that folder's files for done by name and report their results as this one's."""
        record = self.out / "input.json"
        here = os.fsdecode(Path(self.root).resolve())
        if record.exists():
            settings = run_settings(self.out)
            earlier = settings.get("folder")
            if earlier is not None and earlier != here:
                raise DiagnosticError(
                    f"{os.fsdecode(self.out)} holds the results of a run over {file_key(earlier)}, not "
                    f"{file_key(here)}: resume it over that folder, or choose another output folder")
            if not self._exclude_given:  # resumed without --exclude (or from the dialog): the run's own exclusions
                self.exclude = _patterns(settings.get("exclude"))
            differences = self._other_options(settings)
            if differences:
                raise DiagnosticError(f"{os.fsdecode(self.out)} was {'; and '.join(differences)}: "
                                      "resume it the same way")
        else:
            record.write_text(json.dumps({"folder": here, "all_frames": self.all_frames, "dicom_sr": self.dicom_sr,
                                          "heatmaps": self.heatmaps, "microns_per_pixel": self.microns_per_pixel,
                                          "models": self.models, "model_ids": self.model_ids,
                                          "exclude": self.exclude}), encoding="utf-8")

    def _other_options(self, settings: dict) -> list[str]:
        """How the run recorded in ``settings`` (input.json) was started otherwise than this one: one results.csv
        holds one run's rows, frames, reports, heatmaps, scale, models and exclusions as that run made them. A key
        missing (input.json of an earlier version) is not compared."""
        differences = []
        for key, option, now in (("all_frames", "--all-frames", self.all_frames),
                                 ("dicom_sr", "--dicom-sr (the dialog's DICOM SR tick)", self.dicom_sr),
                                 ("heatmaps", "heatmaps (without --no-heatmaps)", self.heatmaps)):
            if key in settings and bool(settings[key]) != now:
                differences.append(f"started {'with' if settings[key] else 'without'} {option}")
        scale = "--microns-per-pixel / --magnification"
        if "microns_per_pixel" in settings:
            earlier, now = settings["microns_per_pixel"], self.microns_per_pixel
            if not isinstance(earlier, (int, float)) or isinstance(earlier, bool):
                earlier = None
            if (earlier is None) != (now is None) or (earlier is not None and not math.isclose(earlier, now)):
                def said(um):
                    return f"{scale} {um:g} um per pixel" if um is not None else f"no {scale} (each file's own scale)"

                differences.append(f"started with {said(earlier)}, not {said(now)}")
        if "exclude" in settings:
            earlier_globs = _patterns(settings["exclude"])
            if {p.lower() for p in earlier_globs} != {p.lower() for p in self.exclude}:  # matched ignoring case
                differences.append(f"started with {_excluding(earlier_globs)}, not {_excluding(self.exclude)}")
        earlier_models = settings.get("models")
        if isinstance(earlier_models, dict) and earlier_models != self.models:
            def listed(models: dict) -> str:
                return ", ".join(f"{m} {v}" for m, v in sorted(models.items())) or "none"

            differences.append(f"started with the models {listed(earlier_models)}, not {listed(self.models)} "
                               "(--model, and the versions installed)")
        return differences

    def _journal(self) -> set[str]:
        """Names of finished files: JSON strings one a line (a torn last line is ignored). ``self._unfinished``: how
        many times each file not finished was started (``{"started": name}`` less ``{"stopped": name}`` lines)."""
        journal = self.out / "done.jsonl"
        self._unfinished = {}
        if journal.exists():
            done = set()
            starts: dict[str, int] = {}
            for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    name = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(name, str):
                    done.add(name)
                elif isinstance(name, dict) and len(name) == 1:
                    (mark, named), = name.items()
                    if mark in ("started", "stopped") and isinstance(named, str):
                        starts[named] = starts.get(named, 0) + (1 if mark == "started" else -1)
            self._unfinished = {name: n for name, n in starts.items() if name not in done and n > 0}
            return done
        legacy = self.out / "done.txt"  # runs written before the JSON journal
        return set(legacy.read_text(encoding="utf-8").splitlines()) if legacy.exists() else set()

    def _rewrite_kept(self, name: str, done: set[str], csv_mode: bool) -> list[dict]:
        """Keep only complete records of finished files (drops a torn tail after a kill); the CSV rows kept."""
        path = self.out / name
        if not path.exists():
            return []
        with path.open(newline="", encoding="utf-8") as fh:  # as written: a \r inside a quoted cell stays one
            text = fh.read()
        if csv_mode:
            reader = csv.DictReader(io.StringIO(text))
            rows = list(reader)
            if rows and not self._resumable_header(list(reader.fieldnames or [])):
                raise DiagnosticError(f"{path} was written with other models/columns; use a new output folder")
            for row in rows:  # columns added since (ADDED_COLUMNS): empty in rows written before them
                for column in self.columns:
                    row.setdefault(column, "")
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, self.columns, lineterminator=CSV_LINE_END)
            writer.writeheader()
            kept_rows = [r for r in rows if r.get("file") in done and None not in r]
            writer.writerows(kept_rows)
            _write_atomically(path, buffer.getvalue())
            return kept_rows
        else:
            kept = []
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("file") in done:
                    kept.append(line)
            _write_atomically(path, "".join(f"{line}\n" for line in kept))
            return []

    def _resumable_header(self, header: list[str]) -> bool:
        """Whether an earlier results.csv's ``header`` is this run's columns, less some that later versions added."""
        missing = set(self.columns) - set(header)
        return missing <= ADDED_COLUMNS and header == [c for c in self.columns if c not in missing]

    # ----- run
    def run(self) -> dict:
        try:
            return self._run()
        except OSError as exc:  # the output folder turned read-only, full disk, ...
            raise DiagnosticError(f"batch output in {os.fsdecode(self.out)} failed: {os_reason(exc)}") from exc

    def _run(self) -> dict:
        self._check_folders()
        with _Lock(self._ensure_out()):
            done, kept = self._prepare_outputs()
            if kept and self.on_rows:  # a resumed run's earlier results, listed before the new ones
                self.on_rows(kept)
            problems: dict[Path, str] = {}
            self._excluded = []
            files = discover_images(self.root, problems, self.exclude, self._excluded)
            self._files = [p for p in files if p not in problems]
            if self.root in problems or Path(self.root) in problems:
                raise DiagnosticError(f"the folder {file_key(str(self.root))} cannot be read: "
                                      f"{problems.get(self.root, problems.get(Path(self.root)))}")
            todo = [p for p in files if self._relative(p) not in done]
            started = time.perf_counter()
            for i, path in enumerate(todo):
                if self.cancel.is_set():
                    break
                try:
                    rows = self._file_rows(path, problems)
                except Cancelled:
                    break  # this file is not recorded as done: a resumed run analyses it again
                self._append(rows, self._relative(path))
                if self.on_rows:
                    self.on_rows(rows)
                if self.on_progress:
                    self.on_progress(Progress(len(files) - len(todo) + i + 1, len(files), path,
                                              time.perf_counter() - started))
            return self._finish([self._relative(p) for p in files], time.perf_counter() - started,
                                cancelled=self.cancel.is_set())

    def _file_rows(self, path: Path, problems: dict[Path, str]) -> list[dict]:
        """The rows of one file: its problem, the error of a file earlier runs died in, or its analysis, journalled
        as started before it begins (``{"started": name}``) and as stopped where a cancel or Ctrl+C ends it."""
        relative = self._relative(path)
        if path in problems:
            return [self._row(relative, error=problems[path])]
        if self._unfinished.get(relative, 0) >= STARTS_BEFORE_GIVING_UP:
            return [self._row(relative, error=f"the program stopped while analysing this file in "
                                              f"{self._unfinished[relative]} earlier runs (a crash?); it was not "
                                              "analysed again")]
        self._mark("started", relative)
        try:
            return self._analyse_file(path)
        except BaseException:  # Cancel, Ctrl+C: an orderly stop, not a crash; a resumed run analyses the file again
            try:
                self._mark("stopped", relative)
            except OSError:
                pass
            raise

    def _mark(self, mark: str, relative: str) -> None:
        """A ``{mark: name}`` line in the journal, written through to the system before anything else happens (an
        abort that follows does not lose it)."""
        with (self.out / "done.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({mark: relative}) + "\n")

    def _check_folders(self) -> None:
        try:
            root, out = self.root.resolve(), self.out.resolve()
        except (OSError, RuntimeError) as exc:
            raise DiagnosticError(f"cannot resolve the input or output folder ({exc})") from exc
        if out == root or root in out.parents:
            raise DiagnosticError(f"the output folder {os.fsdecode(self.out)} is inside the input folder "
                                  f"{os.fsdecode(self.root)}: its heatmaps would be analysed as images; choose another")
        for sub, _ in OUTPUT_FILES:  # masks written among the images analysed, over their names
            if root == out / sub or (out / sub) in root.parents:
                raise DiagnosticError(f"the input folder {os.fsdecode(self.root)} is the output folder's '{sub}' "
                                      f"folder, where the results are written: choose another output folder")

    def _ensure_out(self) -> Path:
        if self.out.exists() and not self.out.is_dir():
            raise DiagnosticError(f"the output {os.fsdecode(self.out)} is a file, not a folder")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DiagnosticError(f"cannot create the output folder {os.fsdecode(self.out)}: {os_reason(exc)}") from exc
        if not os.access(self.out, os.W_OK | os.X_OK):
            raise DiagnosticError(f"the output folder {os.fsdecode(self.out)} is not writable")
        return self.out

    def _relative(self, path: Path) -> str:
        return file_key(path.relative_to(self.root).as_posix())

    def _analyse_file(self, path: Path) -> list[dict]:
        relative = self._relative(path)
        stem = output_stem(path.relative_to(self.root).as_posix())
        try:
            record = load_image(path)
            frames = range(record.frames) if self.all_frames else [0]
            rows = []
            digest = ""  # the file's sha256 for the history, hashed once for all its frames

            def analyse(frame: int):
                return self.analyzer.analyze(record, frame=frame, model_ids=self.model_ids, gradcam=self.heatmaps,
                                             cancel=self.cancel, microns_per_pixel=self.microns_per_pixel,
                                             find_other_breast=other_breast)

            try:
                for analysis in analyse_frames(frames, record.frames, analyse):
                    rows.extend(self._rows(relative, stem, record, analysis))
                    if self.history is not None and self.history_error is None and analysis.results:
                        try:
                            digest = digest or sha256_file(path)  # a 150-frame file was hashed 150 times
                            self.history.add(analysis, digest)
                        except (OSError, DiagnosticError) as exc:  # the result stands; its history record is missing
                            self.history_error = str(exc) if isinstance(exc, DiagnosticError) else \
                                f"the analysis could not be recorded in the history ({os_reason(exc)})"
                            _add_warning(rows, self.history_error)
            except FrameUnreadable as exc:  # the frames analysed keep their rows; this one is the error row
                rows.append(self._row(relative, frame=exc.frame, error=str(exc)))
            if record.frames > 1 and not self.all_frames:  # a volume's first slice is no verdict on the volume
                _add_warning(rows, f"only frame 1 of {record.frames} was analysed (the command's --all-frames "
                                   "analyses each)")
            return rows
        except Cancelled:
            raise
        except DiagnosticError as exc:
            return [self._row(relative, error=str(exc))]
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            return [self._row(relative, error=f"unexpected failure: {type(exc).__name__}: {exc}")]

    def _flag_rate(self, model_id: str) -> float:
        """The share of ordinary pictures a model's input check flags: 1 - its flag_above (the default's where the
        model is no longer installed, as on a resume after it was removed)."""
        try:
            spec = self.analyzer.registry.get(model_id).info.novelty
        except ModelError:
            spec = None
        return 1 - (spec or NoveltySpec("", "")).flag_above

    def _row(self, relative: str, **values) -> dict:
        row = {c: "" for c in self.columns}
        row["file"] = relative
        row.update({k: v for k, v in values.items() if k in row})
        return row

    def _rows(self, relative: str, file_stem: str, record, analysis) -> list[dict]:
        base = dict(frame=analysis.frame, modality=analysis.modality, modality_source=analysis.modality_source)
        if not analysis.results:
            return [self._row(relative, warnings=join_warnings(record.warnings + analysis.warnings), **base)]
        display = record.display(analysis.frame)
        rows = []
        for result in analysis.results:
            summary = result.to_dict(record.downsample)  # positions in the file's own pixels
            stem = file_stem + (f"__f{analysis.frame}" if record.frames > 1 else "") + f"__{result.model_id}"
            row = self._row(relative, model=result.model_id, model_version=result.version, task=result.task,
                            device=result.device, novelty="" if result.novelty is None else f"{result.novelty:.4f}",
                            warnings=join_warnings(record.warnings + analysis.warnings + result.warnings), **base)
            if result.task == "classification":
                row.update(label=result.label, probability=f"{result.confidence:.6f}",
                           scale="" if result.scale is None else result.scale["text"])
                row.update({f"p_{c}": f"{p:.6f}" for c, p in result.probabilities.items()})
                if result.heatmap is not None and self.heatmaps:  # a tiled model's tile map too: --no-heatmaps
                    row["heatmap_file"] = self._write(row, "heatmaps", stem, write_heatmap_png, display, result.heatmap)
            else:
                row.update(label="lesion" if result.lesions else "no lesion", lesions=summary["lesions"],
                           lesion_area_px=summary["lesion_area_px"],
                           mask_file=self._write(row, "masks", stem, write_mask_png, result.mask),
                           lesion_area_mm2="" if summary["lesion_area_mm2"] is None else f"{summary['lesion_area_mm2']:.3f}")
                if result.lesions:  # the largest lesion's diameter; on ultrasound its calipers (across, along the beam)
                    row["lesion_details"] = summary["lesion_details"]  # every lesion, in results.jsonl only
                    largest = result.lesions[0]
                    row.update(lesion_max_diameter_mm=_mm(largest.max_diameter_mm), lesion_width_mm=_mm(largest.width_mm),
                               lesion_depth_mm=_mm(largest.depth_mm),
                               lesion_depth_to_width="" if largest.depth_to_width is None
                               else f"{largest.depth_to_width:.3f}")
            if result.findings is not None:
                row["findings"] = summary["findings"]
            rows.append(row)
        if self.dicom_sr:
            self._write_sr(record, analysis, file_stem + (f"__f{analysis.frame}" if record.frames > 1 else ""), rows)
        return rows + [self._row(relative, model=f.model_id, model_version=f.version, task=f.task, error=f.error,
                                 warnings=join_warnings(record.warnings + analysis.warnings), **base)
                       for f in analysis.failures]  # a model that could not run: its own row, the others' stand

    def _write_sr(self, record, analysis, stem: str, rows: list[dict]) -> None:
        """The analysis as a de-identified DICOM SR in sr/ (a picture file's frame capture beside it); a failure is
        the rows' error, and the results stand. It is named by a keyed hash of ``stem`` (the file's relative path and
        frame): the same name on a resume, one per analysis, and not the file's name, which often is the patient's."""
        from core.export.anonymise import keyed_digest
        from core.export.structured_report import export_sr

        target = self.out / "sr" / f"sr_{keyed_digest(stem, 24)}.dcm"
        try:
            export_sr(record, analysis, target, anonymise=True)
        except Exception as exc:  # noqa: BLE001 - whatever the report's failure, the file's results stand
            for row in rows:
                row["error"] = "; ".join(e for e in (row.get("error"), f"DICOM SR not written: {described(exc)}") if e)
            return
        for row in rows:
            row["sr_file"] = target.relative_to(self.out).as_posix()

    def _write(self, row: dict, folder: str, stem: str, writer, *arrays) -> str:
        """Write one output; a failure is the row's error, and the row then names no file."""
        target = self.out / folder / f"{stem}.png"
        try:
            writer(*arrays, target)
        except WriteError as exc:
            row["error"] = "; ".join(e for e in (row.get("error"), str(exc)) if e)
            return ""
        return target.relative_to(self.out).as_posix()

    def _append(self, rows: list[dict], relative: str) -> None:
        with self.csv_path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, self.columns, lineterminator=CSV_LINE_END)
            writer.writerows(_csv_row(row) for row in rows)
            fh.flush()
            os.fsync(fh.fileno())
        with (self.out / "results.jsonl").open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(_json_row(row)) + "\n")
        with (self.out / "done.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(relative) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with (self.out / "done.txt").open("a", encoding="utf-8") as fh:  # readable copy, not read back
            fh.write(_readable_line(relative) + "\n")

    def _finish(self, found: list[str], seconds: float, cancelled: bool) -> dict:
        """summary.json, and where every file found is done the report and series.csv. ``found``: the ``file`` keys
        of the files this run found; rows of files that are gone since an earlier part of the run are kept, counted
        apart (``files_missing``) and warned of."""
        total = len(found)
        with self.csv_path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        with (self.out / "results.json").open("w", encoding="utf-8") as fh:  # written as encoded: no copy in memory
            json.dump({"columns": self.columns, "rows": rows}, fh, indent=1)
        per_model: dict[str, dict[str, int]] = {}
        checked: dict[str, list[bool]] = {}  # by model: whether its input check flagged each picture it checked
        for row in rows:
            if row["label"]:  # a model's answer (a model that could not run has none)
                counts = per_model.setdefault(row["model"], {})
                counts[row["label"]] = counts.get(row["label"], 0) + 1
            if row.get("novelty"):
                checked.setdefault(row["model"], []).append(flagged_in(split_warnings(row["warnings"])))
        unusual = {model: sum(flags) for model, flags in checked.items()}
        with_rows = {r["file"] for r in rows}
        files_done = sum(1 for name in set(found) if name in with_rows)
        missing = sorted(with_rows - set(found))
        run_warnings = [f"{len(missing)} file(s) with results in results.csv are no longer in the input folder "
                        f"(first: {_readable_line(missing[0])}): their rows are kept"] if missing else []
        run_warnings += [f"{unusual[m]} of {len(flags)} pictures flagged unusual by {m}'s input check, more than chance "
                         "gives: its answers on this folder are less reliable (another scanner, sequence or modality?)"
                         for m, flags in checked.items() if beyond_chance(unusual[m], len(flags), self._flag_rate(m))]
        if self.history_error:
            run_warnings.append(f"{self.history_error}; the later analyses of this run were not recorded either")
        run_warnings += _mask_hint(found)  # what --exclude left out is not in ``found``: only masks it missed
        summary = {
            "folder": file_key(str(self.root)),
            "files": total,
            "excluded": len(self._excluded),
            "files_done": files_done,
            "files_missing": len(missing),
            "errors": sum(1 for r in rows if r["error"]),
            "warnings": sum(1 for r in rows if r["warnings"]),
            "labels_by_model": per_model,
            "unusual_by_model": unusual,
            "seconds_this_run": round(seconds, 2),
            "cancelled": cancelled,
            "complete": files_done == total and not cancelled,
            "run_warnings": run_warnings,
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        if summary["complete"]:  # a cancelled run stops at once; its report comes when it is resumed
            from core.export.report import write_batch_report

            if self.on_progress:
                self.on_progress(Progress(total, total, self.out / "report.pdf", seconds,
                                          f"writing the report of {total} file(s) and series.csv"))
            write_batch_report(self.out)
            self._write_series_csv(rows)  # series.csv beside results.csv when DICOM series are in
        return summary

    def _write_series_csv(self, rows: list[dict]) -> None:
        """``series.csv`` (core.series.report) over the regular files this run found, less those refused
        as too large.

        The series index opens files itself: what the guarded loader refused before reading (FIFOs,
        devices, links; see discovery) or for size (decompression bombs: every such message says "too
        large") is never handed to it, so nothing can block or inflate there. Damaged small files are
        handed on, so series.csv can still say why their series has no result.
        """
        from core.series.index import index_files
        from core.series.report import write_series_csv

        refused = {r["file"] for r in rows if "too large" in r["error"]}
        readable = [p for p in self._files if self._relative(p) not in refused]
        write_series_csv(index_files(readable, root=self.root), rows, self.out)
