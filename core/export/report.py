"""PDF reports (matplotlib): one image with its findings, or a whole batch run."""

from __future__ import annotations

import csv
import datetime as dt
import json
import textwrap
from pathlib import Path

import cv2
import numpy as np

from core import __version__
from core.export.anonymise import anonymise_study, without_screen_text
from core.imaging.record import ImageRecord
from core.inference.overlays import blend_heatmap
from core.inference.results import FINDING_RGB, Analysis, Finding

DISCLAIMER = ("Decision support only - not a medical device. Findings are model outputs that must be confirmed "
              "by a qualified reader; they are not a diagnosis.")
A4 = (8.27, 11.69)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    return plt, PdfPages


def overlay_picture(record: ImageRecord, analysis: Analysis) -> np.ndarray:
    """The image with the first heatmap blended in, lesion outlines and findings drawn (what the report shows)."""
    display = record.display(analysis.frame)
    picture = display if display.ndim == 3 else cv2.cvtColor(display, cv2.COLOR_GRAY2RGB)
    heat = next((r.heatmap for r in analysis.results if r.heatmap is not None), None)
    if heat is not None:
        picture = blend_heatmap(picture, heat, 0.4)
    for result in analysis.results:
        if result.mask is not None:
            contours, _ = cv2.findContours(result.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            picture = cv2.drawContours(picture.copy(), contours, -1, (0, 230, 120), max(1, picture.shape[0] // 250))
    for result in analysis.results:
        if result.findings:
            picture = draw_findings(picture, result.findings)
    return picture


def draw_findings(picture: np.ndarray, findings: list[Finding]) -> np.ndarray:
    """A copy of ``picture`` with each finding's circle and its label on a dark box beside the circle's upper
    right (as the viewer draws them), strokes and text scaled to the picture so they read alike on a small
    scan and a full mammogram (the report's picture, the exam window's hung views)."""
    picture = np.ascontiguousarray(picture).copy()  # the display of a colour image is the record's own array
    height = picture.shape[0]
    thickness, scale = max(1, height // 250), max(0.35, height / 900)
    pad = 2 * thickness
    for finding in findings:
        cv2.circle(picture, (round(finding.x), round(finding.y)), max(1, round(finding.r)), FINDING_RGB, thickness,
                   cv2.LINE_AA)
        (text_w, text_h), baseline = cv2.getTextSize(finding.label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        left, top = round(finding.x + finding.r) + 2 * pad, round(finding.y - finding.r)
        cv2.rectangle(picture, (left, top), (left + text_w + 2 * pad, top + text_h + baseline + 2 * pad), (0, 0, 0), -1)
        cv2.putText(picture, finding.label, (left + pad, top + pad + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    FINDING_RGB, thickness, cv2.LINE_AA)
    return picture


def _footer(fig) -> None:
    fig.text(0.5, 0.02, "\n".join(textwrap.wrap(DISCLAIMER, 110)), ha="center", va="bottom", fontsize=7, color="#8a1c1c")
    fig.text(0.98, 0.005, f"Medical Image Diagnostic Assistant {__version__} - {dt.datetime.now():%Y-%m-%d %H:%M}",
             ha="right", va="bottom", fontsize=6, color="gray")


def spacing_text(spacing_mm: tuple[float, float]) -> str:
    """A pixel spacing (row, column), as DICOM PixelSpacing orders it: one value for square pixels, both (named)
    otherwise, since a reader checking a measurement on the page needs the spacing along each axis."""
    row, column = (f"{v:.3f}" for v in spacing_mm)
    return f"{row} mm" if row == column else f"{row} x {column} mm (row x column)"


IDENTITY_CHARS = 105  # 8-pt monospace characters across the page's text width
IDENTITY_LINE = 0.0115  # one 8-pt line as a fraction of the A4 page's height


def write_image_report(out: Path, record: ImageRecord, analysis: Analysis, anonymise: bool = True) -> Path:
    plt, PdfPages = _pyplot()
    study = anonymise_study(record.study) if anonymise else record.study
    out.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(out) as pdf:
        fig = plt.figure(figsize=A4)
        fig.text(0.06, 0.965, "Image analysis report", fontsize=16, weight="bold")
        identity = [
            f"Patient: {study.patient_name or '-'}   ID: {study.patient_id or '-'}   Sex: {study.sex or '-'}"
            + ("" if anonymise else f"   Born: {study.birth_date or '-'}"),
            f"Study date: {study.study_date or '-'}   Study UID: {study.study_instance_uid or '-'}",
            *([] if anonymise else [
                f"Accession: {study.accession_number or '-'}   Institution: {study.institution or '-'}",
                f"Study: {study.study_description or '-'}"]),
            f"File: {'(name withheld)' if anonymise else record.path.name}   {record.modality.label} ({record.modality_source})   frame {analysis.frame + 1}/{record.frames}"
            f"   {record.columns}x{record.rows}"
            + (f"   spacing {spacing_text(record.pixel_spacing_mm)}" if record.pixel_spacing_mm else ""),
            "Identifiers anonymised for this report." if anonymise else "Identified report: handle as patient data.",
        ]
        # Wrapped to the page (8-pt monospace: about 105 characters); the picture starts below however many lines.
        identity = [part for line in identity for part in textwrap.wrap(line, IDENTITY_CHARS, subsequent_indent="  ")]
        fig.text(0.06, 0.945, "\n".join(identity), fontsize=8, va="top", family="monospace")
        top = min(0.87, 0.945 - IDENTITY_LINE * len(identity) - 0.025)
        ax = fig.add_axes([0.06, 0.47, 0.5, top - 0.47])
        picture = overlay_picture(record, analysis)
        ax.imshow(without_screen_text(picture, record, analysis.frame) if anonymise else picture, cmap="gray")
        ax.set_axis_off()
        ax.set_title("Image with Grad-CAM / lesion outlines / findings", fontsize=9)
        y = top
        for result in analysis.results:
            if result.task == "classification":
                bars = fig.add_axes([0.66, y - 0.11, 0.28, 0.09])
                names = list(result.probabilities)
                bars.barh(names, [result.probabilities[n] for n in names], color="#3a7bd5")
                bars.set_xlim(0, 1)
                bars.tick_params(labelsize=7)
                bars.set_title(f"{result.model_id}: {result.label} ({result.confidence:.1%})", fontsize=8)
                y -= 0.16
        lines = []
        for result in analysis.results:
            lines.append(f"{result.model_id} v{result.version} [{result.task}, {result.device}]")
            if result.scale is not None:  # a microscopy or film result depends on the scale it was read at
                lines.extend(textwrap.wrap(f"   scale: {result.scale['text']}", 100, subsequent_indent="     "))
            if result.task == "classification":
                lines.append("   " + ", ".join(f"{k} {v:.3f}" for k, v in result.probabilities.items()))
                if result.heatmap_class:
                    lines.append(f"   Grad-CAM class: {result.heatmap_class}")
            else:
                lines.append(f"   {len(result.lesions)} lesion(s)")
                for i, lesion in enumerate(result.lesions[:8], 1):
                    lines.extend(textwrap.wrap(f"   #{i}: {lesion.size_text()}, box {lesion.bbox}", 100,
                                               subsequent_indent="       "))
            if result.findings is not None:
                lines.append(f"   {len(result.findings)} finding(s), highest score first")
                for i, finding in enumerate(result.findings[:8], 1):
                    lines.append(f"   #{i}: {finding.line()}")
                if len(result.findings) > 8:
                    lines.append(f"   ... and {len(result.findings) - 8} more")
            for warning in result.warnings:
                lines.extend(textwrap.wrap(f"   WARNING: {warning}", 100))
        for warning in analysis.warnings:
            lines.extend(textwrap.wrap(f"WARNING: {warning}", 100))
        fig.text(0.06, 0.44, "\n".join(lines) or "No model ran on this image.", fontsize=7.5, va="top", family="monospace")
        _footer(fig)
        pdf.savefig(fig)
        plt.close(fig)
    return out


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
        for model, counts in summary["labels_by_model"].items():
            text.append(f"{model}: " + ", ".join(f"{k or '-'} {v}" for k, v in sorted(counts.items())))
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
