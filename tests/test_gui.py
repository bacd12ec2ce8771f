"""The window, offscreen, with tiny real models: open, analyse, overlays, W/L, bad files, start-up."""

from __future__ import annotations

import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtGui import QAction, QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialog, QLabel, QTableWidget  # noqa: E402

from core.models.registry import Registry  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from tests.conftest import REPO, open_window  # noqa: E402


def _pixels(window) -> np.ndarray:
    image = window.viewer.viewport().grab().toImage()
    ptr = image.constBits()
    return np.array(ptr, dtype=np.uint8).reshape(image.height(), image.bytesPerLine())[:, : image.width() * 4].copy()


@pytest.fixture
def window(qtbot, tiny_models, tmp_path):
    return open_window(qtbot, tiny_models, tmp_path)


def _open(qtbot, window, path, modality_index=None):
    """Open ``path``; with ``modality_index``, then choose that entry of the Modality box, as a reader would."""
    window.open_path(path)
    qtbot.waitUntil(lambda: window.state.record is not None and window.state.record.path.name == path.name
                    and not window.is_busy, timeout=20000)
    if modality_index is not None:
        window.modality_box.setCurrentIndex(modality_index)
        window._modality_chosen()


def test_open_shows_image(qtbot, window, planted_png):
    _open(qtbot, window, planted_png[0])
    assert not window.viewer.image_item.pixmap().isNull()
    assert window.viewer.image_item.pixmap().width() == 64


def test_analyse_fills_panel_and_overlays(qtbot, window, planted_png):
    _open(qtbot, window, planted_png[0], modality_index=1)  # Brain MRI
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None, timeout=60000)
    bars = window.probabilities.bars
    assert ("tiny-mr-classifier", "lesion") in bars and bars[("tiny-mr-classifier", "lesion")].value() > 900
    assert not window.viewer.heatmap_item.pixmap().isNull()


def test_toggle_and_opacity_change_rendered_pixels(qtbot, window, planted_png):
    _open(qtbot, window, planted_png[0], modality_index=1)
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None, timeout=60000)
    with_heatmap = _pixels(window)
    window.overlays.heatmap_opacity.setValue(100)
    stronger = _pixels(window)
    assert np.abs(stronger.astype(int) - with_heatmap).sum() > 0
    window.overlays.heatmap.setChecked(False)
    without = _pixels(window)
    assert np.abs(without.astype(int) - with_heatmap).sum() > 0
    assert window.viewer.heatmap_item.pixmap().isNull()


def test_mask_layer_from_segmenter(qtbot, window, tmp_path):
    from PIL import Image

    img = np.full((64, 64), 40, np.uint8)
    img[10:30, 20:40] = 250
    Image.fromarray(img).save(tmp_path / "us.png")
    _open(qtbot, window, tmp_path / "us.png", modality_index=3)  # Breast ultrasound
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None, timeout=60000)
    assert not window.viewer.mask_item.pixmap().isNull() and window.viewer.lesion_items
    from PySide6.QtWidgets import QGraphicsRectItem

    (box,) = [item for item in window.viewer.lesion_items if isinstance(item, QGraphicsRectItem)]
    lesion = window.state.segmentation_result.lesions[0]
    assert box.brush().color().alpha() > 0 and box.childItems()[0].text() == lesion.overlay_text()  # on a dark box
    before = _pixels(window)
    window.overlays.mask.setChecked(False)
    assert np.abs(_pixels(window).astype(int) - before).sum() > 0


def test_window_level_drag_changes_display(qtbot, window, pydicom_file):
    _open(qtbot, window, pydicom_file("MR_small.dcm"))
    before = _pixels(window)
    start = window.state.record.window_presets[0]
    window.viewer.windowDragged.emit(40.0, -60.0)
    assert window.state.window is not None and window.state.window.name == "Custom"
    assert 0 < window.state.window.width < start.width and window.state.window.center > start.center
    assert np.abs(_pixels(window).astype(int) - before).sum() > 0
    window.reset_window()
    assert window.state.window is None


def test_float_image_window_label_and_drag(qtbot, window, tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "unit.tif", np.tile(np.linspace(0, 1, 200, dtype=np.float32), (150, 1)))
    _open(qtbot, window, tmp_path / "unit.tif")
    assert window.wl_label.text().startswith("C 0.5")  # not rounded to "C 0 / W 1"
    before = window.state.record.window_presets[0].width
    window.viewer.windowDragged.emit(0.0, -128.0)
    assert window.state.window.width == pytest.approx(before / 2)  # narrows below 1 on 0-1 data


def test_slider_label_and_picture_follow_the_state_slice(qtbot, window, pydicom_file):
    _open(qtbot, window, pydicom_file("examples_ybr_color.dcm"))
    before = _pixels(window)
    window.state.set_slice(5)
    assert window.frame_slider.value() == 5 and window.frame_label.text() == "6/30"
    assert np.abs(_pixels(window).astype(int) - before).sum() > 0
    window.frame_slider.setValue(7)  # and the slider moves the state
    assert window.state.slice_index == 7 and window.frame_label.text() == "8/30"


