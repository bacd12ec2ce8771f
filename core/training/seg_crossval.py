"""Grouped cross-validation of the ultrasound segmenter's recipe, and of the classifier fitted on its encoder.

``breast-us-lesion-seg`` 2.x is version 1.2's network continued whole on BUSI + BUS-BRA (phase 3 of
``core.training.segmenter``), judged on one grouped validation split. Here every image of both sets is
judged once, by a network that never saw its patient (BUS-BRA ``Case``, BUSI near-duplicate cluster): the
split's images are cut into ``--folds`` folds stratified by source and class and grouped by patient; each fold
continues 1.2's network exactly as the bundle's recipe does (same epochs, rate, augmentation), its best epoch
and its inference settings (threshold, mirror averaging, false-lesion gate) chosen on a tenth of its own
training patients, and is then measured on its held-out images through the product's Analyzer. On the same
fold's encoder the 3-class head (``breast-us-3class`` 5.x, ``core.training.lesion_pooled``) is fitted on the
fold's training images and measured on its held-out ones.

1.2 was trained on BUSI's images outside its validation split: BUSI's out-of-fold numbers other than those 124
images are optimistic (as ``cv`` says of 4.0); BUS-BRA's images were never seen by 1.2.

    python -m core.training.seg_crossval fold 1 --folds 2 --start DIR   # DIR: a models folder holding 1.2
    python -m core.training.seg_crossval fold 2 --folds 2 --start DIR
    python -m core.training.seg_crossval pool --folds 2     # pooled.json
    python -m core.training.seg_crossval record --folds 2   # into both bundles' manifests and cards

Each fold takes about 45 minutes on 2 CPU cores (4 whole-network epochs over half the images).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from core.models.registry import Bundle
from core.training.by_source import source_metrics
from core.training.configs import CONFIGS, REPO, BundleConfig
from core.training.datasets import plan_sample
from core.training.plan import stored_plan
from core.training.seg_eval import image_records, pooled_summary
from core.training.sources import data_key, source_of, subsets

SEGMENTER, CLASSIFIER = "breast-us-lesion-seg", "breast-us-3class"
INNER = 0.1  # share of a fold's training patients that choose its best epoch and inference settings


def folds_of(entries: list[dict], folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, held-out) indices per fold: stratified by source and class, grouped by patient."""
    strata = [f"{source_of(data_key(d['path']), d['group'])}:{d['label']}" for d in entries]
    groups = [d["group"] for d in entries]
    return list(StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(entries, strata, groups))


def _work(config: BundleConfig, folds: int) -> Path:
    work = config.cache_dir / f"cv{folds}"
    work.mkdir(parents=True, exist_ok=True)
    return work


