"""A tumour-free brain from outside every training source, as three DICOM series, for the brain bundles.

The brain bundles were fitted on Kaggle slices and LGG FLAIR; every tumour-free slice they saw came from those.
The MNI ICBM152 2009a T1 template (an average of 152 healthy adults' T1 scans, skull-stripped, 1 mm; shipped in
the PyPI wheel of nilearn as ``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``) is
neither: another sequence (T1 without contrast), other scanners, every level from the medulla to the vertex,
and the coronal and sagittal planes. It is written as three MR series (axial every 4 mm, coronal and sagittal
every 6 mm, slices with under 5 % brain left out) whose slices ``main.py batch`` reads as a scanner's:

    pip download nilearn --no-deps -d DIR
    python -m core.training.template_series DIR/nilearn-*.whl ~/.cache/mida/data/mni152-series
    python main.py batch ~/.cache/mida/data/mni152-series --out OUT --no-heatmaps --no-history \\
        --model brain-mri-tumor-4class --model brain-mri-tumor-yesno --model brain-mri-tumor-seg

It is an average, smoother than any one scan and without skull or scalp: a check that the models do not call
normal anatomy a tumour, not a measure of how often they do on patients' scans.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
NIFTI_TYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 512: np.uint16}
PLANES = {"axial": (2, 4), "coronal": (1, 6), "sagittal": (0, 6)}  # volume axis (x, y, z = RAS), step in mm
MIN_BRAIN = 0.05  # share of a slice that must be brain for it to be written


def read_nifti(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(the volume of an uncompressed NIfTI-1 file indexed [x, y, z] and scaled as its header says, its 3 x 4
    voxel-to-RAS matrix ``srow``). A 4-D file with one volume is read as 3-D."""
    dims = struct.unpack("<8h", data[40:56])
    kind = struct.unpack("<h", data[70:72])[0]
    offset = int(struct.unpack("<f", data[108:112])[0])
    slope, intercept = struct.unpack("<2f", data[112:120])
    if slope == 0:  # NIfTI: no scaling at all
        slope, intercept = 1.0, 0.0
    shape = dims[1:1 + dims[0]]
    volume = np.frombuffer(data, NIFTI_TYPES[kind], count=int(np.prod(shape)), offset=offset)
    volume = volume.reshape(shape[::-1]).T
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    srow = np.array(struct.unpack("<12f", data[280:328])).reshape(3, 4)
    return volume.astype(np.float32) * slope + intercept, srow


# The template's grid, which ``as_picture`` hangs: RAS axes at 1 mm, first voxel at (-98, -134, -72) mm.
TEMPLATE_SROW = np.array([[1.0, 0, 0, -98], [0, 1, 0, -134], [0, 0, 1, -72]])


def template_volume(wheel: Path) -> np.ndarray:
    with zipfile.ZipFile(wheel) as z:
        volume, srow = read_nifti(gzip.decompress(z.read(MEMBER)))
    if not np.allclose(srow, TEMPLATE_SROW):
        raise ValueError(f"{MEMBER} is not on the grid this module hangs (srow {srow.tolist()})")
    return volume


def as_picture(volume: np.ndarray, plane: str, k: int) -> tuple[np.ndarray, list[float], list[float]]:
    """(slice k of ``plane`` as radiologists hang it, ImageOrientationPatient, ImagePositionPatient).

    The volume is on ``TEMPLATE_SROW``'s grid (RAS); DICOM patient coordinates are LPS. Axial: anterior up, the
    patient's right on the left; coronal: superior up, right on the left; sagittal: superior up, anterior on the
    left."""
    nx, ny, nz = volume.shape
    x0, y0, z0 = (float(v) for v in TEMPLATE_SROW[:, 3])
    top = z0 + nz - 1
    if plane == "axial":
        return (volume[::-1, ::-1, k].T, [1, 0, 0, 0, 1, 0], [-(x0 + nx - 1), -(y0 + ny - 1), z0 + k])
    if plane == "coronal":
        return (volume[::-1, k, ::-1].T, [1, 0, 0, 0, 0, -1], [-(x0 + nx - 1), -(y0 + k), top])
    return (volume[k, ::-1, ::-1].T, [0, 1, 0, 0, 0, -1], [-(x0 + k), -(y0 + ny - 1), top])


def write_series(volume: np.ndarray, out: Path) -> dict[str, int]:
    """One folder per plane of 12-bit MR slices; the number of slices written per plane."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    scaled = np.clip(volume * 4095.0 / max(float(volume.max()), 1.0), 0, 4095).astype(np.uint16)
    brain = volume > 0.1 * float(volume.max())
    study, frame = generate_uid(), generate_uid()  # one acquisition: every plane in one frame of reference
    written = {}
    for number, (plane, (axis, step)) in enumerate(PLANES.items(), 1):
        folder = out / plane
        folder.mkdir(parents=True, exist_ok=True)
        series, count = generate_uid(), 0
        for k in range(0, volume.shape[axis], step):
            if np.take(brain, k, axis=axis).mean() < MIN_BRAIN:
                continue
            picture, orientation, position = as_picture(scaled, plane, k)
            count += 1
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(str(folder / f"{plane}_{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
            ds.Modality, ds.BodyPartExamined, ds.MRAcquisitionType = "MR", "HEAD", "3D"
            ds.PatientName, ds.PatientID = "MNI152^Template", "MNI152-2009a"
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study, series, number
            ds.FrameOfReferenceUID = frame
            ds.SeriesDescription = f"{plane} MNI ICBM152 2009a T1 template"
            ds.InstanceNumber = count
            ds.ImageOrientationPatient, ds.ImagePositionPatient = orientation, position
            ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
            ds.Rows, ds.Columns = picture.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = np.ascontiguousarray(picture).tobytes()
            ds.save_as(folder / f"{plane}_{k:03d}.dcm", enforce_file_format=True)
        written[plane] = count
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel", type=Path, help="a nilearn wheel (pip download nilearn --no-deps)")
    parser.add_argument("out", type=Path, help="folder for the three series (outside the repository)")
    args = parser.parse_args()
    print(write_series(template_volume(args.wheel), args.out))


if __name__ == "__main__":
    main()
