"""DICOM loading on real files: transfer syntaxes, LUTs, colour, multi-frame, spacing, modality."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut

from core.imaging import Modality, load_image


@pytest.mark.parametrize(
    "twin",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm",
     "MR_small_implicit.dcm", "MR_small_expb.dcm"],
)
def test_lossless_syntaxes_equal_uncompressed_twin(pydicom_file, twin):
    reference = load_image(pydicom_file("MR_small.dcm"))
    other = load_image(pydicom_file(twin))
    np.testing.assert_array_equal(other.values(0), reference.values(0))
    np.testing.assert_array_equal(other.display(0), reference.display(0))


def test_jpeg_baseline_close_to_lossless_twin(pydicom_file):
    lossy = load_image(pydicom_file("SC_rgb_jpeg_gdcm.dcm")).display(0).astype(int)
    lossless = load_image(pydicom_file("SC_rgb_rle.dcm")).display(0).astype(int)
    assert lossy.shape == lossless.shape == (100, 100, 3)
    assert np.abs(lossy - lossless).mean() < 3.0


def test_jpeg_extended_12bit_and_jpeg2000_decode_to_pydicom_values(pydicom_file):
    for name in ("JPGExtended.dcm", "JPEG2000.dcm"):
        ds = pydicom.dcmread(pydicom_file(name))
        record = load_image(pydicom_file(name))
        assert record.values(0).shape == (1024, 256)
        np.testing.assert_allclose(record.values(0), apply_modality_lut(ds.pixel_array, ds))


def test_jpeg_ls_near_lossless_decodes(pydicom_file):
    record = load_image(pydicom_file("JPEGLSNearLossless_16.dcm"))
    assert record.bits_stored == 16 and record.values(0).std() > 0


def test_modality_lut_applied(pydicom_file):
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    record = load_image(path)
    assert "RescaleIntercept" in ds
    np.testing.assert_allclose(record.values(0), ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_monochrome1_is_inverted(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "mono1.dcm"
    ds.save_as(path)
    normal = load_image(pydicom_file("MR_small.dcm")).display(0).astype(int)
    inverted = load_image(path).display(0).astype(int)
    np.testing.assert_array_equal(inverted, 255 - normal)


def test_window_from_dicom_is_default(pydicom_file):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    record = load_image(pydicom_file("MR_small.dcm"))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    assert record.window_presets[0].center == center and record.window_presets[0].width == width
    values = record.values(0)
    shown = record.display(0)
    assert shown[values <= center - 0.5 - (width - 1) / 2].max(initial=0) == 0
    assert shown[values > center - 0.5 + (width - 1) / 2].min(initial=255) == 255


def test_voi_lut_sequence_used(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    del ds.WindowCenter, ds.WindowWidth
    top = int(ds.pixel_array.max())
    item = Dataset()
    item.LUTDescriptor = [top + 1, 0, 16]
    item.add_new(0x00283006, "US", [top - v for v in range(top + 1)])  # inverting LUT: a negative image
    ds.VOILUTSequence = [item]
    path = tmp_path / "voilut.dcm"
    ds.save_as(path)
    record = load_image(path)
    shown = record.display(0).astype(int)
    expected = np.rint((top - record.values(0)) * 255.0 / top)  # LUT output scaled by the LUT's range
    assert np.abs(shown - expected).max() <= 1


def test_palette_colour_converted(pydicom_file):
    path = pydicom_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    expected = apply_color_lut(ds.pixel_array, ds)
    shown = load_image(path).display(0)
    assert shown.shape == expected.shape and shown.dtype == np.uint8
    np.testing.assert_array_equal(shown, (expected >> 8).astype(np.uint8))


def test_ybr_multiframe_frames_match_pydicom(pydicom_file):
    path = pydicom_file("examples_ybr_color.dcm")
    record = load_image(path)
    reference = pydicom.dcmread(path).pixel_array  # pydicom converts YBR to RGB by default
    assert record.frames == 30 and record.is_color
    np.testing.assert_array_equal(record.values(17), reference[17])
    assert record.modality == Modality.US


def test_real_ultrasound_dicoms(deid_file):
    grey = load_image(deid_file("ultrasounds/GREYSCALE_IMAGE.dcm"))
    assert grey.modality == Modality.US and not grey.is_color
    assert grey.pixel_spacing_mm is not None and 0.01 < grey.pixel_spacing_mm[0] < 1.0  # from US regions (cm)
    rgb = load_image(deid_file("ultrasounds/RGB_IMAGE.dcm"))
    assert rgb.is_color and rgb.display(0).shape == (rgb.rows, rgb.columns, 3)
    cine = load_image(deid_file("ultrasounds/ultrasound-multiframe.dcm"))
    assert cine.frames == 30
    assert not np.array_equal(cine.values(0), cine.values(29))


def test_rle_16bit_colour_scaled_to_8bit(pydicom_file):
    eight = load_image(pydicom_file("SC_rgb_rle.dcm")).display(0).astype(int)
    sixteen = load_image(pydicom_file("SC_rgb_rle_16bit.dcm")).display(0).astype(int)
    assert np.abs(eight - sixteen).max() <= 1


def test_identifiers_kept_apart(pydicom_file):
    record = load_image(pydicom_file("MR_small.dcm"))
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    assert record.study.patient_name == str(ds.PatientName)
    assert "patient" not in " ".join(record.info()).lower()


_OPENS: dict[str, int] = {}


def _count_opens(event: str, args: tuple) -> None:
    if event == "open" and args and isinstance(args[0], str) and args[0] in _OPENS:
        _OPENS[args[0]] += 1


def test_opening_a_file_in_the_window_reads_it_once_for_what_it_is_and_once_to_load(pydicom_file):
    """Is it a DICOMDIR, a SEG or an image: one header read off the GUI thread, then the loader's one descriptor
    (format, deflate check, header) and the first frame. Before, the file was opened six times."""
    import sys

    from core.series.index import StudyIndex
    from core.series.opening import read_for_viewer

    sys.addaudithook(_count_opens)  # for the rest of the run; counts only the paths listed in _OPENS
    image, dicomdir = str(pydicom_file("CT_small.dcm")), str(pydicom_file("dicomdirtests/DICOMDIR"))
    _OPENS.update({image: 0, dicomdir: 0})
    record, imported = read_for_viewer(image)
    assert record.rows == 128 and imported is None
    assert _OPENS[image] <= 2 * 3, _OPENS  # "open" is audited by both open() and os.open() inside open_regular
    assert isinstance(read_for_viewer(dicomdir), StudyIndex)
    _OPENS.clear()
