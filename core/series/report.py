"""Series output for the command line: ``analyze DIR --series`` and the ``series.csv`` of a batch run."""

from __future__ import annotations

import csv
import os
import sys
import threading
from pathlib import Path
from typing import Callable

from core.json_output import print_json, strict_json
from core.result_cells import CSV_LINE_END, file_key, join_warnings, split_warnings
from core.series.analysis import SeriesAnalysis, SliceOutcome, analyse_series, series_disagreements, verdict
from core.series.index import Series, StudyIndex, index_path

SERIES_COLUMNS = ["patient", "study", "series_uid", "description", "modality", "plane", "slices", "model", "label",
                  "probability", "first_slice", "last_slice", "lesion_volume_ml", "warnings", "first_instance",
                  "last_instance"]  # slices in position order; instances as the files number them (a PACS's)


def cmd_analyze_series(args, record: Callable[[list[SeriesAnalysis]], None] | None = None) -> int:
    """``main.py analyze DIR_OR_DICOMDIR --series [--model ID ...] [--json]``: every series of the folder.

    ``record`` is handed the series analyses that completed with verdicts (one cancelled by Ctrl+C is not
    among them), after the run and before the output: the command line keeps them in the history with it.
    """
    from tqdm import tqdm

    from core.errors import DiagnosticError
    from core.inference.analyzer import Engine

    path = Path(args.path)
    if not path.exists():
        print_json({"path": str(path), "error": f"'{path}' does not exist"})
        return 2
    index = index_path(path)
    if not index.series:
        reason = "no images found" + (f" ({len(index.problems)} file(s) could not be read)" if index.problems else "")
        print_json({"path": str(path), "error": reason, "problems": index.problems})
        return 2
    clash = _sr_target_clash(index, path, args.dicom_sr_out, len(index.series)) if args.dicom_sr_out else None
    if clash:  # before any analysis: a report written there would replace an image analysed
        print_json({"path": str(path), "error": clash})
        return 2
    engine = Engine()
    cancel = threading.Event()
    analyses: list[SeriesAnalysis] = []
    try:
        for k, series in enumerate(index.series):
            bar = tqdm(total=len(series), unit="slice", file=sys.stderr, leave=False,
                       desc=f"series {k + 1}/{len(index.series)}")

            def progress(p, bar=bar) -> None:
                bar.n = p.done
                bar.refresh()

            try:
                analyses.append(analyse_series(series, engine, args.model or None, progress=progress, cancel=cancel,
                                               modality=args.modality, microns_per_pixel=args.microns_per_pixel))
            except KeyboardInterrupt:
                cancel.set()
                break
            finally:
                bar.close()
    except DiagnosticError as exc:
        print_json({"path": str(path), "error": str(exc)})
        return 2
    finally:
        engine.shutdown()
    complete = not cancel.is_set() and len(analyses) == len(index.series)
    if record is not None:
        record([a for a in analyses if not a.cancelled and a.results])  # complete series with verdicts only
    reports = _structured_reports(analyses, args.dicom_sr_out, not args.identified) if args.dicom_sr_out else {}
    failed = any(a.error for a in analyses) or any("dicom_sr_error" in r for r in reports.values())
    code = 3 if not complete else 2 if failed else 0
    if args.json:
        out = {"path": str(path), "series": [dict(a.to_dict(), **reports.get(k, {})) for k, a in enumerate(analyses)]}
        if index.problems:
            out["problems"] = index.problems
        if not complete:
            out["cancelled"] = True
        print_json(out)
        return code
    for k, a in enumerate(analyses):
        print(series_text(a))
        for key, value in reports.get(k, {}).items():
            print(f"  {'DICOM SR' if key == 'dicom_sr_file' else 'no DICOM SR'}: {value}")
    for problem in index.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    return code


