"""Batch over hostile folders: odd names (non-UTF-8 bytes, newlines), colliding output names, FIFOs,
link loops; kill -9 and resume; refused output folders; writes that fail are reported, not listed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from core.batch.discover import discover_images
from core.batch.runner import BatchRun, output_stem
from core.errors import DiagnosticError
from core.inference.analyzer import Analyzer
from core.models.registry import Registry
from tests.conftest import REPO
from tests.tiny_models import planted_images

MODELS = ["tiny-mr-classifier", "tiny-us-segmenter"]
ODD = [os.fsdecode(b"bad-\xff\xfe-name.png"), "new\nline.png", "coll__a.png", "coll/a.png", "sp ace & 'quote\".png",
       "ünï/cödé.png", "x" * 180 + ".png", "back\\slash.png", "-dash.png"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def hostile_folder(root: Path, plain: int = 30) -> Path:
    images, _, _ = planted_images(plain + len(ODD), seed=11)
    for i, name in enumerate(ODD):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(root / name, format="PNG")
    for i in range(plain):
        Image.fromarray(images[len(ODD) + i]).save(root / f"case{i:03d}.png")
    os.mkfifo(root / "fifo.png")
    os.symlink("loop.dcm", root / "loop.dcm")
    os.symlink("nowhere.png", root / "dangling.png")
    os.symlink(".", root / "dirloop")
    return root


def test_output_names_are_distinct_and_writable():
    stems = {output_stem(n) for n in ODD}
    assert len(stems) == len(ODD)
    assert output_stem("coll__a.png") != output_stem("coll/a.png")
    for stem in stems:
        assert stem.isascii() and "/" not in stem and "\n" not in stem and len(stem) < 120


def test_discovery_lists_what_it_cannot_analyse(tmp_path):
    root = hostile_folder(tmp_path / "in", plain=1)
    problems: dict = {}
    found = discover_images(root, problems)
    reasons = {p.name: r for p, r in problems.items()}
    assert "FIFO" in reasons["fifo.png"] and "loops" in reasons["loop.dcm"] and "does not exist" in reasons["dangling.png"]
    assert "link to a folder" in reasons["dirloop"]
    assert set(problems) <= set(found) and len(found) == len(ODD) + 1 + 4


def _communicate(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """Output of a finished run; a run that hangs is aborted and fails with its Python stacks."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate()
        pytest.fail("batch hung:\n" + "\n".join(line for line in err.splitlines() if "File" in line or "Thread" in line))


def _cli(folder, out, env, *extra, **kw):
    return subprocess.Popen([sys.executable, str(REPO / "main.py"), "batch", str(folder), "--out", str(out), *extra,
                             "--no-history", *sum((["--model", m] for m in MODELS), [])],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_hostile_batch_killed_and_resumed_equals_uninterrupted(tmp_path, tiny_models):
    folder = hostile_folder(tmp_path / "in")
    env = dict(os.environ, MIDA_USER_MODELS=str(tiny_models), PYTHONFAULTHANDLER="1")
    reference = _cli(folder, tmp_path / "ref", env)
    out, err = _communicate(reference, 400)
    assert reference.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["complete"] and summary["errors"] == 4  # fifo, loop, dangling link, link to a folder

    killed = _cli(folder, tmp_path / "run", env)
    journal = tmp_path / "run" / "done.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 8):
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert len(journal.read_text().splitlines()) < 40, "run finished before it could be killed"
    again = _cli(folder, tmp_path / "run", env)  # without --resume: refused, nothing replaced
    out, err = _communicate(again, 400)
    assert again.returncode == 2 and "--resume" in json.loads(out)["error"], (out, err[-2000:])
    resumed = _cli(folder, tmp_path / "run", env, "--resume")
    out, err = _communicate(resumed, 400)
    assert resumed.returncode == 0, err[-3000:]
    ref_rows, run_rows = _rows(tmp_path / "ref" / "results.csv"), _rows(tmp_path / "run" / "results.csv")
    assert run_rows == ref_rows
    files = {r["file"] for r in ref_rows}
    assert "bad-\\xff\\xfe-name.png" in files and "new\nline.png" in files and {"coll__a.png", "coll/a.png"} <= files
    heatmaps = [r["heatmap_file"] for r in run_rows if r["heatmap_file"]]
    masks = [r["mask_file"] for r in run_rows if r["mask_file"]]
    assert len(heatmaps) == len(set(heatmaps)) == len(ODD) + 30 and len(masks) == len(set(masks))
    assert all((tmp_path / "run" / h).is_file() for h in heatmaps + masks)
    assert not (tmp_path / "run" / ".batch.lock").exists()


def test_refused_output_folders(tmp_path, tiny_models):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(planted_images(1, seed=2)[0][0]).save(folder / "a.png")
    analyzer = Analyzer(Registry([tiny_models]))
    with pytest.raises(DiagnosticError, match="inside the input folder"):
        BatchRun(folder, folder / "out", analyzer, model_ids=MODELS).run()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DiagnosticError, match="is a file"):
        BatchRun(folder, tmp_path / "file", analyzer, model_ids=MODELS).run()
    out = tmp_path / "out"
    first = BatchRun(folder, out, analyzer, model_ids=MODELS).run()
    assert first["complete"]
    before = (out / "results.csv").read_text()
    with pytest.raises(DiagnosticError, match="--overwrite"):
        BatchRun(folder, out, analyzer, model_ids=MODELS).run()
    assert (out / "results.csv").read_text() == before
    again = BatchRun(folder, out, analyzer, model_ids=MODELS, overwrite=True).run()
    assert again["complete"] and (out / "results.csv").read_text() == before


