"""An analysis as a DICOM Structured Report (Comprehensive 3D SR, TID 1500 Measurement Report), for a PACS or
reporting system to show the models' results beside the image they were made on.

Each classifier is one image-level measurement group: its label as the group's finding type and each class's
probability as a measurement. Each segmenter is an image-level group with the number of lesions it outlined (a
negative result is a result), and each lesion a planar region (its outline as a closed polyline) with its area
and longest diameter where the pixel spacing is known; each mark of a film detector is a circle with its score.
Every group names the model and version that made it (Algorithm Identification, family Artificial
Intelligence); each model's image-level group carries the warnings that qualify its result as TEXT comments.
Class names and scores have no standard codes: they are coded in this program's private scheme (``99MIDA``), each
code value derived from the name it stands for (one value, one meaning), the name itself in
the code meaning; text is written as UTF-8. The referenced image is the one a SEG export references
(``source_dataset``): the file itself, or the analysed frame as a Secondary Capture written beside the report.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from core import __version__
from core.export.anonymise import deidentify_created
from core.errors import DiagnosticError
from core.export.dicom_export import MANUFACTURER, explained, source_dataset
from core.export.files import make_folder_for, write_dataset
from core.imaging.record import ImageRecord
from core.inference.results import Analysis, Lesion, ModelResult

SCHEME = "99MIDA"  # private coding scheme: the models' class names and scores
SR_DESCRIPTION = "Decision support results - not for diagnosis"


def code(kind: str, name: str, meaning: str) -> hd.sr.CodedConcept:
    """The private scheme's concept for ``name`` as a ``kind`` ('P': a class's probability, 'C': a class or kind of
    finding, 'M': a measure of this program): a code value (SH, at most 16 characters) that only this name gives,
    whatever its length or characters, and the meaning in words (LO: 64 characters, no backslash)."""
    digest = hashlib.sha256(f"{kind}:{name}".encode()).hexdigest()[:12].upper()
    return hd.sr.CodedConcept(f"{kind}{digest}", SCHEME, meaning.replace("\\", "/")[:64])


def algorithm(model_id: str, version: str) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=model_id, version=version, family=codes.cid7162.ArtificialIntelligence)


def _algorithm(result: ModelResult) -> hd.sr.AlgorithmIdentification:
    return algorithm(result.model_id, result.version)


def with_comments(group, warnings: list[str]):
    """``group`` with each warning as a TEXT Comment item: a label, volume or range without its caveats (wrong
    modality, untested sequence, a picture read smaller, a slice missing) would read as sound in a PACS."""
    group[0].ContentSequence.extend(
        hd.sr.TextContentItem(codes.DCM.Comment, w, hd.sr.RelationshipTypeValues.CONTAINS) for w in warnings)
    return group


def _classification(result: ModelResult, image: hd.sr.SourceImageForMeasurementGroup
                    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    probabilities = [hd.sr.Measurement(name=code("P", name, f"Probability of {name}"), value=float(p),
                                       unit=codes.UCUM.NoUnits, algorithm_id=_algorithm(result))
                     for name, p in result.probabilities.items()]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{result.model_id} classification"[:64]),
        finding_type=code("C", result.label, result.label) if result.label else None, algorithm_id=_algorithm(result),
        source_images=[image], measurements=probabilities)


def lesion_groups(model_id: str, version: str, lesions: list[Lesion], region_image: hd.sr.SourceImageForRegion,
                  scale: tuple[float, float], name: str = "lesion"
                  ) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """Each lesion as a planar region on ``region_image``: its outline (the picture as analysed, scaled by
    ``scale`` = (rows, columns) of the file per row and column analysed), area and longest diameter."""
    groups = []
    sy, sx = scale
    method = algorithm(model_id, version)
    for n, lesion in enumerate(lesions, start=1):
        outline = np.asarray(lesion.contour, np.float64).reshape(-1, 2) + 0.5  # pixel centres
        if len(outline) < 3:  # a lesion of a pixel or a line of them: its box
            x, y, w, h = lesion.bbox
            outline = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
        outline = outline * (sx, sy)
        measurements = []
        if lesion.area_mm2 is not None:
            measurements.append(hd.sr.Measurement(codes.SCT.Area, float(lesion.area_mm2), codes.UCUM.SquareMillimeter,
                                                  algorithm_id=method))
        if lesion.max_diameter_mm is not None:
            measurements.append(hd.sr.Measurement(codes.SCT.LongAxis, float(lesion.max_diameter_mm),
                                                  codes.UCUM.Millimeter, algorithm_id=method))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{model_id} {name} {n}"[:64]),
            referenced_region=hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POLYLINE,
                                                np.vstack([outline, outline[:1]]).astype(np.float32), region_image),
            finding_type=codes.SCT.Lesion, algorithm_id=method, measurements=measurements))
    return groups


def _marks(result: ModelResult, region_image: hd.sr.SourceImageForRegion, scale: tuple[float, float]
           ) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    groups = []
    sy, sx = scale
    for n, mark in enumerate(result.findings or [], start=1):
        cx, cy = (mark.x + 0.5) * sx, (mark.y + 0.5) * sy
        circle = np.array([[cx, cy], [cx + mark.r * sx, cy]], np.float32)  # centre, then a point on the circle
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{result.model_id} mark {n}"[:64]),
            referenced_region=hd.sr.ImageRegion(hd.sr.GraphicTypeValues.CIRCLE, circle, region_image),
            finding_type=code("C", mark.kind, mark.kind) if mark.kind else codes.SCT.Lesion,
            algorithm_id=_algorithm(result),
            measurements=[hd.sr.Measurement(code("M", "score", "Detector score"), float(mark.score), codes.UCUM.NoUnits,
                                            algorithm_id=_algorithm(result))]))
    return groups


def _segmentation(result: ModelResult, image: hd.sr.SourceImageForMeasurementGroup
                  ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """What the segmenter found on the whole image: how many lesions it outlined (none is a finding too)."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{result.model_id} segmentation"[:64]),
        algorithm_id=_algorithm(result), source_images=[image],
        measurements=[hd.sr.Measurement(code("M", "lesions", "Lesions outlined"), float(len(result.lesions)),
                                        codes.UCUM.NoUnits, algorithm_id=_algorithm(result))])


