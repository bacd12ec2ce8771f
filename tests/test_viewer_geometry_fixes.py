"""The viewer's geometry: non-square pixels drawn to scale, orientation markers from PatientOrientation and from an
enhanced file's functional groups, the cursor's patient position, a tilted slice's position label, the values of a
region on a picture read smaller, and the comparison's note where the main slice lies outside the other series.

Model tests (core.viewer_state) run without Qt; the canvas and the comparison are checked offscreen."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from core.imaging import load_image
from core.imaging.record import ImageRecord, Modality, StudyInfo
from core.imaging.windowing import WindowPreset
from core.series import index_folder
from core.viewer_state import ViewerState
from tests.series_data import SAGITTAL, slice_positions, write_enhanced_mr, write_mammo, write_series


def _only_series(folder: Path):
    (series,) = index_folder(folder).series
    return series


def _fake_record(spacing=None, modality=Modality.MR, downsample: int = 1, values=None) -> ImageRecord:
    """A one-frame record of ``values`` (default 8 x 8 ramp) that no file stands behind."""
    pixels = np.arange(64, dtype=np.float32).reshape(8, 8) if values is None else values
    return ImageRecord(path=Path("none.dcm"), file_format="DICOM", modality=modality, modality_source="dicom",
                       rows=pixels.shape[0], columns=pixels.shape[1], frames=1, samples_per_pixel=1,
                       photometric="MONOCHROME2", bits_stored=16, pixel_spacing_mm=spacing,
                       window_presets=[WindowPreset("File", 32.0, 64.0)], study=StudyInfo(), metadata=[],
                       _read_frame=lambda i: pixels, downsample=downsample)


# ----- 1: non-square pixels

def test_the_pixel_aspect_is_row_over_column_spacing_within_the_analyzers_bounds():
    state = ViewerState()
    assert state.pixel_aspect == 1.0
    state.open(_fake_record(spacing=(0.5, 1.0)))
    assert state.pixel_aspect == 0.5  # rows half as far apart as columns: drawn half as tall
    state.open(_fake_record(spacing=(10.0, 1.0)))
    assert state.pixel_aspect == 1.0  # 10:1 is a header error, not pixels (as the models read it)
    state.open(_fake_record(spacing=(0.5, 1.0), modality=Modality.SM))
    state.set_microns_per_pixel(0.5)
    assert state.pixel_aspect == 1.0  # the reader's scale is one number: square pixels


def _disc_series(tmp_path: Path):
    """160 x 80 pixels of 0.5 mm (rows) x 1.0 mm (columns): 80 x 80 mm, a disc of 40 mm in the middle."""
    yy, xx = np.mgrid[:160, :80]
    disc = (xx + 0.5 - 40) ** 2 + ((yy + 0.5) * 0.5 - 40) ** 2 <= 20 ** 2
    write_series(tmp_path / "nonsquare", [np.where(disc, 1000, 100).astype(np.uint16)], pixel_spacing=(0.5, 1.0))
    return _only_series(tmp_path / "nonsquare")


def _mouse(viewer, kind: str, x: float, y: float) -> None:
    """A left-button press, move or release over picture point (x, y)."""
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    local = QPointF(viewer.mapFromScene(QPointF(x, y)))
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    event_type, changed, held = {"press": (QEvent.Type.MouseButtonPress, left, left),
                                 "move": (QEvent.Type.MouseMove, none, left),
                                 "release": (QEvent.Type.MouseButtonRelease, left, none)}[kind]
    QApplication.sendEvent(viewer.viewport(), QMouseEvent(event_type, local, QPointF(viewer.viewport().mapToGlobal(
        local.toPoint())), changed, held, Qt.KeyboardModifier.NoModifier))


def test_non_square_pixels_are_drawn_to_scale_and_measured_in_the_files_pixels(qtbot, tmp_path):
    pytest.importorskip("pytestqt")
    from gui.viewer import ImageViewer

    state, viewer = ViewerState(), ImageViewer()
    qtbot.addWidget(viewer)
    viewer.bind(state)
    viewer.resize(420, 420)
    viewer.show()
    qtbot.waitExposed(viewer)
    state.open_series(_disc_series(tmp_path))
    shown = viewer.mapFromScene(viewer.sceneRect()).boundingRect()
    assert abs(shown.width() - shown.height()) <= 2, (shown.width(), shown.height())  # 80 x 80 mm: square
    for change in (lambda: None, lambda: viewer.zoom(1.25), viewer.actual_size, viewer.fit,
                   lambda: viewer.show_region(40, 80, 10)):
        change()
        t = viewer.transform()
        assert t.m22() / 0.5 == pytest.approx(t.m11() / 1.0)  # screen pixels per mm alike both ways (the scale bar)
    viewer.fit()
    seen = []
    viewer.cursorMoved.connect(lambda x, y: seen.append((x, y)))
    viewer.set_measuring("distance")
    _mouse(viewer, "press", 10.5, 20.5)
    _mouse(viewer, "move", 10.5, 60.5)
    _mouse(viewer, "release", 10.5, 100.5)
    (ruler,) = state.rulers
    assert ruler.y1 - ruler.y0 == pytest.approx(80, abs=1) and abs(ruler.x1 - ruler.x0) < 1  # the file's rows
    assert ruler.length_mm(state.pixel_spacing_mm) == pytest.approx(40, abs=0.5)
    assert seen[-1] == (10, 60)  # the cursor readout's pixel


# ----- 2: orientation markers

OPPOSITE_EDGES = {("A", "R"): {"left": "P", "right": "A", "top": "L", "bottom": "R"},
                  ("P", "L"): {"left": "A", "right": "P", "top": "R", "bottom": "L"},
                  ("L", "F"): {"left": "R", "right": "L", "top": "H", "bottom": "F"},
                  ("P", "FL"): {"left": "A", "right": "P", "top": "HR", "bottom": "FL"}}


@pytest.mark.parametrize("orientation", list(OPPOSITE_EDGES))
def test_a_projection_image_gets_its_markers_from_patient_orientation(tmp_path, orientation):
    path = write_mammo(tmp_path / "mg" / "view.dcm", np.zeros((24, 16), np.uint16), study_uid=generate_uid(),
                       laterality="R", view="CC", orientation=list(orientation))
    state = ViewerState()
    state.open(load_image(path))
    assert state.orientation_markers() == OPPOSITE_EDGES[orientation]
    state.open_series(_only_series(path.parent))
    assert state.orientation_markers() == OPPOSITE_EDGES[orientation]


def test_patient_orientation_of_other_letters_or_one_value_gives_no_markers():
    from core.viewer_state import patient_orientation_markers

    assert patient_orientation_markers(("A",)) is None
    assert patient_orientation_markers(("CR", "D")) is None  # a quadruped's terms: not the letters drawn here
    assert patient_orientation_markers(()) is None


def _enhanced_sagittal(tmp_path: Path) -> Path:
    frames = [np.full((16, 16), 10 * k, np.uint16) for k in range(5)]
    return write_enhanced_mr(tmp_path / "enh.dcm", frames, slice_positions(5, 2.0, SAGITTAL), orientation=SAGITTAL,
                             spacing=(0.5, 1.0))


def test_an_enhanced_file_opened_on_its_own_gets_markers_from_its_functional_groups(tmp_path):
    state = ViewerState()
    state.open(load_image(_enhanced_sagittal(tmp_path)))
    assert state.orientation_markers() == {"left": "A", "right": "P", "top": "H", "bottom": "F"}


# ----- 3 and 8: the cursor's position

def test_the_cursor_readout_is_the_patient_position_where_the_slice_has_its_geometry(tmp_path):
    image = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    write_series(tmp_path / "sag", [image, image], orientation=SAGITTAL, pixel_spacing=(0.5, 1.0),
                 positions=[(-10.0, -120.0, 60.0), (-12.0, -120.0, 60.0)])
    state = ViewerState()
    state.open_series(_only_series(tmp_path / "sag"), start=1)
    # IPP + 10 columns of 1 mm along the rows (0, 1, 0) + 20 rows of 0.5 mm along the columns (0, 0, -1)
    assert state.pixel_text(10, 20) == f"x 10, y 20: {20 * 30 + 10}  (R 12.0, A 110.0, H 50.0 mm)"


def test_an_enhanced_file_opened_on_its_own_reads_each_frames_own_position(tmp_path):
    state = ViewerState()
    state.open(load_image(_enhanced_sagittal(tmp_path)))
    state.set_slice(3)  # frame 4 at x = -120 - 3 * 2 mm: the normal is -x (slice_positions: origin -120, -120, -30)
    assert state.pixel_text(4, 2).endswith("(R 126.0, A 116.0, F 31.0 mm)")


def test_the_cursor_offset_reads_with_the_scale_the_reader_set_on_a_microscopy_image():
    state = ViewerState()
    state.open(_fake_record(modality=Modality.SM))
    assert state.pixel_text(4, 0) == "x 4, y 0: 4"  # no scale: no position
    state.set_microns_per_pixel(0.5)
    assert state.pixel_text(4, 2).endswith("(2.0 µm, 1.0 µm)")


# ----- 4: a tilted slice's position

def test_a_tilted_slice_is_labelled_at_the_middle_of_its_picture(tmp_path):
    tilt = math.radians(8)
    orientation = (1.0, 0.0, 0.0, 0.0, math.cos(tilt), math.sin(tilt))
    write_series(tmp_path / "tilt", [np.zeros((256, 256), np.uint16)], orientation=orientation,
                 positions=[(-120.0, -120.0, -30.0)])
    state = ViewerState()
    state.open_series(_only_series(tmp_path / "tilt"))
    centre_z = -30.0 + 255 / 2 * 0.9375 * math.sin(tilt)  # as core.series.linking links it: -13.4
    assert state.slice_text() == f"slice 1 / 1 · z = {centre_z:.1f} mm"


# ----- 5: a region on a picture read smaller

def test_a_region_on_a_picture_read_smaller_says_its_values_are_averaged():
    state = ViewerState()
    state.open(_fake_record(spacing=(0.6, 0.6), downsample=3))
    region = state.add_region(1, 1, 7, 7)
    assert region.text(state.pixel_spacing_mm).endswith("(of pixels averaged 3 x 3: the picture was read at 1/3)")
    assert region.to_dict(state.pixel_spacing_mm)["pixels_averaged"] == 3
    state.open(_fake_record(spacing=(0.2, 0.2)))
    full = state.add_region(1, 1, 7, 7)
    assert "averaged" not in full.text(state.pixel_spacing_mm) and "pixels_averaged" not in full.to_dict(None)


def test_the_readout_on_a_picture_read_smaller_names_the_file_pixels_it_covers():
    """It had named the picture's pixel (x 2 for the file's 6-8) with no word that the picture was read smaller."""
    state = ViewerState()
    record = _fake_record(downsample=3)
    record.source_size = (24, 24)
    state.open(record)
    assert state.pixel_text(2, 1) == "x 6-8, y 3-5: 10 (the picture was read at 1/3)"
    record = _fake_record(downsample=3, values=np.arange(48, dtype=np.float32).reshape(8, 6))
    record.source_size = (26, 20)  # sides the factor does not divide: 20 columns read into 6, 26 rows into 8
    state.open(record)
    assert state.pixel_text(5, 7).startswith("x 16-19, y 22-25: ")
    state.open(_fake_record())
    assert state.pixel_text(2, 1) == "x 2, y 1: 10"


# ----- 7: the comparison beyond the other series' ends

def test_the_comparison_says_when_the_main_slice_lies_outside_its_series(qtbot, tmp_path):
    pytest.importorskip("pytestqt")
    from core.series.stack import SeriesStack
    from gui.compare_view import CompareView, SeriesLink
    from gui.viewer import ImageViewer

    import pydicom

    study, frame = generate_uid(), generate_uid()
    images = lambda n: [np.full((16, 16), 50 * k, np.uint16) for k in range(n)]  # noqa: E731
    files = write_series(tmp_path / "a", images(10), spacing=3.0, study_uid=study, description="A")  # z -30 .. -3
    files += write_series(tmp_path / "b", images(4), spacing=5.0, study_uid=study, description="B",
                          positions=[(-120.0, -120.0, 5.0 * k) for k in range(4)])  # z 0 .. 15
    for path in files:  # one frame of reference
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = frame
        ds.save_as(path)
    a, b = _only_series(tmp_path / "a"), _only_series(tmp_path / "b")
    main, main_view, compare = ViewerState(), ImageViewer(), CompareView()
    qtbot.addWidget(main_view)
    qtbot.addWidget(compare)
    SeriesLink(main, main_view, compare)
    main.open_series(a, SeriesStack(a), start=9)  # z = -3: B's slice at 0 is within its half spacing
    compare.show_series(b, SeriesStack(b))
    assert compare.state.slice_index == 0 and compare.title.text().endswith("· scrolled with the main view")
    compare.state.set_slice(3)  # z = 15: A ends at -3
    assert main.slice_index == 9
    assert compare.title.text().endswith("· this slice is outside the main series: 18.0 mm from its nearest slice")
    main.set_slice(0)  # z = -30: B's nearest slice is at 0, not the one at 15 left shown
    assert compare.state.slice_index == 0
    assert compare.title.text().endswith(
        "· the main view's slice is outside this series: 30.0 mm from its nearest slice")
    main.set_slice(9)
    assert compare.title.text().endswith("· scrolled with the main view")
