"""Batch: mixed folders with broken files, resume after kill -9, output lock."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pydicom
import pytest
from PIL import Image

from core.batch.discover import discover_images
from core.batch.runner import BatchRun, OutputLocked, _Lock
from core.inference.analyzer import Analyzer
from core.models.registry import Registry
from tests.conftest import REPO
from tests.tiny_models import planted_images

MODELS = ["tiny-mr-classifier", "tiny-us-segmenter"]


@pytest.fixture
def mixed_folder(tmp_path, pydicom_file):
    root = tmp_path / "studies"
    (root / "patientA" / "series1").mkdir(parents=True)
    (root / "patientB").mkdir()
    images, _, _ = planted_images(12, seed=3)
    for i, img in enumerate(images[:8]):
        Image.fromarray(img).save(root / ("patientA/series1" if i % 2 else "patientB") / f"img{i:02d}.png")
    shutil.copy(pydicom_file("MR_small.dcm"), root / "patientA" / "IM0001")  # DICOM without extension
    shutil.copy(pydicom_file("examples_ybr_color.dcm"), root / "patientB" / "cine.dcm")  # multi-frame
    (root / "patientB" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "patientB" / "noise.jpg").write_bytes(os.urandom(3000))
    (root / "patientA" / "truncated.dcm").write_bytes(pydicom_file("MR_small.dcm").read_bytes()[:3000])
    (root / ".hidden.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "DICOMDIR").write_bytes(b"\0" * 200)
    (root / "notes.txt").write_text("not an image")
    return root


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_discovery_ignores_hidden_and_dicomdir(mixed_folder):
    names = [p.name for p in discover_images(mixed_folder)]
    assert "IM0001" in names and "cine.dcm" in names and "broken.png" in names and "noise.jpg" in names
    assert ".hidden.png" not in names and "DICOMDIR" not in names and "notes.txt" not in names
    assert len(names) == 13


def test_mixed_folder_rows_and_errors(mixed_folder, tmp_path, tiny_models):
    out = tmp_path / "out"
    said = []
    summary = BatchRun(mixed_folder, out, Analyzer(Registry([tiny_models])), model_ids=MODELS,
                       on_progress=said.append).run()
    # after the last file the run says it is writing the report (minutes on a long run, silent before)
    assert said[-1].stage.startswith("writing the report") and said[-1].done == said[-1].total
    assert all(not p.stage for p in said[:-1])
    rows = _rows(out / "results.csv")
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    assert len(by_file) == 13 and summary["files_done"] == 13 and summary["complete"]
    for bad in ("patientB/broken.png", "patientB/noise.jpg", "patientA/truncated.dcm"):
        assert len(by_file[bad]) == 1 and by_file[bad][0]["error"], bad
        assert bad.split("/")[-1] in by_file[bad][0]["error"]
    good = by_file["patientB/img00.png"]
    assert [r["model"] for r in good] == MODELS and not any(r["error"] for r in good)
    cls = good[0]
    assert cls["label"] in ("clear", "lesion") and float(cls["probability"]) == pytest.approx(
        max(float(cls["p_clear"]), float(cls["p_lesion"])), abs=1e-6)
    seg = good[1]
    mask = np.array(Image.open(out / seg["mask_file"]))
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    outlined = [r for r in rows if r["task"] == "segmentation" and int(r["lesions"] or 0)]
    assert outlined  # the largest lesion's calipers; millimetres only where the file states its spacing
    for r in outlined:  # the test segmenter is an ultrasound one: calipers beside the longest diameter
        assert float(r["lesion_depth_to_width"]) > 0
        assert (r["lesion_width_mm"] == "") == (r["lesion_area_mm2"] == "") == (r["lesion_max_diameter_mm"] == "")
    assert (out / cls["heatmap_file"]).exists()
    assert by_file["patientA/IM0001"][0]["modality"] == "MR"
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["rows"]) == len(rows) and summary["errors"] == 3
    assert (out / "report.pdf").stat().st_size > 0


def test_batch_writes_a_de_identified_structured_report_per_analysis(mixed_folder, tmp_path, tiny_models):
    import highdicom as hd

    out = tmp_path / "out"
    BatchRun(mixed_folder, out, Analyzer(Registry([tiny_models])), model_ids=MODELS, dicom_sr=True).run()
    rows = _rows(out / "results.csv")
    done = [r for r in rows if not r["error"]]
    assert len({r["file"] for r in done}) == 10 and all(r["sr_file"].startswith("sr/") for r in done)
    assert not any(r["sr_file"] for r in rows if r["error"])  # the three unreadable files
    for name in {r["sr_file"] for r in done}:
        sr = hd.sr.srread(out / name)
        assert sr.PatientIdentityRemoved == "YES" and len(sr.content.get_image_measurement_groups()) == 2
    mr = hd.sr.srread(out / next(r["sr_file"] for r in done if r["file"] == "patientA/IM0001"))
    assert mr.StudyInstanceUID == pydicom.dcmread(mixed_folder / "patientA" / "IM0001").StudyInstanceUID


def test_a_structured_report_that_fails_leaves_the_files_results(tmp_path, tiny_models, monkeypatch):
    import core.export.structured_report as structured_report

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(planted_images(1, seed=4)[0][0]).save(folder / "a.png")

    def fails(*_args, **_kwargs):
        raise AttributeError("'FileDataset' object has no attribute 'SliceThickness'")  # as highdicom raised

    monkeypatch.setattr(structured_report, "export_sr", fails)
    BatchRun(folder, tmp_path / "out", Analyzer(Registry([tiny_models])), model_ids=MODELS, dicom_sr=True).run()
    rows = _rows(tmp_path / "out" / "results.csv")
    assert [r["model"] for r in rows] == MODELS and rows[0]["label"] and rows[1]["mask_file"]  # not one error row
    assert all(r["error"].startswith("DICOM SR not written: AttributeError") and not r["sr_file"] for r in rows)


@pytest.mark.parametrize("option", ["dicom_sr", "all_frames"])
def test_a_run_is_resumed_only_as_it_was_started(tmp_path, tiny_models, option):
    """One results.csv holds one run's rows: resumed with --all-frames or --dicom-sr flipped, a run mixed frames or
    columns (refused with a misleading message, or silently)."""
    from core.batch.runner import run_settings
    from core.errors import DiagnosticError

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    images = planted_images(2, seed=5)[0]
    Image.fromarray(images[0]).save(folder / "a.png")
    analyzer = Analyzer(Registry([tiny_models]))
    BatchRun(folder, out, analyzer, model_ids=MODELS, **{option: True}).run()
    assert run_settings(out)[option] is True
    Image.fromarray(images[1]).save(folder / "b.png")
    with pytest.raises(DiagnosticError, match="was started with --(dicom-sr|all-frames).*: resume it the same way"):
        BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()
    BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True, **{option: True}).run()
    assert [r["file"] for r in _rows(out / "results.csv")] == ["a.png", "a.png", "b.png", "b.png"]


def test_a_fresh_run_never_deletes_files_it_did_not_write(tmp_path, tiny_models):
    """An output folder without a run's results was taken for fresh and its masks/, heatmaps/ and sr/ emptied:
    here the input folder itself was the output's masks/ folder."""
    from core.errors import DiagnosticError

    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "sr").mkdir()
    Image.fromarray(planted_images(1, seed=6)[0][0]).save(out / "masks" / "ground_truth.png")
    (out / "sr" / "mine.dcm").write_bytes(b"keep me")
    with pytest.raises(DiagnosticError, match="is the output folder's 'masks' folder"):
        BatchRun(out / "masks", out, Analyzer(Registry([tiny_models])), model_ids=MODELS).run()
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(planted_images(1, seed=7)[0][0]).save(folder / "a.png")
    BatchRun(folder, out, Analyzer(Registry([tiny_models])), model_ids=MODELS).run()
    assert (out / "masks" / "ground_truth.png").exists() and (out / "sr" / "mine.dcm").read_bytes() == b"keep me"


