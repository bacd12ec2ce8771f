"""A classifier's check of how unlike its training images a picture is (core.models.novelty): fitted by the training
tool on the product's own features, applied by the analysis path on either runtime, said in the result, the JSON,
results.csv and a series verdict, and refused where its file is damaged or was fitted on another network."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import ModelError
from core.imaging.loader import load_image
from core.inference.analyzer import Analyzer
from core.models.novelty import UNUSUAL, NoveltyReference, beyond_chance, novelty_warning
from core.models.registry import Registry
from core.training.novelty import fit
from core.training.novelty import main as fit_main
from tests.conftest import analyzer_on
from tests.test_bundle_runs import _new_trunk, _stem_bundle

BUNDLE = "tiny-stem"


def _gaussian_reference(rng) -> tuple[NoveltyReference, np.ndarray]:
    scales = np.linspace(0.2, 3.0, 6)  # unequal variances: a Euclidean distance would rank them wrongly
    centres = np.array([[0, 0, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0]], float)

    def draw(n):
        labels = rng.integers(0, 2, n)
        return centres[labels] + rng.normal(size=(n, 6)) * scales, labels

    train, labels = draw(3000)
    validation, _ = draw(2000)
    return fit(train, labels, validation, "layer", "ab" * 32), scales


def test_distances_rank_pictures_among_the_validation_images_and_flag_the_far_ones():
    rng = np.random.default_rng(0)
    reference, scales = _gaussian_reference(rng)
    typical = np.array([[3, 0, 0, 0, 0, 0]]) + rng.normal(size=(4000, 6)) * scales
    share = reference.share_closer(reference.distances(typical))
    assert 0.005 < (share > 0.99).mean() < 0.02  # about the 1 % the threshold promises on pictures like validation's
    assert 0.45 < np.median(share) < 0.55
    # Two steps along the smallest spread are far off; two steps along the largest are not.
    off = reference.share_closer(reference.distances(np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 6.0],
                                                               [0.2 * 8, 0, 0, 0, 0, 0]])))
    assert off[0] < 0.9 and off[1] < 0.99 and off[2] == 1.0


def test_a_reference_round_trips_and_a_damaged_file_is_refused(tmp_path):
    reference, _ = _gaussian_reference(np.random.default_rng(1))
    path = tmp_path / "novelty.npz"
    path.write_bytes(reference.to_bytes())
    again = NoveltyReference.from_file(path)
    probe = np.random.default_rng(2).normal(size=(5, 6))
    np.testing.assert_allclose(again.distances(probe), reference.distances(probe), rtol=1e-4)
    assert again.layer == "layer" and again.stem == "ab" * 32
    path.write_bytes(reference.to_bytes()[:100])
    with pytest.raises(ModelError, match="is not a novelty reference"):
        NoveltyReference.from_file(path)
    with pytest.raises(ModelError, match="cannot read features of shape"):
        reference.distances(np.zeros((1, 4)))


def test_with_fewer_pictures_than_features_the_reference_keeps_their_directions_and_the_same_distances(tmp_path):
    """A film reference (4,096 features of 258 films) kept as leading directions plus one variance for the rest: with
    every direction the pictures span, the distances of the full shrunk covariance, from a file a fraction of the
    size."""
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(3)
    scales = rng.uniform(0.2, 3.0, 300)
    train, labels = rng.normal(size=(60, 300)) * scales, np.arange(60) % 2
    train[labels == 1, 0] += 4
    validation = rng.normal(size=(50, 300)) * scales
    assert fit(train, labels, validation, "layer", "ab").whiten.shape == (300, 32)  # the leading directions
    reference = fit(train, labels, validation, "layer", "ab" * 32, directions=None)  # every one the pictures span
    assert reference.whiten.shape == (300, 60) and reference.residual > 0
    means = np.stack([train[labels == c].mean(axis=0) for c in (0, 1)])
    inverse = np.linalg.inv(LedoitWolf(assume_centered=True).fit(train - means[labels]).covariance_)
    probe = rng.normal(size=(6, 300)) * scales * 1.5
    full = np.min([np.einsum("nd,de,ne->n", probe - m, inverse, probe - m) for m in means], axis=0)
    np.testing.assert_allclose(reference.distances(probe), full, rtol=1e-8)
    path = tmp_path / "novelty.npz"
    path.write_bytes(reference.to_bytes())
    np.testing.assert_allclose(NoveltyReference.from_file(path).distances(probe), full, rtol=1e-4)
    assert path.stat().st_size < 300 * 300 * 4 / 2


def test_out_of_fold_distances_keep_a_groups_pictures_together():
    """A film reference ranks each film by a reference fitted without its woman's films: her other film, a near twin
    here, would otherwise make her look typical."""
    from sklearn.model_selection import StratifiedKFold

    from core.training.novelty import fit_out_of_fold

    rng = np.random.default_rng(4)
    women = rng.normal(size=(40, 60)) * np.linspace(0.5, 2, 60)
    features = np.repeat(women, 2, axis=0) + rng.normal(scale=0.01, size=(80, 60))
    labels, groups = np.arange(80) // 2 % 2, [f"w{i // 2}" for i in range(80)]
    grouped = fit_out_of_fold(features, labels, groups, "layer", "ab" * 32).reference
    apart = np.empty(80)  # the same folds by picture: twins split between fit and measure
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(features, labels):
        apart[test] = fit(features[train], labels[train], features[test], "layer", "ab").distances(features[test])
    assert np.median(grouped) > 1.5 * np.median(apart)  # about 2x: each film measured as new, not by its twin


def test_the_warning_says_how_far_and_never_rounds_up_to_every_image():
    assert novelty_warning("m", 1.0).startswith(f"{UNUSUAL} for m: farther from the images its network learnt from "
                                                "than any of the held-out pictures of its own sources")
    assert "than 99.9% of the held-out pictures of its own sources" in novelty_warning("m", 0.9996)
    assert "(another scanner, sequence, plane" in novelty_warning("m", 1.0, "MR")
    assert "(another lab, stain or magnification" in novelty_warning("m", 1.0, "SM")  # no MR words on a slide


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(70, 12, (64, 64)).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The tiny stem bundle with a reference fitted by the tool on noise pictures, and a folder of stripes to check."""
    root = tmp_path_factory.mktemp("novelty")
    folder = _stem_bundle(root / "models")
    entries = {"train": [], "val": []}
    for i in range(120):  # two sources (data folders): noise, and half as bright noise
        source = "dim" if i % 3 == 0 else "noise"
        (root / source).mkdir(exist_ok=True)
        Image.fromarray(_noise(i) // (2 if source == "dim" else 1)).save(root / source / f"{i}.png")
        entries["train" if i < 75 else "val"].append([f"{source}/{i}.png", ["clear", "lesion"][i % 2], f"g{i}"])
    (folder / "split.json").write_text(json.dumps(entries))
    odd = root / "odd"
    odd.mkdir()
    stripes = np.zeros((64, 64), np.uint8)
    stripes[:, ::4] = 255
    Image.fromarray(stripes).save(odd / "stripes.png")
    with pytest.MonkeyPatch.context() as patch:  # the split's paths are relative to the data folder
        patch.setattr("core.training.novelty.DATA_ROOT", root)
        patch.setattr("core.training.sources.DATA_ROOT", root)
        assert fit_main([str(folder), "--check", f"stripes={odd}", "--leave-out", "dim"]) == 0
    return root, folder, odd / "stripes.png"


@pytest.mark.parametrize("runtime", ["tensorflow", "onnx"])
def test_the_analysis_ranks_a_picture_and_warns_on_one_unlike_the_training_images(fitted, tmp_path, runtime,
                                                                                    monkeypatch):
    root, folder, stripes = fitted
    analyzer = analyzer_on(root / "models", BUNDLE, runtime, tmp_path / "home", monkeypatch)
    manifest = json.loads((folder / "manifest.json").read_text())
    checks = manifest["novelty_checks"]
    assert manifest["novelty"]["flag_above"] == 0.99 and checks["stripes"]["flagged"] == 1.0
    assert checks["validation"]["images"] == 45 and checks["validation dim"]["images"] == 15
    # A source the reference never saw: the dim pictures, ranked against a reference fitted on the bright ones alone.
    assert checks["validation dim, fitted without dim"]["flagged"] > checks["validation dim"]["flagged"]
    path = tmp_path / "typical.png"
    Image.fromarray(_noise(500)).save(path)
    typical = analyzer.analyze(load_image(path), model_ids=[BUNDLE]).results[0]
    assert typical.novelty is not None and typical.novelty < 0.99
    assert ("ONNX" in typical.device) == (runtime == "onnx")
    assert not any(w.startswith(UNUSUAL) for w in typical.warnings)
    odd = analyzer.analyze(load_image(stripes), model_ids=[BUNDLE]).results[0]
    assert odd.novelty == 1.0 and odd.to_dict()["novelty"] == 1.0
    assert any(w.startswith(f"{UNUSUAL} for {BUNDLE}: farther from the images its network learnt from than any")
               for w in odd.warnings)
    assert odd.label in ("clear", "lesion")  # the answer is still given, and said to be less reliable


def test_with_mirror_averaging_the_check_reads_the_unmirrored_picture_and_no_second_stem_pass(fitted, tmp_path):
    import shutil

    from core.models.preprocessing import ModelInputs

    root, folder, _ = fitted
    models = tmp_path / "models"
    shutil.copytree(folder, models / BUNDLE)
    manifest = json.loads((models / BUNDLE / "manifest.json").read_text())
    manifest["flip_average"] = True
    (models / BUNDLE / "manifest.json").write_text(json.dumps(manifest))
    picture = _noise(7)
    picture[:, :24] //= 2  # not symmetric: the mirror's features differ
    Image.fromarray(picture).save(tmp_path / "lopsided.png")
    record = load_image(tmp_path / "lopsided.png")
    analyzer = Analyzer(Registry([models]), runtime="tensorflow")
    analyzer.stem_rows.kept = 0  # as the benchmarks time whole passes: nothing cached between calls
    path = analyzer.path(analyzer.registry.get(BUNDLE))
    x, _, _ = ModelInputs(record.display(0), record.row_to_column()).made(path.spec)
    alone, mirrored = (float(path.novelty.distances(path.features(v[None]))[0]) for v in (x, x[:, ::-1]))
    # A reference spread so that the two distances rank apart (on the tiny network both lie beyond every one).
    path.novelty = dataclasses.replace(path.novelty, reference=np.linspace(0, 2 * max(alone, mirrored), 1001))
    alone, mirrored = (float(path.novelty.share_closer([d])[0]) for d in (alone, mirrored))
    assert abs(alone - mirrored) > 0.01
    passes = []
    run_stem = analyzer.stem_rows.run_stem
    analyzer.stem_rows.run_stem = lambda stages, rows: passes.append(len(rows)) or run_stem(stages, rows)
    for gradcam in (False, True):
        passes.clear()
        result = analyzer.analyze(record, model_ids=[BUNDLE], gradcam=gradcam).results[0]
        assert result.novelty == alone and passes == [2]  # the image and its mirror, once


def test_batch_writes_the_novelty_column(fitted, tmp_path):
    from core.batch.runner import BatchRun

    root, _, stripes = fitted
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(_noise(501)).save(inputs / "typical.png")
    for name in ("stripes.png", "stripes2.png", "stripes3.png"):
        (inputs / name).write_bytes(stripes.read_bytes())
    out = tmp_path / "out"
    BatchRun(inputs, out, analyzer=Analyzer(Registry([root / "models"])), model_ids=[BUNDLE], heatmaps=False).run()
    import csv

    rows = {r["file"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert float(rows["stripes.png"]["novelty"]) == 1.0 and UNUSUAL in rows["stripes.png"]["warnings"]
    assert float(rows["typical.png"]["novelty"]) < 0.99 and UNUSUAL not in rows["typical.png"]["warnings"]
    # Three of four flagged is far more than chance: the run says the model is out of its depth on this folder.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unusual_by_model"] == {BUNDLE: 3}
    assert any(w.startswith(f"3 of 4 pictures flagged unusual by {BUNDLE}'s input check") for w in summary["run_warnings"])


def test_an_input_check_that_cannot_be_used_leaves_the_model_answering_and_says_so(fitted, tmp_path):
    """A reference of another network (the trunk replaced since), a damaged one, a missing one: the model still answers,
    each result saying its input was not checked (a check that cannot run must not silence the model)."""
    import shutil

    root, folder, stripes = fitted
    models = tmp_path / "models"
    record = load_image(stripes)

    def analysed(damage) -> object:
        shutil.rmtree(models, ignore_errors=True)
        shutil.copytree(folder, models / BUNDLE)
        damage(models / BUNDLE)
        analysis = Analyzer(Registry([models]), runtime="tensorflow").analyze(record, model_ids=[BUNDLE])
        assert not analysis.failures and len(analysis.results) == 1
        return analysis.results[0]

    def flip_a_byte(bundle: Path) -> None:
        data = (bundle / "novelty.npz").read_bytes()
        (bundle / "novelty.npz").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))

    for damage, said in ((lambda b: _new_trunk(b, seed=1), "fitted on another network's features"),
                         (flip_a_byte, "novelty.npz does not match its manifest"),
                         (lambda b: (b / "novelty.npz").unlink(), "file novelty.npz is missing")):
        result = analysed(damage)
        assert result.novelty is None and result.label in ("clear", "lesion") and not result.unusual
        (warning,) = [w for w in result.warnings if w.startswith("Input not checked")]
        assert f"{BUNDLE}'s input check could not be used" in warning and said in warning


def test_a_bundle_on_the_same_stem_takes_the_reference_and_another_network_cannot(fitted, tmp_path):
    import shutil

    root, folder, stripes = fitted
    models = tmp_path / "models"
    shutil.copytree(folder, models / BUNDLE)
    manifest = json.loads((models / BUNDLE / "manifest.json").read_text())
    del manifest["novelty"], manifest["novelty_checks"]
    (models / BUNDLE / "manifest.json").write_text(json.dumps(manifest))
    (models / BUNDLE / "novelty.npz").unlink()
    assert fit_main([str(models / BUNDLE), "--same-as", str(folder)]) == 0
    copied = json.loads((models / BUNDLE / "manifest.json").read_text())
    assert copied["novelty_checks"] == json.loads((folder / "manifest.json").read_text())["novelty_checks"]
    result = Analyzer(Registry([models]), runtime="tensorflow").analyze(load_image(stripes), model_ids=[BUNDLE])
    assert result.results[0].novelty == 1.0
    _new_trunk(models / BUNDLE, seed=1)
    with pytest.raises(SystemExit):
        fit_main([str(models / BUNDLE), "--same-as", str(folder)])


def test_a_series_verdict_counts_the_unusual_slices_beyond_chance_and_under_its_call():
    from core.series.analysis import SliceOutcome, _slice_warnings, _unusual_call

    warning = novelty_warning("m", 1.0)

    def outcomes(n: int, unusual: set[int]) -> list:
        return [SliceOutcome("yes", {"no": 0.1, "yes": 0.9}, warnings=[warning] if i in unusual else [])
                for i in range(n)]

    (said,) = _slice_warnings(outcomes(6, {2, 4}))
    assert said == (f"{UNUSUAL} for m on 2 of 6 slices, more than chance gives: unlike the images its network learnt "
                    "from, its answers there are less reliable.")
    # One slice in 24 is what ordinary slices give one series in five (1 % each): not said for the series.
    assert _slice_warnings(outcomes(24, {5})) == [] and len(_slice_warnings(outcomes(24, {5, 9, 13}))) == 1
    # A folder or cine of thousands: the binomial terms in logarithms (C(n, k) as a float overflowed from ~1,030).
    assert not beyond_chance(0, 5000) and not beyond_chance(40, 5000) and beyond_chance(80, 5000)
    assert len(_slice_warnings(outcomes(1100, set(range(0, 1100, 40))))) == 1  # 28 of 1,100: more than 11 expected
    # A call on slices 3-6 of which 2 are unusual rests on them; one of 4 does not.
    (call,) = _unusual_call("m", "yes", outcomes(10, {3, 4}), 3, 6)
    assert call.startswith(f"{UNUSUAL}s under the call: 2 of the 4 slices 3-6 on which m calls 'yes'")
    assert _unusual_call("m", "yes", outcomes(10, {3}), 3, 6) == []


def test_the_card_gets_one_input_check_section_before_its_limits(fitted):
    from core.training.cards import NOVELTY_TITLE, novelty_section, with_novelty_section

    _, folder, _ = fitted
    manifest = json.loads((folder / "manifest.json").read_text())
    section = novelty_section(manifest)
    assert "| stripes | 1 | 1.000 | 1.000 |" in section and "| validation dim, fitted without dim | 15 |" in section
    card = "# card\n\n## Validation\ntext\n\n## Limits\nfew images\n"
    once = with_novelty_section(card, manifest)
    assert with_novelty_section(once, manifest) == once and once.count(NOVELTY_TITLE) == 1
    assert once.index("## Validation") < once.index(NOVELTY_TITLE) < once.index("## Limits")
    assert novelty_section({k: v for k, v in manifest.items() if k != "novelty_checks"}) == ""


def test_the_shipped_references_are_of_the_shipped_networks(tmp_path):
    """A reference left from an earlier network would silence the check on every picture: each shipped one reads the
    stem its bundle runs on now."""
    registry = Registry()
    checked = [b for b in registry.bundles.values() if b.info.novelty is not None]
    assert {b.id for b in checked} >= {"brain-mri-tumor-4class", "brain-mri-tumor-yesno", "brain-mri-tumor-seg",
                                       "breast-us-3class", "breast-us-lesion-seg", "breast-mg-abnormal",
                                       "breast-histology-2class"}
    analyzer = Analyzer(registry, runtime="tensorflow")
    for bundle in checked:
        path = analyzer.path(bundle)
        assert path.novelty is not None and path.unchecked is None, bundle.id
        side = bundle.info.preprocessing.size
        assert path.novelty.dimensions == path.features(np.zeros((1, side, side, 3), np.float32)).shape[1]
    # Classifiers and segmenters alike rank a picture and say so: stripes are unlike any scan.
    stripes = np.zeros((256, 256), np.uint8)
    stripes[:, ::4] = 255
    for modality, ids in (("MR", ["brain-mri-tumor-4class", "brain-mri-tumor-seg"]),
                          ("US", ["breast-us-3class", "breast-us-lesion-seg"]), ("SM", ["breast-histology-2class"])):
        Image.fromarray(stripes).save(tmp_path / f"stripes-{modality}.png")
        record = load_image(tmp_path / f"stripes-{modality}.png")
        results = analyzer.analyze(record, model_ids=ids, gradcam=False).results
        assert [r.model_id for r in results] == ids
        assert all(r.novelty == 1.0 and r.unusual and r.to_dict()["novelty"] == 1.0 for r in results), modality


def test_an_analyzer_keeps_numpys_blas_to_one_thread():
    """OpenBLAS threads spinning after the input check's product took the cores from the next network call (+33 % per
    slice on 2 cores: docs/bench/blas_threads.md)."""
    import subprocess
    import sys

    code = ("import numpy\nfrom threadpoolctl import threadpool_info\n"
            "from core.inference.analyzer import Analyzer\nfrom core.models.registry import Registry\n"
            "blas = lambda: [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
            "print(blas())\nAnalyzer(Registry([]))\nprint(blas())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OPENBLAS_NUM_THREADS": "2"})
    before, after = (json.loads(line) for line in out.stdout.split("\n")[:2])
    assert before and max(before) == 2 and after == [1] * len(after)


