"""DICOM series written the way a scanner writes them, from real LGG FLAIR slices or from arrays.

Used by the series tests and ``bench/series_index.py``; everything is written into a temporary folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def lgg_slices(patient_dir: Path) -> list[Path]:
    """The FLAIR JPEGs of one LGG patient in slice-number order (``<patient>_<n>_flair.jpg``)."""
    files = list(Path(patient_dir).glob("*_flair.jpg"))
    return sorted(files, key=lambda p: int(re.search(r"_(\d+)_flair", p.name).group(1)))


def read_grey(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def _base(modality: str, sop_class: str, patient_id: str, study_uid: str, series_uid: str, description: str,
          series_number: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.PatientName = "Test^Series"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20010812"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "A1"
    ds.StudyDescription = {"MR": "MR BRAIN", "MG": "MAMMOGRAPHY", "US": "US BREAST"}.get(modality, "")
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.FrameOfReferenceUID = generate_uid()
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def write_slice(path: Path, pixels: np.ndarray, *, position=None, orientation=AXIAL, instance: int | None = 1,
                series_uid: str, study_uid: str, patient_id: str = "LGG-1", description: str = "AX FLAIR",
                modality: str = "MR", spacing=(0.9375, 0.9375), thickness: float | None = 3.0, series_number: int = 1,
                sop_uid: str | None = None) -> Path:
    """One single-frame MR image; ``position``/``orientation``/``instance`` None leaves that attribute out."""
    ds = _base(modality, MR_STORAGE, patient_id, study_uid, series_uid, description, series_number)
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    if spacing is not None:
        ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    if thickness is not None:
        ds.SliceThickness = str(thickness)
    ds.Rows, ds.Columns = pixels.shape
    ds.WindowCenter, ds.WindowWidth = 128, 256
    ds.PixelData = np.ascontiguousarray(pixels, np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def slice_positions(n: int, spacing: float, orientation=AXIAL, origin=(-120.0, -120.0, -30.0)) -> list[tuple]:
    """Top-left corners of ``n`` contiguous slices stepping ``spacing`` mm along the slice normal."""
    normal = np.cross(orientation[:3], orientation[3:])
    return [tuple(float(v) for v in np.asarray(origin) + k * spacing * normal) for k in range(n)]


def write_series(folder: Path, images: list[np.ndarray], *, spacing: float = 3.0, orientation=AXIAL,
                 instances: list[int | None] | None = None, names: list[str] | None = None,
                 positions: list | None = None, series_uid: str | None = None, study_uid: str | None = None,
                 pixel_spacing=(0.9375, 0.9375), **fields) -> list[Path]:
    """A series of single-frame files, slice k at ``positions[k]`` (default: contiguous along the normal)."""
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    positions = positions if positions is not None else slice_positions(len(images), spacing, orientation)
    instances = instances if instances is not None else list(range(1, len(images) + 1))
    names = names or [f"IM{k:04d}.dcm" for k in range(len(images))]
    thickness = fields.pop("thickness", spacing)
    return [write_slice(folder / name, img, position=pos, orientation=orientation, instance=inst,
                        series_uid=series_uid, study_uid=study_uid, thickness=thickness, spacing=pixel_spacing,
                        **fields)
            for img, pos, inst, name in zip(images, positions, instances, names)]


def write_lgg_series(folder: Path, patient_dir: Path, count: int | None = None, **options) -> list[Path]:
    """An LGG patient's FLAIR slices as an MR series (slice k of the JPEGs at position k)."""
    images = [read_grey(p).astype(np.uint16) for p in lgg_slices(patient_dir)[:count]]
    return write_series(folder, images, **options)


