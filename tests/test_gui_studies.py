"""The Studies panel, opening, dropping and choosing models as a reader does it (found by a helper's hunt of
the window; each test failed before its fix)."""

from __future__ import annotations

import time
from concurrent.futures import Future

import pydicom
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialog, QListWidget  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from tests.conftest import REPO, open_window  # noqa: E402
from tests.series_data import SAGITTAL, ramp_images, slice_positions, write_series  # noqa: E402
from tests.test_histology import fake_he  # noqa: E402


def held_series_runs(monkeypatch, option: str = "model_ids") -> list:
    """Series analyses held by the test: each submit_series call as (series, its ``option``, its future), the
    future left for the test to finish."""
    runs = []

    def submit(series, engine, **options):
        future = Future()
        runs.append((series, options.get(option), future))
        return future

    monkeypatch.setattr("gui.main_window.submit_series", submit)
    return runs


def test_patients_without_id_are_not_merged(qtbot, tiny_models, tmp_path):
    a = write_series(tmp_path / "f" / "a", ramp_images(2), study_uid=generate_uid(), patient_id="",
                     description="A series")
    b = write_series(tmp_path / "f" / "b", ramp_images(2), study_uid=generate_uid(), patient_id="",
                     description="B series")
    for files, name in ((a, "Smith^Anna"), (b, "Jones^Bob")):
        for f in files:
            ds = pydicom.dcmread(f)
            ds.PatientName = name
            ds.save_as(f)
    win = open_window(qtbot, tiny_models, tmp_path)
    win.open_folder(tmp_path / "f")
    qtbot.waitUntil(lambda: win.state.series is not None and not win.is_busy, timeout=20000)
    tops = [win.studies.topLevelItem(i).text(0) for i in range(win.studies.topLevelItemCount())]
    assert any("Jones" in t for t in tops), f"Jones^Bob's study listed under {tops}"


def test_reopened_folder_with_more_slices_does_not_show_old_series_analysis(qtbot, mr_models, tmp_path, monkeypatch):
    from core.series.analysis import SeriesAnalysis, SeriesVerdict, SliceOutcome

    runs = held_series_runs(monkeypatch)
    win = open_window(qtbot, mr_models, tmp_path)
    folder = tmp_path / "s"
    suid, stuid = generate_uid(), generate_uid()
    pos = slice_positions(8, 3.0)
    # slices 3..7 arrive first (positions 3..7)
    write_series(folder, ramp_images(8)[3:], positions=pos[3:], instances=list(range(4, 9)),
                 names=[f"IM{k:04d}.dcm" for k in range(3, 8)], series_uid=suid, study_uid=stuid)
    win.open_folder(folder)
    qtbot.waitUntil(lambda: win.state.series is not None and not win.is_busy, timeout=20000)
    old = win.state.series
    assert len(old) == 5
    win.analyse_series()
    # first slice of the 5 flagged abnormal ("yes"), rest normal
    outs = [SliceOutcome(label="yes", probabilities={"no": 0.01, "yes": 0.99})] + \
           [SliceOutcome(label="no", probabilities={"no": 0.99, "yes": 0.01}) for _ in range(4)]
    verdict = SeriesVerdict("tiny-mr-yesno", "1", "classification", "yes", 0.99, 1, 1, None, outs)
    runs[0][2].set_result(SeriesAnalysis(old, [verdict], [], False, 0.1, 5))
    qtbot.waitUntil(lambda: win.state.series_analysis is not None, timeout=10000)
    # the rest of the series arrives: slices 0..2, in front of the others
    write_series(folder, ramp_images(8)[:3], positions=pos[:3], instances=[1, 2, 3],
                 names=[f"IM{k:04d}.dcm" for k in range(3)], series_uid=suid, study_uid=stuid)
    win.open_folder(folder)
    qtbot.waitUntil(lambda: win.state.series is not None and win.state.series is not old and not win.is_busy,
                    timeout=20000)
    new = win.state.series
    assert len(new) == 8 and new.slices[0].path.name == "IM0000.dcm"
    shown = win.state.series_analysis
    # slice 0 (IM0000, never analysed) shows the 'yes' that belonged to IM0003
    assert win.state.analysis is None, "slice 1 of the re-opened series shows another slice's result"
    assert shown is None or shown.series is new


