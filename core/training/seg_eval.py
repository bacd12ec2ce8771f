"""Validation of a written segmenter bundle through the product's Analyzer, at original resolution."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.inference.lesions import drop_unsure_components
from core.inference.paths import Request
from core.models.registry import Bundle, Registry
from core.models.intervals import mean_interval
from core.training.evaluate import dice, segmentation_metrics
from core.training.datasets import plan_sample
from core.training.features import sample_mask
from core.training.sources import several_sources, subsets

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_PEAKS = (0.0, 0.6, 0.7, 0.8, 0.9, 0.95)
FALSE_LESION_PX = 16  # predicted pixels on a lesion-free image that count as a false lesion


def evaluate_segmenter(folder: Path, plan: dict) -> tuple[dict, dict, list[str]]:
    """(chosen inference settings, metrics, plot names) over the plan's validation samples.

    The mask threshold and whether to average with the mirrored image are picked by Dice on the
    images with a lesion. The false-lesion gate (``min_lesion_peak``: drop components whose peak
    probability is below it) is then picked by Dice over all images, lesion-free ones included,
    since a lesion drawn on a normal scan is the error a reader meets most and lesion-only Dice
    cannot see it.
    """
    bundle = Bundle.from_folder(folder)
    analyzer = Analyzer(Registry([]))
    probs: dict[bool, list[np.ndarray]] = {False: [], True: []}
    truths, displays = [], []
    for d in tqdm(plan["val"], desc="validation", unit="img"):
        sample = plan_sample(d)
        display = load_image(sample.path).display(0)
        for flip in probs:
            bundle.manifest["flip_average"] = flip
            probs[flip].append(analyzer.path(bundle).run(display, Request()).probability_map)
        truths.append(sample_mask(sample, display.shape[:2]))
        displays.append(display)
    has_lesion = [t.any() for t in truths]
    lesion_truths = [t for t, h in zip(truths, has_lesion) if h]
    scores = {(flip, threshold): segmentation_metrics([p >= threshold for p, h in zip(probs[flip], has_lesion) if h],
                                                      lesion_truths)["dice"]
              for flip in probs for threshold in THRESHOLDS}
    flip, threshold = max(scores, key=scores.get)
    gated = {peak: [drop_unsure_components((p >= threshold).astype(np.uint8), p, peak) for p in probs[flip]]
             for peak in MIN_PEAKS}
    by_peak = {peak: _summary(gated[peak], truths, has_lesion) for peak in MIN_PEAKS}
    min_peak = max(MIN_PEAKS, key=lambda peak: (by_peak[peak]["dice_all"], -peak))
    preds = gated[min_peak]
    metrics = {
        **by_peak[min_peak],
        "dice_by_threshold": {str(t): scores[(False, t)] for t in THRESHOLDS},
        "dice_by_threshold_flip_average": {str(t): scores[(True, t)] for t in THRESHOLDS},
        "by_min_lesion_peak": {str(peak): by_peak[peak] for peak in MIN_PEAKS},
    }
    entries = [[d["path"], d["label"], d["group"]] for d in plan["val"]]
    if several_sources(entries):  # Dice for each source, and each scanner
        groups = subsets(entries)
        metrics["by_source"] = {name: _summary([preds[i] for i in rows], [truths[i] for i in rows],
                                               [has_lesion[i] for i in rows]) for name, rows in groups.items()}
    settings = {"decision_threshold": threshold, "flip_average": flip, "min_lesion_peak": min_peak}
    return settings, metrics, [_plot_examples(folder, displays, truths, preds, has_lesion)]


def image_records(folder: Path, entries: list[dict]) -> list[dict]:
    """Per image of ``entries``, a written segmenter at its own settings (threshold, mirror averaging,
    false-lesion gate), as the product runs it: Dice against the truth and, on a lesion-free image, whether it
    drew a false lesion. Records of several models (cross-validation folds) pool by ``pooled_summary``."""
    bundle = Bundle.from_folder(folder)
    manifest = bundle.manifest
    path = Analyzer(Registry([])).path(bundle)
    out = []
    for d in tqdm(entries, desc=f"{bundle.id} held out", unit="img"):
        sample = plan_sample(d)
        display = load_image(sample.path).display(0)
        p = path.run(display, Request()).probability_map
        pred = drop_unsure_components((p >= manifest["decision_threshold"]).astype(np.uint8), p,
                                      manifest.get("min_lesion_peak", 0.0))
        truth = sample_mask(sample, display.shape[:2])
        out.append({"path": d["path"], "label": d["label"], "group": d["group"], "lesion": bool(truth.any()),
                    "dice": dice(pred, truth), "false_lesion": bool(not truth.any() and pred.sum() >= FALSE_LESION_PX)})
    return out


def pooled_summary(records: list[dict]) -> dict:
    """``_summary``'s lesion Dice (with its interval), all-image Dice and false-lesion rate over image records,
    overall and for each source and scanner."""
    def summary(rows: list[dict]) -> dict:
        lesion = [r["dice"] for r in rows if r["lesion"]]
        normal = [r["false_lesion"] for r in rows if not r["lesion"]]
        return {"n": len(rows), "n_lesion": len(lesion), "dice": float(np.mean(lesion)) if lesion else None,
                "dice_ci95": list(mean_interval(lesion)) if lesion else None,
                "dice_all": float(np.mean([r["dice"] for r in rows])),
                "false_positive_rate_normal": float(np.mean(normal)) if normal else None}

    groups = subsets([[r["path"], r["label"], r["group"]] for r in records])
    return {"all": summary(records), **{name: summary([records[i] for i in rows]) for name, rows in groups.items()}}


def _summary(preds: list[np.ndarray], truths: list[np.ndarray], has_lesion: list[bool]) -> dict:
    """Dice/IoU on the images with a lesion and on all images; how often a lesion-free image gets one."""
    lesion = segmentation_metrics([p for p, h in zip(preds, has_lesion) if h],
                                  [t for t, h in zip(truths, has_lesion) if h])
    everything = segmentation_metrics(preds, truths)
    normals = [p for p, h in zip(preds, has_lesion) if not h]
    return {
        "n": everything["n"],
        "n_lesion": lesion["n"],
        "dice": lesion["dice"],
        "dice_ci95": lesion["dice_ci95"],
        "iou": lesion["iou"],
        "dice_all": everything["dice"],
        "dice_all_ci95": everything["dice_ci95"],
        "iou_all": everything["iou"],
        "false_positive_rate_normal": None if not normals else
        float(np.mean([p.sum() >= FALSE_LESION_PX for p in normals])),
    }


def _plot_examples(folder: Path, displays, truths, preds, has_lesion, count: int = 8) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = [i for i, h in enumerate(has_lesion) if h][:count]
    fig, axes = plt.subplots(2, (len(picks) + 1) // 2, figsize=(3 * ((len(picks) + 1) // 2), 6.4))
    for ax, i in zip(np.ravel(axes), picks):
        image = displays[i] if displays[i].ndim == 3 else cv2.cvtColor(displays[i], cv2.COLOR_GRAY2RGB)
        image = image.copy()
        for mask, colour in ((truths[i], (0, 255, 0)), (preds[i], (255, 0, 0))):
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(image, contours, -1, colour, max(1, image.shape[0] // 200))
        inter = np.logical_and(truths[i], preds[i]).sum()
        total = truths[i].sum() + preds[i].sum()
        ax.imshow(image)
        ax.set_title(f"Dice {2 * inter / max(total, 1):.2f}", fontsize=9)
        ax.axis("off")
    for ax in np.ravel(axes)[len(picks):]:
        ax.axis("off")
    fig.suptitle("Validation examples: truth green, prediction red")
    fig.tight_layout()
    fig.savefig(folder / "validation.png", dpi=80)
    plt.close(fig)
    return "validation.png"
