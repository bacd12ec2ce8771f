"""Bundle manifests are validated and confined to their bundle folder; bundle ids are unique (no TensorFlow)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from core.errors import ModelError
from core.models.registry import Registry

SHA = hashlib.sha256(b"weights").hexdigest()


def _bundle(root: Path, folder: str, bundle_id: str | None = None, weights=None, **extra) -> Path:
    path = root / folder
    path.mkdir(parents=True)
    (path / "model.keras").write_bytes(b"weights")
    manifest = {"id": bundle_id or folder, "version": "1", "modality": "MR", "task": "classification",
                "classes": ["a", "b"], "preprocessing": {}, "architecture": {},
                "weights": {"file": "model.keras", "sha256": SHA} if weights is None else weights, **extra}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_weights_outside_the_bundle_or_malformed_are_refused(tmp_path):
    root = tmp_path / "models"
    _bundle(root, "good")
    _bundle(root, "absolute", weights={"file": "/etc/passwd", "sha256": SHA})
    _bundle(root, "dotdot", weights={"file": "../good/model.keras", "sha256": SHA})
    _bundle(root, "string", weights="model.keras")
    _bundle(root, "badsha", weights={"file": "model.keras", "sha256": "abc"})
    _bundle(root, "trunk_out", architecture={"trunk_file": "../../x.keras", "trunk_sha256": SHA})
    linked = _bundle(root, "linked", weights={"file": "link.keras", "sha256": SHA})
    os.symlink(root / "good" / "model.keras", linked / "link.keras")
    zero = _bundle(root, "zero", weights={"file": "zero.keras", "sha256": SHA})
    os.symlink("/dev/zero", zero / "zero.keras")
    registry = Registry([root])
    assert sorted(registry.bundles) == ["good"]
    text = "\n".join(registry.problems)
    for name in ("absolute", "dotdot", "string", "badsha", "trunk_out", "linked", "zero"):
        assert any(p.startswith(name + ":") for p in registry.problems), (name, text)
    assert "outside the bundle" in text and "absolute path" in text and "sha256" in text
    assert registry.get("good")._verified("model.keras", SHA).name == "model.keras"


def test_special_files_inside_the_bundle_are_not_read(tmp_path):
    root = tmp_path / "models"
    folder = _bundle(root, "fifo", weights={"file": "pipe.keras", "sha256": SHA})
    os.mkfifo(folder / "pipe.keras")
    bundle = Registry([root]).get("fifo")
    with pytest.raises(ModelError, match="not a regular file"):
        bundle._verified("pipe.keras", SHA)  # would block forever if it were opened
    with pytest.raises(ModelError, match="outside the bundle"):
        bundle._verified("../../etc/passwd", SHA)


def test_shared_backbones_folder_is_allowed(tmp_path):
    root = tmp_path / "models"
    (root / "backbones").mkdir(parents=True)
    (root / "backbones" / "b.keras").write_bytes(b"weights")
    _bundle(root, "histo", architecture={"backbone_file": "../backbones/b.keras", "backbone_sha256": SHA})
    registry = Registry([root])
    assert "histo" in registry.bundles, registry.problems
    assert registry.get("histo")._verified("../backbones/b.keras", SHA).name == "b.keras"


def test_duplicate_ids_do_not_replace_the_first_bundle(tmp_path):
    builtin, user = tmp_path / "builtin", tmp_path / "user"
    _bundle(builtin, "classifier")
    _bundle(user, "impostor", bundle_id="classifier")
    registry = Registry([builtin, user])
    assert registry.get("classifier").folder == builtin / "classifier"
    assert any("already used" in p and "impostor" in p for p in registry.problems), registry.problems
