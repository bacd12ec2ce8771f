"""DICOM pixel pipeline defects found by a hunt against pydicom as the reference (each test failed before its fix):
a VOI LUT function DICOM does not define made every picture of the file raise; a RescaleSlope stated without its
intercept was ignored (a PET's values left as stored); a compressed file cut short was called a non-image object."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from core.errors import ImageLoadError
from core.imaging import load_image
from core.imaging.windowing import apply_window
from tests.series_data import write_slice

RAMP = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)


def _slice(path, **attributes):
    write_slice(path, RAMP, series_uid=generate_uid(), study_uid=generate_uid())
    ds = pydicom.dcmread(path)
    for name, value in attributes.items():
        setattr(ds, name, value)
    ds.save_as(path)
    return path


@pytest.mark.parametrize("function", ["FOO", "linear-ish"])
def test_a_voi_lut_function_dicom_does_not_define_is_drawn_linear_with_a_warning(tmp_path, function):
    record = load_image(_slice(tmp_path / "foo.dcm", WindowCenter=2000, WindowWidth=1000, VOILUTFunction=function))
    assert record.window_presets[0].function == "LINEAR"
    np.testing.assert_array_equal(record.display(0), apply_window(RAMP.astype(np.float32), 2000, 1000, "LINEAR"))
    assert f"its VOI LUT function '{function.upper()}' is not one DICOM defines: its window is drawn LINEAR" in \
        record.warnings


@pytest.mark.parametrize("function", ["SIGMOID", "LINEAR_EXACT", "LINEAR"])
def test_the_functions_dicom_defines_are_kept_without_a_warning(tmp_path, function):
    record = load_image(_slice(tmp_path / "f.dcm", WindowCenter=2000, WindowWidth=1000, VOILUTFunction=function))
    assert record.window_presets[0].function == function
    assert not any("VOI LUT function" in w for w in record.warnings)


@pytest.mark.parametrize("attributes, expected, missing", [
    ({"RescaleSlope": 2.5}, RAMP * 2.5, "RescaleIntercept is taken as 0"),
    ({"RescaleIntercept": -1024}, RAMP - 1024.0, "RescaleSlope is taken as 1"),
])
def test_a_rescale_stated_without_its_partner_is_applied_and_said(tmp_path, attributes, expected, missing):
    record = load_image(_slice(tmp_path / "pt.dcm", **attributes))
    np.testing.assert_allclose(record.values(0), expected)
    assert any(missing in w for w in record.warnings), record.warnings


def test_both_rescale_attributes_are_applied_without_a_warning(tmp_path):
    record = load_image(_slice(tmp_path / "ct.dcm", RescaleSlope=2, RescaleIntercept=-1024))
    np.testing.assert_allclose(record.values(0), RAMP * 2.0 - 1024)
    assert not any("taken as" in w for w in record.warnings)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "examples_ybr_color.dcm"])
def test_a_compressed_file_cut_short_is_said_to_be_cut_short(tmp_path, pydicom_file, name):
    whole = pydicom_file(name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(whole[:-100])  # the last fragment and the sequence delimiter lost
    with pytest.raises(ImageLoadError, match="cut short: its compressed pixel data ends before its last item"):
        load_image(cut)
    start = whole.find(b"\xe0\x7f\x10\x00")  # cut before the pixel data element begins
    cut.write_bytes(whole[:start])
    with pytest.raises(ImageLoadError, match=r"is an image \(.*Image Storage\) without its pixel data: it may be cut"):
        load_image(cut)


def test_a_non_image_object_is_still_called_one(pydicom_file):
    with pytest.raises(ImageLoadError, match="no image"):
        load_image(pydicom_file("rtplan.dcm"))


def test_pixel_aspect_ratio_keeps_an_ultrasound_lesions_proportions_where_no_spacing_is_stated(tmp_path):
    """DICOM requires PixelAspectRatio for non-square pixels without a spacing; nothing read it, so a lesion on
    pixels twice as tall as wide had half its depth-to-width ratio (0.40 for 0.79: 'wider than tall' either way,
    but the sign a sonographer reads flips where it is near 1)."""
    from core.inference.lesions import find_lesions

    path = _slice(tmp_path / "us.dcm", Modality="US", PixelAspectRatio=[2, 1])
    ds = pydicom.dcmread(path)
    del ds.PixelSpacing
    ds.save_as(path)
    record = load_image(path)
    assert record.pixel_spacing_mm is None and record.pixel_aspect == 2.0 and record.row_to_column() == 2.0
    assert record.info()["pixel_aspect_ratio"] == 2.0
    mask = np.zeros((64, 64), np.uint8)
    mask[20:35, 10:50] = 1  # 15 rows of pixels twice as tall as wide: 30 units deep, 40 wide
    (lesion,) = find_lesions(mask, None, calipers=True, aspect=record.row_to_column())
    assert lesion.depth_to_width == pytest.approx(30 / 40)
    assert load_image(_slice(tmp_path / "mr.dcm", PixelAspectRatio=[2, 1])).pixel_aspect is None  # spacing wins


def test_a_data_set_of_implicit_vr_under_an_explicit_transfer_syntax_is_shown_as_pydicom_reads_it(pydicom_file):
    """pydicom's SC_rgb_jpeg.dcm (highdicom 0.1 wrote its elements implicit VR under JPEG baseline): the decoder's
    own walk of the file trusts the transfer syntax and fails; it had been refused as 'truncated'."""
    path = pydicom_file("SC_rgb_jpeg.dcm")
    with pytest.warns(UserWarning):
        reference = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(load_image(path).values(0), reference)


def test_compressed_frames_beyond_number_of_frames_are_said(tmp_path):
    """Three RLE frames under a header of two: the third was dropped silently (native data gets a warning)."""
    from pydicom.uid import RLELossless

    frames = np.stack([np.full((16, 16), 100 * (k + 1), np.uint16) for k in range(3)])
    path = write_slice(tmp_path / "cine.dcm", frames[0], series_uid=generate_uid(), study_uid=generate_uid())
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    ds.compress(RLELossless)  # with a Basic Offset Table of three entries
    ds.save_as(path)
    assert not any("offset table" in w for w in load_image(path).warnings)
    ds.NumberOfFrames = 2
    ds.save_as(path)
    record = load_image(path)
    assert record.frames == 2
    assert "its compressed pixel data holds 3 frames by its offset table, more than the 2 its header declares: " \
           "only those are listed" in record.warnings
