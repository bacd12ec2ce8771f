"""Shared fixtures: real DICOM test files from pydicom and deid-data, and the shared data sets."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# History and user models of the test run stay out of the user's home.
os.environ["MIDA_HOME"] = tempfile.mkdtemp(prefix="mida-home-")
# No ONNX export of the user's cache runs in tests: a bundle runs on TensorFlow unless a test exports it.
os.environ["MIDA_ONNX_CACHE"] = tempfile.mkdtemp(prefix="mida-onnx-")
# The input-check tool's feature cache of tiny test bundles stays out of the developer's ~/.cache/mida/novelty.
os.environ["MIDA_NOVELTY_CACHE"] = tempfile.mkdtemp(prefix="mida-novelty-")

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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A models folder with a trained tiny MR classifier and a tiny US segmenter."""
    from tests.tiny_models import make_classifier_bundle, make_segmenter_bundle

    root = tmp_path_factory.mktemp("models")
    make_classifier_bundle(root)
    make_segmenter_bundle(root)
    return root


@pytest.fixture(scope="session")
def planted_png(tmp_path_factory):
    """A 'lesion' image saved as PNG with the disc centre, for heatmap localisation checks."""
    from PIL import Image

    from tests.tiny_models import planted_images

    images, labels, centres = planted_images(21, seed=5)
    index = int(np.flatnonzero(labels == 1)[0])
    path = tmp_path_factory.mktemp("img") / "planted.png"
    Image.fromarray(images[index]).save(path)
    return path, centres[index]


@pytest.fixture(scope="session")
def mr_models(tmp_path_factory):
    """The tiny classifier as an MR yes/no bundle and the tiny segmenter relabelled MR (series analysis tests)."""
    import json

    from tests.tiny_models import make_classifier_bundle, make_segmenter_bundle

    root = tmp_path_factory.mktemp("series-models")
    folder = make_classifier_bundle(root, "tiny-mr-yesno", epochs=12)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["classes"] = ["no", "yes"]  # same order as the training labels 0/1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    make_segmenter_bundle(root, "tiny-mr-segmenter", modality="MR")
    return root


@pytest.fixture(scope="session")
def planted_series(tmp_path_factory):
    """Ten 64x64 MR slices as a DICOM series; slices 3-6 carry a bright disc (tests.series_data)."""
    from tests.series_data import write_planted_series

    return write_planted_series(tmp_path_factory.mktemp("planted"))


def analyzer_on(models: Path, bundle_id: str, runtime: str, home: Path, monkeypatch):
    """An Analyzer of the bundles in ``models`` on ``runtime``; for "onnx", ``bundle_id`` is exported first into the
    ONNX cache of the test's own ``home``."""
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    if runtime == "onnx":
        from core.app_paths import onnx_cache
        from core.inference.onnx_export import export_bundle

        monkeypatch.setenv("MIDA_HOME", str(home))
        export_bundle(Registry([models]).get(bundle_id), onnx_cache())
    return Analyzer(Registry([models]), runtime=runtime)


def link_shared_backbone(models: Path) -> Path:
    """The shipped ImageNet backbone in ``models/backbones/`` of a test's models folder: a hard link (a
    symbolic one leads outside the folder, which the registry refuses), a copy across file systems."""
    from core.training.configs import BACKBONES

    target = models / "backbones" / BACKBONES["xception"].name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(BACKBONES["xception"], target)
    except OSError:
        import shutil

        shutil.copyfile(BACKBONES["xception"], target)
    return target



def open_window(qtbot, models: Path, tmp_path: Path, size: tuple[int, int] = (900, 700)):
    """The main window offscreen on the bundles in ``models``, with its own settings (no automatic analysis)
    and history under ``tmp_path``."""
    from PySide6.QtCore import QSettings

    from core.history import History
    from core.inference.analyzer import Analyzer, Engine
    from core.models.registry import Registry
    from gui.main_window import MainWindow

    registry = Registry([models])
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("auto_analyse", False)
    win = MainWindow(engine=Engine(Analyzer(registry)), registry=registry, settings=settings,
                     history=History(tmp_path / "history.sqlite"))
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    return win


def bright_block_ultrasound(path_of):
    """MR_small's header as a 64 x 64 ultrasound picture with one bright block, its scan area stated (the export
    tests' identified source; ``path_of`` is the ``pydicom_file`` fixture)."""
    import pydicom

    ds = pydicom.dcmread(path_of("MR_small.dcm"))
    pixels = np.full((64, 64), 100, np.uint16)
    pixels[20:34, 12:30] = 2000
    ds.PixelData = pixels.tobytes()
    ds.PixelRepresentation = 0
    del ds.WindowCenter, ds.WindowWidth
    ds.Modality = "US"
    state_whole_scan(ds)
    return ds


@pytest.fixture
def study(tmp_path):
    """One patient, one study, two series: 6 axial ramp slices and 3 sagittal ones."""
    from pydicom.uid import generate_uid

    from tests.series_data import SAGITTAL, ramp_images, write_series

    study_uid = generate_uid()
    write_series(tmp_path / "study" / "ax", ramp_images(6), spacing=2.5, study_uid=study_uid, description="AX FLAIR",
                 series_number=1)
    write_series(tmp_path / "study" / "sag", ramp_images(3), orientation=SAGITTAL, study_uid=study_uid,
                 description="SAG T1", series_number=2)
    return tmp_path / "study"


def run_cancelled(run, analyzer, when) -> None:
    """Runs the batch ``run`` (over ``analyzer``), cancelling it (as the dialog's Cancel or Ctrl+C) from the analysis
    of the first record for which ``when(record)`` is true; the run must say it was cancelled."""
    original = analyzer.analyze

    def watching(record, **options):
        if when(record):
            run.cancel.set()
        return original(record, **options)

    analyzer.analyze = watching
    try:
        assert run.run()["cancelled"]
    finally:
        analyzer.analyze = original


def state_whole_scan(ds) -> None:
    """Give a synthetic ultrasound data set the region a scanner states its scan in (the whole picture): an
    anonymised export blacks out what lies outside it, and refuses a capture whose scan area cannot be found."""
    import pydicom

    region = pydicom.Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = int(ds.Columns) - 1, int(ds.Rows) - 1
    ds.SequenceOfUltrasoundRegions = [region]


def microscopy_bundle(tiny_models: Path, folder: Path, bundle_id: str, **tiling) -> Path:
    """The tiny classifier as a microscopy (SM) bundle tiling at a physical scale (``tiling``: tile, stride,
    min_tissue, microns_per_pixel), written to ``folder / bundle_id``; the models folder it is in."""
    import json
    import shutil

    target = folder / bundle_id
    shutil.copytree(tiny_models / "tiny-mr-classifier", target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.update(id=bundle_id, modality="SM", tiling=tiling)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def cli(tiny_models, tmp_path, monkeypatch, capsys):
    """main.py on the tiny bundles with a history of the test's own; returns (exit code, printed JSON)."""
    from core.cli import main

    monkeypatch.setenv("MIDA_USER_MODELS", str(tiny_models))
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))

    def run(*argv: str) -> tuple[int, dict]:
        try:
            code = main(list(argv))
        except KeyboardInterrupt:  # never let it reach pytest, which would stop the whole run
            pytest.fail("KeyboardInterrupt escaped the command")
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip().startswith("{") else {}
    return run
