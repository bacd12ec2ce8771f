"""The PDF page of a series analysis: identity, verdicts with their rule, the strip plot and the key slices.

One A4 page per series (matplotlib, like ``core.export.report``): the patient block (anonymised unless asked
otherwise), the series facts, each model's verdict line and warnings, ``VERDICT_RULE`` in full, the strip
plot of ``strip_curves`` and up to ``MAX_KEY_SLICES`` key slices with the segmenter's outline.
"""

from __future__ import annotations

import datetime as dt
import textwrap
import unicodedata
from pathlib import Path

import cv2
import numpy as np

from core import __version__
from core.export.anonymise import anonymise_study, without_screen_text
from core.export.page_fonts import page_fonts, unshown_note
from core.export.report import A4, DISCLAIMER, IDENTITY_CHARS, IDENTITY_LINE
from core.measurements import slice_position_text
from core.series.analysis import VERDICT_RULE, SeriesAnalysis, strip_curves, verdict_text
from core.series.linking import slice_centre
from core.series.stack import SeriesStack

MAX_KEY_SLICES = 4
COLORS = ["#e08a00", "#2a8bd8", "#3aa34a", "#c0399a"]



def key_slices(analysis: SeriesAnalysis) -> list[int]:
    """0-based slices worth showing: for each verdict with a slice range, its first, its peak and its last slice;
    without any range, the slice where a model's strip value peaks. At most ``MAX_KEY_SLICES``, in order."""
    chosen: list[int] = []
    curves = {c.model: c for c in strip_curves(analysis)}
    for v in analysis.results:
        curve = curves.get(v.model)
        if v.first_slice is None or curve is None:
            continue
        span = range(v.first_slice - 1, v.last_slice)
        peak = max(span, key=lambda i: curve.values[i] if curve.values[i] is not None else -1.0)
        chosen += [v.first_slice - 1, peak, v.last_slice - 1]
    if not chosen:
        for curve in curves.values():
            known = [(value, i) for i, value in enumerate(curve.values) if value is not None]
            if known:
                chosen.append(max(known)[1])
    ordered = sorted(dict.fromkeys(chosen))
    if len(ordered) > MAX_KEY_SLICES:  # keep the ends and spread the rest
        picks = np.linspace(0, len(ordered) - 1, MAX_KEY_SLICES).round().astype(int)
        ordered = [ordered[i] for i in picks]
    return ordered


