"""Validation numbers per data source: a model fitted on several sources is judged on each one apart.

A pooled accuracy hides a model that learns the source instead of the finding (the Kaggle brain set's
'notumor' slices come from other scanners than its tumours). So the written bundle runs, as in the
product (float16 weights, its own preprocessing, its mirror averaging where chosen), on the validation
images of each source, and the card gets one row per source: accuracy with its 95 % interval and, where
the classes include a finding-free class, finding-vs-none ROC AUC of 1 - P(none) and how many
finding-free images are called finding-free.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from core.inference.results import NONE_CLASSES
from core.models.intervals import accuracy_interval
from core.models.registry import Bundle
from core.training.cards import model_card
from core.training.configs import DATA_ROOT
from core.training.evaluate import expected_calibration_error, softmax
from core.training.mirror import predict_with_mirror
from core.training.sources import subsets


def bundle_probabilities(folder: Path, paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    """(calibrated probabilities, classes) of the written bundle on ``paths``, as the product computes them."""
    bundle = Bundle.from_folder(folder)
    mirror = bool(bundle.manifest.get("flip_average"))
    plain, mirrored = predict_with_mirror(bundle.load(), paths, bundle.spec, mirror=mirror,
                                          desc=f"{bundle.id} by source")
    logits = (plain + mirrored) / 2 if mirror else plain
    return softmax(logits / bundle.temperature), bundle.classes


def none_class(classes: list[str]) -> int | None:
    """Index of the classifier's finding-free class, where it has one."""
    return next((classes.index(c) for c in NONE_CLASSES if c in classes), None)


def finding_vs_none_auc(probs: np.ndarray, y: np.ndarray, none: int) -> float | None:
    """ROC AUC of 1 - P(finding-free) for 'any finding'; None where one side is missing."""
    return _auc(y != none, 1.0 - probs[:, none])


def malignant_vs_benign_auc(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> float | None:
    """ROC AUC of P(malignant) among the lesions (benign or malignant), the call that matters; None where one
    side is missing."""
    benign, malignant = classes.index("benign"), classes.index("malignant")
    lesion = np.isin(y, [benign, malignant])
    return _auc(y[lesion] == malignant, probs[lesion, malignant])


def _auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    return float(roc_auc_score(truth, score)) if 0 < truth.sum() < len(truth) else None


def source_metrics(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Accuracy (with its interval) and, with a finding-free class, finding-vs-none numbers."""
    n = len(y)
    correct = int((probs.argmax(axis=1) == y).sum())
    out = {"n": n, "correct": correct, "accuracy": correct / n if n else None,
           "accuracy_interval": list(accuracy_interval(correct / n, n)) if n else None}
    out["ece"] = float(expected_calibration_error(probs, y)) if n else None
    if "malignant" in classes and "benign" in classes:
        out["malignant_vs_benign_roc_auc"] = malignant_vs_benign_auc(probs, y, classes)
    none = none_class(classes)
    if none is not None:
        finding = y != none
        called_none = probs.argmax(axis=1) == none
        out["finding_vs_none_roc_auc"] = finding_vs_none_auc(probs, y, none)
        out["none_images"] = int((~finding).sum())
        out["none_called_none"] = float(called_none[~finding].mean()) if (~finding).any() else None
        out["finding_images"] = int(finding.sum())
        out["finding_called_finding"] = float((~called_none)[finding].mean()) if finding.any() else None
    return out


def measure_by_source(folder: Path, entries: list[list] | None = None, class_map: dict[str, str] | None = None
                      ) -> dict:
    """Per-source validation numbers of the bundle in ``folder`` on ``entries`` ([path relative to the data,
    label, group], default: its own ``split.json`` validation part), labels mapped by ``class_map``."""
    entries = entries if entries is not None else json.loads((folder / "split.json").read_text())["val"]
    probs, classes = bundle_probabilities(folder, [DATA_ROOT / path for path, _, _ in entries])
    labels = [(class_map or {}).get(label, label) for _, label, _ in entries]
    y = np.array([classes.index(label) for label in labels])
    return {name: source_metrics(probs[rows], y[rows], classes) for name, rows in subsets(entries).items()}


def record_by_source(folder: Path, entries: list[list] | None = None, class_map: dict[str, str] | None = None,
                     data: str = "") -> dict:
    """Measure per source and store it in the manifest (``validation_by_source``) and the card."""
    measured = measure_by_source(folder, entries, class_map)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["validation_by_source"] = {"data": data or "this bundle's validation split", "sources": measured}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "model_card.md").write_text(model_card(manifest))
    return measured
