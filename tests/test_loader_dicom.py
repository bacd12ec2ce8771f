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


def test_an_8_bit_voi_lut_of_4096_entries_maps_12_bit_values_without_wrapping(pydicom_file, tmp_path):
    """A legal 12-bit CR/DX VOI LUT ([4096, 0, 8]); pydicom's own lookup wraps it every 256 values."""
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    del ds.WindowCenter, ds.WindowWidth
    ramp = np.array([0, 100, 255, 256, 1000, 2048, 4000, 4095], np.uint16)
    ds.Rows, ds.Columns, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, len(ramp), 12, 11, 0
    ds.PixelData = ramp.tobytes()
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.add_new(0x00283006, "US", [v // 16 for v in range(4096)])  # linear, 0-255
    ds.VOILUTSequence = [item]
    ds.save_as(tmp_path / "cr.dcm")
    shown = load_image(tmp_path / "cr.dcm").display(0)[0].astype(int)
    np.testing.assert_allclose(shown, ramp // 16, atol=1)


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


def test_an_enhanced_objects_frames_take_their_own_rescale_from_the_functional_groups(tmp_path):
    """Enhanced CT/MR state slope and intercept per frame (Pixel Value Transformation macro), not at the top
    level: the values read (HU on CT) must be the rescaled ones, frame by frame."""
    from tests.series_data import write_enhanced_mr

    frames = [np.full((8, 8), 1024, np.uint16), np.full((8, 8), 100, np.uint16)]
    path = write_enhanced_mr(tmp_path / "enh.dcm", frames, [(0, 0, 0), (0, 0, 3)], rescale=[(1, -1024), (2.5, 10)])
    record = load_image(path)
    assert float(record.values(0)[0, 0]) == 0.0
    assert float(record.values(1)[0, 0]) == 260.0


def test_frames_with_different_pixel_spacings_are_not_measured_with_the_first_ones(tmp_path):
    from tests.series_data import write_enhanced_mr

    frames = [np.zeros((8, 8), np.uint16)] * 2
    same = write_enhanced_mr(tmp_path / "same.dcm", frames, [(0, 0, 0), (0, 0, 3)],
                             frame_spacing=[(0.5, 0.5), (0.5, 0.5)])
    assert load_image(same).pixel_spacing_mm == (0.5, 0.5)
    mixed = write_enhanced_mr(tmp_path / "mixed.dcm", frames, [(0, 0, 0), (0, 0, 3)],
                              frame_spacing=[(0.5, 0.5), (1.5, 1.5)])
    record = load_image(mixed)
    assert record.pixel_spacing_mm is None
    assert any("different pixel spacing" in w for w in record.warnings)


def test_mammogram_sizes_are_in_the_breast_plane_when_the_file_states_its_magnification(pydicom_file, tmp_path):
    """ImagerPixelSpacing is at the detector; a 1.8x magnification view measured with it overstates every size by
    80 %. The film detector still reads at the detector's spacing, as its training films were scanned."""
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    del ds.PixelSpacing
    ds.Modality, ds.ImagerPixelSpacing, ds.EstimatedRadiographicMagnificationFactor = "MG", [0.1, 0.1], 1.8
    ds.save_as(tmp_path / "mag.dcm")
    record = load_image(tmp_path / "mag.dcm")
    np.testing.assert_allclose(record.pixel_spacing_mm, (0.1 / 1.8, 0.1 / 1.8))
    assert record.detector_spacing_mm == (0.1, 0.1)
    assert any("breast plane" in w for w in record.warnings)
    ds.PixelSpacing = [0.05, 0.05]  # calibrated to the patient already: nothing to correct
    ds.save_as(tmp_path / "calibrated.dcm")
    assert load_image(tmp_path / "calibrated.dcm").pixel_spacing_mm == (0.05, 0.05)


@pytest.mark.parametrize("bits, stored, shown", [(12, (4095, 2048, 0), (255, 128, 0)), (16, (200, 0, 0), (0, 0, 0))])
def test_16_bit_colour_is_scaled_by_the_depth_the_file_states_not_by_the_frames_maximum(pydicom_file, tmp_path,
                                                                                       bits, stored, shown):
    ds = pydicom.dcmread(pydicom_file("SC_rgb_rle.dcm"))
    ds.decompress()
    pixels = np.empty((4, 4, 3), np.uint16)
    pixels[...] = stored
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 4, 4, 16, bits, bits - 1
    ds.PlanarConfiguration, ds.PhotometricInterpretation = 0, "RGB"
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "rgb16.dcm")
    assert tuple(int(v) for v in load_image(tmp_path / "rgb16.dcm").display(0)[0, 0]) == shown


def _regions(*deltas_cm):
    items = []
    for delta in deltas_cm:
        region = Dataset()
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = region.PhysicalDeltaY = delta
        items.append(region)
    return items


def test_an_ultrasound_dual_view_of_two_depths_is_not_measured_with_the_first_views_scale(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    del ds.PixelSpacing
    ds.Modality = "US"
    ds.SequenceOfUltrasoundRegions = _regions(0.005, 0.005)  # one scale (B-mode and colour box): used
    ds.save_as(tmp_path / "one.dcm")
    assert load_image(tmp_path / "one.dcm").pixel_spacing_mm == (0.05, 0.05)
    ds.SequenceOfUltrasoundRegions = _regions(0.005, 0.01)
    ds.save_as(tmp_path / "dual.dcm")
    record = load_image(tmp_path / "dual.dcm")
    assert record.pixel_spacing_mm is None and any("different scales" in w for w in record.warnings)


def test_a_deflated_data_set_and_one_without_a_meta_group_are_shown(pydicom_file, tmp_path):
    """Both read as headers and pydicom decodes both; they were refused as 'truncated pixel data'."""
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    deflated = pydicom_file("image_dfl.dcm")
    np.testing.assert_array_equal(load_image(deflated).values(0), pydicom.dcmread(deflated).pixel_array)
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    expected = apply_modality_lut(ds.pixel_array, ds)
    del ds.file_meta
    with open(tmp_path / "acr_nema.dcm", "wb") as fh:  # implicit VR little endian, no preamble, no meta group
        out = DicomFileLike(fh)
        out.is_little_endian, out.is_implicit_VR = True, True
        write_dataset(out, ds)
    np.testing.assert_array_equal(load_image(tmp_path / "acr_nema.dcm").values(0), expected)


def test_the_automatic_window_of_a_ct_leaves_out_its_padding(pydicom_file, tmp_path):
    """A fifth of the pixels at PixelPaddingValue (outside the scan circle) pulled the window to -3024 HU."""
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    for keyword in ("WindowCenter", "WindowWidth"):
        ds.pop(keyword, None)
    pixels = np.full((128, 128), 1024 + 40, np.int16)  # soft tissue 40 HU (intercept -1024)
    pixels[:, :32] = 1024 - 1000  # air
    pixels[:, 100:] = 1024 + 1000  # bone
    pixels[:30] = -2000  # padding
    ds.RescaleSlope, ds.RescaleIntercept, ds.PixelRepresentation = 1, -1024, 1
    ds.PixelPaddingValue = -2000
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "padded.dcm")
    record = load_image(tmp_path / "padded.dcm")
    auto = next(p for p in record.window_presets if p.name.startswith("Auto"))
    assert auto.center - auto.width / 2 >= -1001 and auto.center + auto.width / 2 <= 1001
    shown = record.display(0)
    assert 0 < shown[60, 64] < 255, "soft tissue is not shown as white"


def test_a_tiled_whole_slide_image_says_its_frames_are_tiles_analysed_alone(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    frames = np.stack([ds.pixel_array] * 4)
    ds.NumberOfFrames, ds.PixelData = 4, frames.tobytes()
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = 128, 128
    ds.save_as(tmp_path / "wsi.dcm")
    record = load_image(tmp_path / "wsi.dcm")
    assert any("whole-slide image (128 x 128 pixels in 4 tiles of 64 x 64)" in w for w in record.warnings)
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = 64, 64  # one frame is the whole picture: nothing to say
    ds.save_as(tmp_path / "one.dcm")
    assert not any("whole-slide" in w for w in load_image(tmp_path / "one.dcm").warnings)
