"""Paths whose cost grew with the size of what they handled: the batch table, slice lookups while the prefetch
thread reads, windowing at each slice step, the history command, the results and tags panels while scrolling."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from core.history import History
from core.imaging.windowing import apply_window, voi_window
from core.inference.results import Analysis, ModelResult
from core.series import index_folder
from core.series.stack import SeriesStack
from tests.series_data import ramp_images, write_series


# ----- windowing: a lookup table for integer data, bit-identical to the formula on every pixel

def _formula(values, center, width, function="LINEAR"):
    """apply_window as it was: pydicom's VOI formula in float64 on every pixel."""
    from pydicom.pixels import apply_windowing

    out = apply_windowing(np.asarray(values, dtype=np.float64), voi_window(center, width, function))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("bits, signed", [(8, False), (8, True), (12, False), (12, True), (16, False), (16, True)])
def test_windowing_integer_data_is_bit_identical_to_the_formula(bits, signed):
    rng = np.random.default_rng(bits * 2 + signed)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    dtype = {8: np.int8 if signed else np.uint8}.get(bits, np.int16 if signed else np.uint16)
    stored = rng.integers(lo, hi + 1, (256, 320)).astype(dtype)
    stored[0, :2] = lo, hi  # the whole range
    span = hi - lo
    windows = [(lo + span / 2, span), (lo + span / 3, span / 7), (lo + 0.5, 1.0), (lo + span / 2 + 0.25, 2.5),
               (hi + 10.0, 40.0), (lo - 10.0, 3.0), (0.0, 1e-3), (float(lo + span // 5), 0.5)]
    for function in ("LINEAR", "LINEAR_EXACT", "SIGMOID", "linear_exact"):
        for center, width in windows:
            # as stored, as the loader hands them over (float32 modality values), and after an integer rescale
            for values in (stored, stored.astype(np.float32), stored.astype(np.float32) * 2 - 1024,
                           stored.astype(np.int32) * 3 + 7, stored.astype(np.float64)):
                got, want = apply_window(values, center, width, function), _formula(values, center, width, function)
                assert got.dtype == np.uint8 and got.shape == values.shape
                assert np.array_equal(got, want), (function, center, width, values.dtype)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_windowing_uses_one_table_for_integer_data_and_the_formula_for_fractions(monkeypatch):
    import core.imaging.windowing as windowing

    sizes = []
    real = windowing.apply_windowing
    monkeypatch.setattr(windowing, "apply_windowing", lambda arr, ds: sizes.append(arr.size) or real(arr, ds))
    rng = np.random.default_rng(5)
    ct = (rng.integers(0, 4096, (512, 512)) - 1024).astype(np.float32)  # Hounsfield units as loaded
    assert np.array_equal(apply_window(ct, 40, 400), _formula(ct, 40, 400))
    assert sizes == [int(ct.max() - ct.min()) + 1]  # the levels of the range once, not the 262,144 pixels
    sizes.clear()
    fractions = ct + np.float32(0.5)
    fractions[7, 7] = np.nan  # non-integer (and not finite) data: every pixel through the formula, as before
    assert np.array_equal(apply_window(fractions, 40, 400), _formula(fractions, 40, 400))
    assert sizes == [ct.size]
    sizes.clear()
    wide = np.arange(0, 2 ** 24, 64, dtype=np.float32).reshape(512, 512)  # a range far wider than a table pays for
    assert np.array_equal(apply_window(wide, 2 ** 23, 2 ** 22), _formula(wide, 2 ** 23, 2 ** 22))
    assert sizes == [wide.size]


# ----- the series stack: a slice already open is not held up by the prefetch thread's read of another

def _series(tmp_path, n=8):
    write_series(tmp_path / "s", ramp_images(n), spacing=2.0)
    return index_folder(tmp_path / "s").series[0]


def test_a_cached_slice_is_returned_while_the_prefetch_thread_reads_another(tmp_path, monkeypatch):
    import core.series.stack as stack_module

    series = _series(tmp_path)
    real = stack_module.load_image
    slow_paths, reading, reads = set(), threading.Event(), []

    def load(path, **options):
        reads.append(path)
        if path in slow_paths:
            reading.set()
            time.sleep(0.8)  # a slow decode, or a network share
        return real(path, **options)

    monkeypatch.setattr(stack_module, "load_image", load)
    stack = SeriesStack(series, neighbourhood=1, prefetch=True)
    try:
        stack.record(0)  # open: slice 0 is cached
        slow_paths.add(series.slices[1].path)
        stack.set_current(0)  # the prefetch thread reads slice 1, slowly
        assert reading.wait(5)
        started = time.perf_counter()
        record, frame = stack.record(0)
        assert time.perf_counter() - started < 0.3  # not the 0.8 s of the read under way
        assert record.path == series.slices[0].path and frame == 0
        # the slice being read is not read a second time: its reader waits for that read and gets its record
        got, _ = stack.record(1)
        assert got.path == series.slices[1].path and reads.count(series.slices[1].path) == 1
        assert stack.loads == 2
    finally:
        stack.close()


def test_a_failed_read_is_raised_to_every_waiter_and_tried_again_later(tmp_path, monkeypatch):
    import core.series.stack as stack_module
    from core.errors import ImageLoadError

    series = _series(tmp_path, 3)
    real = stack_module.load_image
    fail = {"on": True}
    started = threading.Event()

    def load(path, **options):
        if fail["on"]:
            started.set()
            time.sleep(0.3)
            raise ImageLoadError(path, "damaged")
        return real(path, **options)

    monkeypatch.setattr(stack_module, "load_image", load)
    stack = SeriesStack(series)
    errors = []
    first = threading.Thread(target=lambda: errors.append(_raised(lambda: stack.record(1))))
    first.start()
    assert started.wait(5)
    errors.append(_raised(lambda: stack.record(1)))  # waits for that read, and hears of its failure
    first.join(5)
    assert [type(e) for e in errors] == [ImageLoadError, ImageLoadError] and stack.cached() == []
    fail["on"] = False
    assert stack.record(1)[0].path == series.slices[1].path  # a failure is not kept: read again when asked


def _raised(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def test_a_read_begun_before_the_modality_changed_is_not_kept(tmp_path, monkeypatch):
    import core.series.stack as stack_module

    series = _series(tmp_path, 3)
    real = stack_module.load_image
    gate, asked = threading.Event(), []

    def load(path, modality=None):
        asked.append(modality)
        if len(asked) == 1:
            gate.wait(5)
        return real(path, modality=modality)

    monkeypatch.setattr(stack_module, "load_image", load)
    stack = SeriesStack(series)
    got = []
    reader = threading.Thread(target=lambda: got.append(stack.record(0)))
    reader.start()
    while not asked:
        time.sleep(0.01)
    stack.set_modality("US")
    gate.set()
    reader.join(5)
    assert asked == [None, "US"] and stack.cached() == [series.slices[0].path]
    assert got and got[0][0].modality.value == "US"  # the reader gets the file as the modality asked now


def test_the_prefetch_thread_draws_the_neighbours_pictures(tmp_path):
    series = _series(tmp_path, 6)
    stack = SeriesStack(series, neighbourhood=2, prefetch=True)
    try:
        stack.record(2)
        stack.set_current(2)
        deadline = time.monotonic() + 10
        while len(stack.cached()) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in (0, 1, 3, 4):
            record, frame = stack.record(i)
            assert record._rendered is not None and record._rendered[0] == frame  # drawn ahead: a step only shows it
            assert np.array_equal(record.display(frame), record._rendered[1])
    finally:
        stack.close()


# ----- the history command: entries written as they are read

def _fill_history(history: History, n: int) -> None:
    import sqlite3

    con = sqlite3.connect(history.db)
    rows = []
    for i in range(n):
        if i % 3 == 2:
            results = {"kind": "series", "description": "=AX \u00e9", "results": [{"model": "m", "label": "yes",
                                                                                  "text": "m: yes on slices 1-3"}]}
            rows.append(("", f"/data/s{i}", "2024-01-01T00:00:00", 0, "MR", json.dumps({"m": "1"}),
                         json.dumps(results), "series", f"1.2.{i}", 30))
        else:
            results = {"results": [{"model": "m", "label": "no" if i % 2 else None, "lesions": i,
                                    "findings": [{"x": 1.0}] * (i % 4)}]}
            rows.append((f"{i:064x}", f"/data/\u00e9/img_{i}\\xff.png", "2024-01-01T00:00:00", i % 2, "MR",
                         json.dumps({"m": "1"}), json.dumps(results), "image", None, None))
    con.executemany("INSERT INTO analyses (file_sha256, path, analysed_at, frame, modality, models, results, kind, "
                    "series_uid, slices) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    con.commit()
    con.close()


@pytest.mark.parametrize("n", [0, 1, 7])
def test_the_history_command_streams_the_same_json_it_printed(tmp_path, monkeypatch, capsys, n):
    from core.cli import _history_json, main
    from core.json_output import print_json

    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))
    history = History()
    _fill_history(history, n)
    expected_entries = history.all()
    print_json({"entries": [_history_json(e) for e in expected_entries]})
    expected = capsys.readouterr().out
    monkeypatch.setattr(History, "all", lambda self: pytest.fail("the whole history read into memory"))
    monkeypatch.setattr(History, "iter_entries", _paged(History.iter_entries, 2))
    assert main(["history"]) == 0
    assert capsys.readouterr().out == expected
    assert len(json.loads(expected)["entries"]) == n


def _paged(method, page):
    def iter_entries(self, where="", args=(), limit=None, page_=page):
        return method(self, where, args, limit, page=page_)
    return iter_entries


def test_history_entries_are_read_a_page_at_a_time_in_order(tmp_path):
    history = History(tmp_path / "h.sqlite")
    _fill_history(history, 11)
    queries = []
    real_connect = history._connect

    def connect():
        con = real_connect()
        con.set_trace_callback(lambda sql: queries.append(sql) if sql.startswith("SELECT") else None)
        return con

    history._connect = connect
    entries = history.iter_entries(page=4)
    first = next(entries)
    assert first.id == 11 and len(queries) == 1  # one page read, not the whole table
    assert [e.id for e in entries] == list(range(10, 0, -1)) and len(queries) == 3
    assert [e.id for e in history.iter_entries("kind = 'series'", page=2)] == [9, 6, 3]
    assert [e.id for e in history.iter_entries(limit=5, page=2)] == [11, 10, 9, 8, 7]
    assert history.recent(3) == history.all()[:3] and history.recent(0) == history.all()


def test_the_history_csv_is_written_as_it_is_read(tmp_path, monkeypatch):
    history = History(tmp_path / "h.sqlite")
    _fill_history(history, 9)
    expected = history.export_csv(tmp_path / "before.csv").read_text()
    monkeypatch.setattr(History, "all", lambda self: pytest.fail("the whole history read into memory"))
    assert history.export_csv(tmp_path / "after.csv").read_text() == expected
    assert expected.count("\n") == 10


# ----- the batch dialog's table: unsorted while a run adds rows, the last rows only, filled a chunk at a time

@pytest.fixture
def dialog(qtbot, monkeypatch, tmp_path):
    pytest.importorskip("pytestqt")
    import gui.batch_dialog as batch_dialog
    from core.inference.analyzer import Analyzer, Engine
    from core.models.registry import Registry

    monkeypatch.setattr(batch_dialog, "MAX_TABLE_ROWS", 40)
    monkeypatch.setattr(batch_dialog, "ROWS_PER_TURN", 15)
    (tmp_path / "models").mkdir()
    dlg = batch_dialog.BatchDialog(Engine(Analyzer(Registry([tmp_path / "models"]))), [])
    qtbot.addWidget(dlg)
    dlg.input_folder, dlg.output_folder = tmp_path / "in", tmp_path / "out"
    dlg._clear_table()  # as start() leaves it for a run
    return dlg


def _row(i: int) -> dict:
    return {"file": f"sub/img_{i:05d}.png", "model": "m", "label": "yes" if i % 2 else "no", "probability": "0.5",
            "lesions": "", "warnings": "", "error": ""}


def test_the_batch_table_is_not_sorted_again_at_every_file_and_keeps_the_last_rows(qtbot, dialog):
    from PySide6.QtCore import Qt

    from core.batch.runner import source_path

    table = dialog.table
    for i in range(100):
        dialog._add_rows([_row(i)])
        qtbot.wait(1)
        assert not table.isSortingEnabled()  # sorted once, when the run ends
        assert table.rowCount() <= 40
    qtbot.waitUntil(lambda: not dialog._pending, timeout=5000)
    assert table.rowCount() == 40 and [table.item(r, 0).text() for r in (0, 39)] == ["sub/img_00060.png",
                                                                                      "sub/img_00099.png"]
    assert dialog.capped.isVisibleTo(dialog) and "last 40 of 100" in dialog.capped.text()
    assert "results.csv" in dialog.capped.text()
    dialog._finished({"cancelled": False, "files_done": 100, "files": 100, "errors": 0})
    assert table.isSortingEnabled()
    opened = []
    dialog.openRequested.connect(lambda path, frame: opened.append(path))
    table.sortItems(0, Qt.SortOrder.DescendingOrder)
    dialog._open_row(0, 3)
    assert opened == [source_path(dialog.input_folder, "sub/img_00099.png")]
    dialog._clear_table()
    assert table.rowCount() == 0 and not dialog.capped.isVisibleTo(dialog) and dialog.rows_received == 0


def test_a_resumed_runs_earlier_rows_are_listed_a_chunk_at_a_time(qtbot, dialog):
    table = dialog.table
    dialog._add_rows([_row(i) for i in range(20000)])  # a resume hands over the earlier rows at once
    assert table.rowCount() == 0 and len(dialog._pending) == 40  # only those the table can list are kept
    assert dialog._filler.isActive()  # listed over the next turns of the event loop, a chunk at each
    dialog._fill_table()
    assert table.rowCount() == 15
    qtbot.waitUntil(lambda: table.rowCount() == 40, timeout=5000)
    dialog._add_rows([_row(20000)])
    dialog._failed(RuntimeError("stopped"))  # the run's end lists what is pending at once
    assert table.rowCount() == 40 and not dialog._pending and table.isSortingEnabled()
    texts = sorted(table.item(r, 0).text() for r in range(40))
    assert texts[0] == "sub/img_19961.png" and texts[-1] == "sub/img_20000.png"


# ----- the main window while scrolling: results panels and tags

@pytest.fixture
def window(qtbot, tmp_path):
    pytest.importorskip("pytestqt")
    from tests.conftest import open_window

    (tmp_path / "models").mkdir()
    return open_window(qtbot, tmp_path / "models", tmp_path, (1000, 760))


class _Bundle:
    def __init__(self, model_id: str) -> None:
        from types import SimpleNamespace

        self.id, self.classes, self.summaries = model_id, ["no", "yes"], 0
        self.info = SimpleNamespace(title=model_id.upper(), extra={})

    def summary(self) -> dict:
        self.summaries += 1
        return {"id": self.id, "version": "1", "title": self.info.title, "modality": "mri", "task": "classification",
                "architecture": "x", "classes": self.classes, "metrics": {}}


def _analysis(k: int, models: list[str]) -> Analysis:
    results = [ModelResult(m, "1", "classification", "cpu", classes=["no", "yes"],
                           probabilities={"no": k / 10, "yes": 1 - k / 10}, label="no") for m in models]
    return Analysis(f"/data/{k}.dcm", "mri", "dicom", 0, results=results)


def test_scrolling_analysed_slices_draws_the_model_panel_and_summaries_once(window, monkeypatch):
    bundles = {m: _Bundle(m) for m in ("a", "b")}
    monkeypatch.setattr(window.registry, "bundles", bundles)
    drawn = {"models": 0, "warnings": 0}
    real_models, real_warnings = window.model_info.show_models, window.warnings.show_warnings
    monkeypatch.setattr(window.model_info, "show_models",
                        lambda s: drawn.__setitem__("models", drawn["models"] + 1) or real_models(s))
    monkeypatch.setattr(window.warnings, "show_warnings",
                        lambda w: drawn.__setitem__("warnings", drawn["warnings"] + 1) or real_warnings(w))
    for k in range(8):  # the slices of an analysed series, one after another
        window._show_results(_analysis(k, ["a", "b"]))
        assert window.probabilities.bars[("a", "yes")].value() == round(1000 * (1 - k / 10))  # findings follow
    assert drawn == {"models": 1, "warnings": 0} and [b.summaries for b in bundles.values()] == [1, 1]
    assert "A" in window.model_info.toPlainText() and "B" in window.model_info.toPlainText()
    window._show_results(_analysis(0, ["b"]))  # other models: drawn again, from the summaries kept
    assert drawn["models"] == 2 and [b.summaries for b in bundles.values()] == [1, 1]
    with_warning = _analysis(1, ["b"])
    with_warning.warnings.append("look here")
    window._show_results(with_warning)
    assert drawn["warnings"] == 1 and "look here" in window.warnings.item(0).text()
    window._show_results(None)
    window._show_results(_analysis(2, ["b"]))  # after a clear the panels are drawn again
    assert drawn["models"] == 4 and "B" in window.model_info.toPlainText()


def test_the_tags_follow_the_slice_once_scrolling_pauses(qtbot, window, tmp_path, monkeypatch):
    import gui.main_window as main_window

    write_series(tmp_path / "study", ramp_images(8), spacing=2.0)
    window.open_folder(tmp_path / "study")
    qtbot.waitUntil(lambda: window.state.series is not None and not window.is_busy, timeout=20000)
    window.docks["DICOM tags"].show()
    window.docks["DICOM tags"].raise_()
    qtbot.waitUntil(lambda: window.docks["DICOM tags"].isVisible(), timeout=5000)
    fills = []
    real = window.metadata.show_rows
    monkeypatch.setattr(window.metadata, "show_rows", lambda rows: fills.append(rows) or real(rows))
    for i in range(1, 7):
        window.state.set_slice(i)
    assert fills == []  # not refilled at each step
    qtbot.waitUntil(lambda: len(fills) == 1, timeout=main_window.TAGS_DELAY_MS * 20)
    qtbot.wait(main_window.TAGS_DELAY_MS * 2)
    assert len(fills) == 1 and fills[0] is window.state.record.metadata  # once, the slice the reader stopped on
    table = window.metadata.table
    tags = {table.item(r, 1).text(): table.item(r, 2).text() for r in range(table.rowCount())}
    assert tags["InstanceNumber"] == "7"
