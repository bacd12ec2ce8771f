"""The viewer's model without Qt: slices, window/level, modality, models, analysis and overlay layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.imaging.record import ImageRecord, Modality, StudyInfo
from core.imaging.windowing import WindowPreset, apply_window
from core.inference.results import Analysis, ModelResult
from core.series.stack import SeriesStack
from core.viewer_state import COLORMAPS, Event, OverlayLayer, ViewerState
from tests.conftest import REPO

GREY = WindowPreset("File window", 100.0, 200.0, "LINEAR")
AUTO = WindowPreset("Auto (0.5-99.5 %)", 0.5, 1.0, "LINEAR_EXACT")


def _record(frames: int = 5, color: bool = False, presets=(GREY, AUTO), spacing=None, name="a.dcm",
            modality=Modality.MR, source="dicom", confidence=None) -> ImageRecord:
    """A record whose frame i holds the value 10 * i + column (greyscale) or i in every channel (colour)."""

    def read(i: int) -> np.ndarray:
        if color:
            return np.full((4, 6, 3), i, np.uint8)
        return (10.0 * i + np.arange(6, dtype=np.float32))[None, :].repeat(4, 0)

    return ImageRecord(path=Path(name), file_format="DICOM", modality=modality, modality_source=source, rows=4,
                       columns=6, frames=frames, samples_per_pixel=3 if color else 1,
                       photometric="RGB" if color else "MONOCHROME2", bits_stored=8 if color else 16,
                       pixel_spacing_mm=spacing, window_presets=list(presets), study=StudyInfo(), metadata=[],
                       _read_frame=read, modality_confidence=confidence)


def _analysis(frame: int = 0, heatmap=None, tile=None, mask=None, modality: str = "MR") -> Analysis:
    results = [ModelResult("cls", "1.0", "classification", "cpu", ["a", "b"], {"a": 0.7, "b": 0.3}, "a",
                           heatmap=heatmap, heatmap_class="a", tile_gradcam=tile)]
    if mask is not None:
        results.append(ModelResult("seg", "1.0", "segmentation", "cpu", mask=mask))
    return Analysis("a.dcm", modality, "dicom", frame, results)


def _recorder(state: ViewerState) -> list:
    """Every event of the state as (name, value), in order."""
    seen: list = []
    for event in state.events:
        event.connect(lambda value, name=event.name: seen.append((name, value)))
    return seen


# ----- series and slices

def test_open_starts_at_first_slice_in_the_files_window_without_analysis():
    state = ViewerState()
    assert state.record is None and state.slice_count == 0 and state.slice_text() == "1/1"
    first = _record()
    state.open(first)
    state.set_slice(3)
    state.adjust(10, 0)
    state.set_analysis(_analysis(frame=3))
    seen = _recorder(state)
    second = _record(frames=2, name="b.dcm")
    state.open(second)
    assert state.record is second and state.slice_index == 0 and state.slice_count == 2
    assert state.window is None and state.analysis is None
    assert seen == [("record", second), ("analysis", None)]


def test_slice_is_clamped_and_fires_only_on_change():
    state = ViewerState()
    state.set_slice(2)  # nothing open: nothing happens
    assert state.slice_index == 0
    state.open(_record(frames=5))
    seen = _recorder(state)
    state.set_slice(3)
    state.set_slice(3)
    state.set_slice(99)
    state.set_slice(-4)
    assert [v for _, v in seen] == [3, 4, 0]
    assert state.slice_text() == "1/5"


def test_step_stops_at_the_ends_or_wraps_for_cine():
    state = ViewerState()
    state.open(_record(frames=3))
    state.step(1)
    state.step(1)
    state.step(1)
    assert state.slice_index == 2
    state.step(1, wrap=True)
    assert state.slice_index == 0
    state.step(-1, wrap=True)
    assert state.slice_index == 2 and state.slice_text() == "3/3"
    single = ViewerState()
    single.open(_record(frames=1))
    single.step(1, wrap=True)
    assert single.slice_index == 0


def test_display_is_the_current_slice_in_the_current_window():
    state = ViewerState()
    record = _record(frames=3)
    state.open(record)
    state.set_slice(2)
    assert np.array_equal(state.display(), apply_window(record.values(2), GREY.center, GREY.width))
    state.set_window(AUTO)
    assert np.array_equal(state.display(), apply_window(record.values(2), AUTO.center, AUTO.width, AUTO.function))


def test_analysis_of_another_slice_is_dropped_when_the_slice_changes():
    state = ViewerState()
    state.open(_record(frames=4))
    state.set_slice(1)
    analysis = _analysis(frame=1)
    state.set_analysis(analysis)
    seen = _recorder(state)
    state.set_slice(1)
    assert state.analysis is analysis and seen == []
    state.set_slice(2)
    assert state.analysis is None and seen == [("slice", 2), ("analysis", None)]


# ----- window/level

def test_adjust_moves_the_centre_by_widths_and_doubles_the_width_per_128_pixels():
    state = ViewerState()
    state.open(_record())
    seen = _recorder(state)
    state.adjust(256.0, 0.0)
    assert state.window == WindowPreset("Custom", 300.0, 200.0, "LINEAR")
    state.adjust(0.0, 128.0)
    assert state.window.width == pytest.approx(400.0) and state.window.center == pytest.approx(300.0)
    state.adjust(-128.0, -256.0)
    assert state.window.center == pytest.approx(100.0) and state.window.width == pytest.approx(100.0)
    assert [name for name, _ in seen] == ["window"] * 3
    assert state.window_text() == "C 100 / W 100"


def test_adjust_narrows_a_linear_window_below_one_as_linear_exact():
    """DICOM's LINEAR cannot draw a width under 1 (it would widen to 1): the same window goes on as LINEAR_EXACT."""
    linear = ViewerState()
    linear.open(_record(presets=(WindowPreset("w", 0.0, 2.0, "LINEAR"),)))
    linear.adjust(0.0, -64.0)
    assert linear.window.width == pytest.approx(2.0 ** 0.5) and linear.window.function == "LINEAR"
    linear.adjust(0.0, -128.0 * 20)
    assert linear.window.width == pytest.approx(2.0 ** -19.5) and linear.window.function == "LINEAR_EXACT"
    exact = ViewerState()
    exact.open(_record(presets=(AUTO,)))
    exact.adjust(0.0, -128.0)
    assert exact.window.width == pytest.approx(0.5) and exact.window.function == "LINEAR_EXACT"
    assert exact.window_text() == "C 0.5 / W 0.5"  # float data keeps windows below 1
    exact.adjust(0.0, -128.0 * 40)
    assert exact.window.width == pytest.approx(1e-6)


