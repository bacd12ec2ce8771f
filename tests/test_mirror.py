"""Mirror averaging of classifiers: the Analyzer's mean logits, and the validation choice that turns it on.

Two hand-set linear classifiers make the right choice known in advance: one reads overall brightness
(its label) plus a left-right difference (noise, which the mirror cancels), the other reads only the
left-right difference (its label, which the mirror destroys).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.preprocessing import PreprocessSpec, prepare_display, preprocess
from core.models.registry import Registry
from core.training.evaluate import classification_metrics
from tests.tiny_models import _write_bundle

pytestmark = pytest.mark.slow
SIZE = 32
SPEC = PreprocessSpec(size=SIZE, color="grey3", crop="none", scale="unit")


def _linear_bundle(folder, brightness: float, left_minus_right: float):
    """Logits [0, z] with z = brightness * (mean - 0.5) + left_minus_right * (left mean - right mean)."""
    import keras

    image = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(2, name="logits")
    model = keras.Model(image, dense(keras.layers.Flatten()(image)))
    side = np.where(np.arange(SIZE) < SIZE // 2, 1.0, -1.0)[None, :, None] * np.ones((SIZE, 1, 3))
    w = brightness / (SIZE * SIZE * 3) + left_minus_right * side / (SIZE * SIZE * 3 / 2)
    kernel = np.zeros((SIZE * SIZE * 3, 2), np.float32)
    kernel[:, 1] = w.ravel()
    dense.set_weights([kernel, np.array([0.0, -brightness * 0.5], np.float32)])
    classes = ["dark", "bright"]
    placeholder = classification_metrics(np.array([[0.4, 0.6], [0.6, 0.4]]), np.array([0, 1]), classes)  # accuracy 0
    training = {"data": "synthetic", "reader": "class_folders", "split": "given", "counts": {}, "augmentation": "none",
                "augmented_views": 0, "command": "none", "date": "2026-11-21"}
    folder = _write_bundle(folder, model, SPEC, "MR", "classification", title="linear", classes=classes,
                           decision_threshold=None, calibration={"temperature": 1.0}, gradcam_layer=None,
                           validation_metrics=placeholder, training=training)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["architecture"].update(weights_origin="set by hand", head="Dense")  # whole model in one file
    for key in ("backbone_file", "backbone_sha256"):
        manifest["architecture"].pop(key, None)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def images(tmp_path):
    """Images with a brightness level and a random left-right brightness step: validation entries
    labelled by level, and the same images labelled by the step's sign."""
    rng = np.random.default_rng(0)
    entries, by_step = [], []
    for i in range(40):
        level = 0.5 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.25)
        step = rng.choice([-1, 1]) * rng.uniform(0.02, 0.3)  # a step that survives 8-bit quantisation
        image = np.full((SIZE, SIZE), level)
        image[:, : SIZE // 2] += step / 2
        image[:, SIZE // 2 :] -= step / 2
        name = f"img{i}.png"
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(tmp_path / name)
        entries.append([name, "bright" if level > 0.5 else "dark", f"g{i}"])
        by_step.append([name, "bright" if step > 0 else "dark", f"g{i}"])
    return tmp_path, entries, by_step


def _with_split(folder, entries):
    (folder / "split.json").write_text(json.dumps({"train": [], "val": entries}))
    return folder


def test_mirror_averaging_is_kept_only_where_validation_says_so(images, tmp_path, monkeypatch):
    from core.training import mirror

    root, entries, by_step = images
    monkeypatch.setattr(mirror, "DATA_ROOT", root)
    noisy = _with_split(_linear_bundle(tmp_path / "models" / "noisy", brightness=40.0, left_minus_right=40.0), entries)
    assert mirror.choose_mirror_average(noisy, notes="checked")
    manifest = json.loads((noisy / "manifest.json").read_text())
    alone, mean = manifest["mirror_selection"]["image"], manifest["mirror_selection"]["mean_with_mirror"]
    assert manifest["flip_average"] and mean["log_loss"] < alone["log_loss"] and mean["accuracy"] == 1.0
    assert manifest["validation_metrics"]["accuracy"] == 1.0 and manifest["notes"] == "checked"
    assert manifest["calibration"]["temperature"] == mean["temperature"]
    assert "image and its mirror image are averaged" in (noisy / "model_card.md").read_text()

    sided = _with_split(_linear_bundle(tmp_path / "models" / "sided", brightness=0.0, left_minus_right=40.0), by_step)
    assert not mirror.choose_mirror_average(sided)
    manifest = json.loads((sided / "manifest.json").read_text())
    assert manifest["mirror_selection"]["image"]["accuracy"] == 1.0
    assert manifest["flip_average"] is False and manifest["validation_metrics"]["accuracy"] == 0.0  # untouched
    assert "measured and not kept" in (sided / "model_card.md").read_text()


def test_analyzer_averages_the_logits_of_image_and_mirror(images, tmp_path):
    root, entries, _ = images
    folder = _linear_bundle(tmp_path / "models" / "noisy", brightness=40.0, left_minus_right=40.0)
    analyzer = Analyzer(Registry([tmp_path / "models"]))
    bundle = analyzer.registry.get("noisy")
    record = load_image(root / entries[0][0], modality="MR")
    x = preprocess(prepare_display(record.display(0), SPEC), SPEC)[None]
    model = bundle.load()
    plain, mirrored = (np.asarray(model(v))[0] for v in (x, x[:, :, ::-1]))
    assert abs(plain[1] - mirrored[1]) > 0.5  # the mirror changes this model's answer
    bundle.manifest.update(flip_average=True, calibration={"temperature": 2.0})
    result = analyzer.analyze(record, gradcam=False).results[0]
    z = (plain + mirrored) / 2 / 2.0
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose([result.probabilities["dark"], result.probabilities["bright"]], expected, atol=1e-5)
    assert folder.exists()


def test_mirror_averaged_gradcam_explains_the_averaged_label(tiny_models, planted_png):
    analyzer = Analyzer(Registry([tiny_models]))
    bundle = analyzer.registry.get("tiny-mr-classifier")
    path, (cx, cy) = planted_png
    bundle.manifest["flip_average"] = True
    try:
        result = analyzer.analyze(load_image(path, modality="MR")).results[0]
        chosen = analyzer.analyze(load_image(path, modality="MR"), target_class="clear").results[0]
    finally:
        bundle.manifest.pop("flip_average")
    assert result.label == result.heatmap_class == "lesion" and chosen.heatmap_class == "clear"
    py, px = np.unravel_index(np.argmax(result.heatmap), result.heatmap.shape)
    assert np.hypot(px - cx, py - cy) <= 8  # the unmirrored image's lesion, not its mirror position