def test_wl_label_and_picture_follow_the_state_window(qtbot, window, pydicom_file):
    _open(qtbot, window, pydicom_file("MR_small.dcm"))
    before, label = _pixels(window), window.wl_label.text()
    window.state.adjust(0.0, 128.0)
    assert window.wl_label.text() == window.state.window_text() != label
    assert np.abs(_pixels(window).astype(int) - before).sum() > 0
    window.state.reset_window()
    assert window.wl_label.text() == label
    assert [a.text().split("  ")[0] for a in window.presets_menu.actions()] == [p.name for p in window.state.presets]


def test_overlay_panel_and_settings_follow_the_layers(window):
    layers, panel = window.state.overlays, window.overlays
    layers.heatmap.opacity = 0.8
    layers.heatmap.threshold = 0.05
    layers.heatmap.colormap = "hot"
    layers.mask.outline_only = True
    layers.lesions.visible = False
    assert panel.heatmap_opacity.value() == 80 and panel.threshold.value() == 5
    assert panel.colormap.currentText() == "hot" and panel.contour.isChecked() and not panel.lesions.isChecked()
    assert int(window.settings.value("heatmap_opacity")) == 80
    panel.mask_opacity.setValue(25)
    assert layers.mask.opacity == 0.25 and int(window.settings.value("mask_opacity")) == 25
    next(a for a in window.findChildren(QAction) if a.text() == "Toggle heatmap").trigger()
    assert not layers.heatmap.visible and not panel.heatmap.isChecked()


def test_viewer_and_panels_draw_the_state_analysis(qtbot, window, planted_png):
    from core.inference.results import Analysis, ModelResult

    _open(qtbot, window, planted_png[0])
    heat = np.zeros((64, 64))
    heat[20:40, 20:40] = 1.0
    result = ModelResult("hand-made", "1.0", "classification", "cpu", ["no", "yes"], {"no": 0.2, "yes": 0.8}, "yes",
                         heatmap=heat, heatmap_class="yes")
    window.state.set_analysis(Analysis(str(planted_png[0]), window.state.record.modality.value, "user", 0, [result]))
    assert not window.viewer.heatmap_item.pixmap().isNull()
    assert window.probabilities.bars[("hand-made", "yes")].value() == 800
    shown = _pixels(window)
    window.state.overlays.heatmap.visible = False
    assert window.viewer.heatmap_item.pixmap().isNull() and not window.overlays.heatmap.isChecked()
    assert np.abs(_pixels(window).astype(int) - shown).sum() > 0
    window.state.overlays.heatmap.visible = True
    window.state.set_analysis(None)
    assert window.viewer.heatmap_item.pixmap().isNull() and not window.probabilities.bars
    assert window.probabilities.placeholder.isVisibleTo(window.probabilities)


def test_an_unusual_picture_is_said_beside_the_models_answer(qtbot, window, planted_png):
    from core.inference.results import Analysis, ModelResult
    from core.models.novelty import novelty_warning

    _open(qtbot, window, planted_png[0])

    def result(model: str, warnings: list[str]) -> ModelResult:
        return ModelResult(model, "1.0", "classification", "cpu", ["no", "yes"], {"no": 0.2, "yes": 0.8}, "yes",
                           warnings=warnings, novelty=0.5)

    flagged = result("far", [novelty_warning("far", 1.0)])
    window.state.set_analysis(Analysis(str(planted_png[0]), window.state.record.modality.value, "user", 0,
                                       [result("near", []), flagged]))
    cautions = [t for t in _texts(window.probabilities) if "Unusual picture for this model" in t]
    assert len(cautions) == 1 and flagged.unusual and not result("near", []).unusual
    assert any(item.startswith("⚠ Unusual picture for far") for item in
               (window.warnings.item(i).text() for i in range(window.warnings.count())))
    outline = ModelResult("seg", "1.0", "segmentation", "cpu", warnings=[novelty_warning("seg", 1.0)], novelty=1.0)
    window.state.set_analysis(Analysis(str(planted_png[0]), window.state.record.modality.value, "user", 0, [outline]))
    qtbot.waitUntil(lambda: [t for t in _texts(window.probabilities) if "Unusual picture for this model" in t]
                    == cautions)  # the segmenter's box says it too (the earlier boxes deleted)


def test_modality_box_sets_the_state_and_the_note_follows(qtbot, window, planted_png):
    from core.imaging import Modality

    _open(qtbot, window, planted_png[0])
    window.modality_box.setCurrentIndex(3)  # Breast ultrasound
    window._modality_chosen()
    assert window.state.record.modality is Modality.US and window.state.record.modality_source == "user"
    assert window.modality_note.text() == window.state.modality_text() == "  Breast ultrasound — from user"


def _texts(widget) -> list[str]:
    from PySide6.QtWidgets import QLabel

    return [label.text() for label in widget.findChildren(QLabel)]