def test_presets_reset_and_colour_images_have_no_window():
    state = ViewerState()
    state.open(_record())  # an MR file: the MR brain window (measured on the slice) comes first
    assert state.presets[0].name == "MR brain" and state.presets[1:] == [GREY, AUTO]
    assert state.effective_window == GREY
    state.apply_preset("Auto (0.5-99.5 %)")
    assert state.window == AUTO and state.effective_window == AUTO
    with pytest.raises(KeyError, match="Bone"):
        state.apply_preset("Bone")
    seen = _recorder(state)
    state.reset_window()
    state.reset_window()
    assert state.window is None and seen == [("window", None)]
    colour = ViewerState()
    colour.open(_record(color=True, presets=()))
    colour.adjust(50, 50)
    colour.set_window(GREY)
    assert colour.window is None and colour.presets == [] and colour.effective_window is None
    assert colour.window_text() == ""


def test_window_before_any_image_does_nothing():
    state = ViewerState()
    state.adjust(10, 10)
    state.set_window(GREY)
    assert state.window is None and state.window_text() == ""


# ----- modality, models, analysis

def test_user_modality_replaces_the_files_and_drops_the_analysis():
    state = ViewerState()
    record = _record(modality=Modality.OTHER, source="guess", confidence=0.62)
    state.open(record)
    assert state.modality_text() == "  Other — from guess (62%); set it if wrong"
    state.set_analysis(_analysis(modality="OT"))
    seen = _recorder(state)
    state.set_modality(Modality.US)
    assert record.modality is Modality.US and record.modality_source == "user"
    assert state.modality_text() == "  Breast ultrasound — from user"
    assert seen == [("modality", Modality.US), ("analysis", None)]


def test_chosen_models_fire_once_per_change_and_cannot_be_changed_from_outside():
    state = ViewerState()
    seen = _recorder(state)
    state.set_chosen_models(["a", "b", "a"])
    state.set_chosen_models(["a", "b"])
    state.chosen_models.append("c")
    assert state.chosen_models == ["a", "b"]
    state.set_chosen_models([])
    assert seen == [("chosen_models", ["a", "b"]), ("chosen_models", [])]


def test_heatmap_to_draw_follows_the_layer():
    heat, tile = np.full((4, 6), 0.5), np.full((4, 6), 0.9)
    state = ViewerState()
    state.open(_record())
    assert state.heatmap_to_draw() is None and state.segmentation_result is None
    state.set_analysis(_analysis(heatmap=heat))
    assert state.heatmap_to_draw() is heat
    state.overlays.heatmap.tile = True  # asked for, but this result has no tile Grad-CAM
    assert state.heatmap_to_draw() is heat
    state.set_analysis(_analysis(heatmap=heat, tile=tile))
    assert state.heatmap_to_draw() is tile
    state.overlays.heatmap.visible = False
    assert state.heatmap_to_draw() is None