def run_fold(fold: int, folds: int, start_root: Path) -> Path:
    """Train, write and measure fold ``fold`` (1-based); its image records go to ``cv<folds>/fold<k>.json``."""
    if not 1 <= fold <= folds:
        raise ValueError(f"fold {fold}: there are folds 1 to {folds}")
    from core.training.bundle_writer import write_segmenter_bundle
    from core.training.lesion_pooled import fit_pooled, pooled_model, pooled_vectors
    from core.training.networks import written_network
    from core.training.whole_network import finetune_whole_segmenter

    config = CONFIGS[SEGMENTER]
    plan = stored_plan(config)
    entries = plan["train"] + plan["val"]
    train, test = folds_of(entries, folds)[fold - 1]
    inner_fit, inner_val = next(GroupShuffleSplit(1, test_size=INNER, random_state=fold).split(
        train, groups=[entries[i]["group"] for i in train]))
    fold_plan = {"train": [entries[train[i]] for i in inner_fit], "val": [entries[train[i]] for i in inner_val]}
    held_out = [entries[i] for i in test]
    fold_config = dataclasses.replace(config, id=f"{config.id}-cv{folds}-fold{fold}")  # its own cache and folder
    CONFIGS[fold_config.id] = fold_config  # the bundle writer describes a bundle by its config's entry
    encoder, decoder, started_from = written_network(config, None, start_root)
    if started_from["version"] != "1.2.0":
        raise ValueError(f"--start must hold {SEGMENTER} 1.2.0, the network the recipe continues "
                         f"(found {started_from['version']})")
    print(f"fold {fold}/{folds}: {len(fold_plan['train'])} training images, {len(fold_plan['val'])} choosing, "
          f"{len(held_out)} held out", flush=True)
    encoder, decoder = finetune_whole_segmenter(fold_config, decoder, [plan_sample(d) for d in fold_plan["train"]],
                                                [plan_sample(d) for d in fold_plan["val"]], encoder, started_from)
    out_root = _work(config, folds) / "models"
    folder = write_segmenter_bundle(fold_config, decoder, fold_plan, out_root, encoder, started_from)
    manifest = json.loads((folder / "manifest.json").read_text())
    records = image_records(folder, held_out)

    classifier = CONFIGS[CLASSIFIER]
    head, to_pooled = pooled_model(Bundle.from_folder(folder), classifier)
    kernel, bias, fit = fit_pooled(to_pooled, classifier, [entries[i] for i in train])
    # The shipped head's mirror setting (chosen on its validation split, which the folds hold out: a small leak).
    mirror = bool(json.loads((REPO / "models" / CLASSIFIER / "manifest.json").read_text()).get("flip_average"))
    x = pooled_vectors(to_pooled, held_out, classifier.spec, mirror=mirror)
    logits = x @ kernel + bias
    if mirror:  # the image's and its mirror image's logits averaged, as the product does
        logits = (logits[:len(held_out)] + logits[len(held_out):]) / 2
    for record, row in zip(records, logits):
        record["logits"] = [float(v) for v in row]
    target = _work(config, folds) / f"fold{fold}.json"
    target.write_text(json.dumps({
        "fold": fold, "folds": folds, "training_images": len(fold_plan["train"]), "choosing_images":
        len(fold_plan["val"]), "held_out": len(held_out), "segmenter_settings": {
            k: manifest.get(k) for k in ("decision_threshold", "flip_average", "min_lesion_peak")},
        "classifier_fit": fit, "records": records}))
    return target


SEGMENTER_HOW = ("Each fold's network is trained on the other fold's patients only, half the images the bundle had: "
                 "read these as the recipe on less data. Each fold continues version 1.2's network whole, as the "
                 "bundle's recipe does (4 epochs, same rate and augmentation), on nine tenths of its training "
                 "patients; its best epoch and its inference settings (mask threshold, mirror averaging, false-lesion "
                 "gate) are chosen on the other tenth, and its held-out images are then segmented through the "
                 "product's Analyzer at each image's own resolution, with that fold's settings (below). Version 1.2 "
                 "was fitted on BUSI's images outside its validation split, so BUSI's out-of-fold rows are optimistic;"
                 " BUS-BRA's images were never seen by it. A segmenter has no calibration temperature: its masks are "
                 "each fold's probability map at the fold's own threshold and gate. The same folds' encoders also "
                 "carry breast-us-3class's cross-validation (its card).")
CLASSIFIER_HOW = ("Each fold's network is trained on the other fold's patients only, half the images the bundle "
                  "had: read these as the recipe on less data. Each fold continues version 1.2's network whole, as"
                  " the bundle's recipe does (4 epochs, same rate and augmentation), its best epoch and inference "
                  "settings chosen on a tenth of its own training patients; the 3-class head is fitted on that "
                  "fold's encoder and training images. Version 1.2 was fitted on BUSI's images outside its "
                  "validation split, so BUSI's out-of-fold rows are optimistic; BUS-BRA's images were never seen "
                  "by it. Probabilities at T = 1 (the product's temperature is fitted on a validation split the "
                  "folds do not have).")