def _sr_target(target: Path, k: int, count: int) -> Path:
    """Series ``k``'s (0-based) DICOM SR of ``count``: ``target``, with several ``<stem>_s<k+1><suffix>``."""
    return target if count == 1 else target.with_name(f"{target.stem}_s{k + 1}{target.suffix}")


def _sr_target_clash(index: StudyIndex, path: Path, target: Path, count: int) -> str | None:
    """Why a DICOM SR cannot be written at ``target`` (or its numbered names): it would replace an input of the
    analysis (a slice, the DICOMDIR or file given); None where it can. Two names are one file as every output
    check has it (``core.export.files.file_key``: hard links, case-blind volumes)."""
    from core.export.files import file_key as identity

    inputs = {identity(ref.path) for series in index.series for ref in series.slices}
    if Path(path).is_file():
        inputs.add(identity(path))
    names = {_sr_target(Path(target), k, n) for n in {1, count} for k in range(n)}
    clashes = sorted(os.fsdecode(name) for name in names if identity(name) in inputs)
    if clashes:
        return (f"--dicom-sr-out {strict_json(clashes[0])} is an input of this analysis: the report would replace "
                "it; choose a file outside the images analysed")
    return None


def _structured_reports(analyses: list[SeriesAnalysis], target: Path, anonymise: bool) -> dict[int, dict]:
    """Each series' DICOM SR (``target``; with several series ``<stem>_s<n><suffix>``, n from 1), or why not."""
    from core.errors import described
    from core.series.structured_report import export_series_sr

    written: dict[int, dict] = {}
    for k, analysis in enumerate(analyses):
        out = _sr_target(target, k, len(analyses))
        try:
            written[k] = {"dicom_sr_file": str(export_series_sr(analysis, out, anonymise))}
        except Exception as exc:  # noqa: BLE001 - a report that cannot be built must not lose the verdicts printed
            written[k] = {"dicom_sr_error": described(exc)}
    return written


def series_text(a: SeriesAnalysis) -> str:
    s = a.series
    spacing = f", spacing {s.spacing_mm:.2f} mm" if s.spacing_mm else ""
    lines = [f"{s.uid or s.slices[0].path}  {s.modality or '?'} '{s.description}'  {s.plane or 'plane unknown'}, "
             f"{len(s)} slice(s){spacing}"]
    lines += [f"  warning: {w}" for w in s.warnings + a.warnings]
    if a.error:
        lines.append(f"  error: {a.error}")
    for v in a.results:
        where = f" slices {v.first_slice}-{v.last_slice}{v.instances_text()}" if v.first_slice is not None else ""
        if len(v.runs) > 1:
            where += " (runs " + ", ".join(f"{a}-{b}" for a, b in v.runs) + ")"
        p = f" ({v.probability:.3f})" if v.probability is not None else ""
        volume = f", {v.lesion_volume_ml:.2f} ml" if v.lesion_volume_ml else ""
        lines.append(f"  {v.model}: {v.label}{p}{where}{volume}")
        lines += [f"    warning: {w}" for w in v.warnings]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- batch
def _outcome_from_row(row: dict) -> SliceOutcome | None:
    """A results.csv row as the slice outcome a series verdict reads, its warnings (untested sequence, modality)
    included, as the window's series analysis keeps them."""
    if row.get("error"):
        return SliceOutcome(error=row["error"])
    warnings = split_warnings(row.get("warnings"))
    if row.get("task") == "classification":
        probs = {k[2:]: float(v) for k, v in row.items() if k.startswith("p_") and v not in ("", None)}
        return SliceOutcome(row.get("label") or None, probs, warnings=warnings)
    area = row.get("lesion_area_mm2")
    return SliceOutcome(row.get("label") or None, lesions=int(row.get("lesions") or 0),
                        lesion_area_mm2=float(area) if area not in ("", None) else None, warnings=warnings)