def test_scale_box_is_for_microscopy_and_its_choice_reaches_the_analysis(qtbot, window, tiny_models, planted_png,
                                                                         tmp_path, monkeypatch):
    import json
    import shutil

    from PIL import Image

    from gui.main_window import CUSTOM_SCALE
    from tests.test_histology import fake_he

    folder = tmp_path / "models" / "tiny-scaled"  # the tiny classifier as a microscopy bundle: 32-px tiles at 1 um
    shutil.copytree(tiny_models / "tiny-mr-classifier", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(id="tiny-scaled", modality="SM", tiling={"tile": 32, "stride": 32, "microns_per_pixel": 1.0})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    window.state.set_chosen_models(["tiny-scaled"])
    window.registry.bundles.update(Registry([folder.parent]).bundles)
    handed = []
    submit = window.engine.submit
    monkeypatch.setattr(window.engine, "submit",
                        lambda record, **kw: handed.append(kw["microns_per_pixel"]) or submit(record, **kw))
    _open(qtbot, window, planted_png[0], modality_index=1)  # Brain MRI: no magnification to set
    qtbot.wait(50)  # the toolbar lays itself out (shows and hides its widgets) on the next turn of the loop
    assert not window.scale_box.isVisible()
    for i in (1, 2):
        Image.fromarray(fake_he(i, True, (96, 128))).save(tmp_path / f"field{i}.png")
    _open(qtbot, window, tmp_path / "field1.png", modality_index=4)  # Histology
    qtbot.waitUntil(window.scale_box.isVisible, timeout=2000)
    assert window.scale_box.currentText() == "From file"
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None and not window.is_busy, timeout=60000)
    assert handed == [None] and "Scale: 1 µm per pixel (assumed)" in _texts(window.probabilities)
    window.auto_analyse = True  # a scale chosen analyses again at once
    window.scale_box.setCurrentIndex(window.scale_box.findText("400x"))
    window._scale_chosen()
    assert window.state.analysis is None  # the result at the old scale is gone at once
    qtbot.waitUntil(lambda: window.state.analysis is not None and not window.is_busy, timeout=60000)
    assert handed[-1] == pytest.approx(0.49) and window.state.microns_per_pixel == pytest.approx(0.49)
    assert "Scale: 0.49 µm per pixel (user)" in _texts(window.probabilities)
    assert not any("Magnification" in w for r in window.state.analysis.results for w in r.warnings)
    monkeypatch.setattr(window, "_ask_microns", lambda: 0.25)
    window.scale_box.setCurrentIndex(window.scale_box.findData(CUSTOM_SCALE))
    window._scale_chosen()
    qtbot.waitUntil(lambda: window.state.analysis is not None and not window.is_busy, timeout=60000)
    assert handed[-1] == 0.25 and window.scale_box.currentText() == "0.25 µm/px"
    _open(qtbot, window, tmp_path / "field2.png", modality_index=4)  # another picture: its own magnification
    assert window.state.microns_per_pixel is None and window.scale_box.currentText() == "From file"
    window.scale_box.setCurrentIndex(window.scale_box.findText("100x"))
    window._scale_chosen()
    qtbot.waitUntil(lambda: window.state.analysis is not None and not window.is_busy, timeout=60000)
    window.modality_box.setCurrentIndex(1)
    window._modality_chosen()
    qtbot.waitUntil(lambda: not window.scale_box.isVisible(), timeout=2000)
    assert window.state.microns_per_pixel is None


def test_same_warning_from_two_models_is_listed_once(window):
    window.warnings.show_warnings(["Unsure modality: x", "Low confidence: y", "Unsure modality: x"])
    assert [window.warnings.item(i).text() for i in range(window.warnings.count())] == [
        "⚠ Unsure modality: x", "⚠ Low confidence: y"]


def test_bad_file_keeps_previous_image(qtbot, window, planted_png, tmp_path):
    _open(qtbot, window, planted_png[0])
    good = window.state.record
    (tmp_path / "bad.dcm").write_bytes(b"not an image at all")
    window.open_path(tmp_path / "bad.dcm")
    qtbot.waitUntil(lambda: window.last_error is not None, timeout=10000)
    assert "bad.dcm" in window.last_error
    assert window.state.record is good and not window.viewer.image_item.pixmap().isNull()


def test_multiframe_slider(qtbot, window, pydicom_file):
    _open(qtbot, window, pydicom_file("examples_ybr_color.dcm"))
    assert window.frame_slider.isEnabled() and window.frame_slider.maximum() == 29
    window.frame_slider.setValue(3)  # as a drag of the slider leaves it
    assert window.state.slice_index == 3 and window.frame_label.text() == "4/30"
    next_slice = next(a for a in window.findChildren(QAction) if a.text() == "Next slice")
    next_slice.trigger()  # what Down, Right or PgDown does
    assert window.state.slice_index == 4 and window.frame_label.text() == "5/30" and window.frame_slider.value() == 4


def test_settings_remembered(qtbot, window, planted_png):
    _open(qtbot, window, planted_png[0])
    window.overlays.heatmap_opacity.setValue(70)
    window.close()
    assert int(window.settings.value("heatmap_opacity")) == 70
    assert str(planted_png[0]) in window.settings.value("recent", [], type=list)


def test_saved_opacities_are_read_into_the_state_within_range(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "odd.ini"), QSettings.Format.IniFormat)
    settings.setValue("heatmap_opacity", 250)
    settings.setValue("mask_opacity", "half")
    win = MainWindow(registry=Registry([tmp_path]), settings=settings)
    qtbot.addWidget(win)
    assert win.state.overlays.heatmap.opacity == 1.0 and win.state.overlays.mask.opacity == 0.40
    assert win.overlays.heatmap_opacity.value() == 100 and win.overlays.mask_opacity.value() == 40