def test_the_model_listings_say_which_models_check_their_input(qtbot):
    from gui.panels import ModelInfoPanel

    summaries = {b.id: b.summary() for b in Registry().bundles.values()}
    assert summaries["brain-mri-tumor-4class"]["input_check"] == 0.99
    assert summaries["breast-histology-2class"]["input_check"] == 0.99  # tiles: their features averaged
    unchecked = {**summaries["breast-histology-2class"], "input_check": None}
    panel = ModelInfoPanel()
    qtbot.addWidget(panel)
    panel.show_models([summaries["brain-mri-tumor-4class"], unchecked])
    assert panel.toPlainText().count("Input check: a picture farther from its training images than 99%") == 1


def test_a_segmenters_lesion_on_unusual_slices_is_said_in_its_series_verdict():
    from core.series.analysis import SliceOutcome, verdict
    from core.series.index import Series, SliceRef

    series = Series("k", "1.2.3", "dicom", slices=[SliceRef(f"s{i}.dcm", position_mm=4.0 * i) for i in range(8)],
                    spacing_mm=4.0, spacing_source="positions")
    outcomes = [SliceOutcome("lesion" if 2 <= i <= 5 else "no lesion", lesions=int(2 <= i <= 5),
                             lesion_area_mm2=50.0 if 2 <= i <= 5 else 0.0,
                             warnings=[novelty_warning("seg", 1.0)] if i in (2, 3, 4) else [])
              for i in range(8)]
    called = verdict("seg", "1", "segmentation", ["lesion"], outcomes, series)
    assert called.label == "lesion" and (called.first_slice, called.last_slice) == (3, 6)
    assert any(w.startswith(f"{UNUSUAL}s under the call: 3 of the 4 slices 3-6 on which seg calls 'lesion'")
               for w in called.warnings)