def _cli(folder, out, env, *extra):
    return subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "batch", str(folder), "--out", str(out), *extra,
         *sum((["--model", m] for m in MODELS), [])],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_and_resume_equals_uninterrupted_run(tmp_path, tiny_models):
    folder = tmp_path / "many"
    folder.mkdir()
    images, _, _ = planted_images(40, seed=9)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"case{i:03d}.png")
    env = dict(os.environ, MIDA_USER_MODELS=str(tiny_models))
    reference = _cli(folder, tmp_path / "ref", env)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-2000:]

    killed = _cli(folder, tmp_path / "run", env)
    journal = tmp_path / "run" / "done.txt"
    deadline = time.time() + 300
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 6):
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert len(journal.read_text().splitlines()) < 40, "run finished before it could be killed"
    resumed = _cli(folder, tmp_path / "run", env, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    assert (tmp_path / "run" / "results.csv").read_text() == (tmp_path / "ref" / "results.csv").read_text()


def test_two_runs_cannot_share_output(tmp_path):
    with _Lock(tmp_path):
        with pytest.raises(OutputLocked):
            with _Lock(tmp_path):
                pass
    (tmp_path / ".batch.lock").write_text("999999")  # stale lock of a dead process is taken over
    with _Lock(tmp_path):
        pass


def test_cli_batch_on_missing_folder_is_clean(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "main.py"), "batch", str(tmp_path / "nope"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "error" in json.loads(run.stdout)


def test_cancel_in_the_middle_of_a_file_ends_cleanly(tmp_path, tiny_models, planted_png):
    """Cancel raised between two models of one file: the run ends as cancelled, that file is redone."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(planted_png[0].read_bytes())
    analyzer = Analyzer(Registry([tiny_models]))
    run = BatchRun(folder, tmp_path / "out", analyzer, model_ids=MODELS)
    original = analyzer.analyze

    def cancel_during_second_file(record, **kw):
        if record.path.name == "b.png":
            run.cancel.set()
        return original(record, **kw)

    analyzer.analyze = cancel_during_second_file
    summary = run.run()
    assert summary["cancelled"] and summary["files_done"] == 1
    assert (tmp_path / "out" / "done.txt").read_text().split() == ["a.png"]
    analyzer.analyze = original
    resumed = BatchRun(folder, tmp_path / "out", analyzer, model_ids=MODELS, resume=True).run()
    assert resumed["complete"] and resumed["files_done"] == 2


def test_resume_over_another_input_folder_is_refused(tmp_path, tiny_models):
    """A results folder belongs to the input folder it was made for: resumed over another, that folder's files
    of the same names would be taken for done and reported with the first folder's answers."""
    from core.errors import DiagnosticError

    images, _, _ = planted_images(3, seed=4)
    for day in ("dayA", "dayB"):
        (tmp_path / day).mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img if day == "dayA" else 255 - img).save(tmp_path / day / f"scan{i}.png")
    analyzer = Analyzer(Registry([tiny_models]))
    out = tmp_path / "out"
    assert BatchRun(tmp_path / "dayA", out, analyzer, model_ids=["tiny-mr-classifier"]).run()["complete"]
    with pytest.raises(DiagnosticError, match="holds the results of a run over"):
        BatchRun(tmp_path / "dayB", out, analyzer, model_ids=["tiny-mr-classifier"], resume=True).run()
    assert BatchRun(tmp_path / "dayA", out, analyzer, model_ids=["tiny-mr-classifier"], resume=True).run()["complete"]
    fresh = BatchRun(tmp_path / "dayB", out, analyzer, model_ids=["tiny-mr-classifier"], overwrite=True).run()
    assert fresh["complete"] and json.loads((out / "input.json").read_text())["folder"].endswith("dayB")