def series_rows(index: StudyIndex, results: list[dict]) -> list[dict]:
    """One row per series and model from a batch's results.csv rows (no model is run again)."""
    root = index.root
    by_slice: dict[tuple[str, int], list[dict]] = {}
    for row in results:
        by_slice.setdefault((row["file"], int(row.get("frame") or 0)), []).append(row)
    out = []
    for p, patient in enumerate(index.patients, 1):
        for t, study in enumerate(patient.studies, 1):
            for series in study.series:
                if series.kind == "image":
                    continue
                out.extend(_rows_of_series(series, root, by_slice, f"P{p:03d}", f"P{p:03d}-S{t}"))
    return out


def _blank(value) -> object:
    """A CSV cell: '' for None (0 stays 0)."""
    return "" if value is None else value


def _file_key(path: Path, root: Path) -> str:
    """The ``file`` cell batch writes for ``path`` (``file_key`` of its path relative to ``root``)."""
    return file_key(path.relative_to(root).as_posix())


def _rows_of_series(series: Series, root: Path, by_slice: dict, patient: str, study: str) -> list[dict]:
    slice_rows = [by_slice.get((_file_key(ref.path, root), ref.frame), []) for ref in series.slices]
    models: dict[str, dict] = {}
    for rows in slice_rows:
        for row in rows:
            if row.get("model"):
                models.setdefault(row["model"], row)
    base = {"patient": patient, "study": study, "series_uid": series.uid, "description": series.description,
            "modality": series.modality, "plane": series.plane or "", "slices": len(series)}
    if not models:
        errors = sorted({r["error"] for rows in slice_rows for r in rows if r.get("error")})
        return [dict(base, warnings=join_warnings(series.warnings + (errors[:3] or ["no model results for this series"])))]
    verdicts = []
    for model, first in models.items():
        outcomes = []
        for rows in slice_rows:
            row = next((r for r in rows if r.get("model") == model), None)
            error = next((r for r in rows if r.get("error") and not r.get("model")), None)
            outcomes.append(_outcome_from_row(row) if row is not None else
                            SliceOutcome(error=error["error"]) if error is not None else None)
        classes = sorted({c for o in outcomes if o is not None for c in o.probabilities})
        verdicts.append(verdict(model, first.get("model_version", ""), first.get("task", ""), classes, outcomes,
                                series))
    series_disagreements(verdicts)
    out = []
    for v in verdicts:
        # A slice or frame without a row was never analysed, one with an error row failed, a file cut short never
        # became a slice: the verdict rule (core.series.analysis.verdict, as for analyze --series and the window)
        # keeps a finding on the slices analysed and gives no normal call over the rest.
        warnings = series.warnings + v.warnings
        if series.kind == "multiframe" and any(o is None for o in v.slices):
            warnings.append("batch --all-frames analyses every frame of a multi-frame series")
        out.append(dict(base, model=v.model, label=v.label or "",
                        probability="" if v.probability is None else f"{v.probability:.6f}",
                        first_slice=v.first_slice or "", last_slice=v.last_slice or "",
                        first_instance=_blank(v.instance(v.first_slice)), last_instance=_blank(v.instance(v.last_slice)),
                        lesion_volume_ml="" if v.lesion_volume_ml is None else f"{v.lesion_volume_ml:.4f}",
                        warnings=join_warnings(warnings)))
    return out


def write_series_csv(index: StudyIndex, results: list[dict], out: Path) -> Path | None:
    """``series.csv`` in the batch folder ``out`` from its ``results.csv`` rows, when ``index`` holds DICOM series;
    else None (nothing written).

    Patients are numbered (P001, ...) and studies within them (P001-S1, ...): no names or IDs are written.
    """
    if not any(s.kind != "image" for s in index.series):
        return None
    target = Path(out) / "series.csv"
    with target.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, SERIES_COLUMNS, lineterminator=CSV_LINE_END)
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in SERIES_COLUMNS} for row in series_rows(index, results))
    return target