def test_failed_heatmap_writes_are_errors_not_files(tmp_path, tiny_models):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(planted_images(1, seed=2)[0][0]).save(folder / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "heatmaps").write_text("a file where the heatmap folder should be")
    BatchRun(folder, out, Analyzer(Registry([tiny_models])), model_ids=MODELS).run()
    cls = next(r for r in _rows(out / "results.csv") if r["model"] == MODELS[0])
    assert cls["heatmap_file"] == "" and "cannot write" in cls["error"]


def test_cli_out_onto_a_file_and_bad_heatmap_targets(tmp_path, tiny_models):
    env = dict(os.environ, MIDA_USER_MODELS=str(tiny_models))
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(planted_images(1, seed=2)[0][0]).save(folder / "a.png")
    (tmp_path / "file").write_text("x")
    run = _cli(folder, tmp_path / "file", env)
    out, err = _communicate(run, 400)
    assert run.returncode == 2 and "is a file" in json.loads(out)["error"] and "Traceback" not in err

    def analyze(*extra):
        return subprocess.run([sys.executable, str(REPO / "main.py"), "analyze", str(folder / "a.png"), "--json",
                               "--no-history", "--model", MODELS[0], *extra], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)

    bad_suffix = analyze("--heatmap-out", str(tmp_path / "h.xyz"))
    assert bad_suffix.returncode == 2 and ".png" in json.loads(bad_suffix.stdout)["error"]
    unwritable = analyze("--heatmap-out", str(tmp_path / "file" / "h.png"))  # its folder is a file
    assert unwritable.returncode == 2 and "cannot write" in json.loads(unwritable.stdout)["error"]
    assert "Traceback" not in bad_suffix.stderr + unwritable.stderr
    good = analyze("--heatmap-out", str(tmp_path / "h.png"))
    assert good.returncode == 0 and Path(json.loads(good.stdout)["results"][0]["heatmap_file"]).is_file()


def test_unreadable_folder_is_listed_not_skipped(tmp_path, monkeypatch):
    """(Tests run as root, where chmod does not bite: the listing error is injected.)"""
    root = tmp_path / "in"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    Image.fromarray(planted_images(1, seed=2)[0][0]).save(root / "a.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    problems: dict = {}
    found = discover_images(root, problems)
    assert [p.name for p in found] == ["a.png", "locked"]
    assert "cannot be read" in problems[root / "locked"]
    problems = {}
    monkeypatch.setattr(os, "scandir", lambda path=".": (_ for _ in ()).throw(PermissionError(13, "denied", str(path))))
    discover_images(root, problems)
    assert root in problems  # the run refuses a folder it cannot list instead of reporting 0 files complete


def test_series_index_only_sees_files_the_loader_accepted(tmp_path, tiny_models, monkeypatch, pydicom_file):
    """series.csv is built after the run; its index opens files itself, so refused ones must not reach it
    (a FIFO there blocked the run for good; a deflate bomb inflated there for minutes)."""
    import core.series.index as series_index
    from tests.test_hostile_info import deflated_bomb

    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "256")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "mr.dcm").write_bytes(pydicom_file("MR_small.dcm").read_bytes())
    (folder / "truncated.dcm").write_bytes(pydicom_file("MR_small.dcm").read_bytes()[:3000])
    deflated_bomb(folder / "bomb.dcm", 300 * 1024**2)
    os.mkfifo(folder / "fifo.dcm")
    seen: list[str] = []
    real = series_index.index_files

    def spy(files, root):
        seen.extend(p.name for p in files)
        return real(files, root=root)

    monkeypatch.setattr(series_index, "index_files", spy)
    summary = BatchRun(folder, tmp_path / "out", Analyzer(Registry([tiny_models])), model_ids=MODELS,
                       heatmaps=False).run()
    rows = {r["file"]: r for r in _rows(tmp_path / "out" / "results.csv")}
    assert summary["complete"] and "inflates" in rows["bomb.dcm"]["error"] and "FIFO" in rows["fifo.dcm"]["error"]
    assert "too large" in rows["bomb.dcm"]["error"] and rows["truncated.dcm"]["error"]
    assert seen == ["mr.dcm", "truncated.dcm"]  # damaged but small: handed on, so series.csv can say why


def test_nan_window_is_shown_and_warned_in_the_rows(tmp_path, tiny_models):
    from core.imaging import load_image
    from tests.test_hostile_info import _mr

    folder = tmp_path / "in"
    folder.mkdir()
    ds = _mr(WindowCenter="NaN", WindowWidth="NaN")
    ds.save_as(folder / "nan_window.dcm")
    record = load_image(folder / "nan_window.dcm")
    assert record.display(0).std() > 10  # not the black picture a NaN window gave
    BatchRun(folder, tmp_path / "out", Analyzer(Registry([tiny_models])), model_ids=MODELS).run()
    rows = _rows(tmp_path / "out" / "results.csv")
    assert rows and all("window" in r["warnings"] for r in rows)


def test_a_failing_history_does_not_turn_results_into_errors(tmp_path, tiny_models):
    class BrokenHistory:
        def add(self, analysis, file_sha256=None):
            raise DiagnosticError("the analysis could not be recorded in the history (disk full)")

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(planted_images(1, seed=2)[0][0]).save(folder / "a.png")
    BatchRun(folder, tmp_path / "out", Analyzer(Registry([tiny_models])), model_ids=MODELS,
             history=BrokenHistory()).run()
    rows = _rows(tmp_path / "out" / "results.csv")
    assert len(rows) == 2 and not any(r["error"] for r in rows) and all("history" in r["warnings"] for r in rows)