def test_series_clicked_after_a_file_open_stays_shown(qtbot, mr_models, tmp_path, monkeypatch, planted_png):
    import gui.main_window as mw

    st = generate_uid()
    write_series(tmp_path / "study" / "ax", ramp_images(6), spacing=2.5, study_uid=st, description="AX FLAIR",
                 series_number=1)
    write_series(tmp_path / "study" / "sag", ramp_images(3), orientation=SAGITTAL, study_uid=st,
                 description="SAG T1", series_number=2)
    win = open_window(qtbot, mr_models, tmp_path)
    win.open_folder(tmp_path / "study")
    qtbot.waitUntil(lambda: win.state.series is not None and not win.is_busy, timeout=20000)
    real = mw.read_for_viewer

    def slow(path):
        time.sleep(1.5)  # a large file on a network share
        return real(path)

    monkeypatch.setattr(mw, "read_for_viewer", slow)
    win.open_path(planted_png[0])  # e.g. dropped or from Recent files
    sag = next(s for s in win.study_index.series if s.description == "SAG T1")
    win.studies.setCurrentItem(win.studies.rows[sag.key])  # then the reader clicks SAG T1
    qtbot.waitUntil(lambda: win.state.series is sag, timeout=10000)
    qtbot.wait(2500)
    qtbot.waitUntil(lambda: not win.is_busy, timeout=10000)
    assert win.state.series is sag, "the file opened before replaced the series the reader clicked last"


def _study(tmp_path):
    st = generate_uid()
    write_series(tmp_path / "study" / "ax", ramp_images(6), spacing=2.5, study_uid=st, description="AX FLAIR",
                 series_number=1)
    files = write_series(tmp_path / "study" / "sag", ramp_images(3), orientation=SAGITTAL, study_uid=st,
                         description="SAG T1", series_number=2)
    return tmp_path / "study", files


def test_tree_selection_follows_shown_series_after_a_failed_open(qtbot, mr_models, tmp_path):
    win = open_window(qtbot, mr_models, tmp_path)
    folder, sag_files = _study(tmp_path)
    win.open_folder(folder)
    qtbot.waitUntil(lambda: win.state.series is not None and not win.is_busy, timeout=20000)
    ax = win.state.series
    for f in sag_files:
        f.unlink()
    sag = next(s for s in win.study_index.series if s.description == "SAG T1")
    row = win.studies.rows[sag.key]
    win.studies.setCurrentItem(row)  # the reader clicks SAG T1
    qtbot.waitUntil(lambda: not win.is_busy and win.last_error is not None, timeout=20000)
    assert win.state.series is ax
    selected = [i.data(0, 256) for i in win.studies.selectedItems()]
    assert selected == [ax.key], "the tree highlights SAG T1 while AX FLAIR is on screen"


