"""Is a retrained classifier (or segmenter) better than the one shipped? Both on the same validation images, paired.

An unpaired comparison of two accuracies with their own intervals wastes the pairing: both models judge the
same images. Here both written bundles run as the product runs them (``by_source.bundle_probabilities``; a
segmenter's ``seg_eval.image_records``) on the new bundle's validation split, and each number's difference (new -
old) gets a 95 % interval by resampling patients (the split's groups; an ungrouped image alone), per source and over
all: for classifiers accuracy, log-loss, finding-vs-none ROC AUC and malignant-vs-benign ROC AUC where the classes
have them; for segmenters Dice on the images with a lesion and the share of lesion-free images given one. A change
is kept where an interval excludes zero in its favour on the number that matters for it (the bundle's CHANGELOG
says which).

``python -m core.training.compare models/<id> /path/to/retrained/<id>``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.training.by_source import bundle_probabilities, finding_vs_none_auc, malignant_vs_benign_auc, none_class
from core.training.configs import DATA_ROOT
from core.training.sources import subsets

Metric = Callable[[np.ndarray, np.ndarray], float | None]


def metrics_for(classes: list[str]) -> dict[str, Metric]:
    """The numbers compared for these classes: accuracy and log-loss always, the two ROC AUCs where they apply
    (computed as the per-source table computes them)."""
    out: dict[str, Metric] = {
        "accuracy": lambda p, y: float((p.argmax(1) == y).mean()),
        "log_loss": lambda p, y: float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)).mean()),
    }
    none = none_class(classes)
    if none is not None:
        out["finding_vs_none_auc"] = lambda p, y: finding_vs_none_auc(p, y, none)
    if "malignant" in classes and "benign" in classes:
        out["malignant_vs_benign_auc"] = lambda p, y: malignant_vs_benign_auc(p, y, classes)
    return out


def paired_differences(new: np.ndarray, old: np.ndarray, y: np.ndarray, groups: list[str], metrics: dict[str, Metric],
                       rounds: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Per metric: new, old, new - old and its 95 % interval over ``rounds`` resamplings of whole groups (an image
    without a group, as the Kaggle set's non-figshare slices are, is a group of its own)."""
    groups = [group or f"\0image-{i}" for i, group in enumerate(groups)]
    names = sorted(set(groups))
    labels = np.array(groups)
    members = {g: np.flatnonzero(labels == g) for g in names}
    rng = np.random.default_rng(seed)
    draws = [np.concatenate([members[names[k]] for k in rng.integers(0, len(names), len(names))])
             for _ in range(rounds)]
    out = {}
    for name, metric in metrics.items():
        a, b = metric(new, y), metric(old, y)
        if a is None or b is None:
            continue
        diffs = [d for d in ((metric(new[i], y[i]), metric(old[i], y[i])) for i in draws)
                 if d[0] is not None and d[1] is not None]  # a draw without the images a metric needs is not counted
        if len(diffs) < rounds // 2:
            continue
        delta = np.array([x - z for x, z in diffs])
        out[name] = {"new": a, "old": b, "diff": a - b, "draws": len(diffs),
                     "interval": [float(np.percentile(delta, 2.5)), float(np.percentile(delta, 97.5))]}
    return out


def compare(old_folder: Path, new_folder: Path, rounds: int = 2000) -> dict[str, dict]:
    """Paired differences per source (and ``all``) of the bundle in ``new_folder`` against ``old_folder``."""
    entries = json.loads((new_folder / "split.json").read_text())["val"]
    old_val = {tuple(e[:2]) for e in json.loads((old_folder / "split.json").read_text())["val"]}
    if {tuple(e[:2]) for e in entries} != old_val:
        raise ValueError("the two bundles were validated on different images: nothing to pair")
    paths = [DATA_ROOT / path for path, _, _ in entries]
    new, classes = bundle_probabilities(new_folder, paths)
    old, old_classes = bundle_probabilities(old_folder, paths)
    if classes != old_classes:
        raise ValueError(f"different classes: {classes} vs {old_classes}")
    y = np.array([classes.index(label) for _, label, _ in entries])
    groups = [group for _, _, group in entries]
    metrics = metrics_for(classes)
    rows = {"all": np.arange(len(entries)), **subsets(entries)}
    return {name: paired_differences(new[r], old[r], y[r], [groups[i] for i in r], metrics, rounds)
            for name, r in rows.items()}


