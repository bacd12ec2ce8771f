"""Lesion sizes are given in millimetres only where the file's pixel spacing is believable for the modality."""

from __future__ import annotations

import pydicom
import pytest

from core.imaging import Modality, load_image
from core.imaging.record import plausible_spacing


def _spacing_of(rows: int, columns: int, spacing, modality: Modality):
    return plausible_spacing(spacing, rows, columns, modality)


@pytest.mark.parametrize("rows, columns, spacing, modality, kept", [
    (256, 256, (0.9375, 0.9375), Modality.MR, True),  # a 240-mm brain field
    (512, 512, (0.25, 0.25), Modality.MR, True),  # a 128-mm sella field
    (64, 64, (0.5, 0.5), Modality.MR, True),  # a 32-mm crop of a slice
    (512, 512, (0.01, 0.01), Modality.MR, False),  # 5 mm: no MR picture
    (256, 256, (10.0, 10.0), Modality.MR, False),  # 2.56 m across
    (256, 256, (0.1, 3.0), Modality.MR, False),  # pixels 30 times wider than tall
    (256, 232, (0.9375, 1.034), Modality.MR, True),  # non-square but believable
    (600, 800, (0.07, 0.07), Modality.US, True),  # a 56-mm sonogram
    (600, 800, (1.0, 1.0), Modality.US, False),  # 80 cm of ultrasound
    (600, 800, (0.001, 0.001), Modality.US, False),  # under a millimetre
    (256, 256, None, Modality.MR, None),  # unknown: said elsewhere, not called implausible
])
def test_spacing_is_believed_only_within_the_modalitys_field(rows, columns, spacing, modality, kept):
    used, warning = _spacing_of(rows, columns, spacing, modality)
    if kept is None:
        assert used is None and warning is None
    elif kept:
        assert used == spacing and warning is None
    else:
        assert used is None and warning.startswith("Implausible pixel spacing")


def test_a_10_mm_pixel_brain_slice_gets_its_lesion_in_pixels(tmp_path, pydicom_file):
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry
    from tests.tiny_models import make_segmenter_bundle

    make_segmenter_bundle(tmp_path / "models", "tiny-mr-segmenter", modality="MR")
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.PixelSpacing = [10.0, 10.0]
    ds.save_as(tmp_path / "wide.dcm")
    (result,) = Analyzer(Registry([tmp_path / "models"])).analyze(load_image(tmp_path / "wide.dcm")).results
    assert result.spacing_known is False and result.lesion_area_mm2 is None
    assert all(lesion.area_mm2 is None for lesion in result.lesions)
    assert any(w.startswith("Implausible pixel spacing: the file states 10 x 10 mm") for w in result.warnings)



def test_the_viewer_measures_in_pixels_where_the_segmenters_do(tmp_path, pydicom_file, qtbot):
    """A header that puts a 64-px brain slice 64 cm across gives rulers, regions, the position readout and the
    scale bar in pixels, and the status bar says why; the same file with a believable spacing measures in mm."""
    from PySide6.QtCore import QSettings

    from core.viewer_state import ViewerState
    from gui.main_window import MainWindow

    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    for name, spacing in (("wide.dcm", [10.0, 10.0]), ("brain.dcm", [0.9375, 0.9375])):
        ds.PixelSpacing = spacing
        ds.save_as(tmp_path / name)
    state = ViewerState()
    state.open(load_image(tmp_path / "wide.dcm"))
    assert state.pixel_spacing_mm is None and state.spacing_warning.startswith("Implausible pixel spacing")
    assert state.add_ruler(0, 0, 40, 0).text(state.pixel_spacing_mm) == "40 px"
    assert "mm" not in state.pixel_text(3, 1) and state.spacing_source is None
    state.open(load_image(tmp_path / "brain.dcm"))
    assert state.pixel_spacing_mm == (0.9375, 0.9375) and state.spacing_warning is None
    assert state.add_ruler(0, 0, 40, 0).text(state.pixel_spacing_mm) == "37.5 mm"

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("auto_analyse", False)
    window = MainWindow(settings=settings)
    qtbot.addWidget(window)
    window.state.open(load_image(tmp_path / "wide.dcm"))
    window._show_measurement("Distance", [window.state.add_ruler(0, 0, 40, 0)])
    message = window.statusBar().currentMessage()
    assert message.startswith("Distance: 40 px (Implausible pixel spacing: the file states 10 x 10 mm")
