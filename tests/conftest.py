"""Shared fixtures: real DICOM test files from pydicom and deid-data, and the shared data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MIDA_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def pydicom_file():
    import pydicom

    base = Path(pydicom.__file__).parent / "data" / "test_files"

    def get(name: str) -> Path:
        path = base / name
        assert path.exists(), f"pydicom test file {name} missing"
        return path

    return get


@pytest.fixture(scope="session")
def deid_file():
    deid_data = pytest.importorskip("deid_data")
    base = Path(deid_data.__file__).parent / "data"
    return lambda rel: base / rel


@pytest.fixture(scope="session")
def shared():
    if not SHARED.exists():
        pytest.skip("../shared/data is not beside the repository")
    return SHARED
