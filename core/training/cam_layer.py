"""Which layer a classifier's Grad-CAM explains, chosen where its data marks the lesions.

A heatmap is worth showing only if it points where a reader would look. Where a bundle's data has
lesion masks (ultrasound image + mask pairs) or annotation circles, each candidate layer's heatmaps
of the validation images with a lesion are made by the product's own Analyzer, for the annotated
class, and scored by the share of heat inside the lesion (an energy-based pointing game) and by how
often the hottest pixel lies on it, for Grad-CAM and Grad-CAM++. Each method keeps the layer where
its own share is larger (``gradcam_layer``; ``gradcam_plus_layer`` where Grad-CAM++ differs); the
manifest and card report every measurement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.inference.paths import Request
from core.models.registry import Bundle, Registry
from core.training.cards import CAM_METHODS, model_card
from core.training.datasets import Sample, plan_sample
from core.training.features import sample_mask

# Candidate layers per backbone: the last convolutional activation (an 8 x 8 grid at 256 px) and the
# deepest one at twice that resolution.
CANDIDATES = {"xception": ("block14_sepconv2_act", "block13_sepconv2_act"),
              "resnet50v2": ("post_relu", "conv4_block6_out")}


def validation_lesions(plan: dict) -> list[Sample]:
    """The split's validation samples whose data marks lesions (mask files or circles); [] where none do."""
    return [plan_sample(entry) for entry in plan["val"] if entry.get("mask") or entry.get("circles")]


def localisation(heatmap: np.ndarray, lesion: np.ndarray) -> tuple[float, bool]:
    """(share of the heatmap's mass inside ``lesion``, whether its hottest pixel lies on it)."""
    total = float(heatmap.sum())
    share = float(heatmap[lesion].sum()) / total if total > 0 else 0.0
    return share, bool(lesion.flat[int(np.argmax(heatmap))])


def measure(folder: Path, lesions: list[Sample], layer: str) -> dict:
    """Both methods' mean lesion share and peak-on-lesion rate at ``layer``, over the images with a lesion."""
    bundle = Bundle.from_folder(folder)
    bundle.manifest.update(gradcam_layer=layer, gradcam_plus_layer=layer)  # both methods here, whatever was chosen
    analyzer = Analyzer(Registry([]))
    scores: dict[str, list[tuple[float, bool]]] = {name: [] for name in CAM_METHODS}
    area = []
    for sample in tqdm(lesions, desc=f"Grad-CAM at {layer}", unit="img"):
        display = load_image(sample.path).display(0)
        lesion = sample_mask(sample, display.shape[:2]) > 0
        if not lesion.any():
            continue
        area.append(lesion.mean())
        for name, plus in CAM_METHODS.items():
            result = analyzer.path(bundle).run(display, Request(plus=plus, target_class=sample.label))
            scores[name].append(localisation(result.heatmap, lesion))
    measured = {name: {"lesion_share": float(np.mean([s for s, _ in rows])),
                       "peak_on_lesion": float(np.mean([p for _, p in rows]))} for name, rows in scores.items()}
    return {**measured, "n": len(area), "lesion_area": float(np.mean(area))}


def choose_cam_layer(folder: Path, lesions: list[Sample], candidates: Sequence[str] | None = None,
                     notes: str | None = None) -> str:
    """Measure each candidate (default: the backbone's; a head on a segmenter's encoder has its one layer), keep
    each method's best layer in the manifest, record the measurements and rewrite the card (``notes``: the config's
    current caveats). Returns Grad-CAM's layer."""
    manifest = json.loads((folder / "manifest.json").read_text())
    arch = manifest["architecture"]
    on_segmenter = arch.get("feature_bundle_task") == "segmentation"  # its one layer: measured, nothing to choose
    on_other = arch.get("feature_bundle") and not on_segmenter  # a Dense layer on another classifier's features
    if manifest["task"] != "classification" or manifest.get("tiling") or on_other:
        raise ValueError(f"{manifest['id']}: the Grad-CAM layer is chosen for fine-tuned whole-image classifiers")
    if not lesions:
        raise ValueError(f"{manifest['id']}: no validation image with a marked lesion to measure Grad-CAM on")
    candidates = (manifest["gradcam_layer"],) if on_segmenter else candidates or CANDIDATES[arch["backbone"]]
    measured = {layer: measure(folder, lesions, layer) for layer in candidates}
    best = {name: max(candidates, key=lambda layer: measured[layer][name]["lesion_share"]) for name in CAM_METHODS}
    chosen = manifest["gradcam_layer"] = best["gradcam"]
    manifest.pop("gradcam_plus_layer", None)
    if best["gradcam++"] != chosen:
        manifest["gradcam_plus_layer"] = best["gradcam++"]
    manifest["gradcam_localisation"] = measured
    if notes is not None:
        manifest["notes"] = notes
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "model_card.md").write_text(model_card(manifest))
    return chosen