def measurement_groups(analysis: Analysis, source: Dataset, record: ImageRecord) -> list:
    """The TID 1500 groups of every result of ``analysis``, referencing ``source`` (its frame where it has many)."""
    frames = int(source.get("NumberOfFrames", 1) or 1)
    numbers = [analysis.frame + 1] if frames > 1 else None
    image = hd.sr.SourceImageForMeasurementGroup.from_source_image(source, referenced_frame_numbers=numbers)
    region_image = hd.sr.SourceImageForRegion.from_source_image(source, referenced_frame_numbers=numbers)
    # The analysis is in the picture as loaded; the file referenced may be larger (a film read at a fraction).
    scale = (int(source.Rows) / record.rows, int(source.Columns) / record.columns)
    groups: list = []
    said = record.warnings + analysis.warnings + [f.message for f in analysis.failures]
    for result in analysis.results:
        caveats = list(dict.fromkeys(said + result.warnings))
        if result.probabilities:
            groups.append(with_comments(_classification(result, image), caveats))
        if result.mask is not None:
            groups.append(with_comments(_segmentation(result, image), caveats))
        groups += lesion_groups(result.model_id, result.version, result.lesions, region_image, scale)
        groups += _marks(result, region_image, scale)
    return groups


def _library(evidence: list[Dataset]) -> list[Dataset]:
    """The images the Image Library can describe: highdicom reads a cross-sectional image's geometry from top-level
    attributes (PixelSpacing, ImagePositionPatient, SliceThickness, ...) that an enhanced multi-frame file keeps in
    its functional groups and many converted files lack; those are left out of the library (still referenced)."""
    described = []
    for image in evidence:
        try:
            hd.sr.ImageLibraryEntryDescriptors(image)
        except (AttributeError, KeyError, ValueError, TypeError):
            continue
        described.append(image)
    return described


def write_sr(groups: list, evidence: list[Dataset], model_ids: list[str], out: Path, anonymise: bool) -> Path:
    """A Comprehensive 3D SR of ``groups`` in the study of ``evidence`` (the images referenced, de-identified
    already where ``anonymise``), observed by this program as a device, written to ``out``."""
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[MANUFACTURER, __version__]), name=MANUFACTURER,
            # a TEXT item (Text Value, UT): every model named whole, not cut at a length
            manufacturer_name=MANUFACTURER, model_name=", ".join(model_ids) or None))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=groups,
        referenced_images=_library(evidence) or None)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=hd.UID(), series_number=902, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer=MANUFACTURER, is_complete=True)
    sr.SeriesDescription = SR_DESCRIPTION
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: class names and model ids may be in any script
    if anonymise:
        deidentify_created(sr, str(evidence[0].PatientID))
    return write_dataset(sr, out)


def export_sr(record: ImageRecord, analysis: Analysis, out: Path, anonymise: bool = True) -> Path:
    """``analysis`` of ``record`` as a Comprehensive 3D SR in the source's study, written to ``out``."""
    if not analysis.results:
        raise DiagnosticError("no model result to report: analyse the image first")
    make_folder_for(out)
    with explained("DICOM SR"):
        source = source_dataset(record, analysis.frame, anonymise, out.parent)
        return write_sr(measurement_groups(analysis, source, record), [source], [r.model_id for r in analysis.results],
                        out, anonymise)
