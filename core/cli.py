"""The stable command line: ``info``, ``analyze``, ``batch``, ``models``; no argument opens the GUI.

Heavy modules (TensorFlow, Qt) are imported only by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

from core import __version__
from core.app_paths import app_home
from core.errors import DiagnosticError, ModelError, described
from core.json_output import print_json
from core.models.scale import MAGNIFICATIONS, PLAUSIBLE_UM, check_user_um, um_at_magnification

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal
SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "samples" / "brain_mri_sample.jpg"


def cmd_info(args: argparse.Namespace) -> int:
    from core.imaging import Modality, load_image
    from core.models.scale import file_scale

    try:
        record = load_image(args.path, modality=args.modality)
    except DiagnosticError as exc:
        print_json({"path": str(args.path), "error": str(exc)})
        return 2
    info = record.info()
    if record.modality is Modality.SM:  # the scale a microscopy model tiles at (none: it assumes one, and says so)
        scale = file_scale(record)
        info["microscope_scale"] = scale.to_dict() if scale is not None else None
    print_json(info)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from core.models.intervals import interval_text
    from core.models.registry import Registry, metrics_text

    registry = Registry()
    if args.action == "export":
        return _export_models(registry, args.model, args.out)
    rows = [b.summary() for b in registry.bundles.values()]
    if args.json:
        print_json({"models": rows, "problems": registry.problems})
        return 0
    if args.markdown:
        print("| bundle | modality | classes | validation (n) | accuracy / Dice | ROC AUC | ECE |\n|---|---|---|---|---|---|---|")
        for row in rows:
            m = row["metrics"]
            main_metric = m.get("accuracy", m.get("dice"))
            cells = [f"{main_metric:.3f}{interval_text(row['interval'])}" if main_metric is not None else "-"]
            cells += [f"{m[k]:.3f}" if k in m else "-" for k in ("roc_auc", "ece")]
            print(f"| `{row['id']}` | {row['modality']} | {', '.join(row['classes'])} | {m.get('n', '-')} | " + " | ".join(cells) + " |")
        return 0
    for row in rows:
        metrics = metrics_text(row)
        check = "" if row["input_check"] is None else f"; input check beyond {row['input_check']:.0%}"
        print(f"{row['id']:<28} v{row['version']:<6} {row['modality']:<3} {row['task']:<15} {row['architecture']:<10} "
              f"[{', '.join(row['classes'])}] {metrics}{check}")
    for problem in registry.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    return 0


def _export_models(registry, model_ids: list[str] | None, out: Path | None) -> int:
    """Each bundle (or those named) as ONNX files for ONNX Runtime (core.inference.onnx_export); 1 where one failed,
    each failure one line, the other bundles still exported. The folder is made before any model is loaded."""
    from core.app_paths import onnx_cache
    from core.export.files import os_reason
    from core.inference.onnx_export import export_bundle
    from core.models.exports import export_roots, find_export

    root = out or onnx_cache()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"cannot export into {root}: {os_reason(exc)}", file=sys.stderr)
        return 1
    failed = 0
    for bundle_id in model_ids or list(registry.bundles):
        try:
            bundle = registry.get(bundle_id)
            if out is None and find_export(bundle, export_roots(registry.folders)) is not None:
                print(f"{bundle_id}: exported already")
                continue
            index = export_bundle(bundle, root)
        except ImportError as exc:
            print(f"{bundle_id}: cannot export without {exc.name} (pip install tf2onnx onnxruntime)", file=sys.stderr)
            return 1
        except ModelError as exc:  # no such bundle, or one that cannot be loaded at all: it runs on nothing
            print(f"{bundle_id}: not exported: {exc}", file=sys.stderr)
            failed = 1
            continue
        except Exception as exc:  # noqa: BLE001 - one bundle's failure (a full disk, a converter's error) is its own
            reason = str(exc) if isinstance(exc, ValueError) else described(exc)  # ValueError: differs from TensorFlow
            print(f"{bundle_id}: not exported ({reason}); it runs on TensorFlow", file=sys.stderr)
            failed = 1
            continue
        print(f"{bundle_id}: exported to {root / bundle_id} (checked against TensorFlow: {json.dumps(index['check'])})")
    return failed


OUTPUT_OPTIONS = (("--heatmap-out", "heatmap_out"), ("--mask-out", "mask_out"), ("--report-out", "report_out"),
                  ("--dicom-seg-out", "dicom_seg_out"), ("--dicom-sr-out", "dicom_sr_out"))  # (flag, args key)
PER_IMAGE_OPTIONS = tuple(o for o in OUTPUT_OPTIONS if o[0] != "--dicom-sr-out") + (
    ("--all-frames", "all_frames"), ("--tta", "tta"), ("--target-class", "target_class"),
    ("--gradcam-plus", "gradcam_plus"))


def _analyze_options_problem(args: argparse.Namespace) -> str | None:
    """Options that would be ignored or would write over the input or over each other."""
    if args.series:
        ignored = [flag for flag, key in PER_IMAGE_OPTIONS if getattr(args, key)] + (["--frame"] if args.frame else [])
        if ignored:
            return (f"{', '.join(ignored)} apply to one image, not to --series (a series gives its verdicts, "
                    "--json and --dicom-sr-out)")
    from core.export.files import file_key

    outputs = [(flag, getattr(args, key)) for flag, key in OUTPUT_OPTIONS if getattr(args, key) is not None]
    seen: dict[tuple[int, int] | str, str] = {file_key(args.path): "the input"}  # a hard link is the input too
    for flag, target in outputs:
        where = file_key(target)
        if where in seen:
            return f"{flag} {target} is {seen[where]}: each output needs its own file"
        seen[where] = f"also given to {flag}"
    return None


def cmd_analyze(args: argparse.Namespace) -> int:
    problem = _analyze_options_problem(args)
    if problem is not None:
        print_json({"path": str(args.path), "error": problem})
        return 2
    if args.series:
        from core.series.report import cmd_analyze_series

        record = None if args.no_history else lambda done: _record_history(done, series=True)
        return cmd_analyze_series(args, record=record)
    from core.imaging import load_image
    from core.inference.analyzer import Engine, FrameUnreadable, analyse_frames
    from core.series.contralateral import other_breast

    try:
        for option, target, suffix in (("--heatmap-out", args.heatmap_out, ".png"),
                                       ("--mask-out", args.mask_out, ".png"), ("--report-out", args.report_out, ".pdf")):
            if target is not None:
                from core.export.files import require_suffix

                require_suffix(target, option, suffix)
    except DiagnosticError as exc:
        print_json({"path": str(args.path), "error": str(exc)})
        return 2
    engine = Engine()
    cancel = threading.Event()
    record, analyses, failure = None, [], None
    try:
        record = load_image(args.path, modality=args.modality)
        if not 0 <= args.frame < record.frames:
            raise DiagnosticError(f"frame {args.frame} does not exist: the file has {record.frames} frame(s)")
        frames = range(record.frames) if args.all_frames else [args.frame]
        problem = _planned_names_problem(engine.analyzer.bundles_for(record, args.model or None), frames, args)
        if problem is not None:  # refused before any frame is analysed
            raise DiagnosticError(problem)

        def analyse(frame: int):
            return engine.submit(record, cancel=cancel, frame=frame, model_ids=args.model or None, gradcam=True,
                                 gradcam_plus=args.gradcam_plus, target_class=args.target_class, tta=args.tta,
                                 microns_per_pixel=args.microns_per_pixel, find_other_breast=other_breast).result()

        try:
            for analysis in analyse_frames(frames, record.frames, analyse):
                if record.frames > 1 and not args.all_frames:  # a volume's or a loop's one frame, as batch says too
                    analysis.warnings.append(f"only frame {args.frame + 1} of {record.frames} was analysed "
                                             "(--all-frames analyses each)")
                analyses.append(analysis)
        except FrameUnreadable as exc:  # the frames analysed are still reported, with this error
            failure = str(exc)
    except DiagnosticError as exc:
        print_json({"path": str(args.path), "error": str(exc)})
        return 2
    except KeyboardInterrupt:  # Ctrl+C: the frames analysed before it are reported, the run exits 3
        cancel.set()  # the analysis in flight stops at its next model
    finally:
        engine.shutdown()
    cancelled = cancel.is_set()
    if record is None:  # cancelled while the file was read
        print_json({"path": str(args.path), "frames": [], "cancelled": True})
        return 3
    numbered = len(analyses) > 1 or failure is not None or cancelled
    problem = _output_names_problem(analyses, args, numbered)
    if problem is not None:  # the names the results gave (a frame cut short or cancelled, a heatmap not drawn)
        print_json({"path": str(args.path), "error": problem})
        return 2
    # A model that could not run (its "failures" entry) and an output that cannot be written (its own
    # "<output>_error", never reported as written) are said in "error"; the other results and outputs stand, and
    # the command exits 2.
    output_failures: list[str] = []
    outputs = [_analysis_output(a, record, args, numbered_frames=numbered, failures=output_failures)
               for a in analyses]
    unread_frame = failure is not None
    failures = [f.message for a in analyses for f in a.failures] + output_failures
    if failures:
        failure = "; ".join(([failure] if unread_frame else []) + list(dict.fromkeys(failures)))
    if not args.no_history:
        _record_history(analyses, series=False)
    if args.json:
        if cancelled:
            print_json({"path": str(record.path), "frames": outputs, "cancelled": True})
            return 3
        if unread_frame or (failure is not None and len(outputs) != 1):
            print_json({"path": str(record.path), "frames": outputs, "error": failure})
            return 2
        if failure is not None:  # one frame's results, with the outputs that could not be written
            print_json(dict(outputs[0], error=failure))
            return 2
        print_json(outputs[0] if len(outputs) == 1 else {"path": str(record.path), "frames": outputs})
        return 0
    for out in outputs:
        print(f"{out['path']}  frame {out['frame']}  modality {out['modality']} ({out['modality_source']})")
        for w in out["warnings"]:
            print(f"  warning: {w}")
        for r in out["results"]:
            if r["task"] == "classification":
                probs = "  ".join(f"{k} {v:.3f}" for k, v in r["probabilities"].items())
                print(f"  {r['model']} [{r['device']}]: {r['label']} ({r['probability']:.3f})  {probs}")
            else:
                area = f", {r['lesion_area_mm2']:.1f} mm2" if r["lesion_area_mm2"] is not None else f", {r['lesion_area_px']} px"
                print(f"  {r['model']} [{r['device']}]: {r['lesions']} lesion(s){area}" +
                      (f"  mask {r['mask_file']}" if r.get("mask_file") else ""))
                for k, lesion in enumerate(r.get("lesion_details") or [], 1):  # sizes as a sonographer reads them
                    print(f"    lesion {k}: {lesion['text']}")
            if "scale" in r:
                print(f"    scale: {r['scale']['text']}")
            if "findings" in r:  # a detector's CAD marks, image pixels, origin top-left
                print(f"    findings: {len(r['findings'])}")
                for f in r["findings"]:
                    print(f"      {f['score']:.2f}{' ' + f['kind'] if f['kind'] else ''} at x {f['x']:.0f}, "
                          f"y {f['y']:.0f} px, radius {f['r']:.0f} px")
            for w in r["warnings"]:
                print(f"    warning: {w}")
    if cancelled:
        print(f"cancelled: {len(outputs)} frame(s) analysed before the cancel")
        return 3
    if failure is not None:
        print(f"error: {failure}")
        return 2
    return 0


def _record_history(analyses, series: bool) -> None:
    """One history entry per image analysis, or per completed series analysis; a history that cannot be written
    is a warning: the results stand, only their record is missing."""
    if not analyses:
        return
    from core.history import History

    try:
        history = History()
        for analysis in analyses:
            (history.add_series if series else history.add)(analysis)
    except DiagnosticError as exc:
        print(f"warning: {exc}", file=sys.stderr)


def _output_files(analysis, args: argparse.Namespace, numbered_frames: bool) -> list[tuple[str, object, Path]]:
    """(option, model result or None, file) for every file the output options write for ``analysis``: the final
    names, numbered per frame and model where several write one option."""
    files: list[tuple[str, object, Path]] = []
    for result in analysis.results:
        for flag, target, made in (("--heatmap-out", args.heatmap_out, result.heatmap),
                                   ("--mask-out", args.mask_out, result.mask),
                                   ("--dicom-seg-out", args.dicom_seg_out, result.mask)):
            if target and made is not None:
                files.append((flag, result, _numbered(target, result, analysis, numbered_frames)))
    for flag, target in (("--report-out", args.report_out), ("--dicom-sr-out", args.dicom_sr_out)):
        if target:
            files.append((flag, None, _per_frame(target, analysis, numbered_frames)))
    return files


def _output_names_problem(analyses, args: argparse.Namespace, numbered_frames: bool) -> str | None:
    """An output's final name (``x_f0.dcm``, ``h_<model>.png``) that is the input or another output's: refused
    before anything is written, as ``_analyze_options_problem`` refuses the names given."""
    from core.export.files import file_key

    seen: dict[tuple[int, int] | str, str] = {file_key(args.path): "the input"}
    for analysis in analyses:
        for flag, _, target in _output_files(analysis, args, numbered_frames):
            where = file_key(target)
            if where in seen:
                return f"{flag} would write {target}, which is {seen[where]}: each output needs its own file"
            seen[where] = f"also written by {flag}"
    return None


def _planned_names_problem(bundles, frames, args: argparse.Namespace) -> str | None:
    """``_output_names_problem`` for the analyses planned, before any is run: each chosen bundle gives a result
    with a heatmap (classification) or a mask (segmentation), every frame asked for is analysed. The names the
    results give are checked again after the analysis (``_output_names_problem``)."""
    from types import SimpleNamespace

    results = [SimpleNamespace(model_id=b.id, heatmap=None if b.task == "segmentation" else True,
                               mask=True if b.task == "segmentation" else None) for b in bundles]
    planned = [SimpleNamespace(frame=frame, results=results) for frame in frames]
    return _output_names_problem(planned, args, numbered_frames=len(frames) > 1)


_OUTPUT_KEYS = {"--heatmap-out": "heatmap", "--mask-out": "mask", "--dicom-seg-out": "dicom_seg",
                "--report-out": "report", "--dicom-sr-out": "dicom_sr"}


def _analysis_output(analysis, record, args: argparse.Namespace, numbered_frames: bool,
                     failures: list[str] | None = None) -> dict:
    """The analysis as JSON, writing the files the options ask for: each one written is named in "<output>_file";
    one that cannot be written is said in "<output>_error" instead (beside the model's result where it is one
    model's), and its reason appended to ``failures``. The results and the other outputs stand."""
    from core.export.files import os_reason, write_heatmap_png, write_mask_png

    out = analysis.file_dict()  # positions in the file's own pixels, its reading's warnings (loaded downsampled) first
    display = record.display(analysis.frame)
    summaries = {id(result): summary for result, summary in zip(analysis.results, out["results"])}
    for flag, result, target in _output_files(analysis, args, numbered_frames):
        summary = summaries.get(id(result), out)
        key = _OUTPUT_KEYS[flag]
        try:
            if flag == "--heatmap-out":
                written = write_heatmap_png(display, result.heatmap, target)
            elif flag == "--mask-out":
                written = write_mask_png(result.mask, target)
            elif flag == "--dicom-seg-out":
                from core.export.dicom_export import export_seg

                written = export_seg(record, result, target, analysis.frame, not args.identified)
            elif flag == "--report-out":
                from core.export.report import write_image_report

                written = write_image_report(target, record, analysis, anonymise=not args.identified)
            else:  # --dicom-sr-out; with no model result export_sr says so: a report asked for is never silently missing
                from core.export.structured_report import export_sr

                written = export_sr(record, analysis, target, anonymise=not args.identified)
        except (DiagnosticError, OSError) as exc:  # never reported as written
            # writes fail as WriteError (a DiagnosticError naming the file); another OSError is a file read on the way
            reason = str(exc) if isinstance(exc, DiagnosticError) else \
                f"{flag} could not be made: {os_reason(exc)}" + (f" ({exc.filename})" if exc.filename else "")
            summary[f"{key}_error"] = reason
            if failures is not None:
                failures.append(reason)
            continue
        summary[f"{key}_file"] = str(written)
    for flag, key, made_by, missing in _UNMADE_OUTPUTS:  # an output asked for that no result here can make
        if getattr(args, key) and not any(getattr(r, made_by) is not None for r in analysis.results):
            reason = f"{flag}: {missing} on this image"
            out[f"{_OUTPUT_KEYS[flag]}_error"] = reason
            if failures is not None:
                failures.append(reason)
    return out


# (option, argparse key, what a result needs to make it, why none did): never silently missing
_UNMADE_OUTPUTS = (("--mask-out", "mask_out", "mask", "no segmentation model ran"),
                   ("--dicom-seg-out", "dicom_seg_out", "mask", "no segmentation model ran"),
                   ("--heatmap-out", "heatmap_out", "heatmap", "no model drew a heatmap"))


def cmd_batch(args: argparse.Namespace) -> int:
    import threading

    from tqdm import tqdm

    from core.batch.runner import BatchRun
    from core.inference.analyzer import Engine

    if not args.folder.is_dir():
        print_json({"path": str(args.folder), "error": f"'{args.folder}' is not a folder"})
        return 2
    cancel = threading.Event()
    bar = tqdm(unit="img", desc="batch", file=sys.stderr)

    def progress(p) -> None:
        bar.total = p.total
        bar.n = p.done
        bar.set_postfix_str(p.stage or p.path.name[-30:])
        bar.refresh()

    engine = Engine()
    try:
        history = None
        if not args.no_history:
            from core.history import History

            try:
                history = History()
            except (DiagnosticError, OSError) as exc:  # the results are what matters: their record is a warning
                print(f"warning: the history cannot be opened, the run is not recorded in it: {exc}", file=sys.stderr)
        run = BatchRun(args.folder, args.out, analyzer=engine.analyzer, model_ids=args.model, resume=args.resume,
                       all_frames=args.all_frames, heatmaps=not args.no_heatmaps, cancel=cancel, on_progress=progress,
                       history=history, overwrite=args.overwrite, microns_per_pixel=args.microns_per_pixel,
                       dicom_sr=args.dicom_sr, exclude=args.exclude)
        future = engine.call(run.run)
        while True:
            try:
                summary = future.result(timeout=0.5)
                break
            except TimeoutError:
                continue
            except KeyboardInterrupt:
                cancel.set()  # finish the current file, keep everything written so far
    except DiagnosticError as exc:
        print_json({"path": str(args.folder), "error": str(exc)})
        return 2
    finally:
        bar.close()
        engine.shutdown()
    if run.exclude:  # said once, beside the bar: a pattern that left out nothing (or too much) shows here
        print(f"excluded: {summary['excluded']} file(s) matching --exclude "
              f"{' '.join(repr(glob) for glob in run.exclude)}: not analysed", file=sys.stderr)
    print_json(summary)
    return 0 if summary["complete"] else 3


def _per_frame(path: Path, analysis, numbered_frames: bool) -> Path:
    """One file per frame (``<stem>_f<frame><suffix>``) when several frames write the same option."""
    return path.with_name(f"{path.stem}_f{analysis.frame}{path.suffix}") if numbered_frames else path


def _numbered(path: Path, result, analysis, numbered_frames: bool) -> Path:
    """One file per model (and frame) when several results write the same option."""
    same_kind = [r for r in analysis.results if (r.heatmap is not None) == (result.heatmap is not None)]
    stem = path.stem if len(same_kind) == 1 else f"{path.stem}_{result.model_id}"
    if numbered_frames:
        stem += f"_f{analysis.frame}"
    return path.with_name(stem + path.suffix)


def cmd_history(args: argparse.Namespace) -> int:
    from core.history import History

    try:
        history = History()
        if args.csv:
            print(history.export_csv(args.csv, of_file=args.path))
            return 0
        return _print_entries(history.iter_for_file(args.path) if args.path else history.iter_all(), history.db)
    except (DiagnosticError, OSError) as exc:  # a database that cannot be read, a missing file, an unwritable CSV
        where = args.csv or args.path or app_home() / "history.sqlite"
        print_json({"path": str(where), "error": _history_error(exc, args)})
        return 2


def _history_error(exc: Exception, args: argparse.Namespace) -> str:
    """The reason a history command failed, as a sentence naming the file it could not use."""
    if isinstance(exc, DiagnosticError):
        return str(exc)
    reason = exc.strerror or exc
    return f"cannot write {args.csv}: {reason}" if args.csv else f"cannot read {args.path}: {reason}"


def _print_entries(entries, db: Path) -> int:
    """print_json({"entries": [...]}) to the letter, each entry written as it is read: a history of twenty thousand
    entries is never held in memory whole. A database that cannot be read at all raises before anything is
    written; one that fails part-way closes the JSON with the entries read, the database's path and the error
    (exit 2)."""
    from core.json_output import strict_json

    first = True
    try:
        for entry in entries:
            text = json.dumps(strict_json(_history_json(entry)), indent=2, default=str, allow_nan=False)
            sys.stdout.write(('{\n  "entries": [\n    ' if first else ",\n    ") + text.replace("\n", "\n    "))
            first = False
    except DiagnosticError as exc:
        if first:
            raise
        sys.stdout.write(f'\n  ],\n  "path": {json.dumps(str(db))},\n  "error": {json.dumps(str(exc))}\n}}\n')
        return 2
    sys.stdout.write('{\n  "entries": []\n}\n' if first else "\n  ]\n}\n")
    return 0


def _history_json(e) -> dict:
    out = {"id": e.id, "kind": e.kind, "analysed_at": e.analysed_at, "path": e.path, "file_sha256": e.file_sha256,
           "frame": e.frame, "modality": e.modality, "models": e.models, "findings": e.labels}
    if e.kind == "series":
        del out["file_sha256"], out["frame"]
        out.update(series_uid=e.series_uid, description=e.description, slices=e.slices)
    return out


def cmd_gui(args: argparse.Namespace) -> int:
    from gui.app import run

    return run(args.paths or [str(SAMPLE)])


def _magnification(text: str) -> float:
    """``--magnification 400`` (or ``400x``) as micrometres per pixel of a BreakHis-type camera."""
    try:
        magnification = int(text.strip().lower().removesuffix("x"))
    except ValueError:
        magnification = None
    if magnification not in MAGNIFICATIONS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(map(str, MAGNIFICATIONS))}")
    return um_at_magnification(magnification)