SEGMENTER_METRICS: dict[str, Metric] = {  # over image records: column 0 Dice, column 1 a false lesion drawn
    "dice_lesion": lambda r, lesion: float(r[lesion, 0].mean()) if lesion.any() else None,
    "false_lesion_rate": lambda r, lesion: float(r[~lesion, 1].mean()) if (~lesion).any() else None,
}


def compare_segmenters(old_folder: Path, new_folder: Path, rounds: int = 2000) -> dict[str, dict]:
    """Paired differences of two written segmenters on the new one's validation images (its config's cached
    plan, which holds the masks), per source: Dice on the images with a lesion, the share of lesion-free images
    given a lesion. The new split may add images, so long as the old bundle never trained on any of them."""
    from core.training.configs import CONFIGS
    from core.training.plan import same_split, split_entries
    from core.training.seg_eval import image_records

    manifest = json.loads((new_folder / "manifest.json").read_text())
    training = manifest.get("training", {})
    config = dataclasses.replace(CONFIGS[manifest["id"]], **{key: training[name] for key, name in
                                                             (("reader", "reader"), ("root", "data")) if name in training})
    cached = config.cache_dir / "split.json"  # the plan it was trained on (with the masks), as its reader cached it
    plan = json.loads(cached.read_text()) if cached.exists() else None
    if plan is None or not same_split(new_folder, plan):
        raise ValueError(f"{new_folder} was not written from the split cached in {cached}: its masks are not known")
    old_train = {path for path, _, _ in json.loads((old_folder / "split.json").read_text())["train"]}
    entries = split_entries(plan)["val"]  # what the new bundle's split.json holds (same_split)
    seen = [path for path, _, _ in entries if path in old_train]
    if seen:
        raise ValueError(f"{len(seen)} of the new validation images trained the old bundle (first: {seen[0]})")
    records = {name: image_records(folder, plan["val"]) for name, folder in (("new", new_folder), ("old", old_folder))}
    new, old = (np.array([[r["dice"], r["false_lesion"]] for r in records[k]], float) for k in ("new", "old"))
    lesion = np.array([r["lesion"] for r in records["new"]])
    groups = [group for _, _, group in entries]
    rows = {"all": np.arange(len(entries)), **subsets(entries)}
    return {name: paired_differences(new[r], old[r], lesion[r], [groups[i] for i in r], SEGMENTER_METRICS, rounds)
            for name, r in rows.items()}


def difference_lines(results: dict[str, dict]) -> list[str]:
    """One line per subset and number: new, old and the difference with its interval."""
    return [f"{subset:40s} {name:24s} new {m['new']:.4f} old {m['old']:.4f} "
            f"diff {m['diff']:+.4f} [{m['interval'][0]:+.4f}, {m['interval'][1]:+.4f}]"
            for subset, numbers in results.items() for name, m in numbers.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description="Paired comparison of two written bundles on one validation split.")
    parser.add_argument("old", type=Path, help="the bundle folder shipped now")
    parser.add_argument("new", type=Path, help="the retrained bundle folder (a classifier: the same split)")
    parser.add_argument("--rounds", type=int, default=2000,
                        help="bootstrap resamplings of patients (ungrouped images one by one)")
    args = parser.parse_args()
    segmenter = json.loads((args.new / "manifest.json").read_text())["task"] == "segmentation"
    run = compare_segmenters if segmenter else compare
    print("\n".join(difference_lines(run(args.old, args.new, args.rounds))))


if __name__ == "__main__":
    main()
