"""The heatmap a reader chooses is the one drawn (a hunt with real results; each test failed before its fix): with two
classifiers (the brain 4-class and yes/no models), the second model's "Grad-CAM for" recomputed its heatmap but the
layer kept drawing the first model's, for another class, and the PDF and Secondary Capture did too; a Grad-CAM
request that failed left the chooser naming a class no heatmap showed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import open_window

pytestmark = pytest.mark.slow
SECOND = "tiny-mr-classifier-b"


@pytest.fixture
def two_classifiers(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    shutil.copytree(tiny_models / "tiny-mr-classifier", root / "tiny-mr-classifier")
    shutil.copytree(tiny_models / "tiny-mr-classifier", root / SECOND)
    manifest = json.loads((root / SECOND / "manifest.json").read_text())
    manifest.update(id=SECOND, title="Second classifier")
    (root / SECOND / "manifest.json").write_text(json.dumps(manifest))
    return root


def _analysed(qtbot, models, tmp_path, png, modality_index: int = 1):
    """The window on ``png``, read as the Modality box's entry ``modality_index`` (1: MR, 3: ultrasound), analysed."""
    window = open_window(qtbot, models, tmp_path)
    window.open_path(png)
    qtbot.waitUntil(lambda: window.state.record is not None and not window.is_busy, timeout=20000)
    window.modality_box.setCurrentIndex(modality_index)
    window._modality_chosen()
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None and not window.is_busy, timeout=60000)
    return window


def test_the_second_classifiers_grad_cam_is_drawn_when_chosen(qtbot, two_classifiers, tmp_path, planted_png):
    from core.export.report import overlay_picture

    window = _analysed(qtbot, two_classifiers, tmp_path, planted_png[0])
    state = window.state
    assert state.heatmap_result.model_id == "tiny-mr-classifier"
    assert window.overlays.heatmap.text().startswith("Grad-CAM heatmap: tiny-mr-classifier, ")
    chooser = window.probabilities.choosers[SECOND]
    second = next(r for r in state.analysis.results if r.model_id == SECOND)
    other = next(c for c in second.classes if c != second.heatmap_class)
    first_picture = overlay_picture(state.record, state.analysis)
    chooser.setCurrentText(other)
    chooser.activated.emit(chooser.currentIndex())
    qtbot.waitUntil(lambda: not window.is_busy and second.heatmap_class == other, timeout=30000)
    assert state.heatmap_result is second and state.heatmap_model == SECOND
    np.testing.assert_array_equal(state.heatmap_to_draw(), second.heatmap)
    assert window.overlays.heatmap.text() == f"Grad-CAM heatmap: {SECOND}, {other}"
    assert not np.array_equal(overlay_picture(state.record, state.analysis, state.heatmap_model), first_picture)
    first = window.probabilities.choosers["tiny-mr-classifier"]  # its own class again: its heatmap, no new run
    first.activated.emit(first.currentIndex())
    assert state.heatmap_result.model_id == "tiny-mr-classifier" and not window.is_busy


def test_a_failed_grad_cam_request_leaves_the_chooser_on_the_class_shown(qtbot, tiny_models, tmp_path, planted_png,
                                                                         monkeypatch):
    window = _analysed(qtbot, tiny_models, tmp_path, planted_png[0])
    result = window.state.heatmap_result
    shown = result.heatmap_class
    chooser = window.probabilities.choosers[result.model_id]
    monkeypatch.setattr(window, "_error", lambda message: None)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(window.engine.analyzer, "analyze", out_of_memory)
    chooser.setCurrentText(next(c for c in result.classes if c != shown))
    chooser.activated.emit(chooser.currentIndex())
    qtbot.waitUntil(lambda: not window.is_busy, timeout=30000)
    assert chooser.currentText() == shown == result.heatmap_class


