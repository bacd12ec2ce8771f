"""A DICOM's default picture matches what the same pixels look like elsewhere: an 8-bit greyscale DICOM without a
window is shown at its full stored range as a PNG is (no automatic stretch), and the frames of an enhanced object
are each drawn in the window their own functional groups state."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from core.imaging import load_image
from core.imaging.windowing import apply_window
from core.viewer_state import ViewerState

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def _sonogram(shape=(96, 128), seed=0) -> np.ndarray:
    """Grey levels 30..170 only, as a dim breast sonogram: an automatic 0.5-99.5 % window would stretch them."""
    rng = np.random.default_rng(seed)
    return rng.integers(30, 171, shape).astype(np.uint8)


def _write_8bit_dicom(path, pixels: np.ndarray, photometric="MONOCHROME2", bits_stored=8, **extra):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = US_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, bits_stored, bits_stored - 1, 0
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels, np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# ----- defect 1: 8-bit greyscale without a window is shown as stored, as a PNG is

def test_an_8_bit_dicom_without_a_window_is_shown_as_its_png(tmp_path):
    pixels = _sonogram()
    Image.fromarray(pixels).save(tmp_path / "us.png")
    png = load_image(tmp_path / "us.png")
    dicom = load_image(_write_8bit_dicom(tmp_path / "us.dcm", pixels))
    np.testing.assert_array_equal(png.display(0), pixels)
    np.testing.assert_array_equal(dicom.display(0), png.display(0))


def test_an_identity_rescale_changes_nothing(tmp_path):
    pixels = _sonogram(seed=1)
    record = load_image(_write_8bit_dicom(tmp_path / "us.dcm", pixels, RescaleSlope="1", RescaleIntercept="0"))
    np.testing.assert_array_equal(record.display(0), pixels)


def test_an_8_bit_monochrome1_without_a_window_is_inverted_unstretched(tmp_path):
    pixels = _sonogram(seed=2)
    record = load_image(_write_8bit_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(record.display(0), 255 - pixels)


def test_fewer_than_8_stored_bits_span_the_whole_grey_scale(tmp_path):
    pixels = (_sonogram(seed=3) // 4).astype(np.uint8)  # 6 bits: 7..42 of 0..63
    record = load_image(_write_8bit_dicom(tmp_path / "six.dcm", pixels, bits_stored=6))
    expected = np.rint(pixels.astype(np.float64) * 255.0 / 63.0).astype(np.uint8)
    np.testing.assert_array_equal(record.display(0), expected)


def test_the_readout_says_the_full_range_window_and_auto_stays_a_preset(tmp_path):
    pixels = _sonogram(seed=4)
    Image.fromarray(pixels).save(tmp_path / "us.png")
    record = load_image(_write_8bit_dicom(tmp_path / "us.dcm", pixels))
    shown = record.default_window(0)
    assert (shown.center, shown.width) == (127.5, 255.0)
    np.testing.assert_array_equal(apply_window(record.values(0), shown.center, shown.width, shown.function), pixels)
    names = [p.name for p in record.window_presets]
    assert any(name.startswith("Auto") for name in names) and "Full range" in names
    dicom_state, png_state = ViewerState(), ViewerState()
    dicom_state.open(record)
    png_state.open(load_image(tmp_path / "us.png"))
    assert dicom_state.window_text() == png_state.window_text()
    dicom_state.apply_preset(next(name for name in names if name.startswith("Auto")))
    assert dicom_state.display().astype(int).std() > record.display(0).astype(int).std()  # Auto still stretches


def test_an_8_bit_file_with_a_real_rescale_keeps_its_automatic_window(tmp_path):
    """Not the case fixed here: values in other units than the stored ones still get the automatic window."""
    pixels = _sonogram(seed=5)
    record = load_image(_write_8bit_dicom(tmp_path / "r.dcm", pixels, RescaleSlope="2", RescaleIntercept="-100"))
    assert record.default_window(0).name.startswith("Auto")


# ----- defect 2: each frame of an enhanced object in its own window

WINDOWS = [(500.0, 1000.0), (1500.0, 1000.0), (800.0, 400.0), (2000.0, 3000.0)]


def _enhanced_with_frame_windows(tmp_path, shared_window=None):
    from tests.series_data import write_enhanced_mr

    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 4000, (16, 16)).astype(np.uint16) for _ in WINDOWS]
    path = write_enhanced_mr(tmp_path / "enh.dcm", frames, [(0, 0, 3 * k) for k in range(len(frames))])
    ds = pydicom.dcmread(path)
    if shared_window is None:
        for item, (center, width) in zip(ds.PerFrameFunctionalGroupsSequence, WINDOWS):
            voi = Dataset()
            voi.WindowCenter, voi.WindowWidth = str(center), str(width)
            item.FrameVOILUTSequence = Sequence([voi])
    else:
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = str(shared_window[0]), str(shared_window[1])
        ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence = Sequence([voi])
    ds.save_as(path, enforce_file_format=True)
    return path


def test_each_enhanced_frame_is_drawn_in_its_own_window(tmp_path):
    record = load_image(_enhanced_with_frame_windows(tmp_path))
    for k in reversed(range(len(WINDOWS))):  # frame 3 first: nothing cached from frame 0
        center, width = WINDOWS[k]
        window = record.default_window(k)
        assert (window.center, window.width) == (center, width), k
        np.testing.assert_array_equal(record.display(k), apply_window(record.values(k), center, width), err_msg=k)


def test_the_viewer_readout_follows_the_frame_shown(tmp_path):
    state = ViewerState()
    state.open(load_image(_enhanced_with_frame_windows(tmp_path)))
    state.set_slice(3)
    assert state.window_text() == "C 2000 / W 3000"
    np.testing.assert_array_equal(state.display(), apply_window(state.record.values(3), *WINDOWS[3]))


def test_a_shared_frame_window_applies_to_every_frame(tmp_path):
    record = load_image(_enhanced_with_frame_windows(tmp_path, shared_window=(1000.0, 2000.0)))
    for k in range(len(WINDOWS)):
        assert (record.default_window(k).center, record.default_window(k).width) == (1000.0, 2000.0)
        np.testing.assert_array_equal(record.display(k), apply_window(record.values(k), 1000.0, 2000.0))


@pytest.mark.parametrize("spacing", [[1e200, 1e200], [0.5, -0.5], [0.0, 0.5], [1e-9, 1e-9]])
def test_an_implausible_pixel_spacing_is_no_spacing(tmp_path, spacing):
    """PixelSpacing 1e200 gave infinite areas in results.csv and Infinity (invalid JSON) in the series output."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PixelSpacing = spacing
    ds.save_as(tmp_path / "odd.dcm")
    record = load_image(tmp_path / "odd.dcm")
    assert record.pixel_spacing_mm is None
    stated = min(spacing) > 0  # a zero or negative one is skipped as not stated
    assert any("no plausible pixel size" in w for w in record.warnings) == stated
