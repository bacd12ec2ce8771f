"""The contract of a batch's output files (results.csv, input.json, summary.json, series.csv) and of
``analyze --series``: found by a helper's hunt; each test failed before its fix."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.batch.runner import BatchRun
from core.result_cells import file_key
from core.errors import DiagnosticError
from core.inference.analyzer import Analyzer
from core.models.registry import Registry
from tests.conftest import REPO, run_cancelled
from tests.tiny_models import planted_images

MODELS = ["tiny-mr-classifier", "tiny-us-segmenter"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _folder(root: Path, names: list[str], seed: int = 21) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    images = planted_images(len(names), seed=seed)[0]
    for name, img in zip(names, images):
        Image.fromarray(img).save(root / name, format="PNG")
    return root


@pytest.fixture(scope="module")
def analyzer(tiny_models):
    return Analyzer(Registry([tiny_models]))


def _interrupted(folder: Path, out: Path, analyzer, after: int, **options) -> None:
    """A run cancelled once ``after`` files are done (as Ctrl+C or the dialog's Cancel leaves it)."""
    seen: list[str] = []

    def past(record) -> bool:
        if record.path.name not in seen:
            seen.append(record.path.name)
        return len(seen) > after

    run_cancelled(BatchRun(folder, out, analyzer, model_ids=MODELS, **options), analyzer, past)


# ----------------------------------------------------------------------------------------------- 1, 2: results.csv
def test_a_carriage_return_in_a_file_name_stays_in_its_csv_cell(tmp_path, analyzer):
    folder = _folder(tmp_path / "in", ["a\rb.png", "c.png"])
    summary = BatchRun(folder, tmp_path / "out", analyzer, model_ids=MODELS).run()
    assert summary["complete"] and summary["files_done"] == summary["files"] == 2
    assert [r["file"] for r in _rows(tmp_path / "out" / "results.csv")] == ["a\rb.png"] * 2 + ["c.png"] * 2
    assert (tmp_path / "out" / "report.pdf").exists()
    _interrupted(folder, tmp_path / "run", analyzer, after=1)  # its rows kept by a resume, as one file's
    resumed = BatchRun(folder, tmp_path / "run", analyzer, model_ids=MODELS, resume=True).run()
    assert resumed["complete"] and resumed["files_done"] == 2
    assert (tmp_path / "run" / "results.csv").read_bytes() == (tmp_path / "out" / "results.csv").read_bytes()


def test_series_csv_quotes_a_carriage_return(tmp_path, monkeypatch):
    import core.series.report as report

    monkeypatch.setattr(report, "series_rows", lambda index, results: [{"description": "AX\rT2", "model": "m"}])

    class Index:
        series = [type("S", (), {"kind": "dicom"})()]

    target = report.write_series_csv(Index(), [], tmp_path)
    (row,) = _rows(target)
    assert row["description"] == "AX\rT2" and row["model"] == "m"


def test_a_resumed_results_csv_is_byte_identical_to_an_uninterrupted_one(tmp_path, analyzer):
    folder = _folder(tmp_path / "in", ["a.png", "b.png", "c.png"])
    BatchRun(folder, tmp_path / "ref", analyzer, model_ids=MODELS).run()
    _interrupted(folder, tmp_path / "run", analyzer, after=1)
    assert BatchRun(folder, tmp_path / "run", analyzer, model_ids=MODELS, resume=True).run()["complete"]
    ref = (tmp_path / "ref" / "results.csv").read_bytes()
    assert (tmp_path / "run" / "results.csv").read_bytes() == ref
    assert ref.count(b"\r\n") == ref.count(b"\n")  # one line ending throughout


# ----------------------------------------------------------------------------------------------- 3: options of a resume
@pytest.mark.parametrize("change, named", [
    ({"microns_per_pixel": 0.49}, "--microns-per-pixel"),
    ({"heatmaps": False}, "heatmaps"),
    ({"model_ids": ["tiny-mr-classifier"]}, "tiny-us-segmenter"),
])
def test_a_resume_with_other_options_is_refused(tmp_path, analyzer, change, named):
    folder = _folder(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    _interrupted(folder, out, analyzer, after=1)
    settings = json.loads((out / "input.json").read_text())
    assert settings["models"] == {m: analyzer.registry.get(m).version for m in MODELS}
    assert settings["microns_per_pixel"] is None and settings["heatmaps"] is True
    options = dict({"model_ids": MODELS}, **change)
    with pytest.raises(DiagnosticError, match=named):
        BatchRun(folder, out, analyzer, resume=True, **options).run()
    assert BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()["complete"]


def test_a_resume_with_another_model_version_is_refused_and_old_records_are_accepted(tmp_path, analyzer):
    folder = _folder(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    _interrupted(folder, out, analyzer, after=1)
    settings = json.loads((out / "input.json").read_text())
    (out / "input.json").write_text(json.dumps(dict(settings, models=dict(settings["models"],
                                                                          **{MODELS[0]: "0.0.1-old"}))))
    with pytest.raises(DiagnosticError, match="0.0.1-old"):
        BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()
    # an input.json of the previous version records none of these: not refused on them
    (out / "input.json").write_text(json.dumps({k: settings[k] for k in ("folder", "all_frames", "dicom_sr")}))
    assert BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()["complete"]


def _rewrite_header(path: Path, columns: list[str]) -> None:
    """results.csv as an earlier version wrote it: only ``columns``, in their order."""
    rows = _rows(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)


def test_a_results_csv_of_an_earlier_version_resumes_with_the_added_columns_empty(tmp_path, analyzer):
    folder = _folder(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    _interrupted(folder, out, analyzer, after=1)
    earlier = [c for c in _rows(out / "results.csv")[0] if c not in ("novelty", "scale", "findings")]
    _rewrite_header(out / "results.csv", earlier)
    summary = BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()
    assert summary["complete"] and summary["files_done"] == 3
    rows = _rows(out / "results.csv")
    assert list(rows[0]) == BatchRun(folder, out, analyzer, model_ids=MODELS).columns
    assert [r["file"] for r in rows] == ["a.png"] * 2 + ["b.png"] * 2 + ["c.png"] * 2
    assert [r["novelty"] for r in rows[:2]] == ["", ""]  # the earlier rows: not analysed for it
    assert all(r["label"] for r in rows)


@pytest.mark.parametrize("alter", ["unknown", "reordered", "dropped"])
def test_a_results_csv_with_other_columns_is_still_refused(tmp_path, analyzer, alter):
    folder = _folder(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    _interrupted(folder, out, analyzer, after=1)
    columns = list(_rows(out / "results.csv")[0])
    if alter == "unknown":
        columns.insert(3, "p_other")
    elif alter == "reordered":
        columns[1], columns[2] = columns[2], columns[1]
    else:  # a column no version lacked
        columns.remove("lesions")
    _rewrite_header(out / "results.csv", columns)
    with pytest.raises(DiagnosticError, match="other models/columns"):
        BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()


# ----------------------------------------------------------------------------------------------- 4: a file removed
def test_a_resume_after_an_input_file_was_removed_completes(tmp_path, analyzer):
    folder = _folder(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    _interrupted(folder, out, analyzer, after=1)
    (folder / "a.png").unlink()
    summary = BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()
    assert summary["complete"] and summary["files"] == summary["files_done"] == 2
    assert summary["files_missing"] == 1 and any("a.png" in w for w in summary["run_warnings"])
    assert "a.png" in {r["file"] for r in _rows(out / "results.csv")}  # its rows are kept
    assert (out / "report.pdf").exists()


# ----------------------------------------------------------------------------------------------- 5: one key per file
def test_file_keys_are_one_per_file(tmp_path, analyzer):
    from core.series.report import _file_key

    raw, literal = os.fsdecode(b"x\xff.png"), "x\\xff.png"
    assert file_key(raw) != file_key(literal)
    assert len({file_key(n) for n in (raw, literal, "x\\\\xff.png", "x\\\\\\xff.png", "a\\b.png")}) == 5
    assert file_key("a\\b.png") == "a\\b.png" and file_key("plain/a.png") == "plain/a.png"  # as before
    folder = _folder(tmp_path / "in", [raw, literal])
    for name in (raw, literal):
        assert _file_key(folder / name, folder) == file_key(name)
    _interrupted(folder, tmp_path / "out", analyzer, after=1)
    summary = BatchRun(folder, tmp_path / "out", analyzer, model_ids=MODELS, resume=True).run()
    assert summary["complete"] and summary["files_done"] == 2
    assert len({r["file"] for r in _rows(tmp_path / "out" / "results.csv")}) == 2


def test_a_file_key_leads_back_to_its_file(tmp_path):
    from core.batch.runner import source_path

    for name in (os.fsdecode(b"x\xff.png"), "x\\xff.png", "a\\b.png", "d/\\\\.png", "new\nline.png"):
        assert source_path(tmp_path, file_key(name)) == tmp_path / name


# ----------------------------------------------------------------------------------------------- 6: partial series
def test_a_series_analysed_in_part_claims_no_verdict():
    from core.series.index import Series, SliceRef
    from core.series.report import _rows_of_series

    root = Path("/data")
    frames = [SliceRef(root / "us.dcm", frame=k, instance=k + 1) for k in range(30)]
    series = Series("us.dcm", "1.2.3", "multiframe", modality="US", slices=frames, spacing_mm=1.0)
    cls = {"file": "us.dcm", "frame": "0", "model": "cls", "task": "classification", "label": "benign",
           "p_benign": "0.900000", "p_normal": "0.100000", "error": "", "warnings": ""}
    seg = {"file": "us.dcm", "frame": "0", "model": "seg", "task": "segmentation", "label": "lesion", "lesions": "2",
           "lesion_area_mm2": "12.5", "error": "", "warnings": ""}
    rows = _rows_of_series(series, root, {("us.dcm", 0): [cls, seg]}, "P001", "P001-S1")
    assert [r["model"] for r in rows] == ["cls", "seg"]
    for row in rows:
        assert row["label"] == "" and row["probability"] == "" and row["lesion_volume_ml"] == ""
        assert "1 of 30 frames analysed" in row["warnings"]
    both = [SliceRef(root / "us.dcm", frame=k, instance=k + 1) for k in range(2)]
    whole = Series("us.dcm", "1.2.3", "multiframe", modality="US", slices=both, spacing_mm=1.0)
    by_slice = {("us.dcm", k): [dict(seg, frame=str(k))] for k in range(2)}
    (row,) = _rows_of_series(whole, root, by_slice, "P001", "P001-S1")
    assert row["label"] == "lesion" and row["lesion_volume_ml"] and "analysed" not in row["warnings"]


# ----------------------------------------------------------------------------------------------- 7, 8: analyze --series
def test_series_json_is_strict_and_names_undecodable_bytes_as_escapes(capsys):
    from core.json_output import print_json

    print_json({"lesion_volume_ml": float("inf"), "p": float("nan"), "file": os.fsdecode(b"/d/a\xff.dcm")})
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert out == {"lesion_volume_ml": None, "p": None, "file": "/d/a\\xff.dcm"}


def test_a_structured_report_never_overwrites_an_input_slice(tmp_path, tiny_models):
    from tests.series_data import ramp_images, write_series

    folder = tmp_path / "series"
    folder.mkdir()
    slices = write_series(folder, ramp_images(3))
    before = slices[1].read_bytes()
    env = dict(os.environ, MIDA_USER_MODELS=str(tiny_models), MIDA_HOME=str(tmp_path / "home"))
    run = subprocess.run([sys.executable, str(REPO / "main.py"), "analyze", str(folder), "--series", "--json",
                          "--no-history", "--model", MODELS[0], "--dicom-sr-out", str(slices[1])],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "input" in json.loads(run.stdout)["error"]
    assert slices[1].read_bytes() == before


# ----------------------------------------------------------------------------------------------- 9: atomic rewrite
def test_a_failure_while_resuming_keeps_the_journalled_rows(tmp_path, analyzer, monkeypatch):
    folder = _folder(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    _interrupted(folder, out, analyzer, after=2)
    before = (out / "results.csv").read_bytes()
    real_open = io.open

    def failing_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        if "w" in mode and Path(os.fsdecode(file)).parent == out:
            def write(text, fh=fh):
                fh.buffer.write(text[: len(text) // 2].encode())
                fh.buffer.flush()
                raise OSError(errno.ENOSPC, "No space left on device")  # as a kill or a full disk leaves it
            fh.write = write
        return fh

    monkeypatch.setattr(io, "open", failing_open)
    with pytest.raises(DiagnosticError):
        BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()
    monkeypatch.setattr(io, "open", real_open)
    assert (out / "results.csv").read_bytes() == before
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()["complete"]


# ----------------------------------------------------------------------------------------------- 10: same files
def test_an_empty_folder_gives_the_same_output_files(tmp_path, analyzer):
    _folder(tmp_path / "in", ["a.png"])
    (tmp_path / "empty").mkdir()
    for name in ("in", "empty"):
        assert BatchRun(tmp_path / name, tmp_path / f"out-{name}", analyzer, model_ids=MODELS,
                        heatmaps=False).run()["complete"]
    files = {name: sorted(p.name for p in (tmp_path / f"out-{name}").iterdir() if p.is_file())
             for name in ("in", "empty")}
    assert files["empty"] == files["in"]
    assert (tmp_path / "out-empty" / "results.jsonl").read_text() == ""


def test_a_multi_frame_file_is_hashed_once_for_the_history_of_all_its_frames(tmp_path, analyzer, pydicom_file,
                                                                             monkeypatch):
    """History re-hashed the whole file for every frame: a 150-frame 75 MB file took 99 s instead of 35 s."""
    import shutil

    import core.batch.runner as runner
    from core.history import History

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(pydicom_file("SC_rgb_rle_2frame.dcm"), folder / "two.dcm")
    hashed = []
    real = runner.sha256_file
    monkeypatch.setattr(runner, "sha256_file", lambda path: hashed.append(path) or real(path))
    history = History(tmp_path / "h.sqlite")
    runner.BatchRun(folder, tmp_path / "out", analyzer, model_ids=["tiny-mr-classifier"], all_frames=True,
                    history=history).run()
    assert len(hashed) == 1 and len(history.for_file(folder / "two.dcm")) == 2


def test_a_multi_frame_file_analysed_at_its_first_frame_says_so(tmp_path, analyzer, pydicom_file):
    import csv
    import shutil

    from core.batch.runner import BatchRun

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(pydicom_file("SC_rgb_rle_2frame.dcm"), folder / "two.dcm")
    BatchRun(folder, tmp_path / "out", analyzer, model_ids=["tiny-mr-classifier"]).run()
    with (tmp_path / "out" / "results.csv").open(newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert "only frame 1 of 2 was analysed" in row["warnings"]