def _wrapped(text: str) -> list[str]:
    """``text`` on at most two lines of the page's width, cut with '…' beyond; a wide (CJK) character takes two
    monospace columns, so a line of them is shortened to fit as well."""
    columns = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    width = max(20, IDENTITY_CHARS * len(text) // max(columns, 1))
    return textwrap.wrap(text, width, subsequent_indent=" " * 8, max_lines=2, placeholder=" …")


def _picture(stack: SeriesStack, analysis: SeriesAnalysis, index: int, anonymise: bool = True) -> np.ndarray:
    """Slice ``index`` with each segmenter's outline; anonymised, blacked out outside the scan area exactly as the
    single-image report and the SEG / SC exports do (``without_screen_text``): an ultrasound cine or a capture
    marked BurnedInAnnotation carries the patient's name in the bars around the scan."""
    record, frame = stack.record(index)
    display = record.display(frame)
    picture = display if display.ndim == 3 else cv2.cvtColor(display, cv2.COLOR_GRAY2RGB)
    for v in analysis.results:
        outcome = v.slices[index] if index < len(v.slices) else None
        if outcome is not None and outcome.mask is not None and outcome.mask.shape == picture.shape[:2]:
            contours, _ = cv2.findContours(outcome.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            picture = cv2.drawContours(picture.copy(), contours, -1, (0, 230, 120), max(1, picture.shape[0] // 200))
    return without_screen_text(picture, record, frame) if anonymise else picture


def write_series_report(out: Path, analyses: list[SeriesAnalysis], anonymise: bool = True) -> Path:
    """One page per series analysis into ``out``; slices are read again from the series' files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(out) as pdf:
        for analysis in analyses:
            fig = plt.figure(figsize=A4)
            try:
                _page(fig, analysis, anonymise)
                pdf.savefig(fig)
            finally:
                plt.close(fig)
    return out


def _page(fig, analysis: SeriesAnalysis, anonymise: bool) -> None:
    series = analysis.series
    stack = SeriesStack(series)
    keys = key_slices(analysis)
    try:
        first_record, _ = stack.record(keys[0] if keys else 0)
        study = anonymise_study(first_record.study) if anonymise else first_record.study
    except Exception:  # noqa: BLE001 - an unreadable file leaves the identity blank, not the page
        study = None
    fig.text(0.06, 0.965, "Series analysis report" + (" (PARTIAL: cancelled)" if analysis.cancelled else ""),
             fontsize=16, weight="bold", color="#b00020" if analysis.cancelled else "black")
    spacing = f"{series.spacing_mm:.2f} mm ({series.spacing_source})" if series.spacing_mm is not None else "unknown"
    description = "(description withheld)" if anonymise else series.description or "-"
    identity = [
        (f"Patient: {study.patient_name or '-'}   ID: {study.patient_id or '-'}" if study else "Patient: -"),
        f"Study UID: {(study.study_instance_uid if study else '') or '-'}",
        # on lines of its own: a long description ran off the page's edge, and the facts after it with it
        *_wrapped(f"Series: {description}"),
        f"{' ' * 8}{series.modality or '-'}   {series.plane or 'orientation unknown'}   {len(series)} slices, "
        f"spacing {spacing}",
        "Identifiers anonymised for this report." if anonymise else "Identified report: handle as patient data.",
    ]
    fonts = page_fonts()
    fig.text(0.06, 0.945, "\n".join(identity), fontsize=8, va="top", family=fonts)
    # A cancel first, then the verdicts, then what qualifies them (the series' geometry, each verdict's warnings):
    # what is cut for room is said
    lines = [f"WARNING: {w}" for w in analysis.warnings]
    lines += [verdict_text(v) for v in analysis.results] or ["No model ran on this series."]
    qualifying = series.warnings + [w for v in analysis.results for w in v.warnings]
    lines += [f"WARNING: {w}" for w in dict.fromkeys(qualifying) if w not in analysis.warnings]
    lines = [series.without_file_names(line) for line in lines] if anonymise else lines
    lines[:0] = unshown_note("".join(identity + lines))
    wrapped = [part for line in lines for part in textwrap.wrap(line, 105)]
    if len(wrapped) > 12:
        wrapped = wrapped[:11] + [f"... {len(wrapped) - 11} more line(s) of verdicts and warnings: see the window "
                                  "or analyze --series --json"]
    top = min(0.875, 0.945 - IDENTITY_LINE * len(identity) - 0.01)  # below the identity, however many lines
    fig.text(0.06, top, "\n".join(wrapped), fontsize=8, va="top", family=fonts)
    curves = strip_curves(analysis)
    ax = fig.add_axes([0.08, 0.56, 0.86, 0.14])
    n = len(series)
    for k, curve in enumerate(curves):
        color = COLORS[k % len(COLORS)]
        xs = [i + 1 for i, value in enumerate(curve.values) if value is not None]
        ys = [value for value in curve.values if value is not None]
        ax.plot(xs, ys, "o-", color=color, markersize=3, linewidth=1.2, label=f"{curve.model}: {curve.title}")
        for first, last in curve.runs:
            ax.axvspan(first - 0.5, last + 0.5, color=color, alpha=0.12)
        if curve.threshold is not None:
            ax.axhline(curve.threshold, color=color, linestyle="--", linewidth=0.8)
    for i in keys:
        ax.axvline(i + 1, color="gray", linewidth=0.6, linestyle=":")
    ax.set_xlim(0.5, n + 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("slice (position order)", fontsize=7)
    ax.tick_params(labelsize=7)
    if curves:
        ax.legend(fontsize=6, loc="upper right")
    width = 0.86 / max(len(keys), 1)
    for j, i in enumerate(keys):
        pic_ax = fig.add_axes([0.07 + j * width, 0.25, width - 0.01, 0.27])
        ref = series.slices[i]
        try:
            pic_ax.imshow(_picture(stack, analysis, i, anonymise))
        except Exception as exc:  # noqa: BLE001 - a damaged slice is named, the page still written
            pic_ax.text(0.5, 0.5, f"cannot read:\n{type(exc).__name__}", ha="center", va="center", fontsize=7)
        pic_ax.set_axis_off()
        where = slice_position_text(slice_centre(ref), ref.orientation)
        pic_ax.set_title(f"slice {i + 1}" + (f", {where}" if where else ""), fontsize=7)
    stack.close()
    fig.text(0.06, 0.235, "\n".join(textwrap.wrap(VERDICT_RULE.replace("\n", " "), 125)), fontsize=5.6, va="top",
             family="monospace", color="#333333")
    fig.text(0.5, 0.02, "\n".join(textwrap.wrap(DISCLAIMER, 110)), ha="center", va="bottom", fontsize=7,
             color="#8a1c1c")
    fig.text(0.98, 0.005, f"Medical Image Diagnostic Assistant {__version__} - {dt.datetime.now():%Y-%m-%d %H:%M}",
             ha="right", va="bottom", fontsize=6, color="gray")