@pytest.mark.parametrize("export", ["export_sc", "export_seg", "export_sr", "export_report"])
def test_an_export_named_before_any_analysis_says_there_is_nothing_to_export(qtbot, tiny_models, tmp_path,
                                                                           planted_png, export):
    """With a file named, SC and SEG had raised AttributeError out of the handler, SR and the PDF a cryptic error."""
    window = open_window(qtbot, tiny_models, tmp_path)
    window.open_path(planted_png[0])
    qtbot.waitUntil(lambda: window.state.record is not None and not window.is_busy, timeout=20000)
    getattr(window, export)(tmp_path / "out.dcm")
    assert window.last_error == "Analyse the image first: there is nothing to export yet."
    assert not (tmp_path / "out.dcm").exists()


def test_lesion_sizes_are_the_files_pixels_in_the_panel_the_label_and_the_json_alike():
    """A picture read at 1/2 without a spacing: the panel and the viewer's label said the loaded picture's pixels
    (400 px, 20 x 20 px), the JSON the file's (1600 px, 40 x 40 px)."""
    from core.inference.results import Finding, Lesion, in_file_pixels

    lesion = Lesion(1, 400, None, (10, 12, 20, 20), 28.3, None, np.zeros((1, 2)), None, calipers=True)
    shown = in_file_pixels(lesion, 2)
    assert shown.size_text().startswith("1600 px, max diameter 57 px, 40 x 40 px (W x D), D/W 1.00")
    assert shown.size_text() == lesion.to_dict(2)["text"] and shown.overlay_text().startswith("1600 px, Ø 57 px")
    assert in_file_pixels(lesion, 1) is lesion
    mark = in_file_pixels(Finding(10.0, 20.0, 5.0, 0.8), 3)
    assert (mark.x, mark.y, mark.r) == (30.0, 60.0, 15.0)


def us_read_at_half(qtbot, tiny_models, tmp_path, monkeypatch):
    """The window on an ultrasound picture read at 1/2 (as one too large for memory is), analysed."""
    from PIL import Image

    monkeypatch.setattr("core.imaging.raster.downsample_factor", lambda rows, columns: 2)
    picture = np.full((128, 128), 40, np.uint8)
    picture[20:60, 40:80] = 250
    Image.fromarray(picture).save(tmp_path / "us.png")
    return _analysed(qtbot, tiny_models, tmp_path, tmp_path / "us.png", modality_index=3)  # ultrasound


def test_the_findings_panel_gives_the_files_pixels_of_a_picture_read_smaller(qtbot, tiny_models, tmp_path,
                                                                             monkeypatch):
    from PySide6.QtWidgets import QLabel

    window = us_read_at_half(qtbot, tiny_models, tmp_path, monkeypatch)
    lesions = window.state.segmentation_result.lesions
    assert window.state.record.downsample == 2 and lesions
    texts = [label.text().replace("\u2060", "") for label in window.probabilities.findChildren(QLabel)
             if label.text().startswith("#1: ")]  # less the joiner that keeps 'D/W' on one line
    assert texts == [f"#1: {lesions[0].to_dict(2)['text']}"]


def test_the_mask_holds_only_the_lesions_counted():
    from core.inference.lesions import drop_small_components, find_lesions

    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 1
    mask[50:51, 50:52] = 1  # a 2-pixel speck under the 16-pixel minimum
    kept = drop_small_components(mask, 16)
    assert kept.sum() == 400 and len(find_lesions(kept, None, min_area_px=16)) == 1
    assert drop_small_components(kept, 16) is kept


def test_the_colour_scale_says_what_a_grad_cam_maps_colours_mean(qtbot, tiny_models, tmp_path, planted_png):
    """Grad-CAM maps are scaled to their own peak, tile maps are probabilities; one unlabelled bar served both."""
    window = _analysed(qtbot, tiny_models, tmp_path, planted_png[0])
    assert "relative to this map's own peak (not a probability)" in window.overlays.scale_note.text()
