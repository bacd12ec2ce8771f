"""Regressions a review of the Studies/CLI fixes found (its probes, each failing before its fix)."""

from __future__ import annotations

import os
import threading

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from core.batch.runner import run_settings
from tests.conftest import open_window
from tests.series_data import ramp_images, write_series
from tests.test_gui_studies import _choose, _rgb_series, ax_and_sag_opened, held_series_runs

pytest.importorskip("pytestqt")


# ----- fifo open

def test_read_for_viewer_refuses_a_fifo(tmp_path):
    from core.series.opening import read_for_viewer

    fifo = tmp_path / "scan.dcm"
    os.mkfifo(fifo)
    said = {}

    def go():
        try:
            read_for_viewer(fifo)
            said["r"] = "returned"
        except Exception as exc:  # noqa: BLE001
            said["r"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # let the blocked open() go
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert "FIFO" in said.get("r", ""), f"read_for_viewer: {said.get('r', 'still blocked after 5 s')}"


# ----- seg first


def _volume_seg(files, out, series_number):
    from core.export.dicom_export import with_type2_attributes
    frame_of_reference = generate_uid()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.save_as(f)
    sources = [with_type2_attributes(pydicom.dcmread(f)) for f in files]
    mask = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), bool)
    mask[:, 5:15, 5:15] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Tumour", segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                              segment_descriptions=[desc], series_instance_uid=hd.UID(), series_number=series_number,
                              sop_instance_uid=hd.UID(), instance_number=1, manufacturer="Other tool",
                              manufacturer_model_name="x", software_versions="1", device_serial_number="1")
    seg.save_as(out)


def test_folder_with_volume_seg_sorted_first_shows_the_images(qtbot, mr_models, tmp_path):
    study = generate_uid()
    files = write_series(tmp_path / "study" / "mr", ramp_images(4), study_uid=study, description="AX FLAIR",
                         series_number=5)
    _volume_seg(files, tmp_path / "study" / "seg.dcm", series_number=3)
    win = open_window(qtbot, mr_models, tmp_path)
    win.open_folder(tmp_path / "study")
    qtbot.waitUntil(lambda: win.study_index is not None and not win.is_busy, timeout=20000)
    qtbot.wait(500)
    qtbot.waitUntil(lambda: not win.is_busy, timeout=20000)
    assert [s.modality for s in win.study_index.series] == ["SEG", "MR"]
    assert win.state.record is not None, f"nothing shown after opening the folder; error: {win.last_error!r}"


# ----- scale during series run


def test_scale_chosen_while_the_series_runs_is_applied(qtbot, tiny_models, tmp_path, monkeypatch):
    from core.series.analysis import SeriesAnalysis

    runs = held_series_runs(monkeypatch, "microns_per_pixel")
    monkeypatch.setattr("gui.main_window.MainWindow.analyse", lambda self: None)
    win = open_window(qtbot, tiny_models, tmp_path)
    win.auto_analyse = True
    win.open_folder(_rgb_series(tmp_path / "he"))
    qtbot.waitUntil(lambda: len(runs) == 1, timeout=20000)
    series = win.state.series
    qtbot.waitUntil(win.scale_box.isVisible, timeout=2000)
    win.scale_box.setCurrentIndex(win.scale_box.findText("100x"))   # while the first run goes on
    win._scale_chosen()
    runs[0][2].set_result(SeriesAnalysis(series, [], [], False, 0.1, len(series)))
    qtbot.waitUntil(lambda: win.series_cancel is None or len(runs) == 2, timeout=10000)
    qtbot.wait(300)
    assert len(runs) == 2 or win.state.series_analysis is not None, \
        "the series has no verdicts and none is being made at the scale chosen"


# ----- models inflight


def test_inflight_run_with_old_models_is_not_brought_back(qtbot, mr_models, tmp_path, monkeypatch):
    from core.series.analysis import SeriesAnalysis, SeriesVerdict, SliceOutcome

    win, runs = ax_and_sag_opened(qtbot, mr_models, tmp_path, monkeypatch)
    ax = runs[0][0]
    _choose(win, {"tiny-mr-segmenter"})           # other models chosen while AX's run goes on
    sag = next(s for s in win.study_index.series if s.description == "SAG")
    win.studies.setCurrentItem(win.studies.rows[sag.key])
    qtbot.waitUntil(lambda: win.state.series is sag, timeout=10000)
    outcomes = [SliceOutcome(label="yes", probabilities={"no": 0.1, "yes": 0.9}) for _ in range(4)]
    runs[0][2].set_result(SeriesAnalysis(ax, [SeriesVerdict("tiny-mr-yesno", "1", "classification", "yes", 0.9, 1, 4,
                                                            None, outcomes)], [], False, 0.1, 4))
    qtbot.waitUntil(lambda: len(runs) == 2, timeout=10000)  # SAG analysed with the models chosen
    runs[1][2].set_result(SeriesAnalysis(sag, [], [], False, 0.1, 3))
    qtbot.waitUntil(lambda: win.series_cancel is None, timeout=10000)
    win.studies.setCurrentItem(win.studies.rows[ax.key])
    qtbot.waitUntil(lambda: win.state.series is ax, timeout=10000)
    qtbot.wait(300)
    shown = win.state.series_analysis
    assert shown is None or [v.model for v in shown.results] != ["tiny-mr-yesno"], \
        "AX shows the verdict of tiny-mr-yesno (models chosen before) and is not analysed with tiny-mr-segmenter"


# ----- dialog resume all frames


def test_dialog_resumes_an_all_frames_run(qtbot, tiny_models, tmp_path):
    from core.batch.runner import BatchRun, run_settings
    from tests.tiny_models import planted_images

    folder, out = tmp_path / "folder", tmp_path / "out"
    folder.mkdir()
    for i, img in enumerate(planted_images(4, seed=3)[0]):
        Image.fromarray(img).save(folder / f"c{i:02d}.png")
    window = open_window(qtbot, tiny_models, tmp_path)
    cancel = threading.Event()
    run = BatchRun(folder, out, analyzer=window.engine.analyzer, model_ids=["tiny-mr-classifier"], all_frames=True,
                   cancel=cancel, on_progress=lambda p: cancel.set())   # `main.py batch --all-frames`, stopped
    summary = run.run()
    assert summary["cancelled"] and run_settings(out)["all_frames"] is True
    dialog = window.batch()
    qtbot.addWidget(dialog)
    dialog.folder.setText(str(folder))
    dialog.out.setText(str(out))
    dialog.start(resume=True)
    qtbot.waitUntil(lambda: (dialog.summary is not None or dialog.error is not None) and not dialog.running,
                    timeout=120000)
    assert dialog.error is None, dialog.error


# ----- run settings damaged


def test_run_settings_of_non_utf8_input_json(tmp_path):
    (tmp_path / "input.json").write_bytes(b'{"folder": "/data/\xe9tudes"}')   # written by a Latin-1 tool / torn
    (tmp_path / "results.csv").write_text("file,label\n")
    assert run_settings(tmp_path).get("dicom_sr") is False