def test_window_shows_before_tensorflow_is_imported(tmp_path):
    code = (
        "import sys, os; os.environ['QT_QPA_PLATFORM']='offscreen'\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from PySide6.QtCore import QSettings\n"
        "app = QApplication([])\n"
        "from gui.main_window import MainWindow\n"
        f"w = MainWindow(settings=QSettings(r'{tmp_path / 's.ini'}', QSettings.Format.IniFormat)); w.show(); app.processEvents()\n"
        "assert w.isVisible()\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "False False"


def test_batch_dialog_progress_cancel_and_table(qtbot, window, tmp_path):
    from PIL import Image

    from tests.tiny_models import planted_images

    folder = tmp_path / "folder"
    folder.mkdir()
    images, _, _ = planted_images(30, seed=2)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"c{i:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    dialog = window.batch()
    qtbot.addWidget(dialog)
    dialog.folder.setText(str(folder))
    dialog.out.setText(str(tmp_path / "out"))
    for i in range(dialog.models.count()):
        if dialog.models.item(i).data(256) == "tiny-mr-classifier":
            dialog.models.item(i).setCheckState(dialog.models.item(i).checkState().Checked)
    dialog.start()
    qtbot.waitUntil(lambda: dialog.table.rowCount() >= 3, timeout=60000)
    import time

    started = time.monotonic()
    dialog.cancel()
    qtbot.waitUntil(lambda: dialog.summary is not None or dialog.error is not None, timeout=10000)
    assert dialog.error is None, dialog.error
    assert time.monotonic() - started < 5
    assert dialog.summary["cancelled"] and dialog.summary["files_done"] < 31
    assert dialog.table.rowCount() == dialog.summary["files_done"]
    dialog.start(resume=True)
    qtbot.waitUntil(lambda: dialog.summary is not None and not dialog.running, timeout=120000)
    assert dialog.summary["complete"] and dialog.summary["errors"] == 1
    assert dialog.table.rowCount() == 31  # the files of the run resumed are listed too, not only the new ones
    listed = sorted(dialog.table.item(r, 0).text() for r in range(dialog.table.rowCount()))
    assert listed == sorted([f"c{i:02d}.png" for i in range(30)] + ["broken.png"])
    assert all(dialog.table.item(r, 0).toolTip() == dialog.table.item(r, 0).text()  # elided in a narrow column
               for r in range(dialog.table.rowCount()))
    qtbot.waitUntil(lambda: window.history_panel.table.rowCount() == 30, timeout=10000)  # all but the broken file
    opened = []
    dialog.openRequested.connect(lambda path, frame: opened.append((path, frame)))
    dialog.folder.setText(str(tmp_path))  # edited after the run: rows still open the run's own files
    dialog.table.sortItems(0)
    dialog._open_row(0, 0)
    assert opened == [(folder / dialog.table.item(0, 0).text(), 0)]


def test_batch_dialog_asks_before_reusing_an_output_folder_or_closing_while_it_runs(qtbot, window, tmp_path,
                                                                                   monkeypatch):
    from PIL import Image

    from tests.tiny_models import planted_images

    folder, out = tmp_path / "folder", tmp_path / "out"
    folder.mkdir()
    for i, img in enumerate(planted_images(12, seed=3)[0]):
        Image.fromarray(img).save(folder / f"c{i:02d}.png")
    dialog = window.batch()
    qtbot.addWidget(dialog)
    dialog.folder.setText(str(folder))
    dialog.out.setText(str(out))
    dialog.dicom_sr.setChecked(True)
    dialog.start()
    qtbot.waitUntil(lambda: dialog.summary is not None and not dialog.running, timeout=120000)
    assert len([n for n in (out / "sr").iterdir() if n.name.startswith("sr_")]) == 12  # one SR per picture, named by a keyed hash
    dialog.dicom_sr.setChecked(False)
    answers = []
    monkeypatch.setattr(dialog, "ask_earlier_results", lambda _out: answers.pop(0))
    answers.append("")  # Cancel: nothing started, nothing replaced
    dialog.start()
    assert not dialog.running and "Not started" in dialog.status.text() and dialog.table.rowCount() == 12
    answers.append("replace")
    dialog.start()
    assert dialog.running  # and stays so until the GUI thread hears of its end: the closes below come first
    monkeypatch.setattr(dialog, "ask_to_stop", lambda: False)
    dialog.close()
    assert dialog.isVisible() and not dialog.cancel_event.is_set()
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)  # Escape rejects the dialog: it asks too, and No keeps it
    assert dialog.isVisible() and not dialog.cancel_event.is_set()
    monkeypatch.setattr(dialog, "ask_to_stop", lambda: True)
    dialog.close()
    assert not dialog.isVisible() and dialog.cancel_event.is_set()
    qtbot.waitUntil(lambda: not dialog.running, timeout=60000)
    assert dialog.error is None and dialog.summary is not None


