"""Grouped k-fold cross-validation of a classifier config: every image judged once, by a model that
never saw its group (TMA/date batch, patient, woman or near-duplicate cluster).

With a data set as small as the UCSB cores, one validation split of a dozen images says little; out-
of-fold predictions over all images say more. Each fold trains exactly like the bundle (same cached
views, same schedule) except that the validation part never steers it: no early stopping, no best-
epoch pick, no temperature fitted on it (probabilities are reported at T = 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from core.models.backbones import build_backbone, split_backbone
from core.training.bundle_writer import add_cross_validation
from core.training.by_source import source_metrics
from core.training.checkpoints import copy_model
from core.training.classifier import fit_classifier
from core.training.configs import REPO, BundleConfig
from core.training.datasets import plan_sample
from core.training.evaluate import classification_metrics, softmax
from core.training.networks import predict_chunks, written_network
from core.training.plan import cache_views, load_samples, load_views, per_image, plan_entries
from core.training.sources import several_sources, subsets
from core.training.splits import assign_groups


def cross_validate(config: BundleConfig, folds: int = 0, out_root: str | Path | None = None) -> dict:
    """Out-of-fold metrics over all images; written into the bundle's manifest and card when it exists.

    ``folds`` = 0 means one fold per group (leave-one-group-out), capped by the group count.
    """
    samples = load_samples(config)
    assign_groups(samples)
    groups = sorted({s.group for s in samples})
    k = min(folds or len(groups), len(groups))
    work = config.cache_dir / "cv"
    entries_file = work / "entries.json"
    work.mkdir(parents=True, exist_ok=True)
    if not entries_file.exists():
        entries_file.write_text(json.dumps(plan_entries(samples, config)))
    entries = json.loads(entries_file.read_text())
    start = None
    if config.init_from_written:  # each fold continues the written network as the bundle does: its trunk, its head
        trunk, start, started_from = written_network(config, None, out_root)
    else:
        trunk, _ = split_backbone(build_backbone(config.arch, config.backbone_path), config.arch,
                                  config.top_block_start)
    cache_views(config, [plan_sample(d) for d in entries], trunk, work / "all")
    views = 1 + config.augmented_views
    features = load_views(config, "all", views, work)
    plain = features[: len(entries)]
    index = {c: i for i, c in enumerate(config.classes)}
    labels = np.array([index[d["label"]] for d in entries])
    paths = np.array([d["path"] for d in entries])

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=config.seed)
    image_labels = [s.label for s in samples]
    out_probs, out_labels, per_fold, tile_probs, tile_labels, out_entries = [], [], [], [], [], []
    for fold, (train_images, val_images) in enumerate(splitter.split(np.zeros(len(samples)), image_labels,
                                                                     [s.group for s in samples])):
        val = np.isin(paths, [str(samples[i].path) for i in val_images])
        train = np.tile(~val, views)
        val_groups = sorted({samples[i].group for i in val_images})
        print(f"fold {fold + 1}/{k}: validation groups {val_groups}, {len(val_images)} images", flush=True)
        head = fit_classifier(config, features[train], np.tile(labels, views)[train], plain[val], labels[val],
                              work / f"k{k}_fold{fold}", select_on_val=False,
                              head=None if start is None else copy_model(start))
        probs = softmax(predict_chunks(head, plain[val]))
        fold_entries = [d for d, v in zip(entries, val) if v]
        if config.tiling is not None:
            tile_probs.append(probs[:, 1])
            tile_labels.append(labels[val])
            probs, fold_labels = per_image(fold_entries, probs, config)
        else:
            fold_labels = labels[val]
        out_probs.append(probs)
        out_labels.append(fold_labels)
        out_entries.extend([d["path"], d["label"], d["group"]] for d in fold_entries)
        per_fold.append({"groups": val_groups, "n": int(len(fold_labels)),
                         "accuracy": float(np.mean(probs.argmax(1) == fold_labels))})
    all_probs, all_labels = np.concatenate(out_probs), np.concatenate(out_labels)
    metrics = classification_metrics(all_probs, all_labels, config.classes)
    result = {"folds": k, "grouping": "StratifiedGroupKFold over sample groups, seed %d" % config.seed,
              "temperature": 1.0, "per_fold": per_fold, **metrics}
    if start is not None:
        result["started_from"] = {k: v for k, v in started_from.items() if k != "weights_sha256"}
    if config.tiling is None and several_sources(out_entries):  # out-of-fold numbers per source and scanner
        groups_by_source = subsets(out_entries)
        result["by_source"] = {name: source_metrics(all_probs[rows], all_labels[rows], config.classes)
                               for name, rows in groups_by_source.items()}
    if tile_probs and len(config.classes) == 2:
        # Tile labels may differ from image labels (annotation circles): how well single tiles are told apart.
        result["tile_roc_auc"] = float(roc_auc_score(np.concatenate(tile_labels), np.concatenate(tile_probs)))
    folder = Path(out_root or REPO / "models") / config.id
    if (folder / "manifest.json").exists():
        add_cross_validation(folder, result, config.notes)
    return result