def test_segmentation_result_is_the_first_with_a_mask():
    mask = np.zeros((4, 6), np.uint8)
    state = ViewerState()
    state.open(_record())
    state.set_analysis(_analysis(mask=mask))
    assert state.segmentation_result.model_id == "seg" and state.heatmap_result is None


def test_replace_heatmap_swaps_only_that_models_heatmap():
    state = ViewerState()
    state.open(_record())
    state.replace_heatmap("cls", ModelResult("cls", "1.0", "classification", "cpu"))  # no analysis: no-op
    analysis = _analysis(heatmap=np.zeros((4, 6)), mask=np.zeros((4, 6), np.uint8))
    state.set_analysis(analysis)
    seen = _recorder(state)
    new = np.ones((4, 6))
    state.replace_heatmap("cls", ModelResult("cls", "1.0", "classification", "cpu", heatmap=new, heatmap_class="b"))
    assert analysis.results[0].heatmap is new and analysis.results[0].heatmap_class == "b"
    assert analysis.results[1].heatmap is None
    assert seen == [("heatmap", analysis)]
    tile = np.full((4, 6), 0.5)  # a tiled model's top-tile Grad-CAM is for the class asked for too
    state.replace_heatmap("cls", ModelResult("cls", "1.0", "classification", "cpu", heatmap=new, heatmap_class="a",
                                             tile_gradcam=tile))
    assert analysis.results[0].tile_gradcam is tile
    earlier = _analysis(heatmap=np.zeros((4, 6)))  # asked for on an analysis no longer shown: kept with it, unseen
    seen.clear()
    state.replace_heatmap("cls", ModelResult("cls", "1.0", "classification", "cpu", heatmap=new, heatmap_class="b"),
                          earlier)
    assert earlier.results[0].heatmap_class == "b" and analysis.results[0].heatmap_class == "a" and seen == []


# ----- overlay layers

def test_layers_start_as_the_window_always_did():
    layers = ViewerState().overlays
    assert (layers.heatmap.visible, layers.heatmap.opacity, layers.heatmap.threshold) == (True, 0.45, 0.20)
    assert layers.heatmap.colormap == "jet" and layers.heatmap.colormap_id == COLORMAPS["jet"] == 2
    assert (layers.mask.visible, layers.mask.opacity, layers.mask.outline_only) == (True, 0.40, False)
    assert layers.lesions.visible and not layers.heatmap.tile


def test_layer_changes_are_checked_and_reach_the_state_once():
    state = ViewerState()
    seen = _recorder(state)
    heatmap = state.overlays.heatmap
    heatmap.opacity = 0.8
    heatmap.opacity = 0.8
    heatmap.threshold = 0.5
    heatmap.colormap = "inferno"
    state.overlays.mask.toggle()
    state.overlays.mask.outline_only = True
    assert heatmap.colormap_id == 14
    assert [(name, layer.name) for name, layer in seen] == [("overlays", "heatmap")] * 3 + [("overlays", "mask")] * 2
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            heatmap.opacity = bad
    with pytest.raises(ValueError, match="colour map"):
        heatmap.colormap = "rainbow"
    assert heatmap.opacity == 0.8 and heatmap.colormap == "inferno"


def test_event_disconnect():
    event, calls = Event("x"), []
    event.connect(calls.append)
    event.emit(1)
    event.disconnect(calls.append)
    event.emit(2)
    assert calls == [1] and len(event) == 0
    layer = OverlayLayer("l", opacity=0.3)
    with pytest.raises(ValueError):
        OverlayLayer("bad", threshold=2)
    assert layer.opacity == 0.3


# ----- readout

def test_pixel_text_reads_the_current_slice():
    state = ViewerState()
    assert state.pixel_text(0, 0) == ""
    state.open(_record(frames=3, spacing=(5.0, 2.5)))  # a 15 x 20 mm picture: believable for MR
    state.set_slice(2)
    assert state.pixel_text(3, 1) == "x 3, y 1: 23  (7.5 mm, 5.0 mm)"
    assert state.pixel_text(-1, -1) == "" and state.pixel_text(6, 0) == ""
    colour = ViewerState()
    colour.open(_record(color=True, presets=()))
    colour.set_slice(1)
    assert colour.pixel_text(0, 0) == "x 0, y 0: [1 1 1]"


def test_the_model_loads_without_qt():
    code = "import sys, core.viewer_state; print('PySide6' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr[-2000:]


