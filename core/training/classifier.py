"""Classifier bundles: split, cache trunk features, train head then fine-tune the top block, evaluate.

Recipe (as published for ResNet50V2/Xception): frozen ImageNet base + GlobalAveragePooling +
Dropout + Dense; then the top block is unfrozen and trained at lr 1e-4. Because the base below
the top block stays frozen in both phases, its output is cached once (``features.py``) and only
the top block and head run during training - what makes this feasible on a 2-core CPU. On a GPU
the same code runs unchanged, only faster.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.training.configs import BACKBONES, BundleConfig
from core.training.datasets import READERS, Sample
from core.training.features import cache_features
from core.training.splits import describe, split


def load_samples(config: BundleConfig) -> list[Sample]:
    samples = READERS[config.reader](config.data_path)
    for s in samples:
        s.label = config.folder_to_class.get(s.label, s.label)
    return [s for s in samples if s.label in config.classes]


def prepare(config: BundleConfig) -> dict:
    """Split deterministically and cache trunk features of every view; resumable."""
    from core.models.backbones import build_backbone, split_backbone

    config.cache_dir.mkdir(parents=True, exist_ok=True)
    split_file = config.cache_dir / "split.json"
    if split_file.exists():
        plan = json.loads(split_file.read_text())
    else:
        train, val = split(load_samples(config), config.val_fraction, config.seed)
        plan = {
            part: [{"path": str(s.path), "label": s.label, "group": s.group} for s in items]
            for part, items in (("train", train), ("val", val))
        }
        split_file.write_text(json.dumps(plan, indent=1))
    parts = {k: [Sample(Path(d["path"]), d["label"], d["group"]) for d in v] for k, v in plan.items()}
    print(f"{config.id}: train {describe(parts['train'])}, validation {describe(parts['val'])}")
    backbone = build_backbone(config.arch, BACKBONES[config.arch])
    trunk, _ = split_backbone(backbone, config.arch)
    cache_features(parts["val"], config.spec, trunk, config.cache_dir / "val_v0.npy")
    cache_features(parts["train"], config.spec, trunk, config.cache_dir / "train_v0.npy")
    for view in range(1, config.augmented_views + 1):
        cache_features(parts["train"], config.spec, trunk, config.cache_dir / f"train_v{view}.npy",
                       augmentation=config.augmentation, seed=config.seed + view)
    return plan
