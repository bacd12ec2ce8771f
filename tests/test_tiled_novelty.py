"""A tiled classifier's input check: a picture read as its tissue tiles' features averaged, each training picture once
however many tiles its split names and at its data set's scale (core.training.novelty), applied by the tiled path on
either runtime beside the same probabilities as before."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.novelty import UNUSUAL
from core.models.registry import Registry
from core.training.novelty import main as fit_main
from tests.conftest import analyzer_on
from tests.test_bundle_runs import _stem_bundle
from tests.test_histology import fake_he

pytestmark = pytest.mark.slow
BUNDLE = "tiny-stem"
TILING = {"tile": 64, "stride": 64, "min_tissue": 0.4, "tissue": "stained", "microns_per_pixel": 0.5}


def _stripes() -> np.ndarray:
    stripes = np.zeros((128, 192), np.uint8)
    stripes[:, ::4] = 255
    return stripes


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The tiny stem bundle made a tiled colour classifier, with a reference fitted by the tool on H&E-like pictures
    of two labs whose split names each picture once per tile (three times), and a folder of stripes checked."""
    root = tmp_path_factory.mktemp("tiled-novelty")
    folder = _stem_bundle(root / "models")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(modality="SM", tiling=TILING, preprocessing={**manifest["preprocessing"], "color": "rgb"})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    entries = {"train": [], "val": []}
    for i in range(48):
        lab = "lab_b" if i % 3 == 0 else "lab_a"
        (root / lab).mkdir(exist_ok=True)
        Image.fromarray(fake_he(i, bool(i % 2), size=(160, 224))).save(root / lab / f"{i}.png")
        entries["train" if i < 30 else "val"] += [[f"{lab}/{i}.png", ["clear", "lesion"][i % 2], f"g{i}"]] * 3
    (folder / "split.json").write_text(json.dumps(entries))
    (root / "stripes").mkdir()
    Image.fromarray(_stripes()).save(root / "stripes" / "stripes.png")
    with pytest.MonkeyPatch.context() as patch:  # the split's paths are relative to the data folder
        patch.setattr("core.training.novelty.DATA_ROOT", root)
        patch.setattr("core.training.sources.DATA_ROOT", root)
        patch.setenv("MIDA_NOVELTY_CACHE", str(root / "cache"))
        assert fit_main([str(folder), "--check", f"stripes={root / 'stripes'}", "--leave-out", "lab_b"]) == 0
    return root


def test_each_picture_is_counted_once_and_ranked_per_lab(fitted):
    checks = json.loads((fitted / "models" / BUNDLE / "manifest.json").read_text())["novelty_checks"]
    assert checks["training"]["images"] == 30 and checks["validation"]["images"] == 18
    assert checks["validation lab_a"]["images"] == 12 and checks["validation lab_b, fitted without lab_b"]["images"] == 6
    assert checks["stripes"] == {"images": 1, "flagged": 1.0, "median_share_closer": 1.0}


@pytest.mark.parametrize("runtime", ["tensorflow", "onnx"])
def test_a_picture_unlike_the_training_pictures_is_flagged_and_still_read(fitted, tmp_path, runtime, monkeypatch):
    analyzer = analyzer_on(fitted / "models", BUNDLE, runtime, tmp_path / "home", monkeypatch)
    Image.fromarray(fake_he(100, True, size=(160, 224))).save(tmp_path / "he.png")
    Image.fromarray(_stripes()).save(tmp_path / "stripes.png")
    typical = analyzer.analyze(load_image(tmp_path / "he.png", modality="SM")).results[0]
    assert ("ONNX" in typical.device) == (runtime == "onnx")
    assert typical.tiles > 1 and typical.novelty is not None and typical.novelty < 0.99
    assert not any(w.startswith(UNUSUAL) for w in typical.warnings)
    odd = analyzer.analyze(load_image(tmp_path / "stripes.png", modality="SM")).results[0]
    assert odd.novelty == 1.0 and odd.label in ("clear", "lesion")  # the answer is still given
    (warning,) = [w for w in odd.warnings if w.startswith(UNUSUAL)]
    assert warning.startswith(f"{UNUSUAL} for {BUNDLE}: farther from the images its network learnt from than any")
    assert "another lab, stain or magnification" in warning


def test_the_tiles_probabilities_are_the_whole_networks(fitted, tmp_path):
    """The tiles run through the stem once, its outputs serving the rest and the check: the probability is still the
    mean of the whole network's over the tiles."""
    bundle = Registry([fitted / "models"]).get(BUNDLE)
    Image.fromarray(fake_he(101, False, size=(160, 224))).save(tmp_path / "he.png")
    record = load_image(tmp_path / "he.png", modality="SM")
    analyzer = Analyzer(Registry([fitted / "models"]), runtime="tensorflow")
    result = analyzer.analyze(record).results[0]
    read = analyzer.path(bundle).read(record.display(0), record)
    x = np.stack([read.plan.tile_input(i) for i in range(len(read.plan))])
    logits = bundle.load().predict(x, verbose=0)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert result.tiles == len(read.plan) > 1
    assert result.probabilities["lesion"] == pytest.approx(float(probs[:, 1].mean()), abs=1e-5)
    assert result.novelty is not None


def test_a_training_picture_is_read_at_its_data_sets_scale_of_its_files_pixels(fitted, tmp_path, monkeypatch):
    """The reference reads a picture as training did (its data set's micrometres per pixel, which its files do not
    carry), not at the scale the analysis would assume; the scale is of the file's pixels, as a user's is, where the
    picture is loaded smaller; and pictures the data set gives no scale are counted."""
    from types import SimpleNamespace

    from core.training import novelty
    from core.training.datasets import READERS, Sample

    files = [fitted / "lab_a" / "1.png", fitted / "lab_a" / "2.png"]
    monkeypatch.setitem(novelty.CONFIGS, BUNDLE, SimpleNamespace(reader="tiny", data_path=fitted))
    monkeypatch.setitem(READERS, "tiny", lambda root: [Sample(files[0], "lesion", "g1", extra={"um": [1.0, 1.0]}),
                                                       Sample(files[1], "clear", "g2")])
    scales = novelty._scales(BUNDLE)
    assert scales == {str(files[0]): (1.0, 1.0)}
    bundle = Registry([fitted / "models"]).get(BUNDLE)
    path = Analyzer(Registry([fitted / "models"]), runtime="tensorflow").path(bundle)
    found, kept = novelty.image_features(path, files, "scales", None, scales)
    records = [load_image(file) for file in files]
    assert kept == [0, 1]
    np.testing.assert_allclose(found[0], path.read(records[0].display(0), records[0], user_um=1.0).features[0],
                               rtol=1e-6)
    np.testing.assert_allclose(found[1], path.read(records[1].display(0), records[1]).features[0], rtol=1e-6)
    assert np.abs(found[0] - path.read(records[0].display(0), records[0]).features[0]).max() > 1e-3
    monkeypatch.setattr("core.training.novelty.DATA_ROOT", fitted)
    split = {"train": [["lab_a/1.png", "lesion", "g1"]] * 2, "val": [["lab_a/2.png", "clear", "g2"]]}
    assert novelty._unscaled(bundle, split, scales) == 1
    Image.fromarray(fake_he(0, True, size=(2000, 2000))).save(tmp_path / "big.png")
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "40")
    record = load_image(tmp_path / "big.png")
    assert record.downsample == 2
    np.testing.assert_allclose(novelty._read_features(path, tmp_path / "big.png", (0.1, 0.1)),
                               path.read(record.display(0), record, user_um=0.1).features[0], rtol=1e-6)