# ----- series (core.series): stack scrolling, window kept, presets, per-slice results

def _ramp_series(folder, n: int = 6, **fields):
    """A DICOM series of ``n`` 32x32 slices, slice k holding 100 * k + column (tests.series_data)."""
    from core.series import index_folder
    from tests.series_data import ramp_images, write_series

    write_series(folder, ramp_images(n), spacing=2.5, **fields)
    (series,) = index_folder(folder).series
    return series


def _wait_for(condition, seconds: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_open_series_counts_its_slices_and_loads_them_through_the_stack(tmp_path):
    series = _ramp_series(tmp_path)
    state = ViewerState()
    seen = _recorder(state)
    state.open_series(series)
    assert state.series is series and state.slice_count == 6 and state.slice_index == 0
    assert [name for name, _ in seen] == ["series", "record"]
    assert state.slice_text() == "slice 1 / 6 · z = -30.0 mm"  # position along the normal
    assert _wait_for(lambda: len(state.stack.cached()) == 4)  # slice 0 and its 3 neighbours prefetched
    state.set_slice(4)
    assert [name for name, _ in seen[2:]] == ["slice"]  # scrolling never fires 'record'
    assert state.record.path == series.slices[4].path and state.frame == 0
    assert state.slice_text() == "slice 5 / 6 · z = -20.0 mm"
    assert state.pixel_text(3, 0) == "x 3, y 0: 403  (R 117.2, A 120.0, F 20.0 mm)"
    assert np.array_equal(state.display(), state.record.display(0))
    assert _wait_for(lambda: set(state.stack.cached()) >= {s.path for s in series.slices[1:]})
    state.set_slice(99)
    assert state.slice_index == 5


def test_a_chosen_window_stays_while_scrolling_the_series(tmp_path):
    series = _ramp_series(tmp_path)
    state = ViewerState()
    state.open_series(series)
    state.adjust(64.0, -128.0)
    chosen = state.window
    for k in (1, 2, 5, 3):
        state.set_slice(k)
        assert state.window == chosen
        assert np.array_equal(state.display(), apply_window(state.record.values(0), chosen.center, chosen.width,
                                                            chosen.function))
    state.reset_window()
    assert state.effective_window == state.record.window_presets[0]


def test_presets_by_modality_then_the_files_own(tmp_path):
    state = ViewerState()
    state.open_series(_ramp_series(tmp_path / "mr"))
    names = [p.name for p in state.presets]
    assert names[0] == "MR brain" and names[1:] == [p.name for p in state.record.window_presets]
    state.apply_preset("MR brain")
    assert state.window.name == "MR brain"
    ct = ViewerState()
    ct.open_series(_ramp_series(tmp_path / "ct", modality="CT"))
    assert [p.name for p in ct.presets][:4] == ["CT brain", "CT subdural", "CT bone", "CT lung"]
    ct.apply_preset("CT bone")
    assert (ct.window.center, ct.window.width) == (400.0, 1800.0)
    ct.set_slice(3)
    assert ct.window.name == "CT bone"  # kept while scrolling


def test_mr_brain_window_covers_the_head_not_the_background():
    from core.viewer_state import mr_brain_preset

    rng = np.random.default_rng(0)
    slice_ = np.zeros((100, 100), np.float32)
    slice_[20:80, 20:80] = rng.uniform(400, 800, (60, 60))  # the head; the rest is air
    preset = mr_brain_preset(slice_)
    low, high = preset.center - preset.width / 2, preset.center + preset.width / 2
    assert 395 < low < 410 and 790 < high <= 800 and preset.function == "LINEAR_EXACT"
    flat = mr_brain_preset(np.full((8, 8), 5.0))
    assert flat.width == 1.0


def test_orientation_markers_follow_the_series(tmp_path):
    from tests.series_data import SAGITTAL

    state = ViewerState()
    assert state.orientation_markers() is None
    state.open_series(_ramp_series(tmp_path / "ax"))
    assert state.orientation_markers() == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    state.open_series(_ramp_series(tmp_path / "sag", orientation=SAGITTAL))
    assert state.orientation_markers() == {"left": "A", "right": "P", "top": "H", "bottom": "F"}
    state.open(_record())
    assert state.series is None and state.orientation_markers() is None


def test_a_damaged_slice_is_shown_black_and_said(tmp_path):
    series = _ramp_series(tmp_path)
    damaged = series.slices[2].path
    damaged.write_bytes(damaged.read_bytes()[:-1000])
    state = ViewerState()
    state.open_series(series, SeriesStack(series))
    state.set_slice(2)
    assert state.slice_error.startswith("slice 3: ") and state.slice_index == 2
    assert state.display().shape == (32, 32) and not state.display().any()
    assert state.pixel_text(1, 1) == ""
    state.set_slice(3)
    assert state.slice_error is None and state.display().any()


def _hand_series_analysis(series, lesion_slices=(2, 3)):
    from core.series.analysis import SeriesAnalysis, SliceOutcome, verdict

    n = len(series)
    cls = [SliceOutcome("yes" if k in lesion_slices else "no",
                        {"no": 0.1 if k in lesion_slices else 0.9, "yes": 0.9 if k in lesion_slices else 0.1})
           for k in range(n)]
    masks = []
    for k in range(n):
        mask = np.zeros((32, 32), np.uint8)
        if k in lesion_slices:
            mask[10:20, 10:20] = 1
        masks.append(mask)
    seg = [SliceOutcome("lesion" if m.any() else "no lesion", lesions=int(m.any()), lesion_area_mm2=float(m.sum()),
                        mask=m) for m in masks]
    seg[4] = SliceOutcome(error="damaged")
    results = [verdict("yesno", "1", "classification", ["no", "yes"], cls, series),
               verdict("seg", "1", "segmentation", ["lesion"], seg, series)]
    return SeriesAnalysis(series, results, [], False, 0.5, n)


def test_series_analysis_gives_each_slice_its_own_results(tmp_path):
    series = _ramp_series(tmp_path)
    state = ViewerState()
    state.open_series(series)
    seen = _recorder(state)
    analysis = _hand_series_analysis(series)
    state.set_series_analysis(analysis)
    assert seen[0] == ("series_analysis", analysis)
    assert state.analysis.results[0].probabilities == {"no": 0.9, "yes": 0.1}  # slice 1's own
    assert not state.segmentation_result.mask.any()
    state.set_slice(2)
    assert state.analysis.frame == 0 and state.analysis.path == str(series.slices[2].path)
    assert state.analysis.results[0].label == "yes" and state.segmentation_result.mask.sum() == 100
    assert [name for name, _ in seen[-2:]] == ["slice", "analysis"]
    state.set_slice(4)  # the segmenter failed here: only the classifier's result
    assert [r.model_id for r in state.analysis.results] == ["yesno"] and state.segmentation_result is None
    other = ViewerState()  # an analysis of another series is not shown
    other.open_series(_ramp_series(tmp_path / "other"))
    shown = other.series
    seen = _recorder(other)
    other.set_series_analysis(analysis)
    assert other.series_analysis is None and other.analysis is None and seen == []
    other.open_series(series)  # but kept for its own series: the reader chose the other one while it ran
    assert other.series_analysis is analysis
    other.open_series(shown)
    assert other.series_analysis is None


def test_single_slice_analyses_are_kept_for_their_slice(tmp_path):
    series = _ramp_series(tmp_path)
    state = ViewerState()
    state.open_series(series)
    state.set_slice(1)
    own = _analysis(heatmap=np.zeros((32, 32)))
    state.set_analysis(own)
    state.set_slice(2)
    assert state.analysis is None and state.heatmap_to_draw() is None
    late = _analysis()
    state.set_analysis(late, slice_key=series.slices[5].key)  # finished after the reader moved on: kept only
    assert state.analysis is None
    state.set_slice(1)
    assert state.analysis is own and state.heatmap_to_draw() is own.results[0].heatmap
    state.set_slice(5)
    assert state.analysis is late
    state.set_series_analysis(_hand_series_analysis(series))
    assert state.analysis is late  # the slice's own analysis (with heatmaps) wins over the series results
    state.clear_analysis()
    assert state.analysis.results[0].device == "series analysis"


def test_reopening_a_series_keeps_its_slice_cache_and_last_analysis(tmp_path):
    first, second = _ramp_series(tmp_path / "a"), _ramp_series(tmp_path / "b")
    state = ViewerState()
    state.open_series(first)
    cache = state.slice_cache
    analysis = _hand_series_analysis(first)
    state.set_series_analysis(analysis)
    state.open_series(second)
    assert state.series_analysis is None and state.slice_cache is not cache and state.analysis is None
    seen = _recorder(state)
    state.open_series(first)
    assert state.slice_cache is cache and state.series_analysis is analysis
    assert [name for name, _ in seen] == ["series", "record", "analysis", "series_analysis"]


def test_only_the_series_opened_last_keep_their_slice_outcomes_in_memory(tmp_path):
    """Each series' outcomes hold a mask per slice: a session reading series after series must not keep them all."""
    from core.viewer_state import MAX_SERIES_KEPT

    state = ViewerState()
    series = [_ramp_series(tmp_path / f"s{k}") for k in range(MAX_SERIES_KEPT + 1)]
    caches = []
    for one in series:
        state.open_series(one)
        state.set_series_analysis(_hand_series_analysis(one))
        caches.append(state.slice_cache)
    state.open_series(series[-2])
    assert state.slice_cache is caches[-2] and state.series_analysis is not None  # a recent one: kept
    state.open_series(series[0])  # the oldest: dropped, read afresh
    assert state.slice_cache is not caches[0] and state.series_analysis is None
    assert len(state._caches) == len(state._series_analyses) == MAX_SERIES_KEPT


def test_user_modality_reaches_every_slice_of_the_series(tmp_path):
    series = _ramp_series(tmp_path)
    state = ViewerState()
    state.open_series(series, SeriesStack(series))
    state.set_modality(Modality.US)
    assert state.stack.modality == "US"
    state.set_slice(3)
    assert state.record.modality is Modality.US


def test_a_file_opened_on_its_own_gets_markers_from_its_header():
    state = ViewerState()
    record = _record()
    record.metadata = [("(0020,0037)", "ImageOrientationPatient", "[0.0000, 1.0000, 0.0000, 0.0000, 0.0000, -1.0000]")]
    state.open(record)
    assert state.orientation_markers() == {"left": "A", "right": "P", "top": "H", "bottom": "F"}
    record.metadata = [("(0020,0037)", "ImageOrientationPatient", "[1.0, 0.0]")]
    assert state.orientation_markers() is None


def test_user_modality_drops_the_series_analysis_made_for_the_old_one(tmp_path):
    series = _ramp_series(tmp_path)
    state = ViewerState()
    state.open_series(series, SeriesStack(series))
    state.set_series_analysis(_hand_series_analysis(series))
    assert state.analysis is not None
    seen = _recorder(state)
    state.set_modality(Modality.US)
    assert state.series_analysis is None and state.analysis is None
    assert [name for name, _ in seen] == ["series_analysis", "modality", "analysis"]
    state.open_series(_ramp_series(tmp_path / "b"))
    state.open_series(series, SeriesStack(series))
    assert state.series_analysis is None  # not brought back when the series is opened again


# ----- microscopy scale (the magnification the user sets or confirms)

def test_user_scale_fires_once_drops_the_analysis_and_is_checked():
    state = ViewerState()
    state.open(_record(color=True, modality=Modality.SM, source="user", name="h.png"))
    assert state.scale_applies and state.microns_per_pixel is None
    state.set_analysis(_analysis(modality="SM"))
    seen = _recorder(state)
    state.set_microns_per_pixel(0.049)
    state.set_microns_per_pixel(0.049)  # the same scale again: nothing happens
    assert state.microns_per_pixel == 0.049 and state.analysis is None
    assert seen == [("scale", 0.049), ("analysis", None)]
    for wrong in (300.0, -1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="not a microscopy scale"):
            state.set_microns_per_pixel(wrong)
    assert state.microns_per_pixel == 0.049
    state.set_microns_per_pixel(None)  # back to the file's own
    assert seen[-1] == ("scale", None) and state.microns_per_pixel is None


def test_only_microscopy_images_take_a_scale_and_a_new_image_starts_from_its_file():
    state = ViewerState()
    state.open(_record())  # MR
    state.set_microns_per_pixel(0.5)
    assert not state.scale_applies and state.microns_per_pixel is None
    histology = _record(color=True, modality=Modality.SM, source="user", name="h.png")
    state.open(histology)
    state.set_microns_per_pixel(0.5)
    seen = _recorder(state)
    other = _record(color=True, modality=Modality.SM, source="user", name="i.png")
    state.open(other)
    assert state.microns_per_pixel is None and seen == [("record", other), ("scale", None)]
    state.set_microns_per_pixel(0.25)
    seen.clear()
    state.set_modality(Modality.MR)  # the scale box goes: its scale must not act unseen
    assert state.microns_per_pixel is None and ("scale", None) in seen


def test_user_scale_drops_the_series_analysis_and_its_slice_cache(tmp_path):
    series = _ramp_series(tmp_path)
    state = ViewerState()
    state.open_series(series, SeriesStack(series))
    state.set_modality(Modality.SM)
    cache = state.slice_cache
    state.set_series_analysis(_hand_series_analysis(series))
    seen = _recorder(state)
    state.set_microns_per_pixel(0.25)
    assert state.series_analysis is None and state.analysis is None
    assert [name for name, _ in seen] == ["series_analysis", "scale", "analysis"]
    assert state.slice_cache is not cache  # its outcomes were made at the file's scale
    state.open_series(_ramp_series(tmp_path / "b"))
    state.open_series(series, SeriesStack(series))
    assert state.series_analysis is None and state.microns_per_pixel is None


# ----- rulers

def test_ruler_length_uses_row_and_column_spacing_and_says_pixels_without_one():
    from core.measurements import Ruler, ruler_within

    ruler = Ruler(0, 0, 40, 30)  # 40 columns across, 30 rows down
    assert ruler.length_px == pytest.approx(50.0)
    # rows 0.5 mm apart, columns 0.25 mm: 40 x 0.25 = 10 mm across, 30 x 0.5 = 15 mm down
    assert ruler.length_mm((0.5, 0.25)) == pytest.approx(np.hypot(10.0, 15.0))
    assert ruler.text((0.5, 0.25)) == "18.0 mm" and ruler.text(None) == "50 px"
    assert ruler_within(-5, 2, 80, 2, width=64, height=64) == Ruler(0, 2, 64, 2)  # the part inside the picture
    past = ruler_within(32, 32, 100, 40, width=64, height=64)  # a drag past the right edge stops there
    assert (past.x0, past.y0, past.x1) == (32, 32, 64) and past.y1 == pytest.approx(32 + 8 * 32 / 68)
    assert ruler_within(80, 2, 100, 40, width=64, height=64) is None  # wholly outside: no ruler along the edge
    assert ruler_within(3, 3, 4, 4, width=64, height=64) is None  # a click is not a measurement


def test_rulers_belong_to_their_slice_and_go_with_the_image():
    state = ViewerState()
    seen = _recorder(state)
    assert state.add_ruler(0, 0, 3, 4) is None  # nothing open
    state.open(_record(frames=3, spacing=(2.0, 2.0)))
    seen.clear()
    ruler = state.add_ruler(0, 0, 3, 4)
    assert state.rulers == [ruler] and ruler.text(state.pixel_spacing_mm) == "10.0 mm"
    assert seen == [("rulers", [ruler])]
    state.add_ruler(1, 1, 1, 1)  # a click: nothing kept, nothing fired
    assert state.rulers == [ruler] and len(seen) == 1
    state.set_slice(2)
    assert state.rulers == []  # another slice, its own rulers
    state.set_slice(0)
    assert state.rulers == [ruler]  # back: still there
    state.clear_rulers()
    assert state.rulers == [] and seen[-1] == ("rulers", [])
    state.add_ruler(0, 0, 5, 0)
    state.open(_record(frames=3))
    assert state.rulers == [] and state.pixel_spacing_mm is None  # a new image starts without them


def test_series_rulers_are_kept_per_slice_and_measured_with_the_slices_spacing(tmp_path):
    series = _ramp_series(tmp_path)
    state = ViewerState()
    state.open_series(series)
    spacing = series.slices[0].pixel_spacing_mm
    assert spacing and state.pixel_spacing_mm == spacing
    ruler = state.add_ruler(0, 0, 4, 0)
    assert ruler.length_mm(state.pixel_spacing_mm) == pytest.approx(4 * spacing[1])
    state.set_slice(3)
    assert state.rulers == []
    state.set_slice(0)
    assert state.rulers == [ruler]
    state.open_series(series)  # opened again: a fresh reading
    assert state.rulers == []


# ----- regions

def test_region_statistics_are_those_of_the_pixels_inside_the_ellipse():
    from core.measurements import ellipse_mask, region_within

    values = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    region = region_within(30.2, 25.0, 10.0, 5.5, values, unit="HU")  # dragged from lower right to upper left
    assert (region.x0, region.y0, region.x1, region.y1) == (10.0, 5.5, 30.2, 25.0)
    inside = values[ellipse_mask(10.0, 5.5, 30.2, 25.0, 40, 50)]
    assert region.stats.pixels == inside.size and inside.size == pytest.approx(np.pi * 10.1 * 9.75, rel=0.03)
    assert region.stats.mean == pytest.approx(inside.mean()) and region.stats.sd == pytest.approx(inside.std())
    assert (region.stats.minimum, region.stats.maximum) == (inside.min(), inside.max())
    assert region.area_mm2((0.5, 0.25)) == pytest.approx(np.pi * 10.1 * 9.75 * 0.125)
    text = region.text((0.5, 0.25))
    assert text.startswith("38.7 mm² · mean ") and text.endswith(" HU (min 316, max 1222)")  # rows 6-24 reached
    assert region.text(None).startswith("309 px² · mean")
    clipped = region_within(-20, -20, 10, 10, values)  # the box cut to the picture
    assert (clipped.x0, clipped.y0, clipped.x1, clipped.y1) == (0, 0, 10, 10) and clipped.unit == ""
    assert region_within(3, 3, 4, 30, values) is None  # under 2 pixels across: a click
    assert region_within(60, 60, 80, 80, values) is None  # wholly outside
    colour = region_within(0, 0, 10, 10, np.zeros((40, 50, 3), np.uint8), unit="HU")
    assert colour.stats is None and colour.unit == "" and colour.text(None) == "79 px²"
    assert colour.to_dict(None)["area_mm2"] is None and "mean" not in colour.to_dict(None)


def test_regions_belong_to_their_slice_read_that_slices_values_and_go_with_the_image():
    state = ViewerState()
    seen = _recorder(state)
    assert state.add_region(0, 0, 4, 4) is None  # nothing open
    state.open(_record(frames=3, spacing=(2.0, 2.0)))
    seen.clear()
    region = state.add_region(0, 0, 6, 4)  # the whole 6 x 4 picture's inscribed ellipse
    assert state.regions == [region] and seen == [("regions", [region])]
    assert region.unit == "" and 1.5 < region.stats.mean < 3.5  # frame 0 holds its column number
    state.set_slice(2)
    assert state.regions == []
    assert 21.5 < state.add_region(0, 0, 6, 4).stats.mean < 23.5  # frame 2's own values (20 + column)
    state.set_slice(0)
    state.add_ruler(0, 0, 3, 4)
    state.clear_measurements()  # Shift+D: the rulers and the regions of the slice shown
    assert state.regions == [] and state.rulers == [] and seen[-1] == ("regions", [])
    state.set_slice(2)
    assert len(state.regions) == 1  # another slice's stay
    ct = _record(frames=1, modality=Modality.OTHER)
    ct.metadata.append(("(0008,0060)", "Modality", "CT"))
    state.open(ct)
    assert state.regions == [] and state.add_region(0, 0, 6, 4).unit == "HU"


def test_inverted_grey_levels_are_shown_only_kept_while_scrolling_and_off_for_the_next_image():
    state = ViewerState()
    record = _record(frames=3)
    state.open(record)
    plain = state.display()
    seen = _recorder(state)
    state.set_inverted(True)
    assert seen == [("inverted", True)] and np.array_equal(state.display(), 255 - plain)
    assert np.array_equal(record.display(0), plain)  # what the models read is untouched
    state.set_slice(1)
    assert state.inverted and np.array_equal(state.display(), 255 - record.display(1))
    seen.clear()
    state.open(_record(frames=3))
    assert not state.inverted and [name for name, _ in seen] == ["record"]  # read on 'record': no second render
    colour = _record(color=True)
    state.open(colour)
    state.set_inverted(True)  # a colour picture has no grey levels to invert
    assert not state.inverted and np.array_equal(state.display(), colour.display(0))


def test_rulers_measure_a_slice_read_smaller_with_its_own_spacing_and_ignore_a_zero_one(tmp_path, monkeypatch):
    """A slice too large for the memory budget is read at half size: its pixels are twice as far apart as the
    header says. A header spacing of zero is no spacing."""
    from core.series.index import index_folder
    from tests.series_data import write_series

    big = [np.random.default_rng(i).integers(0, 1000, (2048, 2048)).astype(np.uint16) for i in range(2)]
    write_series(tmp_path / "big", big, pixel_spacing=(0.1, 0.1))
    write_series(tmp_path / "zero", [b[:64, :64] for b in big], pixel_spacing=(0.0, 0.0))
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "40")
    state = ViewerState()
    state.open_series(index_folder(tmp_path / "big").series[0])
    assert state.record.columns == 1024 and state.pixel_spacing_mm == (0.2, 0.2)
    assert state.add_ruler(0, 0, 1000, 0).text(state.pixel_spacing_mm) == "200.0 mm"
    monkeypatch.delenv("MIDA_MEMORY_BUDGET_MB")
    state.open_series(index_folder(tmp_path / "zero").series[0])
    assert state.pixel_spacing_mm is None and state.add_ruler(0, 0, 40, 0).text(None) == "40 px"


def test_an_analysis_that_no_longer_applies_is_dropped():
    """An analysis arrives after the reader moved on: to another frame of the file, or to another modality."""
    state = ViewerState()
    state.open(_record(frames=5))
    state.set_slice(2)
    state.set_analysis(_analysis(frame=0))  # started on frame 1, the reader scrolled to frame 3 meanwhile
    assert state.analysis is None
    state.set_analysis(_analysis(frame=2))
    assert state.analysis is not None
    state.set_modality(Modality.US)
    state.set_analysis(_analysis(frame=2))  # the MR models' answer, finishing after the switch to ultrasound
    assert state.analysis is None
    state.set_analysis(_analysis(frame=2, modality="US"))
    assert state.analysis is not None