def test_exports_and_history_from_the_window(qtbot, window, tmp_path):
    import pydicom
    from PIL import Image

    img = np.full((64, 64), 40, np.uint8)
    img[10:30, 20:40] = 250
    Image.fromarray(img).save(tmp_path / "us2.png")
    _open(qtbot, window, tmp_path / "us2.png", modality_index=3)
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None, timeout=60000)
    qtbot.waitUntil(lambda: window.history_panel.table.rowCount() >= 1, timeout=10000)
    for export, name in ((window.export_report, "r.pdf"), (window.export_seg, "s.dcm"), (window.export_sc, "o.dcm"),
                         (window.export_sr, "f.sr.dcm")):
        window.last_export = None
        export(tmp_path / name)
        qtbot.waitUntil(lambda: window.last_export is not None, timeout=30000)
        assert (tmp_path / name).stat().st_size > 0
    assert str(pydicom.dcmread(tmp_path / "s.dcm").PatientName) == "ANONYMOUS"
    _open(qtbot, window, tmp_path / "us2.png", modality_index=3)
    qtbot.waitUntil(lambda: len(window.previous_analyses) >= 1, timeout=10000)


def test_screenshot_specs():
    from gui.screenshots import parse_spec

    assert parse_spec("a/b.dcm:shot") == ("a/b.dcm", "shot", {})
    assert parse_spec("a/b.dcm:shot:slice=3,wl=-25/-110") == ("a/b.dcm", "shot", {"slice": "3", "wl": "-25/-110"})
    assert parse_spec("C:/x.png:shot") == ("C:/x.png", "shot", {})


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12 on")
def test_qt_calls_that_return_nothing_keep_none_alive(qtbot):
    """PySide6 6.12.0 on Python 3.11 dropped a reference to None on every call of a Qt method returning nothing;
    a window that made a few thousand such calls (opening a folder of mammograms) died with 'none_dealloc'."""
    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(500):
        label.setText("x")
        label.setEnabled(True)
        QApplication.processEvents()
    assert sys.getrefcount(None) > before - 50


def _mouse(window, kind, scene_x: float, scene_y: float, right: bool = False) -> None:
    """A left-button (or right-button) press, move (button held) or release at an image point, sent to the viewer
    as a user's."""
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent

    viewer = window.viewer
    local = QPointF(viewer.mapFromScene(QPointF(scene_x, scene_y)))
    button = Qt.MouseButton.RightButton if right else Qt.MouseButton.LeftButton
    kinds = {"press": (QEvent.Type.MouseButtonPress, button, button),
             "move": (QEvent.Type.MouseMove, Qt.MouseButton.NoButton, button),
             "release": (QEvent.Type.MouseButtonRelease, button, Qt.MouseButton.NoButton)}
    event_type, changed, held = kinds[kind]
    event = QMouseEvent(event_type, local, QPointF(viewer.viewport().mapToGlobal(local.toPoint())), changed, held,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewer.viewport(), event)


def test_a_left_drag_in_measure_mode_draws_a_ruler_in_millimetres(qtbot, window, pydicom_file, tmp_path):
    import json

    _open(qtbot, window, pydicom_file("MR_small.dcm"))
    spacing = window.state.pixel_spacing_mm
    assert spacing  # MR_small states its PixelSpacing
    _mouse(window, "press", 10, 20)
    _mouse(window, "move", 40, 20)
    _mouse(window, "release", 50, 20)
    assert window.state.rulers == []  # without measure mode a left drag pans
    window.measure_action.trigger()
    assert window.viewer.measuring
    _mouse(window, "press", 10, 20)
    _mouse(window, "move", 30, 20)
    assert window.viewer._ruler_preview  # the ruler is drawn while dragging
    _mouse(window, "release", 50, 20)
    (ruler,) = window.state.rulers
    assert ruler.length_px == pytest.approx(40, abs=1.5)
    expected = ruler.text(spacing)
    assert expected.endswith(" mm")
    assert float(expected.split()[0]) == pytest.approx(40 * spacing[1], abs=1.5 * spacing[1])
    labels = [child.text() for item in window.viewer.ruler_items for child in item.childItems()]
    assert labels == [expected] and not window.viewer._ruler_preview
    assert window.statusBar().currentMessage() == f"Distance: {expected}"
    window.save_view(tmp_path / "view.png")  # the exported view: the picture as shown and the distance in its JSON
    (measured,) = json.loads((tmp_path / "view.json").read_text())["measurements"]
    assert measured["length_mm"] == pytest.approx(ruler.length_mm(spacing), abs=0.01)
    assert measured["x0"] == pytest.approx(ruler.x0, abs=0.01)
    clear = next(a for a in window.findChildren(QAction) if a.text() == "Clear measurements on this slice")
    clear.trigger()
    assert window.state.rulers == [] and window.viewer.ruler_items == []
    window.measure_action.trigger()
    assert not window.viewer.measuring
    assert window.viewer.viewport().cursor().shape() == Qt.CursorShape.OpenHandCursor  # a left drag pans again


