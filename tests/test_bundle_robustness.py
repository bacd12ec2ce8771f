"""Bundles a user installs beside the shipped ones, without TensorFlow: a malformed one never hides the others from
``main.py models``, its id is a plain name, it never changes a shipped bundle's network, a file it cannot read is a
ModelError, a folder is read once and an entry that leads nowhere is said; ``models export`` checks its folder before
loading any model and goes on after one bundle's failure (each case found by driving main.py; each test failed
before its fix)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from core.cli import main
from core.errors import ModelError
from core.models.exports import fingerprint
from core.models.manifest import BundleManifest
from core.models.registry import BUILTIN_MODELS, Registry

SHA = hashlib.sha256(b"weights").hexdigest()


def _bundle(root: Path, folder: str, **fields) -> Path:
    """A bundle folder with fake weights (the registry reads manifests and hashes only when a model loads)."""
    path = root / folder
    path.mkdir(parents=True)
    (path / "model.keras").write_bytes(b"weights")
    manifest = {"id": folder, "version": "1", "modality": "MR", "task": "classification", "classes": ["a", "b"],
                "preprocessing": {}, "architecture": {}, "weights": {"file": "model.keras", "sha256": SHA}, **fields}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    folder.mkdir()
    monkeypatch.setenv("MIDA_USER_MODELS", str(folder))
    return folder


@pytest.mark.parametrize("metrics", [None, "n/a", {"accuracy": "0.9"}, {"accuracy": 0.9, "n": "100"},
                                     {"accuracy": 0.9, "n": 0.5}, {"dice": 0.8, "dice_ci95": "0.7-0.9"}],
                         ids=repr)
def test_malformed_validation_metrics_never_hide_the_bundles(user_models, capsys, metrics):
    _bundle(user_models, "user-metrics", validation_metrics=metrics)
    _bundle(user_models, "user-no-backbone", architecture={"backbone": None})
    for flags in ([], ["--json"], ["--markdown"]):
        assert main(["models", *flags]) == 0, flags
        listed = capsys.readouterr().out
        for bundle_id in ("user-metrics", "user-no-backbone", "brain-mri-tumor-4class"):
            assert bundle_id in listed, (flags, bundle_id)
    rows = {b.id: b.summary() for b in Registry([user_models]).bundles.values()}
    assert rows["user-no-backbone"]["architecture"] == ""
    assert all(isinstance(v, (int, float)) for v in rows["user-metrics"]["metrics"].values())


@pytest.mark.parametrize("bundle_id", ["..", ".", "team/histology", "/tmp/escaped", "stems", "Brain-MRI", "a b", "",
                                       "-x", 5])
def test_a_bundle_id_must_be_a_plain_name(tmp_path, bundle_id):
    manifest = {"id": bundle_id, "version": "1", "modality": "MR", "task": "classification", "classes": ["a", "b"],
                "weights": {"file": "model.keras", "sha256": SHA}, "preprocessing": {}}
    with pytest.raises(ModelError, match=r"^x/manifest.json: 'id' must be a plain name"):
        BundleManifest.from_dict(manifest, "models/x")
    _bundle(tmp_path, "odd", id=bundle_id)
    registry = Registry([tmp_path])
    assert registry.bundles == {} and registry.problems[0].startswith("odd: odd/manifest.json: 'id' must be")


def test_the_shipped_bundle_ids_are_plain_names():
    registry = Registry([BUILTIN_MODELS])
    assert registry.problems == [] and len(registry.bundles) == len(list(BUILTIN_MODELS.glob("*/manifest.json")))


def _encoder(root: Path) -> None:
    """A classifier whose stem a segmenter's encoder may share."""
    _bundle(root, "encoder", architecture={"trunk_file": "model.keras", "trunk_sha256": SHA}, gradcam_layer="block13")


def _segmenter(root: Path) -> None:
    """A segmenter that names the classifier ``encoder`` (at its version) as its encoder."""
    _bundle(root, "user-seg", task="segmentation", classes=["lesion"],
            architecture={"encoder_bundle": "encoder", "encoder_bundle_sha256": SHA,
                          "encoder_layers": ["block2", "block3"]})


def test_a_user_segmenter_never_changes_a_shipped_bundle(tmp_path):
    shipped, user = tmp_path / "shipped", tmp_path / "user"
    _encoder(shipped)
    _segmenter(user)
    alone = Registry([shipped]).get("encoder")
    both = Registry([shipped, user])
    assert "user-seg" in both.bundles
    assert both.get("encoder").stem_taps == () and fingerprint(both.get("encoder")) == fingerprint(alone)
    _segmenter(shipped)  # beside its encoder: the encoder's stem hands out its skip maps
    assert Registry([shipped]).get("encoder").stem_taps == ("block2", "block3")


def test_an_unreadable_weights_file_is_a_model_error(tmp_path, monkeypatch):
    _bundle(tmp_path, "locked")
    bundle = Registry([tmp_path]).get("locked")

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("core.models.registry.sha256_file", refused)
    with pytest.raises(ModelError, match=r"^model 'locked': model.keras cannot be read \(Permission denied\)$"):
        bundle._verified("model.keras", SHA)


def test_a_folder_is_read_once_and_an_entry_that_leads_nowhere_is_said(tmp_path):
    root = tmp_path / "models"
    _bundle(root, "good")
    os.symlink(root / "loop", root / "loop")  # a link to itself
    os.symlink(root / "gone", root / "dangling")
    os.symlink(root, tmp_path / "same")
    registry = Registry([root, tmp_path / "same"])
    assert list(registry.bundles) == ["good"] and registry.folders == [root]
    assert [p.split(":")[0] for p in registry.problems] == ["dangling", "loop"], registry.problems
    looped = _bundle(root, "looped-weights", weights={"file": "w.keras", "sha256": SHA})
    os.symlink(looped / "w.keras", looped / "w.keras")
    assert any(p.startswith("looped-weights: ") for p in Registry([root]).problems)


@pytest.fixture
def export_calls(user_models, monkeypatch):
    """``models export`` on two tiny fake bundles, the exporter replaced: the ids it was called with."""
    _bundle(user_models, "first")
    _bundle(user_models, "second")
    calls = []

    def export(bundle, root):
        calls.append(bundle.id)
        if bundle.id == "first":
            raise OSError(28, "No space left on device")
        return {"check": {}}

    monkeypatch.setattr("core.inference.onnx_export.export_bundle", export)
    return calls


def test_models_export_makes_its_folder_before_loading_any_model(export_calls, tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    assert main(["models", "export", "--out", str(tmp_path / "afile" / "out"), "--model", "second"]) == 1
    said = capsys.readouterr()
    assert export_calls == [] and said.out == ""
    assert said.err == f"cannot export into {tmp_path / 'afile' / 'out'}: Not a directory\n"


def test_models_export_goes_on_after_one_bundles_failure(export_calls, tmp_path, capsys):
    code = main(["models", "export", "--out", str(tmp_path / "onnx"), "--model", "first", "--model", "second"])
    said = capsys.readouterr()
    assert code == 1 and export_calls == ["first", "second"]
    assert said.err == ("first: not exported (OSError: [Errno 28] No space left on device); it runs on TensorFlow\n")
    assert said.out.startswith("second: exported to ")


@pytest.mark.parametrize("training", [None, "n/a", [], {"data": "x", "counts": ["train", 3]}, {"counts": None}])
def test_the_models_panels_training_line_takes_any_manifest(training):
    from gui.main_window import training_text

    assert isinstance(training_text(training), str)
