"""PDF reports (matplotlib): one image with its findings, or a whole batch run."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import textwrap
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from core import __version__
from core.export.anonymise import anonymise_study, without_screen_text
from core.export.files import write_bytes_atomic
from core.export.page_fonts import page_fonts, unshown_note
from core.imaging.record import ImageRecord
from core.inference.overlays import blend_heatmap
from core.inference.results import FINDING_RGB, Analysis, Finding, Lesion, ModelResult, in_file_pixels

DISCLAIMER = ("Decision support only - not a medical device. Findings are model outputs that must be confirmed "
              "by a qualified reader; they are not a diagnosis.")
A4 = (8.27, 11.69)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    return plt, PdfPages


def overlay_picture(record: ImageRecord, analysis: Analysis, heatmap_model: str | None = None) -> np.ndarray:
    """The image with a heatmap blended in (``heatmap_model``'s, as the window draws it: ``Analysis.heatmap_result``),
    lesion outlines and findings drawn (what the report and the Secondary Capture show)."""
    display = record.display(analysis.frame)
    picture = display if display.ndim == 3 else cv2.cvtColor(display, cv2.COLOR_GRAY2RGB)
    heated = analysis.heatmap_result(heatmap_model)
    if heated is not None:
        picture = blend_heatmap(picture, heated.heatmap, 0.4)
    for result in analysis.results:
        if result.mask is not None:
            contours, _ = cv2.findContours(result.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            picture = cv2.drawContours(picture.copy(), contours, -1, (0, 230, 120), max(1, picture.shape[0] // 250))
    for result in analysis.results:
        if result.findings:
            picture = draw_findings(picture, result.findings)
    return picture


def draw_findings(picture: np.ndarray, findings: list[Finding], stroke: tuple[int, float] | None = None) -> np.ndarray:
    """A copy of ``picture`` with each finding's circle and its label on a dark box beside the circle's upper
    right (as the viewer draws them), strokes and text scaled to the picture so they read alike on a small
    scan and a full mammogram (the report's picture); ``stroke``: (line thickness, text scale) instead, for a screen
    (the exam window's views, where a small view had drawn its scores 7 px tall). A label that would leave the
    picture goes to the circle's left, and is kept inside at the top and bottom: a cut label misreads."""
    picture = np.ascontiguousarray(picture).copy()  # the display of a colour image is the record's own array
    height, width = picture.shape[:2]
    thickness, scale = stroke or (max(1, height // 250), max(0.35, height / 900))
    pad = 2 * thickness
    for finding in findings:
        cv2.circle(picture, (round(finding.x), round(finding.y)), max(1, round(finding.r)), FINDING_RGB, thickness,
                   cv2.LINE_AA)
        (text_w, text_h), baseline = cv2.getTextSize(finding.label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        box_w, box_h = text_w + 2 * pad, text_h + baseline + 2 * pad
        left = round(finding.x + finding.r) + 2 * pad
        if left + box_w >= width:
            left = round(finding.x - finding.r) - 2 * pad - box_w
        left = min(max(left, 1), width - box_w - 2)
        top = min(max(round(finding.y - finding.r), 1), height - box_h - 2)
        cv2.rectangle(picture, (left, top), (left + box_w, top + box_h), (0, 0, 0), -1)
        cv2.putText(picture, finding.label, (left + pad, top + pad + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    FINDING_RGB, thickness, cv2.LINE_AA)
    return picture


def _footer(fig, page: tuple[int, int] | None = None) -> None:
    """The disclaimer and the program, on every page; ``page``: (this page, pages) where a report runs over several."""
    numbered = f" - page {page[0]} of {page[1]}" if page else ""
    fig.text(0.5, 0.02, "\n".join(textwrap.wrap(DISCLAIMER, 110)), ha="center", va="bottom", fontsize=7, color="#8a1c1c")
    fig.text(0.98, 0.005, f"Medical Image Diagnostic Assistant {__version__} - {dt.datetime.now():%Y-%m-%d %H:%M}"
             f"{numbered}", ha="right", va="bottom", fontsize=6, color="gray")


def spacing_text(spacing_mm: tuple[float, float]) -> str:
    """A pixel spacing (row, column), as DICOM PixelSpacing orders it: one value for square pixels, both (named)
    otherwise, since a reader checking a measurement on the page needs the spacing along each axis."""
    row, column = (f"{v:.3f}" for v in spacing_mm)
    return f"{row} mm" if row == column else f"{row} x {column} mm (row x column)"


IDENTITY_CHARS = 105  # 8-pt monospace characters across the page's text width
IDENTITY_LINE = 0.0115  # one 8-pt line as a fraction of the A4 page's height

# The image report's body: 7.5-pt monospace lines of at most BODY_CHARS, one every BODY_LINE of the page's height
# (1.25 times the font size: matplotlib's own spacing is 1.2), from below the picture (first page) or CONTINUED_TOP
# down to BODY_BOTTOM, above the footer's disclaimer; a page that is full goes on on the next.
BODY_CHARS = 100
BODY_LINE = 7.5 * 1.25 / 72 / A4[1]
BODY_TOP = 0.44
CONTINUED_TOP = 0.93
BODY_BOTTOM = 0.06
PICTURE_BOTTOM = 0.47
# A classifier's bar chart: its slot's height (title, bars, tick labels) and the bars' own; beside the picture as
# many as fit above the body, the others in the body after their model's lines.
CHART_SLOT = 0.13
CHART_BARS = 0.07
LISTED = 8  # lesions and findings listed per result; the rest are counted

_LINE_BREAKS = re.compile(r"[\t\n\r\v\f]+")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """``text`` without control characters: a header's line break or escape sequence would be drawn as a box by
    the font, or run a line into the next; line breaks become spaces."""
    return _CONTROLS.sub("", _LINE_BREAKS.sub(" ", text))


def _wrap(text: str, width: int = BODY_CHARS, indent: str = "     ") -> list[str]:
    return textwrap.wrap(_printable(text), width, subsequent_indent=indent) or [""]


def write_image_report(out: Path, record: ImageRecord, analysis: Analysis, anonymise: bool = True,
                       heatmap_model: str | None = None) -> Path:
    """The report of one analysed frame: who and what, the picture with its overlays, every result, warning and
    failure, going on over as many pages as it takes (each with the disclaimer). Made in memory and written in
    one step (a temporary file renamed), so a write that fails leaves the report that was there before, and a
    name that is a hard link to another file (the input) gets a file of its own."""
    plt, PdfPages = _pyplot()
    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        pages = _image_report_pages(plt, record, analysis, anonymise, heatmap_model)
        for number, fig in enumerate(pages, 1):
            _footer(fig, (number, len(pages)) if len(pages) > 1 else None)
            pdf.savefig(fig)
            plt.close(fig)
    return write_bytes_atomic(out, buffer.getvalue())


def _image_report_pages(plt, record: ImageRecord, analysis: Analysis, anonymise: bool,
                        heatmap_model: str | None = None) -> list:
    """The report's figures: the first with the identity, the picture and the charts that fit beside it, then the
    body's lines and the other charts laid down page after page."""
    fig = plt.figure(figsize=A4)
    identity = _identity(record, analysis, anonymise)
    fig.text(0.06, 0.965, "Image analysis report", fontsize=16, weight="bold")
    fonts = page_fonts()
    fig.text(0.06, 0.945, "\n".join(identity), fontsize=8, va="top", family=fonts, parse_math=False)
    top = min(0.87, 0.945 - IDENTITY_LINE * len(identity) - 0.025)
    _draw_picture(fig, record, analysis, anonymise, top, heatmap_model)
    charts = [r for r in analysis.results if r.task == "classification"]
    beside = charts[:max(0, int((top - BODY_TOP) / CHART_SLOT))]
    for k, result in enumerate(beside):
        _draw_chart(fig, result, 0.66, top - k * CHART_SLOT)
    pages, y = [fig], BODY_TOP
    body = _body(record, analysis, {id(r) for r in charts[len(beside):]})
    # a name the fonts installed cannot draw prints as boxes: said first, by its characters' code points
    note = unshown_note("".join(identity + [block for block in body if isinstance(block, str)]))
    for block in [line for text in note for line in _wrap(text)] + body:
        height = BODY_LINE if isinstance(block, str) else CHART_SLOT
        if y - height < BODY_BOTTOM:
            fig = plt.figure(figsize=A4)
            fig.text(0.06, 0.965, "Image analysis report (continued)", fontsize=12, weight="bold")
            fig.text(0.06, 0.948, identity[0], fontsize=8, va="top", family=fonts, parse_math=False)
            pages.append(fig)
            y = CONTINUED_TOP
        if isinstance(block, str):
            fig.text(0.06, y, block, fontsize=7.5, va="top", family=fonts, parse_math=False)  # "$" as is
        else:
            _draw_chart(fig, block, 0.12, y)
        y -= height
    return pages


def _identity(record: ImageRecord, analysis: Analysis, anonymise: bool) -> list[str]:
    """The patient, study and file lines, wrapped to the page (8-pt monospace: about 105 characters). The file's
    own size and spacing: positions and sizes below are in its pixels, however it was read."""
    study = anonymise_study(record.study) if anonymise else record.study
    rows, columns = record.source_size or (record.rows, record.columns)
    spacing = record.file_spacing_mm()
    identity = [
        f"Patient: {study.patient_name or '-'}   ID: {study.patient_id or '-'}   Sex: {study.sex or '-'}"
        + ("" if anonymise else f"   Born: {study.birth_date or '-'}"),
        f"Study date: {study.study_date or '-'}   Study UID: {study.study_instance_uid or '-'}",
        *([] if anonymise else [
            f"Accession: {study.accession_number or '-'}   Institution: {study.institution or '-'}",
            f"Study: {study.study_description or '-'}"]),
        f"File: {'(name withheld)' if anonymise else record.path.name}   {record.modality.label} "
        f"({record.modality_source})   frame {analysis.frame + 1}/{record.frames}   {columns}x{rows}"
        + (f" (read at 1/{record.downsample})" if record.downsample > 1 else "")
        + (f"   spacing {spacing_text(tuple(spacing))}" if spacing else ""),
        "Identifiers anonymised for this report." if anonymise else "Identified report: handle as patient data.",
    ]
    return [part for line in identity for part in _wrap(line, IDENTITY_CHARS, "  ")]


def _draw_picture(fig, record: ImageRecord, analysis: Analysis, anonymise: bool, top: float,
                  heatmap_model: str | None = None) -> None:
    """The picture with its overlays, left of the charts, at its pixels' shape (non-square where the file says so,
    as the models read it); its title names whose heatmap it shows, for which class."""
    ax = fig.add_axes([0.06, PICTURE_BOTTOM, 0.5, top - PICTURE_BOTTOM])
    picture = overlay_picture(record, analysis, heatmap_model)
    ax.imshow(without_screen_text(picture, record, analysis.frame) if anonymise else picture, cmap="gray",
              aspect=record.row_to_column())
    ax.set_axis_off()
    heated = analysis.heatmap_result(heatmap_model)
    ax.set_title("Image with lesion outlines / findings" if heated is None else
                 f"Image with Grad-CAM of {heated.model_id} for '{heated.heatmap_class or heated.label}' / "
                 "lesion outlines / findings", fontsize=9)


def _draw_chart(fig, result: ModelResult, left: float, top: float) -> None:
    """A classifier's probabilities as bars, in the chart slot whose top is ``top``."""
    bars = fig.add_axes([left, top - 0.02 - CHART_BARS, 0.28, CHART_BARS])
    names = list(result.probabilities)
    bars.barh([_printable(n) for n in names], [result.probabilities[n] for n in names], color="#3a7bd5")
    bars.set_xlim(0, 1)
    bars.tick_params(labelsize=7)
    bars.set_title(_printable(f"{result.model_id}: {result.label} ({result.confidence:.1%})"), fontsize=8)


def _body(record: ImageRecord, analysis: Analysis, charts: set[int]) -> list[str | ModelResult]:
    """The report's lines in reading order: the file's warnings, each result (with its chart where its id is in
    ``charts``), the analysis' warnings, the models that did not run."""
    scale = record.downsample
    blocks: list[str | ModelResult] = [line for w in record.warnings for line in _wrap(f"WARNING (the file): {w}")]
    if not analysis.results and not analysis.failures:
        blocks.append("No model ran on this image.")
    for result in analysis.results:
        blocks += _result_lines(result, scale)
        if id(result) in charts:
            blocks.append(result)
    for warning in analysis.warnings:
        blocks += _wrap(f"WARNING: {warning}")
    for failure in analysis.failures:
        blocks += _wrap(f"NOT RUN: {failure.message}")
    return blocks


def _result_lines(result: ModelResult, scale: int) -> list[str]:
    """One result's lines; pixel positions and sizes in the file's pixels (``scale``: ImageRecord.downsample)."""
    lines = _wrap(f"{result.model_id} v{result.version} [{result.task}, {result.device}]")
    if result.scale is not None:  # a microscopy or film result depends on the scale it was read at
        lines += _wrap(f"   scale: {result.scale['text']}")
    if result.task == "classification":
        lines += _wrap("   " + ", ".join(f"{k} {v:.3f}" for k, v in result.probabilities.items()))
        if result.tiles:
            lines.append(f"   {result.tiles} tiles analysed")
        if result.heatmap_class:
            lines += _wrap(f"   Grad-CAM class: {result.heatmap_class}")
    else:
        lines.append(f"   {len(result.lesions)} lesion(s)")
        for i, lesion in enumerate(result.lesions[:LISTED], 1):
            lesion = in_file_pixels(lesion, scale)
            lines += _wrap(f"   #{i}: {lesion.size_text()}, box {lesion.bbox}", indent="       ")
        lines += _more(len(result.lesions))
    if result.findings is not None:
        lines.append(f"   {len(result.findings)} finding(s), highest score first")
        lines += [f"   #{i}: {in_file_pixels(f, scale).line()}" for i, f in enumerate(result.findings[:LISTED], 1)]
        lines += _more(len(result.findings))
    for warning in result.warnings:
        lines += _wrap(f"   WARNING: {warning}")
    return lines


def _more(count: int) -> list[str]:
    return [f"   ... and {count - LISTED} more"] if count > LISTED else []


def write_batch_report(batch_dir: Path, out: Path | None = None, rows_per_page: int = 125) -> Path:
    """Summary page plus a paginated table of ``results.csv`` from a batch output folder."""
    import matplotlib

    plt, PdfPages = _pyplot()
    out = out or batch_dir / "report.pdf"
    summary = json.loads((batch_dir / "summary.json").read_text())
    with open(batch_dir / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with PdfPages(out) as pdf:
        fig = plt.figure(figsize=A4)
        fig.text(0.06, 0.95, "Batch analysis report", fontsize=16, weight="bold")
        text = [f"Folder: {summary['folder']}", f"Files: {summary['files_done']} of {summary['files']} analysed",
                f"Errors: {summary['errors']}   Rows with warnings: {summary['warnings']}",
                *([f"Files analysed earlier and no longer in the folder: {summary['files_missing']} (rows kept)"]
                  if summary.get("files_missing") else []),
                "Paths only: no patient identifiers are printed in batch reports.", ""]
        unusual = summary.get("unusual_by_model", {})
        for model, counts in summary["labels_by_model"].items():
            text.append(f"{model}: " + ", ".join(f"{k or '-'} {v}" for k, v in sorted(counts.items()))
                        + (f"; unusual pictures {unusual[model]}" if unusual.get(model) else ""))
        text += [""] + [textwrap.fill(f"Warning: {w}", 100) for w in summary.get("run_warnings", [])]
        fig.text(0.06, 0.9, "\n".join(text), fontsize=9, va="top", family="monospace")
        _footer(fig)
        pdf.savefig(fig)
        plt.close(fig)
        for start in range(0, len(rows), rows_per_page):
            table = _table_text(rows[start : start + rows_per_page])
            with matplotlib.rc_context(CORE_FONTS if _in_core_fonts(table) else {}):
                fig = plt.figure(figsize=A4)
                fig.text(0.03, 0.96, table, fontsize=5.5, va="top", family="monospace")
                _footer(fig)
                pdf.savefig(fig)
                plt.close(fig)
    return out


# The PDF's built-in Courier and Helvetica (medium is their only weight): nothing to embed, and matplotlib lays out
# their glyphs about 16 times faster than a TrueType font's; a page with a name beyond Windows-1252 keeps DejaVu.
CORE_FONTS = {"pdf.use14corefonts": True, "font.weight": "medium"}


def _in_core_fonts(text: str) -> bool:
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


# The batch table's columns and their widths in characters: one monospace text per page, as a matplotlib table of
# cells took 1.4 s a page (a 2,000-file report 4 minutes).
BATCH_COLUMNS = (("file", 40), ("model", 24), ("label", 12), ("probability", 11), ("lesions", 7),
                 ("lesion_area_mm2", 15), ("findings", 8), ("error", 34))


def _table_text(rows: list[dict]) -> str:
    def line(cells) -> str:
        return "  ".join((_short(str(cell), width) if name == "file" else _head(str(cell), width)).ljust(width)
                         for cell, (name, width) in zip(cells, BATCH_COLUMNS))

    header = line(name for name, _ in BATCH_COLUMNS)
    body = [line(row.get(name) or "" for name, _ in BATCH_COLUMNS) for row in rows]
    return "\n".join([header, "-" * len(header)] + body)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _head(text: str, width: int) -> str:
    """The start of a cell (an error's cause, a model's name), where a file's name keeps its end."""
    return text if len(text) <= width else text[: width - 1] + "…"