def test_an_ellipse_region_gives_area_and_hounsfield_units_on_ct(qtbot, window, pydicom_file, tmp_path):
    import json

    from core.measurements import ellipse_mask

    _open(qtbot, window, pydicom_file("CT_small.dcm"))
    state = window.state
    window.measure_action.trigger()
    window.region_action.trigger()  # one measure mode at a time
    assert window.viewer.measuring == "region" and not window.measure_action.isChecked()
    _mouse(window, "press", 10, 12)
    _mouse(window, "move", 30, 30)
    assert window.viewer._ruler_preview  # the ellipse and its values while dragging
    _mouse(window, "release", 40, 44)
    (region,) = state.regions
    assert state.rulers == [] and region.unit == "HU"
    inside = state.record.values(0)[ellipse_mask(region.x0, region.y0, region.x1, region.y1, 128, 128)]
    assert region.stats.mean == pytest.approx(float(inside.mean()), rel=1e-6)
    assert -1100 < region.stats.minimum and region.stats.maximum < 3100  # Hounsfield units, not stored values
    spacing = state.pixel_spacing_mm
    labels = [child.text() for item in window.viewer.region_items for child in item.childItems()]
    assert labels == [region.text(spacing)] and " HU (min " in labels[0] and " mm² · mean " in labels[0]
    assert window.statusBar().currentMessage() == f"Region: {region.text(spacing)}"
    window.save_view(tmp_path / "view.png")
    (saved,) = json.loads((tmp_path / "view.json").read_text())["regions"]
    assert saved["unit"] == "HU" and saved["mean"] == pytest.approx(region.stats.mean, abs=1e-3)
    assert saved["area_mm2"] == pytest.approx(region.area_mm2(spacing), abs=0.01)
    window.measure_action.trigger()
    assert window.viewer.measuring == "distance" and not window.region_action.isChecked()
    next(a for a in window.findChildren(QAction) if a.text() == "Clear measurements on this slice").trigger()
    assert state.regions == [] and window.viewer.region_items == []


def test_a_ruler_is_one_drag_on_one_slice(qtbot, window, pydicom_file):
    _open(qtbot, window, pydicom_file("examples_ybr_color.dcm"))  # 30 frames
    window.measure_action.trigger()
    _mouse(window, "press", 10, 20)
    _mouse(window, "move", 30, 20)
    window.state.set_slice(2)  # the wheel or the cine moves on while the ruler is drawn
    assert window.viewer._ruler_preview == []
    _mouse(window, "release", 50, 20)
    assert window.state.rulers == [] and window.viewer.ruler_items == []  # not put on slice 3
    window.state.set_slice(0)
    assert window.state.rulers == []
    _mouse(window, "press", 10, 20, right=True)  # a window/level drag under way
    _mouse(window, "press", 10, 20)
    _mouse(window, "move", 30, 20)
    _mouse(window, "release", 50, 20)
    _mouse(window, "release", 10, 20, right=True)
    assert window.state.rulers == []  # one drag at a time
    _mouse(window, "press", 10, 20)
    _mouse(window, "release", 50, 20)
    assert len(window.state.rulers) == 1  # and the next drag measures


def test_invert_shows_the_grey_levels_the_other_way_round(qtbot, window, pydicom_file):
    _open(qtbot, window, pydicom_file("MR_small.dcm"))
    before = window.viewer.image_item.pixmap().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
    window.invert_action.trigger()
    after = window.viewer.image_item.pixmap().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
    assert window.state.inverted and after.pixel(20, 20) != before.pixel(20, 20)
    assert (after.pixel(20, 20) & 0xFF) == 255 - (before.pixel(20, 20) & 0xFF)
    _open(qtbot, window, pydicom_file("CT_small.dcm"))
    assert not window.state.inverted and not window.invert_action.isChecked()
    _open(qtbot, window, pydicom_file("examples_rgb_color.dcm"))
    window.invert_action.trigger()
    assert not window.state.inverted and not window.invert_action.isChecked()  # colour: nothing to invert


def test_keyboard_shortcuts_are_listed_from_the_menus(qtbot, window):
    rows = {command: keys for _, command, keys in window.shortcuts()}
    assert rows["Measure distance (drag)"] == "D" and rows["Invert grey levels"] == "I"
    assert rows["Toggle heatmap"] == "H" and rows["Keyboard shortcuts"] == "F1"
    assert "Down" in rows["Next slice"] and "PgDown" in rows["Next slice"]
    next(a for a in window.findChildren(QAction) if a.text() == "&Keyboard shortcuts").trigger()
    table = window.shortcuts_dialog.findChild(QTableWidget)
    assert window.shortcuts_dialog.isVisible() and table.rowCount() == len(rows)
    shown = {table.item(r, 1).text(): table.item(r, 2).text() for r in range(table.rowCount())}
    assert shown == rows


def test_the_last_file_asked_for_is_the_one_shown(qtbot, window, pydicom_file, planted_png):
    """A slow open (a large film) that finishes after a quick one asked for later is not shown over it."""
    from core.imaging import load_image

    older, newer = window._new_open_request(), window._new_open_request()
    window._loaded(load_image(pydicom_file("CT_small.dcm")), newer)
    window._loaded(load_image(planted_png[0]), older)
    assert window.state.record.path.name == "CT_small.dcm"
    window.open_path(planted_png[0])  # asked for, then overtaken before it loads: its busy job still ends
    window.open_path(pydicom_file("MR_small.dcm"))
    qtbot.waitUntil(lambda: window.state.record.path.name == "MR_small.dcm" and not window.is_busy, timeout=20000)


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def test_exported_view_json_describes_that_view_only(qtbot, window, planted_png, tmp_path):
    from core.inference.results import Analysis

    _open(qtbot, window, planted_png[0])
    window.state.set_analysis(Analysis(str(planted_png[0]), window.state.record.modality.value, "user", 0, []))
    window.save_view(tmp_path / "view.png")
    assert (tmp_path / "view.json").exists()
    _open(qtbot, window, _copy(planted_png[0], tmp_path / "other.png"))  # nothing found or measured on this one
    window.save_view(tmp_path / "view.png")
    assert (tmp_path / "view.png").exists() and not (tmp_path / "view.json").exists()


