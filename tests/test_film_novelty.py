"""A film detector's input check: a film read as its breast tiles' features averaged, ranked out of fold among the
training films' (core.training.novelty), applied by the film path on either runtime; the detector cut at its Grad-CAM
layer for it reads the same probabilities as the whole network."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.novelty import UNUSUAL
from core.models.registry import Registry
from core.training.novelty import FILE
from core.training.novelty import main as fit_main
from tests.conftest import analyzer_on

pytestmark = pytest.mark.slow
BUNDLE = "tiny-mg-detector"


def _film(grey: int, blob: bool) -> np.ndarray:
    """A 1024 x 448 film: a breast at ``grey`` along the left edge, air elsewhere, maybe a white blob inside."""
    img = np.zeros((1024, 448), np.uint8)
    cv2.ellipse(img, (0, 512), (380, 450), 0, -90, 90, grey, -1)
    if blob:
        cv2.circle(img, (200, 500), 30, 255, -1)
    return img


def _save(folder: Path, name: str, picture: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(folder / name)
    return folder / name


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The tiny film detector, cut at its Grad-CAM layer, with a reference fitted by the tool out of fold on a
    mini-MIAS-like folder of 40 films of 20 women (breasts at grey 115-150, half with a blob), and a folder of films
    of another kind (breasts at grey 250) checked."""
    from tests.tiny_models import make_film_bundle

    root = tmp_path_factory.mktemp("film-novelty")
    folder = make_film_bundle(root / "models", members=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(40):
        blob = bool(i % 2)
        _save(root / "mini_mias" / "images", f"mdb{i + 1:03d}.png", _film(int(rng.integers(115, 151)), blob))
        lines.append(f"mdb{i + 1:03d} G CIRC B 200 524 30" if blob else f"mdb{i + 1:03d} G NORM")
    (root / "mini_mias" / "annotations.txt").write_text("\n".join(lines) + "\n")
    for i in range(3):
        _save(root / "bright", f"{i}.png", _film(250, False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("core.training.novelty.DATA_ROOT", root)
        patch.setenv("MIDA_NOVELTY_CACHE", str(root / "cache"))
        assert fit_main([str(folder), "--check", f"bright={root / 'bright'}"]) == 0
        # read once: a refit takes every film's features from the cache
        patch.setattr("core.training.novelty._read_features", lambda *a: pytest.fail("read again"))
        assert fit_main([str(folder), "--check", f"bright={root / 'bright'}"]) == 0
    return root


@pytest.mark.parametrize("runtime", ["tensorflow", "onnx"])
def test_a_film_unlike_the_training_films_is_flagged_and_still_read(fitted, tmp_path, runtime, monkeypatch):
    analyzer = analyzer_on(fitted / "models", BUNDLE, runtime, tmp_path / "home", monkeypatch)
    typical = analyzer.analyze(load_image(_save(tmp_path, "typical.png", _film(130, True)), modality="MG")).results[0]
    assert ("ONNX" in typical.device) == (runtime == "onnx")
    assert typical.novelty is not None and typical.novelty < 0.99
    assert not any(w.startswith(UNUSUAL) for w in typical.warnings)
    odd = analyzer.analyze(load_image(_save(tmp_path, "bright.png", _film(250, False)), modality="MG")).results[0]
    assert odd.novelty == 1.0
    assert any(w.startswith(f"{UNUSUAL} for {BUNDLE}: farther from the images its network learnt from than any")
               for w in odd.warnings)
    assert odd.label in ("normal", "abnormal") and odd.findings is not None  # the reading is still given


def test_a_film_without_breast_tiles_is_not_checked(fitted, tmp_path):
    analyzer = Analyzer(Registry([fitted / "models"]), runtime="tensorflow")
    empty = analyzer.analyze(load_image(_save(tmp_path, "air.png", np.zeros((1024, 448), np.uint8)),
                                        modality="MG")).results[0]
    assert empty.tiles == 0 and empty.novelty is None
    assert any(w.startswith("No breast found") for w in empty.warnings)


def test_the_cut_detector_reads_what_the_whole_network_reads(fitted, tmp_path):
    """The film path on the stem and rest (members named) gives the probabilities, marks and map of the same
    network run whole."""
    from tests.tiny_models import make_film_bundle

    make_film_bundle(tmp_path / "whole")
    record = load_image(_save(tmp_path, "film.png", _film(135, True)), modality="MG")
    cut, whole = (Analyzer(Registry([root]), runtime="tensorflow").analyze(record).results[0]
                  for root in (fitted / "models", tmp_path / "whole"))
    assert cut.probabilities == pytest.approx(whole.probabilities, abs=1e-6)
    assert [(f.x, f.y) for f in cut.findings] == [(f.x, f.y) for f in whole.findings]
    np.testing.assert_allclose(cut.heatmap, whole.heatmap, atol=1e-6)
    np.testing.assert_allclose(cut.tile_gradcam, whole.tile_gradcam, atol=1e-5)
    assert whole.novelty is None


def test_the_manifest_records_the_reference_and_what_it_flagged(fitted):
    manifest = json.loads((fitted / "models" / BUNDLE / "manifest.json").read_text())
    checks = manifest["novelty_checks"]
    assert manifest["novelty"]["file"] == FILE and checks["features"] == 2
    assert checks["fitted on"] == "every mini-MIAS film (out of fold)"
    assert checks["validation (out of fold)"]["images"] == 40 and checks["bright"] == {
        "images": 3, "flagged": 1.0, "median_share_closer": 1.0}
    assert Registry([fitted / "models"]).get(BUNDLE).novelty_reference().stem.endswith(":last_conv")


def test_a_damaged_feature_cache_is_started_afresh(fitted, monkeypatch):
    """A cache file cut short (a run killed while it saved, before saves were atomic) or of another layout: the tool
    reads the pictures again rather than failing on every later run."""
    monkeypatch.setattr("core.training.novelty.DATA_ROOT", fitted)
    monkeypatch.setenv("MIDA_NOVELTY_CACHE", str(fitted / "cache"))
    (cached,) = (fitted / "cache").glob("*.npz")
    for damage in (cached.read_bytes()[:200], b"not a numpy file"):
        cached.write_bytes(damage)
        # the fixture's command again: the bundle's reference and checks stay as the other tests read them
        assert fit_main([str(fitted / "models" / BUNDLE), "--check", f"bright={fitted / 'bright'}"]) == 0
        assert len(np.load(cached)["keys"]) == 43  # read again and saved whole


def test_a_film_detector_refuses_leave_out_before_reading_or_writing(fitted, capsys):
    before = (fitted / "models" / BUNDLE / FILE).read_bytes()
    with pytest.raises(SystemExit):
        fit_main([str(fitted / "models" / BUNDLE), "--leave-out", "busi"])
    assert "a film detector's reference has one source" in capsys.readouterr().err
    assert (fitted / "models" / BUNDLE / FILE).read_bytes() == before
