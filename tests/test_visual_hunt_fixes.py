"""Defects a hunt found by looking at the real window (each test fails before its fix)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import open_window

pytestmark = pytest.mark.slow


def test_a_picture_read_smaller_says_so_and_measures_in_the_files_pixels(qtbot, tiny_models, tmp_path, monkeypatch):
    """A picture read at 1/2: a ruler along a lesion's diameter had read half the lesion label's pixels, the lesions'
    total had been smaller than its only lesion, and the Warnings panel had not said the picture was read smaller."""
    from PySide6.QtWidgets import QLabel

    from tests.test_overlay_hunt_fixes import us_read_at_half

    window = us_read_at_half(qtbot, tiny_models, tmp_path, monkeypatch)
    record, lesions = window.state.record, window.state.segmentation_result.lesions
    assert record.downsample == 2 and lesions and record.warnings
    shown = [window.warnings.item(i).text() for i in range(window.warnings.count())]
    assert any(record.warnings[0] in line for line in shown)
    total = next(label.text() for label in window.probabilities.findChildren(QLabel) if "total" in label.text())
    assert total.endswith(f"total {sum(lesion.area_px for lesion in lesions) * 4} px")
    ruler = window.state.add_ruler(10, 10, 40, 10)  # 30 pixels of the picture: 60 of the file
    assert ruler.text(window.state.pixel_spacing_mm) == "60 px"
    assert "Distance: 60 px" in window.statusBar().currentMessage()
    label = next(item for item in window.viewer.ruler_items if hasattr(item, "childItems") and item.childItems())
    assert label.childItems()[0].text() == "60 px"


def test_the_comparison_title_wraps_so_the_link_note_is_read_whole(qtbot, tiny_models, tmp_path):
    """At 1,280 px the title had been cut ('... · not lin'): how the two views are linked was unreadable."""
    from tests.test_gui_compare import _open, _study

    win = open_window(qtbot, tiny_models, tmp_path)
    series = _open(qtbot, win, _study(tmp_path, other_frame=True), "AX FLAIR")
    win.compare_series(series["SAG T2"])
    qtbot.waitUntil(lambda: win.compare.state.series is series["SAG T2"] and not win.is_busy, timeout=20000)
    title = win.compare.title
    assert "not linked" in title.text() and title.toolTip() == title.text()
    line = title.fontMetrics().height()
    assert title.heightForWidth(200) > 2 * line  # the note runs on in lines of its column, not off its edge


def test_the_exam_window_fits_the_screen(qtbot):
    from gui.hanging_view import ExamView

    view = ExamView()
    qtbot.addWidget(view)
    screen = view.screen().availableGeometry()
    assert view.width() <= screen.width() and view.height() <= screen.height()


def test_at_1280_x_800_the_findings_keep_the_larger_share_of_the_right_column(qtbot, tiny_models, tmp_path):
    """The Findings panel had been left about 200 px while the Overlays controls took 400: the second model and the
    lesion sizes were scrolled out of sight."""
    window = open_window(qtbot, tiny_models, tmp_path)
    window.resize(1280, 800)
    window.show()
    qtbot.wait(50)
    heights = {name: window.docks[name].height() for name in ("Findings", "Warnings", "Overlays")}
    assert heights["Findings"] > 0.5 * sum(heights.values()), heights


def test_the_strip_legend_names_every_model_in_a_narrow_strip(qtbot):
    """At 1,280 px the third model's legend had read 'brain': its curve could not be told from the others."""
    from PySide6.QtGui import QFontMetrics, QFont

    from core.series.analysis import StripCurve
    from gui.strip_plot import StripPlot

    plot = StripPlot()
    qtbot.addWidget(plot)
    ids = ["brain-mri-tumor-4class", "brain-mri-tumor-yesno", "brain-mri-tumor-seg"]
    plot.curves = [StripCurve(m, "P(not notumor)", [0.1, 0.9], 0.5, []) for m in ids]
    metrics = QFontMetrics(QFont())
    wide = plot.legend(metrics, 2000)
    assert wide == [f"{m}: P(not notumor)" for m in ids]
    narrow = plot.legend(metrics, 420)
    assert sum(metrics.horizontalAdvance(label) + 16 for label in narrow) <= 420
    assert all(label.endswith(m[-3:]) for label, m in zip(narrow, ids))  # the ends that tell them apart


def test_the_scale_bar_label_stands_on_a_dark_box(qtbot, tiny_models, tmp_path):
    """White text alone had been lost on bright tissue."""
    from tests.series_data import write_series

    (path,) = write_series(tmp_path / "bright", [np.full((64, 64), 255, np.uint8)])
    window = open_window(qtbot, tiny_models, tmp_path)
    window.resize(900, 700)
    window.show()
    window.open_path(path)
    qtbot.waitUntil(lambda: window.state.record is not None and not window.is_busy, timeout=20000)
    window.viewer.show_region(32, 32, 4)  # the white picture fills the view
    qtbot.wait(50)
    viewport = window.viewer.viewport()
    assert viewport.grab().toImage().pixelColor(5, viewport.height() - 5).value() > 240
    picture = viewport.grab().toImage()
    h = viewport.height()
    below_label = [picture.pixelColor(x, y).value() for x in range(16, 60) for y in range(h - 36, h - 27)]
    assert min(below_label) < 120  # the dark box under the label, on a white picture


def test_the_studies_columns_fit_their_headings(qtbot):
    from gui.study_browser import StudyBrowser

    browser = StudyBrowser()
    qtbot.addWidget(browser)
    browser.resize(300, 400)
    browser.show()
    qtbot.wait(20)
    header = browser.header()
    words = header.fontMetrics()
    assert header.sectionSize(1) >= words.horizontalAdvance("Modality")  # it had been clipped