def test_panels_and_actions_follow_the_image_not_the_last_analysis(qtbot, window, planted_png, tmp_path):
    _open(qtbot, window, planted_png[0], modality_index=1)
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None and not window.is_busy, timeout=60000)
    assert "tiny-mr-classifier" in window.model_info.toPlainText()
    _open(qtbot, window, _copy(planted_png[0], tmp_path / "other.png"))
    assert "No model has run on this image" in window.model_info.toPlainText()
    window._analyses_running = 2  # two images' analyses under way (one opened, then another), a busy job each
    window._busy("Analysing")
    window._busy("Analysing")
    window.analyse_action.setEnabled(False)
    window._analysis_ended()
    assert not window.analyse_action.isEnabled() and window.is_busy  # the other is still running
    window._analysis_ended()
    assert window.analyse_action.isEnabled() and not window.is_busy
    help_action = next(a for a in window.findChildren(QAction) if a.text() == "&Keyboard shortcuts")
    help_action.trigger()
    help_action.trigger()
    assert len([d for d in window.findChildren(QDialog) if d.windowTitle() == "Keyboard shortcuts"]) == 1
    assert all(keys for _, _, keys in window.shortcuts())  # no command listed without a key


def test_the_modality_chosen_for_one_image_is_not_carried_to_the_next(qtbot, window, pydicom_file, planted_png):
    """Choosing Breast ultrasound for a headerless picture must not send the next file, an MR DICOM, to the
    ultrasound models."""
    _open(qtbot, window, planted_png[0], modality_index=3)  # Breast ultrasound
    assert window.state.record.modality_source == "user"
    _open(qtbot, window, pydicom_file("MR_small.dcm"))
    assert window.state.record.modality.value == "MR" and window.state.record.modality_source == "dicom"
    assert window.modality_box.currentData() is None  # Automatic


def test_automatic_again_keeps_the_frame_window_inversion_and_rulers(qtbot, window, pydicom_file):
    """Back to the file's own modality re-reads the file; what the reader set on it stays (it did not before)."""
    _open(qtbot, window, pydicom_file("rtdose.dcm"))  # 15 greyscale frames of 10 x 10
    state = window.state
    state.set_slice(3)
    state.adjust(40, 20)
    window.invert_action.trigger()
    state.add_ruler(2, 2, 8, 8)
    state.add_region(1, 1, 9, 8)
    chosen, rulers, regions = state.window, state.rulers, state.regions
    window.modality_box.setCurrentIndex(3)  # Breast ultrasound
    window._modality_chosen()
    assert state.record.modality_source == "user"
    window.modality_box.setCurrentIndex(0)  # Automatic
    window._modality_chosen()
    qtbot.waitUntil(lambda: state.record.modality_source == "dicom" and not window.is_busy, timeout=20000)
    assert state.slice_index == 3 and window.frame_slider.value() == 3
    assert state.window == chosen and window.wl_label.text() == state.window_text()
    assert state.inverted and window.invert_action.isChecked()
    assert state.rulers == rulers and state.regions == regions and len(regions) == 1


def test_a_history_image_entry_opens_the_frame_analysed(qtbot, window, pydicom_file):
    from core.history import HistoryEntry

    path = pydicom_file("rtdose.dcm")
    entry = HistoryEntry(1, "", str(path), "2026-12-06 20:00", 6, "MR", {}, {})
    window.history_panel.show_entries([entry])
    window.history_panel._open(0, 0)  # a double-click on the entry
    qtbot.waitUntil(lambda: window.state.record is not None and not window.is_busy, timeout=20000)
    assert window.state.record.path == path and window.state.slice_index == 6 and window.state.frame == 6


def test_cine_stops_for_another_image_and_for_an_analysis(qtbot, window, pydicom_file, tmp_path):
    """Playback belongs to the image it was started on: the next one opens still, at its first frame; Analyse
    stops it, so the result is shown on the frame it was made for."""
    import shutil

    _open(qtbot, window, pydicom_file("rtdose.dcm"))  # 15 frames
    window.toggle_cine()
    qtbot.waitUntil(lambda: window.state.slice_index > 1, timeout=5000)
    other = tmp_path / "other.dcm"
    shutil.copy(pydicom_file("rtdose.dcm"), other)
    _open(qtbot, window, other)
    qtbot.wait(300)
    assert not window.cine.isActive() and window.state.slice_index == 0
    window.toggle_cine()
    qtbot.waitUntil(lambda: window.state.slice_index > 1, timeout=5000)
    window.analyse()
    frame = window.state.slice_index
    assert not window.cine.isActive()
    qtbot.waitUntil(lambda: window._analyses_running == 0, timeout=30000)
    assert window.state.slice_index == frame


def test_a_recent_entry_of_a_relative_path_opens_that_file_from_another_working_folder(qtbot, window, pydicom_file,
                                                                                        tmp_path, monkeypatch):
    import shutil

    for patient, source in (("patA", "CT_small.dcm"), ("patB", "MR_small.dcm")):
        (tmp_path / patient).mkdir()
        shutil.copy(pydicom_file(source), tmp_path / patient / "scan.dcm")
    monkeypatch.chdir(tmp_path / "patA")
    window.open_path("scan.dcm")  # as `main.py scan.dcm` started in that folder
    qtbot.waitUntil(lambda: window.state.record is not None and not window.is_busy, timeout=20000)
    assert window.settings.value("recent", [], type=list)[0] == str(tmp_path / "patA" / "scan.dcm")
    assert Path(window.settings.value("last_dir")).is_absolute()
    monkeypatch.chdir(tmp_path / "patB")  # another day, another patient's folder with its own scan.dcm
    window.recent_menu.actions()[0].trigger()
    qtbot.waitUntil(lambda: not window.is_busy, timeout=20000)
    assert window.state.record.path == tmp_path / "patA" / "scan.dcm"


def test_an_exported_view_gets_its_png_ending_and_its_json_names_the_frame_measured(qtbot, window, pydicom_file,
                                                                                   tmp_path):
    import json

    _open(qtbot, window, pydicom_file("rtdose.dcm"))
    window.state.set_slice(6)
    window.state.add_ruler(1, 1, 8, 8)
    window.save_view(tmp_path / "view")  # typed without an ending: Qt wrote nothing and it said "Exported"
    assert (tmp_path / "view.png").stat().st_size > 0
    found = json.loads((tmp_path / "view.json").read_text())
    assert found["frame"] == 6 and "path" not in found and found["measurements"]  # anonymised: no file named
    window.anonymise_exports = False
    window.save_view(tmp_path / "identified.png")
    assert json.loads((tmp_path / "identified.json").read_text())["path"] == str(pydicom_file("rtdose.dcm"))
    window.save_view(tmp_path / "missing" / "view.png")  # a folder that is not there: said, not "Exported"
    assert "Could not write" in window.last_error and "Exported" not in window.statusBar().currentMessage()


def test_a_failed_grad_cam_request_says_so_and_leaves_analyse_usable(qtbot, window, planted_png, monkeypatch):
    from concurrent.futures import Future

    _open(qtbot, window, planted_png[0], modality_index=1)
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None and not window.is_busy, timeout=60000)
    result = window.state.heatmap_result
    other = next(c for c in result.classes if c != result.heatmap_class)
    real_submit = window.engine.submit

    def submit(record, **options):
        if options.get("target_class"):
            failed = Future()
            failed.set_exception(MemoryError("out of memory computing the gradients"))
            return failed
        return real_submit(record, **options)

    monkeypatch.setattr(window.engine, "submit", submit)
    window._gradcam_for_class(result.model_id, other)
    qtbot.waitUntil(lambda: not window.is_busy, timeout=30000)
    assert window.last_error.startswith("Grad-CAM failed") and window._analyses_running == 0
    window.analyse()
    qtbot.waitUntil(lambda: window._analyses_running == 0 and not window.is_busy, timeout=60000)
    assert window.analyse_action.isEnabled()  # the failure had taken one more off the count: disabled for good


@pytest.mark.parametrize("value", ["garbage", ""])
def test_a_damaged_window_geometry_setting_does_not_stop_the_start(qtbot, tiny_models, tmp_path, value):
    (tmp_path / "settings.ini").write_text(f"[General]\ngeometry={value}\n")
    window = open_window(qtbot, tiny_models, tmp_path)
    assert window.isVisible()


def test_opening_a_dicom_seg_shows_its_outlines_over_its_image(qtbot, window, tmp_path):
    import pydicom as dicom

    from core.export.dicom_export import export_seg
    from core.imaging import load_image

    record = load_image(_us_dicom(tmp_path))
    result = window.engine.analyzer.analyze(record, model_ids=["tiny-us-segmenter"]).results[0]
    seg = export_seg(record, result, tmp_path / "us.seg.dcm", anonymise=False)
    window._set_auto(True)  # the outlines opened are shown, not replaced by this program's analysis
    window.open_path(seg)
    qtbot.waitUntil(lambda: window.state.analysis is not None and not window.is_busy, timeout=20000)
    qtbot.wait(200)
    (shown,) = window.state.analysis.results
    assert window.state.record.path == tmp_path / "us.dcm" and shown.model_id == "Lesion (DICOM SEG)"
    assert window.viewer.lesion_items and window._analyses_running == 0
    assert window.settings.value("recent", [], type=list)[0] == str(seg)
    assert dicom.dcmread(seg).Modality == "SEG"


def _us_dicom(folder) -> Path:
    """A small ultrasound DICOM with a bright blob (the tiny segmenter outlines it)."""
    import pydicom as dicom
    from pydicom.data import get_testdata_file

    ds = dicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = np.full((64, 64), 100, np.uint16)
    pixels[20:34, 12:30] = 2000
    ds.PixelData, ds.PixelRepresentation, ds.Modality = pixels.tobytes(), 0, "US"
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(folder / "us.dcm")
    return folder / "us.dcm"
