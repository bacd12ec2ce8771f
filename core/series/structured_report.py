"""A series analysis as a DICOM Structured Report (TID 1500), referencing the series' own slices.

Each model's series verdict is an image-level group over the slices it read: the label as its finding type, its
probability, and for a segmenter the lesion volume (ml) and the slice range (1-based, in position order, as the
window and series.csv give it), then each warning that qualifies it (the series' own, such as a gap or a file that
could not be read, and the verdict's) as a TEXT comment. Each lesion the segmenter outlined on a slice is a planar
region on that slice's own instance (its frame in a multi-frame file) with its area and longest diameter, so a PACS
can draw the outlines slice by slice. The rules behind the verdicts are ``core.series.analysis.VERDICT_RULE``.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from core.errors import DiagnosticError
from core.export.anonymise import anonymise_dataset
from core.export.dicom_export import explained, with_type2_attributes
from core.export.structured_report import algorithm, code, lesion_groups, with_comments, write_sr
from core.series.analysis import SeriesAnalysis, SeriesVerdict
from core.series.index import Series, SliceRef

MILLILITRE = hd.sr.CodedConcept("ml", "UCUM", "milliliter")  # not among pydicom's named UCUM codes


def _headers(series: Series, anonymise: bool) -> dict[Path, Dataset]:
    """Each slice file's header (de-identified where ``anonymise``): what the report references."""
    headers: dict[Path, Dataset] = {}
    for ref in series.slices:
        if ref.path in headers:
            continue
        try:
            header = pydicom.dcmread(ref.path, stop_before_pixels=True, force=True)  # as the index read it
        except Exception as exc:  # noqa: BLE001 - any unreadable file is said, not raised
            raise DiagnosticError(f"cannot read {ref.path.name} for the report: {exc}") from exc
        if "SOPInstanceUID" not in header or "SOPClassUID" not in header:
            raise DiagnosticError(f"{ref.path.name} is not a DICOM instance: a series report references DICOM slices")
        headers[ref.path] = with_type2_attributes(anonymise_dataset(header) if anonymise else header)
    return headers


def _frames(header: Dataset, ref: SliceRef) -> list[int] | None:
    return [ref.frame + 1] if int(header.get("NumberOfFrames", 1) or 1) > 1 else None


def _verdict_group(verdict: SeriesVerdict, series: Series, headers: dict[Path, Dataset], warnings: list[str]
                   ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    method = algorithm(verdict.model, verdict.version)
    read = [ref for ref, outcome in zip(series.slices, verdict.slices) if outcome is not None and not outcome.error]
    images = [hd.sr.SourceImageForMeasurementGroup.from_source_image(headers[ref.path], _frames(headers[ref.path], ref))
              for ref in read]
    measurements = []
    if verdict.probability is not None and verdict.label:
        measurements.append(hd.sr.Measurement(code("P", verdict.label, f"Probability of {verdict.label}"),
                                              float(verdict.probability), codes.UCUM.NoUnits, algorithm_id=method))
    if verdict.lesion_volume_ml is not None:
        measurements.append(hd.sr.Measurement(codes.SCT.Volume, float(verdict.lesion_volume_ml), MILLILITRE,
                                              algorithm_id=method))
    if verdict.first_slice is not None:
        for name, value in (("first slice", verdict.first_slice), ("last slice", verdict.last_slice)):
            measurements.append(hd.sr.Measurement(code("M", name, f"{name.capitalize()} of the finding (position order)"),
                                                  float(value), codes.UCUM.NoUnits, algorithm_id=method))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{verdict.model} series"[:64]),
        finding_type=code("C", verdict.label, verdict.label) if verdict.label else None, algorithm_id=method,
        source_images=images or None, measurements=measurements or None)
    return with_comments(group, warnings)


def _outline_groups(verdict: SeriesVerdict, series: Series, headers: dict[Path, Dataset]) -> list:
    groups = []
    for k, (ref, outcome) in enumerate(zip(series.slices, verdict.slices), start=1):
        if outcome is None or outcome.error or not outcome.outlines:
            continue
        header = headers[ref.path]
        rows, columns = outcome.mask.shape[:2] if outcome.mask is not None else (header.Rows, header.Columns)
        region = hd.sr.SourceImageForRegion.from_source_image(header, _frames(header, ref))
        groups += lesion_groups(verdict.model, verdict.version, outcome.outlines, region,
                                (int(header.Rows) / rows, int(header.Columns) / columns), name=f"slice {k} lesion")
    return groups


def export_series_sr(analysis: SeriesAnalysis, out: Path, anonymise: bool = True) -> Path:
    """The series verdicts and every slice's lesion outlines as a Comprehensive 3D SR in the series' study."""
    if not analysis.results:
        raise DiagnosticError("no series result to report: analyse the series first")
    if analysis.cancelled:
        raise DiagnosticError("the series analysis was cancelled part-way: its verdicts are partial; analyse it again")
    series = analysis.series
    headers = _headers(series, anonymise)
    with explained("series DICOM SR"):
        groups = []
        for verdict in analysis.results:
            warnings = list(dict.fromkeys(series.warnings + analysis.warnings + verdict.warnings))
            warnings = [series.without_file_names(w) for w in warnings] if anonymise else warnings
            groups.append(_verdict_group(verdict, series, headers, warnings))
            groups += _outline_groups(verdict, series, headers)
        return write_sr(groups, list(headers.values()), [v.model for v in analysis.results], out, anonymise)
