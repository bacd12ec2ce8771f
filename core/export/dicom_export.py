"""Segmentation masks as DICOM SEG and overlays as Secondary Capture, referencing the source study.

Non-DICOM sources (PNG, JPEG, ...) are first wrapped in a Secondary Capture so the SEG has a DICOM
image to reference; that wrapper is written beside the SEG.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from highdicom.spatial import get_image_coordinate_system
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from core import __version__
from core.errors import DiagnosticError
from core.export.anonymise import (anonymise_dataset, carries_screen_text, deidentify_created, pseudonym,
                                   without_screen_text)
from core.export.files import make_folder_for, write_dataset
from core.imaging.record import ImageRecord
from core.inference.results import ModelResult
from core.models.storage import sha256_file

MANUFACTURER = "Medical Image Diagnostic Assistant"


@contextmanager
def explained(what: str):
    """highdicom's refusals (a file without an attribute it needs, a modality it cannot reference) as the reason an
    export failed (DiagnosticError), not a crash."""
    try:
        yield
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise DiagnosticError(f"cannot write the {what} of this image: {type(exc).__name__}: {exc}") from exc


def source_dataset(record: ImageRecord, frame: int, anonymise: bool, out_dir: Path) -> Dataset:
    """The DICOM image an export references.

    A DICOM file is referenced directly, except a multi-frame one without a spatial coordinate
    system (cine ultrasound), which highdicom cannot segment frame by frame: its analysed frame becomes a
    Secondary Capture in the same study. A PNG/JPEG/... becomes a Secondary Capture in a new study.
    """
    original = pydicom.dcmread(record.path, force=True) if record.file_format == "DICOM" else None
    if original is not None and (record.frames == 1 or get_image_coordinate_system(original) is not None):
        ds = anonymise_dataset(original) if anonymise else original
    else:
        ds = _frame_capture(record, frame, original, anonymise)
        # De-identified once, before it is written beside the export: its patient ID is still the source's, so its
        # pseudonym is the one the report and every other export of this image carry.
        ds = anonymise_dataset(ds) if anonymise else ds
        # the source's file name often is the patient's name: an anonymised wrapper is named by its UID
        name = f"source_sc_{ds.SOPInstanceUID}.dcm" if anonymise else f"{record.path.stem}_f{frame}_source_sc.dcm"
        write_dataset(ds, out_dir / name)
    return with_type2_attributes(ds)


def with_type2_attributes(ds: Dataset) -> Dataset:
    """``ds`` with the type 2 attributes highdicom copies from a source present (empty where the file lacks them)."""
    for keyword in ("StudyDate", "StudyTime", "StudyID", "ReferringPhysicianName", "AccessionNumber",
                    "PatientBirthDate", "PatientSex"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def burned_in_annotation(record: ImageRecord, anonymise: bool) -> str | None:
    """Burned In Annotation (PS3.3 C.7.6.1: whether the picture shows enough text to identify the patient) of a
    picture of ``record``: a scanner's screen (or a source saying YES) does, unless anonymised, its text around the
    scan blacked out; another picture says what its source said (None where the source said nothing)."""
    if carries_screen_text(record):
        return "NO" if anonymise else "YES"
    said = [str(v).strip().upper() for _, kw, v in record.metadata if kw == "BurnedInAnnotation"]
    return "NO" if said and said[0] == "NO" else None


def _frame_capture(record: ImageRecord, frame: int, original: Dataset | None, anonymise: bool) -> Dataset:
    """The frame as a Secondary Capture whose UIDs follow from what it holds: a second export of the same frame
    writes the same instance again, so an export made before it (a SEG referencing the capture) keeps a
    capture on disk with the UID it references. The identified and the anonymised capture are two instances (PS3.5
    9: one UID, one instance): whether it is anonymised, and under which pseudonym, is part of what it holds."""
    pixels = record.display(frame)
    pixels = without_screen_text(pixels, record, frame) if anonymise else pixels
    source = str(original.SOPInstanceUID) if original is not None and "SOPInstanceUID" in original else \
        sha256_file(record.path)
    identity = "anonymised " + pseudonym(str(original.get("PatientID", "") or "") if original is not None else "") \
        if anonymise else "identified"
    held = [source, str(frame), hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest(), identity]
    common = dict(pixel_array=pixels, photometric_interpretation="RGB" if pixels.ndim == 3 else "MONOCHROME2",
                  bits_allocated=8, coordinate_system="PATIENT", patient_orientation=("L", "P"),
                  pixel_spacing=record.pixel_spacing_mm,
                  series_instance_uid=generate_uid(entropy_srcs=["series", *held]), series_number=1,
                  sop_instance_uid=generate_uid(entropy_srcs=["instance", *held]), instance_number=1,
                  manufacturer=MANUFACTURER)
    if original is not None:
        ds = hd.sc.SCImage.from_ref_dataset(ref_dataset=original, **common)
    else:  # a picture file: its own study, the same for every capture of it
        ds = hd.sc.SCImage(study_instance_uid=generate_uid(entropy_srcs=["study", source]), patient_id="",
                           patient_name="", **common)
    ds.PatientOrientation = ""  # unknown for a captured picture: left empty rather than guessed
    _say_burned_in(ds, record, anonymise)
    return ds


def _captured_spacing(record: ImageRecord, shape: tuple[int, int]) -> tuple[float, float] | None:
    """The pixel spacing of a capture of ``shape`` (rows, columns) of the picture shown: the picture's own, scaled
    where the capture has another size; without it a PACS draws non-square pixels square (a head squeezed 2:1)."""
    spacing = record.pixel_spacing_mm
    if not spacing:
        return None
    return spacing[0] * record.rows / shape[0], spacing[1] * record.columns / shape[1]


def _say_burned_in(ds: Dataset, record: ImageRecord, anonymise: bool) -> None:
    burned = burned_in_annotation(record, anonymise)
    if burned is not None:
        ds.BurnedInAnnotation = burned
    elif "BurnedInAnnotation" in ds:
        del ds.BurnedInAnnotation


def _at_size(mask: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``mask`` (of a picture loaded at a fraction of the file's size) at ``rows`` x ``columns``, nearest
    neighbour: each file pixel takes the value of the loaded pixel its centre falls in."""
    if mask.shape == (rows, columns):
        return mask
    r = np.minimum(((np.arange(rows) + 0.5) * mask.shape[0] / rows).astype(int), mask.shape[0] - 1)
    c = np.minimum(((np.arange(columns) + 0.5) * mask.shape[1] / columns).astype(int), mask.shape[1] - 1)
    return mask[r[:, None], c[None, :]]