def write_enhanced_mr(path: Path, frames: list[np.ndarray], positions: list[tuple], orientation=AXIAL,
                      spacing=(0.9375, 0.9375), thickness: float = 3.0, rescale: list[tuple] | None = None,
                      frame_spacing: list[tuple] | None = None) -> Path:
    """An Enhanced MR multi-frame file with per-frame plane positions, as scanners write 3D acquisitions;
    ``rescale``: each frame's (slope, intercept) in its Pixel Value Transformation macro (none at the top level);
    ``frame_spacing``: each frame's own pixel spacing instead of a shared one."""
    ds = _base("MR", ENHANCED_MR_STORAGE, "LGG-1", generate_uid(), generate_uid(), "3D FLAIR", 7)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames[0].shape
    measures = Dataset()
    measures.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    measures.SliceThickness = str(thickness)
    plane = Dataset()
    plane.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    shared = Dataset()
    if frame_spacing is None:
        shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k, pos in enumerate(positions):
        item, where = Dataset(), Dataset()
        where.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        item.PlanePositionSequence = Sequence([where])
        if rescale is not None:
            transform = Dataset()
            transform.RescaleSlope, transform.RescaleIntercept = str(rescale[k][0]), str(rescale[k][1])
            transform.RescaleType = "US"
            item.PixelValueTransformationSequence = Sequence([transform])
        if frame_spacing is not None:
            own = Dataset()
            own.PixelSpacing = [str(frame_spacing[k][0]), str(frame_spacing[k][1])]
            own.SliceThickness = str(thickness)
            item.PixelMeasuresSequence = Sequence([own])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.ascontiguousarray(np.stack(frames), np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp_images(n: int, size: int = 32) -> list[np.ndarray]:
    """``n`` small slices told apart by value: slice k holds 100 * k + column index (uint16)."""
    return [(100 * k + np.arange(size, dtype=np.uint16))[None, :].repeat(size, 0) for k in range(n)]


PLANTED_LESION_SLICES = [3, 4, 5, 6]  # 0-based slices of write_planted_series carrying the disc
PLANTED_PIXEL_MM = 0.5
PLANTED_SPACING = 4.0


def write_planted_series(folder: Path) -> Path:
    """Ten 64x64 MR slices of noise; slices 3-6 carry a bright disc of known area (files named out of order)."""
    import cv2

    from tests.tiny_models import planted_images

    noise, _, _ = planted_images(20, seed=11)
    images = []
    for k in range(10):
        img = noise[2 * k].copy()  # even indices: no disc
        if k in PLANTED_LESION_SLICES:
            cv2.circle(img, (32, 30), 7, 230, -1)
        images.append(img.astype(np.uint16))
    names = [f"IM{(7 * k) % 10:02d}.dcm" for k in range(10)]
    write_series(folder, images, spacing=PLANTED_SPACING, names=names,
                 pixel_spacing=(PLANTED_PIXEL_MM, PLANTED_PIXEL_MM))
    return folder


def breast(chest_wall: str, rows: int = 60, columns: int = 40) -> np.ndarray:
    """A half-disc of 'tissue' attached to the ``chest_wall`` edge ('left' or 'right'), dark background."""
    yy, xx = np.mgrid[:rows, :columns]
    x0 = 0 if chest_wall == "left" else columns - 1
    inside = ((xx - x0) / (0.8 * columns)) ** 2 + ((yy - rows / 2) / (0.45 * rows)) ** 2 <= 1
    return np.where(inside, 3000, 40).astype(np.uint16)


def write_mammo(path, pixels, *, study_uid, laterality=None, view=None, patient_id="MG-1", orientation=None,
                description="screening"):
    """One MG image with (optionally) ImageLaterality, ViewPosition and PatientOrientation, no plane geometry."""
    write_slice(path, pixels, position=None, orientation=None, instance=1, series_uid=generate_uid(),
                study_uid=study_uid, patient_id=patient_id, description=description, modality="MG", thickness=None)
    import pydicom

    ds = pydicom.dcmread(path)
    if laterality:
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
    if orientation:
        ds.PatientOrientation = orientation
    ds.save_as(path)
    return path


def bare_mr_dicom(rows: int, columns: int, frames: int = 1, syntax=ExplicitVRLittleEndian, bits: int = 8) -> Dataset:
    """A grey MR dataset with only what decoding needs (no patient, study or geometry); PixelData is the caller's."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "MR", rows, columns, 1
    ds.PhotometricInterpretation, ds.PixelRepresentation = "MONOCHROME2", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds
