"""Batch review fixes: lesion masks beside the images (``--exclude``, a hint where none was given, kept by a
resume) and results.jsonl's typed cells. Each test failed before its fix."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from core.batch.discover import discover_images
from core.batch.runner import BatchRun
from core.cli import main
from core.errors import DiagnosticError
from core.inference.analyzer import Analyzer
from core.models.registry import Registry
from tests.conftest import run_cancelled
from tests.tiny_models import planted_images

MODELS = ["tiny-mr-classifier", "tiny-us-segmenter"]
MASKS = ["case1_mask.png", "gt/mask_0001.png"]  # a mask beside its image, BUS-BRA's naming


@pytest.fixture(scope="module")
def analyzer(tiny_models):
    return Analyzer(Registry([tiny_models]))


def _folder(root: Path, names: list[str]) -> Path:
    images = planted_images(len(names), seed=31)[0]
    for name, img in zip(names, images):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / name, format="PNG")
    return root


def _files(out: Path) -> list[str]:
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        return sorted({row["file"] for row in csv.DictReader(fh)})


def test_discovery_leaves_out_what_matches_a_name_or_a_relative_path_ignoring_case(tmp_path):
    root = _folder(tmp_path / "in", ["case1.png", "Case2_MASK.PNG", "gt/mask_0001.png", "gt/other.png"])
    excluded: list[Path] = []
    found = discover_images(root, {}, ["*_mask.*", "GT/*"], excluded)
    assert [p.relative_to(root).as_posix() for p in found] == ["case1.png"]
    assert sorted(p.relative_to(root).as_posix() for p in excluded) == ["Case2_MASK.PNG", "gt/mask_0001.png",
                                                                        "gt/other.png"]


def test_masks_named_as_data_sets_name_them_get_one_run_warning(tmp_path, analyzer):
    folder = _folder(tmp_path / "in", ["case1.png", *MASKS])
    summary = BatchRun(folder, tmp_path / "out", analyzer, model_ids=MODELS, heatmaps=False).run()
    hints = [w for w in summary["run_warnings"] if "named like lesion masks" in w]
    assert len(hints) == 1 and hints[0].startswith("2 file(s)")
    assert "--exclude '*_mask.*'" in hints[0] and "--exclude 'mask_*'" in hints[0]
    assert summary["excluded"] == 0 and _files(tmp_path / "out") == ["case1.png", *MASKS]  # never skipped unasked


def test_excluded_files_are_counted_and_no_hint_is_given(tmp_path, analyzer):
    folder = _folder(tmp_path / "in", ["case1.png", *MASKS])
    summary = BatchRun(folder, tmp_path / "out", analyzer, model_ids=MODELS, heatmaps=False,
                       exclude=["*_mask.*", "mask_*"]).run()
    assert summary["complete"] and summary["files"] == 1 and summary["excluded"] == 2
    assert not any("lesion masks" in w for w in summary["run_warnings"])
    assert _files(tmp_path / "out") == ["case1.png"]
    assert json.loads((tmp_path / "out" / "input.json").read_text())["exclude"] == ["*_mask.*", "mask_*"]


def test_masks_another_exclude_missed_still_get_the_hint(tmp_path, analyzer):
    folder = _folder(tmp_path / "in", ["case1.png", "notes.png", *MASKS])
    summary = BatchRun(folder, tmp_path / "out", analyzer, model_ids=MODELS, heatmaps=False, exclude=["notes.*"]).run()
    hints = [w for w in summary["run_warnings"] if "named like lesion masks" in w]
    assert summary["excluded"] == 1 and len(hints) == 1 and hints[0].startswith("2 file(s)")


def test_a_resume_keeps_the_runs_exclusions_and_refuses_others(tmp_path, analyzer):
    folder = _folder(tmp_path / "in", ["a.png", "b.png", "a_mask.png", "b_mask.png"])
    out = tmp_path / "out"
    run_cancelled(BatchRun(folder, out, analyzer, model_ids=MODELS, heatmaps=False, exclude=["*_MASK.*"]),
                  analyzer, lambda record: record.path.name == "b.png")
    with pytest.raises(DiagnosticError, match=r"started with --exclude '\*_MASK\.\*', not no --exclude"):
        BatchRun(folder, out, analyzer, model_ids=MODELS, heatmaps=False, resume=True, exclude=[]).run()
    with pytest.raises(DiagnosticError, match="resume it the same way"):
        BatchRun(folder, out, analyzer, model_ids=MODELS, heatmaps=False, resume=True, exclude=["mask_*"]).run()
    summary = BatchRun(folder, out, analyzer, model_ids=MODELS, heatmaps=False, resume=True).run()  # as the dialog
    assert summary["complete"] and summary["excluded"] == 2 and _files(out) == ["a.png", "b.png"]


def test_the_command_line_passes_exclude_on_and_says_it_once(tmp_path, tiny_models, monkeypatch, capsys):
    monkeypatch.setenv("MIDA_USER_MODELS", str(tiny_models))
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))
    folder = _folder(tmp_path / "in", ["case1.png", "case1_mask.png"])
    assert main(["batch", str(folder), "--out", str(tmp_path / "out"), "--model", MODELS[0], "--no-heatmaps",
                 "--no-history", "--exclude", "*_mask.*"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out)["excluded"] == 1
    assert said.err.count("excluded: 1 file(s) matching --exclude '*_mask.*'") == 1


def test_results_jsonl_holds_numbers_and_nulls_and_agrees_with_the_csv(tmp_path, analyzer):
    folder = _folder(tmp_path / "in", ["a.png"])
    BatchRun(folder, tmp_path / "out", analyzer, model_ids=MODELS, heatmaps=False).run()
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    with open(tmp_path / "out" / "results.csv", newline="", encoding="utf-8") as fh:
        written = list(csv.DictReader(fh))
    classified, segmented = lines
    assert type(classified["frame"]) is int and classified["lesions"] is None and classified["error"] is None
    assert isinstance(classified["probability"], float) and isinstance(classified["p_lesion"], float)
    assert classified["probability"] == float(written[0]["probability"])
    assert classified["novelty"] is None or classified["novelty"] == float(written[0]["novelty"])
    assert type(segmented["lesions"]) is int and type(segmented["lesion_area_px"]) is int
    assert segmented["probability"] is None and segmented["p_clear"] is None
    assert not any(value == "" for row in lines for value in row.values())
    for row, cells in zip(lines, written):  # every cell the CSV's, typed
        for column, cell in cells.items():
            value = row[column]
            assert (value == float(cell)) if isinstance(value, float) else ("" if value is None else str(value)) == cell
