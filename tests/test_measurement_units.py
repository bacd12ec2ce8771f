"""Measurements read in units that fit the image: micrometres on microscopy, lesion diameters edge to edge like the
calipers, the window readout of the frame on screen, and a slice's position named by its patient axis."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from core.imaging.loader import load_image
from core.imaging.record import Modality
from core.imaging.windowing import apply_window, auto_preset
from core.viewer_state import ViewerState


def _mr_small(pydicom_file) -> Dataset:
    return pydicom.dcmread(pydicom_file("MR_small.dcm"))


# ----- 1. microscopy scale

def test_microscopy_rulers_and_regions_read_in_micrometres_and_export_nonzero_mm():
    from core.measurements import Ruler, region_within

    spacing = (0.0005, 0.0005)  # slide microscopy: 0.5 um per pixel
    ruler = Ruler(0, 10, 60, 10)  # 60 px = 30 um
    assert ruler.text(spacing) == "30.0 µm"
    assert ruler.to_dict(spacing)["length_mm"] == pytest.approx(0.03, rel=1e-3)
    region = region_within(10, 10, 50, 50, np.ones((64, 64), np.float32))  # pi * 20 * 20 px * 0.25 um^2 = 314 um^2
    assert region.text(spacing).startswith("314 µm²")
    assert region.to_dict(spacing)["area_mm2"] == pytest.approx(np.pi * 400 * 0.25e-6, rel=1e-3)
    # Radiology sizes read as before.
    assert Ruler(0, 0, 40, 30).text((0.5, 0.25)) == "18.0 mm"
    assert Ruler(0, 0, 40, 30).to_dict((0.5, 0.25))["length_mm"] == 18.03


def test_histology_scale_set_by_the_reader_measures_rulers_and_regions(tmp_path):
    from PIL import Image

    path = tmp_path / "slide.png"
    Image.fromarray(np.full((256, 256, 3), 200, np.uint8)).save(path)
    state = ViewerState()
    state.open(load_image(path, Modality.SM))
    assert state.pixel_spacing_mm is None
    ruler = state.add_ruler(0, 10, 200, 10)
    assert ruler.text(state.pixel_spacing_mm) == "200 px"
    state.set_microns_per_pixel(0.5)
    assert ruler.text(state.pixel_spacing_mm) == "100 µm"
    region = state.add_region(0, 0, 100, 100)
    assert region.text(state.pixel_spacing_mm).startswith("1963 µm²")  # pi * 50 * 50 px * 0.25 um^2
    assert state.pixel_spacing_mm == pytest.approx((0.0005, 0.0005)) and state.spacing_source == "reader"
    state.set_microns_per_pixel(None)
    assert state.pixel_spacing_mm is None and state.spacing_source is None


def test_scale_bar_stays_inside_the_viewport_on_microscopy(qtbot, pydicom_file, tmp_path):
    from gui.viewer import ImageViewer

    ds = _mr_small(pydicom_file)
    ds.PixelSpacing = [0.0005, 0.0005]
    ds.Modality = "SM"  # slide microscopy: on an MR picture 0.5-um pixels would not be believed
    ds.save_as(tmp_path / "sm.dcm")
    state = ViewerState()
    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.bind(state)
    viewer.resize(800, 600)
    viewer.show()
    state.open(load_image(tmp_path / "sm.dcm"))

    def bottom_row() -> np.ndarray:
        image = viewer.viewport().grab().toImage()
        y = image.height() - 20
        return np.array([image.pixelColor(x, y).lightness() for x in range(image.width())])

    with_bar = bottom_row()
    state.record.pixel_spacing_mm = None
    viewer.viewport().update()
    without = bottom_row()
    drawn = np.flatnonzero(with_bar != without)
    assert drawn.size and drawn.max() < viewer.viewport().width() * 0.6
    from gui.viewer import scale_bar

    assert scale_bar(18562.0, 160.0) == (0.01, "10 µm")  # 0.5 um per pixel at zoom 9.3: a 186-px bar
    assert scale_bar(30.0, 160.0) == (5, "5 mm")


# ----- 2. lesion diameter

def test_lesion_diameter_is_measured_edge_to_edge_like_its_width_and_depth():
    from core.inference.lesions import find_lesions

    mask = np.zeros((64, 64), np.uint8)
    mask[20:23, 10:30] = 1  # 3 rows deep, 20 columns wide
    (lesion,) = find_lesions(mask, (0.5, 0.5), min_area_px=1, calipers=True)
    assert lesion.width_mm == pytest.approx(10.0) and lesion.depth_mm == pytest.approx(1.5)
    assert lesion.max_diameter_mm == pytest.approx(np.hypot(10.0, 1.5))
    assert lesion.max_diameter_px == pytest.approx(np.hypot(20, 3))
    (x0, y0), (x1, y1) = lesion.diameter_ends
    assert {x0, x1} == {10.0, 30.0} and {y0, y1} == {20.0, 23.0}  # on the lesion's edges: corners of its pixels


# ----- 3. window readout of the frame shown

def test_window_readout_and_drag_start_from_the_frame_shown(pydicom_file, tmp_path):
    ds = _mr_small(pydicom_file)
    base = ds.pixel_array.astype(np.int16)
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([base, base * 4 + 1000, base // 4]).astype(np.int16).tobytes()
    ds.save_as(tmp_path / "cine.dcm")
    state = ViewerState()
    state.open(load_image(tmp_path / "cine.dcm"))
    state.set_slice(1)
    own = auto_preset(state.record.values(1))  # frame 2 is drawn in its own automatic window
    assert np.array_equal(state.display(), apply_window(state.record.values(1), own.center, own.width, own.function))
    assert state.window_text() == f"C {own.center:.5g} / W {own.width:.5g}"
    before = state.display().astype(int)
    state.adjust(1.0, 0.0)  # a one-pixel drag moves the window a little, from the one shown
    assert state.window.center == pytest.approx(own.center + own.width / 256)
    assert np.abs(state.display().astype(int) - before).mean() < 3


def test_window_readout_and_drag_start_follow_a_voi_lut_on_screen(pydicom_file, tmp_path):
    ds = _mr_small(pydicom_file)
    ds.Modality = "CR"
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 8]
    lut.add(DataElement(0x00283006, "US", [i // 16 for i in range(4096)]))  # LUT Data: a ramp over 0..4095
    ds.VOILUTSequence = Sequence([lut])
    ds.WindowCenter, ds.WindowWidth = 300, 200  # a window the file also offers: not what is shown
    ds.save_as(tmp_path / "lut.dcm")
    state = ViewerState()
    state.open(load_image(tmp_path / "lut.dcm"))
    shown = state.display().astype(int)
    assert state.effective_window.center == pytest.approx(2048, abs=16)
    assert state.effective_window.width == pytest.approx(4096, abs=32)
    assert state.window_text().startswith("VOI LUT")
    state.adjust(0.0, 0.0)  # the drag starts from what was shown: the picture barely changes
    assert np.abs(state.display().astype(int) - shown).max() <= 2


# ----- 4. slice position label

def _oriented_series(folder, orientation, positions):
    from core.series.index import index_folder
    from tests.series_data import write_series

    write_series(folder, [np.zeros((8, 8), np.uint16)] * len(positions), orientation=orientation, positions=positions)
    return index_folder(folder).series[0]


def test_slice_label_names_the_patient_axis_and_reads_image_position(tmp_path):
    feet_first = _oriented_series(tmp_path / "ax", (-1, 0, 0, 0, 1, 0), [(0, 0, 100 + 5 * k) for k in range(3)])
    state = ViewerState()
    state.open_series(feet_first)
    assert state.slice_text() == f"slice 1 / 3 · z = {feet_first.slices[0].position[2]:.1f} mm"
    from core.measurements import slice_position_text  # also for the series PDF report (core.series may import it)

    assert {slice_position_text(ref.position, ref.orientation) for ref in feet_first.slices} == {
        "z = 100.0 mm", "z = 105.0 mm", "z = 110.0 mm"}
    sagittal = _oriented_series(tmp_path / "sag", (0, 1, 0, 0, 0, -1), [(20 + 5 * k, 0, 0) for k in range(3)])
    state.open_series(sagittal)
    assert state.slice_text() == f"slice 1 / 3 · x = {sagittal.slices[0].position[0]:.1f} mm"
    c, s = np.cos(np.radians(45)), np.sin(np.radians(45))
    oblique = _oriented_series(tmp_path / "obl", (c, s, 0, 0, 0, -1), [(-s * k * 4, c * k * 4, 0) for k in range(3)])
    state.open_series(oblique)
    text = state.slice_text()
    assert text == f"slice 1 / 3 · {oblique.slices[0].position_mm:.1f} mm along the slice normal"
