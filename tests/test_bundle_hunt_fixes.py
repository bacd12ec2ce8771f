"""User bundles a hunt found hostile: each test failed (hung, crashed every command or answered wrong) before its fix.

A bundle naming itself (or a loop of bundles) as its parent made every analysis of its modality wait for ever; a
manifest that is a pipe, a link to /dev/zero or JSON nested 200,000 deep hung or crashed the whole registry; a
network that does not fit its manifest raised out of the analysis and took the other models' results with it; a
calibration temperature of 1e-320 answered 'clear' with no probability, exit 0.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.registry import MAX_MANIFEST_BYTES, Registry

GOOD = "tiny-mr-classifier"


def _copy(tiny_models: Path, root: Path, bundle_id: str, **changes) -> Path:
    """The tiny classifier copied to ``root/bundle_id`` under that id, its manifest changed by ``changes``
    (a dotted key for a nested one)."""
    folder = root / bundle_id
    shutil.copytree(tiny_models / GOOD, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["id"] = bundle_id
    for key, value in changes.items():
        *parents, last = key.split(".")
        target = manifest
        for name in parents:
            target = target.setdefault(name, {})
        target[last] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_bundle_that_builds_on_itself_is_skipped_not_waited_on(tiny_models, tmp_path):
    sha = json.loads((tiny_models / GOOD / "manifest.json").read_text())["weights"]["sha256"]

    def on(parent: str, key: str = "feature_bundle") -> dict:
        layer = {"architecture.feature_layer": "pool"} if key == "feature_bundle" else {}
        return {f"architecture.{key}": parent, f"architecture.{key}_sha256": sha, **layer}

    _copy(tiny_models, tmp_path, "self", **on("self"))
    _copy(tiny_models, tmp_path, "ring-a", **on("ring-b"))
    _copy(tiny_models, tmp_path, "ring-b", **on("ring-a", "encoder_bundle"))
    _copy(tiny_models, tmp_path, "on-ring", **on("ring-a"))  # not in the loop itself
    registry = Registry([tiny_models, tmp_path])
    assert set(registry.bundles) == {GOOD, "tiny-us-segmenter", "on-ring"}
    for name in ("self", "ring-a", "ring-b"):
        assert any(p.startswith(f"{name}: model '{name}' builds on itself") for p in registry.problems), registry.problems


@pytest.mark.parametrize("kind", ["fifo", "zero", "deep", "huge"])
def test_a_hostile_manifest_skips_its_bundle_and_keeps_the_others(tiny_models, tmp_path, kind):
    folder = tmp_path / "bad"
    folder.mkdir()
    manifest = folder / "manifest.json"
    if kind == "fifo":
        os.mkfifo(manifest)  # reading it would wait for a writer for ever
    elif kind == "zero":
        manifest.symlink_to("/dev/zero")  # read until memory runs out
    elif kind == "deep":
        manifest.write_text("[" * 200_000 + "]" * 200_000)  # RecursionError in json
    else:
        manifest.write_text(" " * (MAX_MANIFEST_BYTES + 1) + "{}")
    registry = Registry([tiny_models, tmp_path])
    assert GOOD in registry.bundles
    (problem,) = registry.problems
    assert problem.startswith("bad: manifest.json") and any(
        words in problem for words in ("not a regular file", "nested too deeply", "larger than"))


def test_a_network_that_does_not_fit_its_manifest_fails_alone(tiny_models, tmp_path, planted_png):
    _copy(tiny_models, tmp_path, "no-layer", gradcam_layer="no_such_layer")
    registry = Registry([tiny_models, tmp_path])
    analysis = Analyzer(registry).analyze(load_image(planted_png[0]), model_ids=[GOOD, "no-layer"], gradcam=True)
    assert [r.model_id for r in analysis.results] == [GOOD]
    (failure,) = analysis.failures
    assert failure.model_id == "no-layer" and "could not run: ValueError" in failure.error
    assert "no_such_layer" in failure.error


@pytest.mark.parametrize("key, value, says", [
    ("calibration.temperature", 1e-320, "at least 0.01"),
    ("calibration.temperature", float("inf"), "at least 0.01"),
    ("input_size", [10_000_000, 64, 3], "up to 8192"),
    ("preprocessing.size", 10_000_000, "at most 8192"),
])
def test_numbers_no_network_can_use_are_refused_with_the_reason(tiny_models, tmp_path, key, value, says):
    _copy(tiny_models, tmp_path, "odd", **{key: value})
    registry = Registry([tiny_models, tmp_path])
    assert "odd" not in registry.bundles
    with pytest.raises(Exception, match=says):
        registry.get("odd")
