"""The Grad-CAM layer chosen by where its heat falls on the lesions that the validation data marks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.registry import Bundle, Registry
from core.training.evaluate import classification_metrics
from tests.tiny_models import make_classifier_bundle, planted_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    """A tiny classifier of planted bright discs, and BUSI-style images + masks to measure it on."""
    root = tmp_path_factory.mktemp("cam")
    folder = make_classifier_bundle(root / "models")
    images, labels, centres = planted_images(24, seed=7)
    for i, (image, label, (x, y)) in enumerate(zip(images, labels, centres)):
        name = ("lesion", "clear")[1 - label]
        (root / "busi" / name).mkdir(parents=True, exist_ok=True)
        mask = np.zeros_like(image)
        if label:
            yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
            mask[(yy - y) ** 2 + (xx - x) ** 2 <= 7**2] = 255
        Image.fromarray(image).save(root / "busi" / name / f"{name} ({i}).png")
        Image.fromarray(mask).save(root / "busi" / name / f"{name} ({i})_mask.png")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["architecture"].update(weights_origin="trained in the test", head="Dense")  # one file, no backbone
    manifest["architecture"].pop("backbone_file", None)
    manifest["validation_metrics"] = classification_metrics(np.array([[0.9, 0.1], [0.1, 0.9]]), np.array([0, 1]),
                                                            manifest["classes"])
    manifest["training"] = {"data": "synthetic", "reader": "image_mask_pairs", "split": "given", "counts": {},
                            "augmentation": "none", "augmented_views": 0, "command": "none", "date": "2026-11-22"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return root, folder


def test_the_layer_whose_heat_falls_on_lesions_is_kept_and_shown(marked):
    from core.training import cam_layer
    from core.training.datasets import image_mask_pairs, plan_entry

    root, folder = marked
    lesions = cam_layer.validation_lesions({"val": [plan_entry(s) for s in image_mask_pairs(root / "busi")]})
    assert len(lesions) == 24 and all(s.mask_path for s in lesions)  # empty masks are skipped when measuring
    first_conv = next(layer.name for layer in Bundle.from_folder(folder).load().get_layer("tiny_backbone").layers
                      if layer.name.startswith("conv2d"))
    chosen = cam_layer.choose_cam_layer(folder, lesions, candidates=("last_conv", first_conv), notes="checked")

    manifest = json.loads((folder / "manifest.json").read_text())
    measured = manifest["gradcam_localisation"]
    assert set(measured) == {"last_conv", first_conv} and manifest["gradcam_layer"] == chosen
    assert chosen == max(measured, key=lambda layer: measured[layer]["gradcam"]["lesion_share"])
    plus = max(measured, key=lambda layer: measured[layer]["gradcam++"]["lesion_share"])
    assert manifest.get("gradcam_plus_layer", chosen) == plus
    best = measured[chosen]
    assert best["n"] == 12 and 0.03 < best["lesion_area"] < 0.05  # discs of radius 7 on 64 x 64 images
    # A heatmap blind to the disc would put about its area share (4 %) of the heat there.
    assert best["gradcam"]["lesion_share"] > 0.2 and best["gradcam"]["peak_on_lesion"] >= 0.8
    card = (folder / "model_card.md").read_text()
    assert "## Grad-CAM localisation (validation images with a lesion, n = 12)" in card
    assert card.count("(drawn)") == 2 and manifest["notes"] == "checked"
    # Measured again after the choice: each candidate is measured as itself, whatever the manifest chose before.
    assert cam_layer.choose_cam_layer(folder, lesions, candidates=("last_conv", first_conv)) == chosen
    assert json.loads((folder / "manifest.json").read_text())["gradcam_localisation"] == measured
    row = next(line for line in card.splitlines() if line.startswith(f"| {chosen} |"))
    assert row.split("|")[2].strip().endswith("(drawn)")  # Grad-CAM's heat-share column

    # The product then draws each method's heatmaps from its chosen layer.
    sample = next(s for s in lesions if s.label == "lesion")
    lesion = np.asarray(Image.open(sample.mask_path)) > 0
    analyzer = Analyzer(Registry([folder.parent]))
    for gradcam_plus, layer in ((False, chosen), (True, plus)):
        record = load_image(sample.path, modality="MR")
        result = analyzer.analyze(record, gradcam_plus=gradcam_plus).results[0]
        assert lesion.flat[int(np.argmax(result.heatmap))]
        assert layer in analyzer.path(analyzer.registry.get(folder.name)).network.gradcams


def test_the_choice_is_refused_without_marked_lesions_or_for_other_bundles(marked, tmp_path):
    from core.training.cam_layer import choose_cam_layer
    from tests.tiny_models import make_segmenter_bundle

    _, folder = marked
    with pytest.raises(ValueError, match="no validation image with a marked lesion"):
        choose_cam_layer(folder, [])
    with pytest.raises(ValueError, match="whole-image classifiers"):
        choose_cam_layer(make_segmenter_bundle(tmp_path), [])