def pool(folds: int) -> dict:
    """Out-of-fold numbers over every fold's held-out images: segmenter Dice, and the classifier's as
    ``core.training.crossval`` reports a fine-tuned classifier's, overall and per source and scanner."""
    from core.training.evaluate import classification_metrics, softmax

    config = CONFIGS[SEGMENTER]
    runs = [json.loads((_work(config, folds) / f"fold{k}.json").read_text()) for k in range(1, folds + 1)]
    records = [r for run in runs for r in run["records"]]
    classes = CONFIGS[CLASSIFIER].classes
    probs = softmax(np.array([r["logits"] for r in records]))
    y = np.array([classes.index(r["label"]) for r in records])
    per_fold, first = [], 0
    for run in runs:
        rows = slice(first, first + len(run["records"]))
        first += len(run["records"])
        per_fold.append({"n_groups": len({r["group"] for r in run["records"]}), "n": len(run["records"]),
                         "accuracy": float((probs[rows].argmax(axis=1) == y[rows]).mean())})
    grouping = "StratifiedGroupKFold by patient, stratified by source and class, seed 0"
    by_source = {}
    for name, rows in subsets([[r["path"], r["label"], r["group"]] for r in records]).items():
        by_source[name] = source_metrics(probs[rows], y[rows], classes)
        malignant = [i for i in rows if y[i] == classes.index("malignant")]
        by_source[name]["malignant_recall"] = (float((probs[malignant].argmax(axis=1) == y[malignant]).mean())
                                               if malignant else None)
    segmenter = pooled_summary(records)
    return {
        "segmenter": {"folds": folds, "grouping": grouping, "how": SEGMENTER_HOW,
                      "settings_per_fold": [run["segmenter_settings"] for run in runs], **segmenter.pop("all"),
                      "by_source": segmenter},
        "classifier": {"folds": folds, "grouping": grouping, "how": CLASSIFIER_HOW, "temperature": 1.0, "per_fold": per_fold,
                       **classification_metrics(probs, y, classes), "by_source": by_source},
    }


def with_section(card: str, section: str) -> str:
    """``card`` with its grouped cross-validation section replaced by ``section``, or ``section`` put before its
    Limits: the cards carry sections written by hand (screen captures), which regenerating them would lose."""
    heading = "\n## Grouped cross-validation"
    if heading in card:
        start = card.index(heading)
        following = card.find("\n## ", start + len(heading))
        return card[:start] + "\n" + section.strip("\n") + "\n" + (card[following:] if following >= 0 else "")
    limits = card.index("\n## Limits")
    return card[:limits] + "\n" + section.strip("\n") + "\n" + card[limits:]


def record(result: dict) -> None:
    """The pooled numbers into both written bundles' manifests, and their sections into both cards."""
    from core.training.cards import _cross_validation_section, _segmenter_cv_section

    for bundle, cv, section in ((SEGMENTER, result["segmenter"], _segmenter_cv_section),
                                (CLASSIFIER, result["classifier"], _cross_validation_section)):
        folder = REPO / "models" / bundle
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["cross_validation"] = cv
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
        card = folder / "model_card.md"
        card.write_text(with_section(card.read_text(), section(cv)))


def main() -> None:
    parser = argparse.ArgumentParser(description="Grouped cross-validation of the ultrasound segmenter's recipe.")
    parser.add_argument("step", choices=["fold", "pool", "record"])
    parser.add_argument("fold", type=int, nargs="?", help="fold: which (1-based)")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--start", type=Path, help="fold: a models folder holding breast-us-lesion-seg 1.2.0")
    args = parser.parse_args()
    if args.step == "fold":
        if args.fold is None or args.start is None:
            parser.error("fold needs its number and --start")
        print(run_fold(args.fold, args.folds, args.start))
    elif args.step == "pool":
        result = pool(args.folds)
        (_work(CONFIGS[SEGMENTER], args.folds) / "pooled.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
    else:
        record(json.loads((_work(CONFIGS[SEGMENTER], args.folds) / "pooled.json").read_text()))


if __name__ == "__main__":
    main()
