"""The template brain as DICOM series (core.training.template_series): NIfTI read right, slices hung as
radiologists hang them, and the product reading the files as three series in their planes."""

from __future__ import annotations

import gzip
import struct
import zipfile

import numpy as np
import pytest

from core.series.index import index_folder
from core.training.template_series import (MEMBER, TEMPLATE_SROW, as_picture, read_nifti, template_volume,
                                           write_series)


def _nifti(volume: np.ndarray, srow: np.ndarray = TEMPLATE_SROW, slope: float = 0.0) -> bytes:
    """A minimal NIfTI-1 file of an int16 [x, y, z] volume (data at byte 352)."""
    header = bytearray(352)
    header[0:4] = struct.pack("<i", 348)
    header[40:56] = struct.pack("<8h", volume.ndim, *volume.shape, *([1] * (7 - volume.ndim)))
    header[70:72] = struct.pack("<h", 4)
    header[108:112] = struct.pack("<f", 352.0)
    header[112:120] = struct.pack("<2f", slope, 5.0)  # slope 0: no scaling, the intercept ignored too
    header[280:328] = struct.pack("<12f", *np.ravel(srow))
    header[344:348] = b"n+1\0"
    return bytes(header) + volume.astype("<i2").T.tobytes()


def _head(shape=(40, 48, 36)) -> np.ndarray:
    """An ellipsoid 'brain' with a bright marker in its right, anterior, upper part."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    volume = np.where(x ** 2 + y ** 2 + z ** 2 < 0.8, 100, 0).astype(np.int16)
    volume[26:30, 32:36, 22:26] = 250  # x > centre: right; y > centre: anterior; z > centre: superior
    return volume


def test_nifti_is_read_as_written(tmp_path):
    volume = _head()
    read, srow = read_nifti(_nifti(volume))
    assert np.array_equal(read, volume) and np.allclose(srow, TEMPLATE_SROW)
    assert np.array_equal(read_nifti(_nifti(volume[..., None]))[0], volume)  # one volume of a 4-D file
    assert np.array_equal(read_nifti(_nifti(volume, slope=2.0))[0], volume * 2 + 5)
    wheel = tmp_path / "nilearn-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(MEMBER, gzip.compress(_nifti(volume)))
    assert np.array_equal(template_volume(wheel), volume)
    shifted = TEMPLATE_SROW.copy()
    shifted[0, 3] = -90.0
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(MEMBER, gzip.compress(_nifti(volume, shifted)))
    with pytest.raises(ValueError, match="not on the grid"):
        template_volume(wheel)


@pytest.mark.parametrize("plane, k", [("axial", 24), ("coronal", 34), ("sagittal", 28)])
def test_each_pixel_lies_where_its_dicom_geometry_says(plane, k):
    """Pixel (r, c) at ImagePositionPatient + c x the row direction + r x the column direction (LPS, 1 mm pixels)
    is the voxel whose RAS position, sign-flipped in x and y, is that point."""
    volume = np.random.default_rng(0).normal(size=(40, 48, 36)).astype(np.float32)
    picture, orientation, position = as_picture(volume, plane, k)
    along_row, along_column = np.array(orientation[:3]), np.array(orientation[3:])
    rng = np.random.default_rng(1)
    for r, c in zip(rng.integers(0, picture.shape[0], 20), rng.integers(0, picture.shape[1], 20)):
        lps = np.array(position) + c * along_row + r * along_column
        ras = lps * [-1, -1, 1]
        voxel = np.round(ras - TEMPLATE_SROW[:, 3]).astype(int)
        assert picture[r, c] == volume[tuple(voxel)]


def test_slices_hang_with_anterior_or_superior_up_and_the_right_side_on_the_left():
    volume = _head().astype(np.float32)
    axial, _, _ = as_picture(volume, "axial", 24)
    rows, cols = np.nonzero(axial == 250)
    assert rows.max() < axial.shape[0] / 2 and cols.max() < axial.shape[1] / 2  # anterior up, right on the left
    coronal, _, _ = as_picture(volume, "coronal", 34)
    rows, cols = np.nonzero(coronal == 250)
    assert rows.max() < coronal.shape[0] / 2 and cols.max() < coronal.shape[1] / 2  # superior up, right on the left
    sagittal, _, _ = as_picture(volume, "sagittal", 28)
    rows, cols = np.nonzero(sagittal == 250)
    assert rows.max() < sagittal.shape[0] / 2 and cols.max() < sagittal.shape[1] / 2  # superior up, anterior left


def test_the_product_reads_three_series_in_their_planes(tmp_path):
    written = write_series(_head().astype(np.float32), tmp_path)
    assert set(written) == {"axial", "coronal", "sagittal"} and all(written.values())
    series = [s for p in index_folder(tmp_path).patients for st in p.studies for s in st.series]
    assert sorted((s.plane, len(s.slices)) for s in series) == sorted(written.items())
