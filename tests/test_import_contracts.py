"""The import contracts in pyproject.toml hold on this tree, and each breaks on one violating import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT = Path(sys.executable).with_name("lint-imports")  # the dev extra's import-linter


def _lint(root: Path, *contracts: str) -> subprocess.CompletedProcess:
    args = [str(LINT), "--no-cache", "--no-logo", *(f"--contract={c}" for c in contracts)]
    return subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=120)


def test_contracts_hold_on_the_tree():
    run = _lint(REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


# (contract id, file, line appended to it): one import each contract forbids.
VIOLATIONS = [
    ("qt-free-core", "core/imaging/windowing.py", "import PySide6.QtCore"),
    ("qt-free-core", "core/history.py", "import gui.viewer"),
    ("qt-free-core", "core/viewer_state.py", "from PySide6.QtCore import QObject"),
    ("layers", "core/imaging/record.py", "from core.models import registry"),
    ("layers", "core/models/tiling.py", "import core.inference.results"),
    ("layers", "core/inference/results.py", "import core.export.report"),
    ("layers", "core/export/report.py", "import core.batch.discover"),
    ("layers", "core/batch/discover.py", "import gui.qimage"),
    ("training-private", "core/models/intervals.py", "import core.training.splits"),
    ("training-private", "gui/panels.py", "from core.training import configs"),
    ("tensorflow-where-models-run", "core/export/report.py", "import tensorflow"),
    ("tensorflow-where-models-run", "gui/panels.py", "import keras"),
    ("tensorflow-where-models-run", "core/models/tiling.py", "import tensorflow"),
    ("acyclic", "core/imaging/limits.py", "import core.imaging.loader"),
    ("acyclic", "core/inference/lesions.py", "import core.inference.analyzer"),
    ("acyclic", "core/training/cards.py", "import core.training.bundle_writer"),
]


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("contracts")
    for name in ("core", "gui"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root)
    return root


@pytest.mark.parametrize("contract, path, line", VIOLATIONS, ids=[f"{c}:{p}" for c, p, _ in VIOLATIONS])
def test_each_contract_breaks_on_a_violation(clean_copy, tmp_path, contract, path, line):
    root = tmp_path / "tree"
    shutil.copytree(clean_copy, root)
    kept = _lint(root, contract)
    assert kept.returncode == 0, kept.stdout[-2000:]
    with open(root / path, "a") as handle:
        handle.write(f"\n{line}\n")
    broken = _lint(root, contract)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout, broken.stdout[-2000:] + broken.stderr[-1000:]