def _microns(text: str) -> float:
    """``--microns-per-pixel X``, refused unless a microscope could give it (core.models.scale.PLAUSIBLE_UM)."""
    try:
        um = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    try:
        return check_user_um(um)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_scale_options(parser: argparse.ArgumentParser) -> None:
    """The image's scale as the user knows it, one way or the other; both fill ``args.microns_per_pixel``."""
    group = parser.add_argument_group(
        "microscopy scale", "For microscopy bundles that tile at a physical scale (histology): the image's scale, "
        "overriding the one its file states (DICOM, TIFF, OME-TIFF or a BreakHis file name); without either the "
        "bundle's usual scale is assumed, with a warning. Other bundles ignore it.")
    either = group.add_mutually_exclusive_group()
    either.add_argument("--magnification", type=_magnification, dest="microns_per_pixel", metavar="{40,100,200,400}",
                        help="objective magnification, for a BreakHis-type camera (40x: 4.9 um per pixel, 400x: 0.49)")
    either.add_argument("--microns-per-pixel", type=_microns, dest="microns_per_pixel", metavar="UM",
                        help=f"micrometres per image pixel ({PLAUSIBLE_UM[0]:g} to {PLAUSIBLE_UM[1]:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Medical Image Diagnostic Assistant - decision support only, not a medical device.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")

    info = sub.add_parser("info", help="print what an image file is (JSON)")
    info.add_argument("path", type=Path)
    info.add_argument("--modality", choices=["MR", "MG", "US", "SM", "OT"], help="override the modality")
    info.set_defaults(func=cmd_info)

    models = sub.add_parser("models", help="list the installed model bundles, or export them for ONNX Runtime")
    models.add_argument("action", nargs="?", choices=["list", "export"], default="list",
                        help="export: write each bundle as ONNX files, which analysis then runs without TensorFlow")
    models.add_argument("--model", action="append", metavar="ID", help="export this bundle only (repeatable)")
    models.add_argument("--out", type=Path, help="export into this folder (default: the user's cache)")
    models.add_argument("--json", action="store_true")
    models.add_argument("--markdown", action="store_true", help="a Markdown table (for the README)")
    models.set_defaults(func=cmd_models)

    analyze = sub.add_parser("analyze", help="run the models on one image")
    analyze.add_argument("path", type=Path)
    analyze.add_argument("--model", action="append", metavar="ID", help="model id (repeatable); default: by modality")
    analyze.add_argument("--modality", choices=["MR", "MG", "US", "SM", "OT"], help="override the modality")
    analyze.add_argument("--frame", type=int, default=0, help="frame to analyse (multi-frame files)")
    analyze.add_argument("--all-frames", action="store_true", help="analyse every frame")
    analyze.add_argument("--heatmap-out", type=Path, metavar="FILE.png")
    analyze.add_argument("--mask-out", type=Path, metavar="FILE.png")
    analyze.add_argument("--target-class", help="Grad-CAM for this class instead of the predicted one")
    analyze.add_argument("--gradcam-plus", action="store_true", help="Grad-CAM++ instead of Grad-CAM")
    analyze.add_argument("--tta", action="store_true", help="test-time augmentation with an agreement score")
    analyze.add_argument("--report-out", type=Path, metavar="FILE.pdf", help="PDF report")
    analyze.add_argument("--dicom-seg-out", type=Path, metavar="FILE.dcm", help="segmentation as DICOM SEG")
    analyze.add_argument("--dicom-sr-out", type=Path, metavar="FILE.dcm",
                         help="results as a DICOM Structured Report (TID 1500: labels, probabilities, outlines, marks); "
                              "with --series one per series (FILE_s1.dcm, ... where there are several)")
    analyze.add_argument("--identified", action="store_true", help="keep patient identifiers in exports")
    analyze.add_argument("--no-history", action="store_true",
                         help="do not record this analysis (with --series: the series verdicts) in the history")
    analyze.add_argument("--json", action="store_true")
    analyze.add_argument("--series", action="store_true",
                         help="PATH is a folder or DICOMDIR: analyse each series as a whole (core.series)")
    _add_scale_options(analyze)
    analyze.set_defaults(func=cmd_analyze)

    batch = sub.add_parser("batch", help="analyse every image in a folder into CSV/JSON (resumable)")
    batch.add_argument("folder", type=Path)
    batch.add_argument("--out", type=Path, required=True, help="output folder")
    batch.add_argument("--model", action="append", metavar="ID", help="model id (repeatable); default: by modality")
    earlier = batch.add_mutually_exclusive_group()
    earlier.add_argument("--resume", action="store_true", help="continue a stopped run in the same output folder")
    earlier.add_argument("--overwrite", action="store_true", help="replace the results already in the output folder")
    batch.add_argument("--all-frames", action="store_true", help="analyse every frame of multi-frame files")
    batch.add_argument("--no-heatmaps", action="store_true", help="skip Grad-CAM images (faster)")
    batch.add_argument("--no-history", action="store_true", help="do not record the analyses in the history")
    batch.add_argument("--dicom-sr", action="store_true",
                       help="also write each analysis as a de-identified DICOM Structured Report in OUTDIR/sr/")
    batch.add_argument("--exclude", action="append", metavar="GLOB",
                       help="leave out files whose name or path within FOLDER matches GLOB (repeatable, case ignored; "
                            "e.g. '*_mask.*' for lesion masks beside the images); a resume keeps the run's own")
    _add_scale_options(batch)
    batch.set_defaults(func=cmd_batch)

    history = sub.add_parser("history", help="earlier analyses, images and series (all, or of the same image content)")
    history.add_argument("path", type=Path, nargs="?")
    history.add_argument("--csv", type=Path, metavar="FILE.csv", help="export the history as CSV (with PATH: that file's entries only)")
    history.set_defaults(func=cmd_history)

    gui = sub.add_parser("gui", help="open the viewer (default when no command is given)")
    gui.add_argument("paths", nargs="*")
    gui.set_defaults(func=cmd_gui)
    parser.commands = set(sub.choices)  # `main.py IMAGE` (no command) opens the window
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or (argv[0] not in parser.commands and not argv[0].startswith("-")):
        argv = ["gui", *argv]  # `main.py image.dcm` opens that image in the window
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
