"""A DICOM SEG opened on its own: the image it segments, with its segments as outlines read from the file.

A PACS holds AI results as DICOM SEG beside the images (this program's own exports, or another tool's). Opening
such a file shows the image it references, found among the DICOM files of its folder (or the folder above),
with one segmentation result per segment: the mask, its lesions measured as this program measures its own
(area, longest diameter; calipers on ultrasound), and a warning that says where the outline came from. A SEG of
several images (a volume) is refused with what to open instead: its slices are a series, opened as a folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pydicom

from core.errors import DiagnosticError
from core.imaging import limits, load_image
from core.imaging.loader import read_header
from core.imaging.record import ImageRecord, Modality
from core.inference.lesions import find_lesions
from core.inference.results import Analysis, ModelResult

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
MAX_FILES_SEARCHED = 5000  # a folder holding more is not read header by header to find one image


def _tag(path: str | Path, keyword: str) -> str:
    """One header attribute of ``path`` ('' for anything unreadable, refused or not DICOM)."""
    header = read_header(path, [keyword], limits.MAX_FILE_BYTES)
    return str(header.get(keyword, "")) if header is not None else ""


def is_segmentation(header) -> bool:
    """Whether a header (``read_header``'s, or None) is a DICOM Segmentation's."""
    return header is not None and str(header.get("SOPClassUID", "")) == SEGMENTATION_STORAGE


def _referenced(seg) -> list[str]:
    return [str(instance.ReferencedSOPInstanceUID) for series in seg.get("ReferencedSeriesSequence", [])
            for instance in series.get("ReferencedInstanceSequence", [])]


def _candidates(seg_path: Path):
    """The files of the SEG's folder, then of the folder above and below it (hidden folders skipped), lazily: a
    search stops at MAX_FILES_SEARCHED without listing a whole tree first."""
    yield from sorted(p for p in seg_path.parent.iterdir() if p.is_file())
    for folder, subfolders, names in os.walk(seg_path.parent.parent):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        if Path(folder) != seg_path.parent:
            yield from (Path(folder) / name for name in sorted(names))


def _find(uid: str, seg_path: Path) -> Path | None:
    """The file in the SEG's folder (then the folder above, recursively) whose SOPInstanceUID is ``uid``."""
    for seen, candidate in enumerate(_candidates(seg_path)):
        if seen >= MAX_FILES_SEARCHED:
            return None
        if candidate != seg_path and _tag(candidate, "SOPInstanceUID") == uid:
            return candidate
    return None


def _frame(seg, uid: str, frames: int) -> int:
    """The source frame (0-based) the SEG's frames derive from: the first one named whose segment frame outlines
    something (a SEG may hold every frame of the source, all but one empty, as this program writes it), else the
    first one named, else 0."""
    if frames <= 1:
        return 0
    first, pixels = None, None
    for index, item in enumerate(seg.get("PerFrameFunctionalGroupsSequence", [])):
        for derivation in item.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                if str(source.get("ReferencedSOPInstanceUID", "")) == uid and "ReferencedFrameNumber" in source:
                    number = source.ReferencedFrameNumber
                    number = int(number[0] if isinstance(number, pydicom.multival.MultiValue) else number)
                    frame = min(max(number - 1, 0), frames - 1)
                    first = frame if first is None else first
                    if pixels is None:
                        try:
                            pixels = np.asarray(seg.pixel_array).reshape(-1, int(seg.Rows), int(seg.Columns))
                        except Exception:  # noqa: BLE001 - pixels unreadable here: said when the segments are read
                            return first
                    if index < len(pixels) and pixels[index].any():
                        return frame
    return 0 if first is None else first


def _read_without_pixel_measures(path: Path, refused: AttributeError):
    """A SEG without a frame of reference whose Pixel Measures Sequence lacks what highdicom's reader asks for (a
    calibrated picture's spacing without Slice Thickness, as highdicom itself writes it): read without that sequence,
    which such a SEG's pixels, the referenced image's own, do not need (PS3.3 A.51.5.1). Otherwise ``refused``."""
    import highdicom as hd

    from core.export.dicom_export import drop_pixel_measures  # highdicom: loaded only when a SEG is read

    ds = pydicom.dcmread(path)
    if "FrameOfReferenceUID" in ds or not drop_pixel_measures(ds, incomplete_only=True):
        raise refused
    return hd.seg.Segmentation.from_dataset(ds, copy=False)


def open_segmentation(path: str | Path) -> tuple[ImageRecord, Analysis]:
    """The image a SEG segments and an analysis holding its segments (DiagnosticError saying why not)."""
    import highdicom as hd

    path = Path(path)
    try:
        try:
            seg = hd.seg.segread(path)
        except AttributeError as exc:
            seg = _read_without_pixel_measures(path, exc)
    except Exception as exc:  # noqa: BLE001 - a damaged or unusual SEG is said, not raised
        raise DiagnosticError(f"Cannot read the segmentation {path.name}: {exc}") from exc
    uids = list(dict.fromkeys(_referenced(seg)))
    if len(uids) != 1:
        raise DiagnosticError(f"{path.name} segments {len(uids)} images: open the folder of its series instead "
                              "(File ▸ Open folder); a SEG is shown here over the one image it segments")
    source = _find(uids[0], path)
    if source is None:
        raise DiagnosticError(f"The image {path.name} segments (SOPInstanceUID {uids[0]}) is not in its folder or "
                              "the folder above: put the SEG beside its image")
    record = load_image(source)
    frame = _frame(seg, uids[0], record.frames)
    try:
        if record.frames > 1:
            pixels = seg.get_pixels_by_source_frame(uids[0], source_frame_numbers=[frame + 1],
                                                    assert_missing_frames_are_empty=True)
        else:
            pixels = seg.get_pixels_by_source_instance([uids[0]], assert_missing_frames_are_empty=True)
    except Exception as exc:  # noqa: BLE001
        raise DiagnosticError(f"Cannot read the segments of {path.name}: {exc}") from exc
    ultrasound = record.modality is Modality.US
    spacing, implausible = record.measuring_spacing()  # as the segmenters measure: never a 1-m tumour
    results = []
    for k, number in enumerate(seg.segment_numbers):
        mask = (np.asarray(pixels[0, :, :, k]) > 0).astype(np.uint8)
        if mask.shape != (record.rows, record.columns):  # the image was read at a fraction of its size
            mask = cv2.resize(mask, (record.columns, record.rows), interpolation=cv2.INTER_NEAREST)
        label = str(seg.get_segment_description(number).segment_label or f"segment {number}")
        results.append(ModelResult(f"{label} (DICOM SEG)", str(seg.get("SoftwareVersions", "") or ""),
                                   "segmentation", "file", mask=mask,
                                   lesions=find_lesions(mask, spacing, calipers=ultrasound),
                                   spacing_known=spacing is not None, warnings=[implausible] if implausible else []))
    maker = " ".join(str(seg.get(k, "") or "") for k in ("Manufacturer", "ManufacturerModelName")).strip()
    said = (f"Outlines read from {path.name} (a DICOM SEG{' by ' + maker if maker else ''}, "
            f"{seg.get('ContentDate', '') or 'undated'}), not computed here: Analyse runs this program's models.")
    return record, Analysis(str(record.path), record.modality.value, record.modality_source, frame, results, [said],
                            downsample=record.downsample, file_warnings=list(record.warnings))