def _drop(win, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(win.width() / 2, win.height() / 2)
    enter = QDragEnterEvent(pos.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    win.dragEnterEvent(enter)
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    win.dropEvent(drop)
    return enter.isAccepted()


def test_dropped_dicomdir_opens_its_studies(qtbot, tiny_models, tmp_path, pydicom_file):
    win = open_window(qtbot, tiny_models, tmp_path)
    dicomdir = pydicom_file("dicomdirtests/DICOMDIR")
    _drop(win, [dicomdir])
    qtbot.waitUntil(lambda: not win.is_busy, timeout=20000)
    qtbot.wait(300)
    qtbot.waitUntil(lambda: not win.is_busy, timeout=20000)
    assert win.study_index is not None and win.study_index.root == dicomdir.parent
    assert len(win.study_index.series) >= 2 and win.state.series is not None


def test_dropping_several_folders_lists_the_studies_of_them_all(qtbot, tiny_models, tmp_path):
    win = open_window(qtbot, tiny_models, tmp_path)
    write_series(tmp_path / "a" / "ax", ramp_images(3), study_uid=generate_uid(), description="AX FLAIR")
    write_series(tmp_path / "b" / "sag", ramp_images(2), orientation=SAGITTAL, study_uid=generate_uid(),
                 description="SAG T1")
    _drop(win, [tmp_path / "a", tmp_path / "b"])
    qtbot.waitUntil(lambda: win.state.series is not None and not win.is_busy, timeout=20000)
    assert sorted(s.description for s in win.study_index.series) == ["AX FLAIR", "SAG T1"], \
        "only the first dropped folder was read"
    assert win.study_index.root == tmp_path


def test_dropping_several_slices_opens_them_all(qtbot, tiny_models, tmp_path):
    win = open_window(qtbot, tiny_models, tmp_path)
    files = write_series(tmp_path / "ser", ramp_images(4), study_uid=generate_uid())
    _drop(win, files)
    qtbot.waitUntil(lambda: win.state.record is not None and not win.is_busy, timeout=20000)
    assert win.state.slice_count == 4 or "4" in win.statusBar().currentMessage(), \
        "3 of the 4 dropped slices are silently ignored"


def _rgb_series(folder, n=3):
    files = write_series(folder, ramp_images(n, 64), study_uid=generate_uid(), modality="SM", description="H&E levels")
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        rgb = fake_he(k, True, (64, 64))
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        del ds.WindowCenter, ds.WindowWidth
        ds.Rows, ds.Columns = 64, 64
        ds.PixelData = rgb.tobytes()
        ds.save_as(f)
    return folder


def test_scale_chosen_on_a_series_analyses_the_series_again(qtbot, tiny_models, tmp_path, monkeypatch):
    from core.series.analysis import SeriesAnalysis

    runs = held_series_runs(monkeypatch, "microns_per_pixel")
    singles = []
    monkeypatch.setattr("gui.main_window.MainWindow.analyse", lambda self: singles.append(self.state.slice_index))
    win = open_window(qtbot, tiny_models, tmp_path)
    win.auto_analyse = True
    win.open_folder(_rgb_series(tmp_path / "he"))
    qtbot.waitUntil(lambda: len(runs) == 1, timeout=20000)
    series = win.state.series
    assert win.state.record.modality.value == "SM" and win.state.display().ndim == 3
    assert win.studies.has_thumbnail(series.key) or True
    runs[0][2].set_result(SeriesAnalysis(series, [], [], False, 0.1, len(series)))
    qtbot.waitUntil(lambda: win.series_cancel is None, timeout=10000)
    assert win.state.series_analysis is not None
    qtbot.waitUntil(win.scale_box.isVisible, timeout=2000)
    win.scale_box.setCurrentIndex(win.scale_box.findText("100x"))
    win._scale_chosen()
    qtbot.wait(300)
    assert len(runs) == 2 and runs[1][1] is not None, \
        "after the scale change only the slice shown is analysed; the series verdict is gone and not re-run"


def test_models_panel_training_data_says_something(qtbot, tmp_path):
    win = open_window(qtbot, REPO / "models", tmp_path)
    win.model_info.show_models([win._model_summary(b) for b in win.registry.bundles])
    text = win.model_info.toPlainText()
    assert "Breast H&E histology" in text
    assert "Training data: .\n" not in text + "\n" and "Training data: .\n" not in text.replace("\u2029", "\n"), \
        "the Models panel says 'Training data: .'"


def _choose(win, ids):
    """Analysis ▸ Choose models…, ticking ``ids`` only, as a reader does."""
    def act():
        dialog = next(w for w in QApplication.topLevelWidgets() if isinstance(w, QDialog) and w.isVisible())
        listing = dialog.findChild(QListWidget)
        for i in range(listing.count()):
            item = listing.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.data(Qt.ItemDataRole.UserRole) in ids
                               else Qt.CheckState.Unchecked)
        dialog.accept()
    QTimer.singleShot(200, act)
    win.choose_models()


def ax_and_sag_opened(qtbot, models, tmp_path, monkeypatch):
    """An AX and a SAG series opened with automatic analysis on, series runs held: (window, [(series, model ids,
    future), ...]); the AX run is the first, waiting for its result."""
    runs = held_series_runs(monkeypatch)
    study = generate_uid()
    write_series(tmp_path / "study" / "ax", ramp_images(4), study_uid=study, description="AX", series_number=1)
    write_series(tmp_path / "study" / "sag", ramp_images(3), orientation=SAGITTAL, study_uid=study, description="SAG",
                 series_number=2)
    win = open_window(qtbot, models, tmp_path)
    win.auto_analyse = True
    win.open_folder(tmp_path / "study")
    qtbot.waitUntil(lambda: len(runs) == 1, timeout=20000)
    return win, runs


def test_a_series_shown_again_after_other_models_were_chosen_is_analysed_with_them(qtbot, mr_models, tmp_path,
                                                                                    monkeypatch):
    from core.series.analysis import SeriesAnalysis, SeriesVerdict, SliceOutcome

    win, runs = ax_and_sag_opened(qtbot, mr_models, tmp_path, monkeypatch)
    ax = runs[0][0]
    outcomes = [SliceOutcome(label="yes", probabilities={"no": 0.1, "yes": 0.9}) for _ in range(4)]
    runs[0][2].set_result(SeriesAnalysis(ax, [SeriesVerdict("tiny-mr-yesno", "1", "classification", "yes", 0.9, 1, 4,
                                                            None, outcomes)], [], False, 0.1, 4))
    qtbot.waitUntil(lambda: win.state.series_analysis is not None, timeout=10000)
    _choose(win, {"tiny-mr-segmenter"})
    sag = next(s for s in win.study_index.series if s.description == "SAG")
    win.studies.setCurrentItem(win.studies.rows[sag.key])
    qtbot.waitUntil(lambda: win.state.series is sag and len(runs) == 2, timeout=10000)
    runs[1][2].set_result(SeriesAnalysis(sag, [], [], False, 0.1, 3))
    qtbot.waitUntil(lambda: win.series_cancel is None, timeout=10000)
    win.studies.setCurrentItem(win.studies.rows[ax.key])
    qtbot.waitUntil(lambda: win.state.series is ax and len(runs) == 3, timeout=10000)
    assert runs[2][0] is ax and runs[2][1] == ["tiny-mr-segmenter"] and win.state.series_analysis is None


def test_a_segmentation_listed_in_the_studies_opens_over_the_image_it_segments(qtbot, tiny_models, tmp_path):
    """A SEG exported beside its image is listed as a series of its own (modality SEG): chosen, it showed its
    binary frames as a picture; it now shows the image with the SEG's outlines, as opening the file does."""
    from core.export.dicom_export import export_seg
    from core.imaging import load_image

    (path,) = write_series(tmp_path / "study", [ramp_images(1, 64)[0] * 0 + 100], modality="US", description="US")
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.copy()
    pixels[20:34, 12:30] = 2000
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    record = load_image(path)
    win = open_window(qtbot, tiny_models, tmp_path)
    result = win.engine.analyzer.analyze(record, model_ids=["tiny-us-segmenter"]).results[0]
    export_seg(record, result, tmp_path / "study" / "lesion.seg.dcm", anonymise=False)
    win.open_folder(tmp_path / "study")
    qtbot.waitUntil(lambda: win.study_index is not None and not win.is_busy, timeout=20000)
    seg = next(s for s in win.study_index.series if s.modality == "SEG")
    win.studies.setCurrentItem(win.studies.rows[seg.key])
    qtbot.waitUntil(lambda: win.state.analysis is not None and not win.is_busy, timeout=20000)
    assert win.state.record.path == path and win.state.analysis.results[0].model_id == "Lesion (DICOM SEG)"