def export_seg(record: ImageRecord, result: ModelResult, out: Path, frame: int = 0, anonymise: bool = True) -> Path:
    """A binary DICOM SEG of ``result.mask`` (frame ``frame`` of the source)."""
    make_folder_for(out)
    with explained("DICOM SEG"):
        return _write_seg(record, result, out, frame, anonymise)


def _write_seg(record: ImageRecord, result: ModelResult, out: Path, frame: int, anonymise: bool) -> Path:
    source = source_dataset(record, frame, anonymise, out.parent)
    frames = int(source.get("NumberOfFrames", 1) or 1)
    # A SEG frame is the referenced image's matrix (PS3.3 A.51.5.1): a mask of a picture loaded downsampled is
    # brought back to the file's rows and columns.
    mask = _at_size(result.mask.astype(bool), int(source.Rows), int(source.Columns))
    if frames > 1:  # a multi-frame source with a coordinate system: the other frames stay empty
        stack = np.zeros((frames,) + mask.shape, bool)
        stack[frame] = mask
        mask = stack
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=result.model_id, version=result.version, family=codes.cid7162.ArtificialIntelligence),
    )
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=result.model_id, software_versions=__version__, device_serial_number="0",
        omit_empty_frames=False,
    )
    if "FrameOfReferenceUID" not in seg:
        drop_pixel_measures(seg)
    if anonymise:
        deidentify_created(seg, str(source.PatientID))
    return write_dataset(seg, out, enforce_file_format=False)


def drop_pixel_measures(seg: Dataset, incomplete_only: bool = False) -> bool:
    """Without a frame of reference a SEG's pixels are the referenced image's (PS3.3 Table A.51-2: Pixel Measures
    only with a patient-relative frame of reference). highdicom copies a calibrated picture's Pixel Spacing into a
    Pixel Measures Sequence without Slice Thickness, which its own reader refuses: it is left out when writing, and
    (``incomplete_only``) when reading such a SEG. Whether any was dropped."""
    dropped = False
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in seg.get(groups, None) or []:
            measures = item.get("PixelMeasuresSequence", None)
            complete = measures is not None and all(k in m for m in measures for k in ("PixelSpacing", "SliceThickness"))
            if measures is not None and not (incomplete_only and complete):
                del item.PixelMeasuresSequence
                dropped = True
    return dropped


def export_overlay_sc(record: ImageRecord, overlay_rgb: np.ndarray, out: Path, frame: int = 0,
                      anonymise: bool = True) -> Path:
    """The picture with overlays as an RGB Secondary Capture in the source's study."""
    make_folder_for(out)
    with explained("DICOM Secondary Capture"):
        return _write_overlay_sc(record, overlay_rgb, out, frame, anonymise)


def _write_overlay_sc(record: ImageRecord, overlay_rgb: np.ndarray, out: Path, frame: int, anonymise: bool) -> Path:
    source = source_dataset(record, frame, anonymise, out.parent)
    overlay_rgb = without_screen_text(overlay_rgb, record, frame) if anonymise else overlay_rgb
    orientation = tuple(source.get("PatientOrientation", []) or ())
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=np.ascontiguousarray(overlay_rgb, np.uint8), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT",
        patient_orientation=orientation if len(orientation) == 2 else ("L", "P"),
        pixel_spacing=_captured_spacing(record, overlay_rgb.shape[:2]),
        series_instance_uid=hd.UID(), series_number=901, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER,
    )
    if len(orientation) != 2:
        sc.PatientOrientation = ""  # the source did not say: left empty rather than guessed
    _say_burned_in(sc, record, anonymise)
    if anonymise:
        deidentify_created(sc, str(source.PatientID))
    sc.SeriesDescription = "Decision support overlay - not for diagnosis"
    return write_dataset(sc, out)
