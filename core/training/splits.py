"""Deterministic, leakage-free train/validation splits.

Images that look alike (same patient, re-exported slice, neighbouring slice) are clustered by a
perceptual difference hash; a cluster, like a declared patient group, lands on one side only.
"""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from core.training.datasets import Sample


def dhash_bits(path, size: int = 16) -> np.ndarray:
    """256-bit difference hash of the greyscale image: robust to resizing and re-encoding.

    An 8x8 hash chains unrelated brain slices into one giant cluster; 16x16 with a 10 % distance
    keeps clusters to a patient's neighbouring slices and re-exports (measured on the MRI set).
    """
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    small = cv2.resize(grey, (size + 1, size), interpolation=cv2.INTER_AREA)
    return (small[:, 1:] > small[:, :-1]).ravel()


def near_duplicate_groups(samples: list[Sample], max_fraction: float = 0.1) -> list[str]:
    """Union-find over pairs whose hashes differ in at most ``max_fraction`` of their bits."""
    bits = np.array([dhash_bits(s.path) for s in samples], dtype=bool)
    limit = int(bits.shape[1] * max_fraction)
    parent = list(range(len(samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(samples) - 1):
        distance = np.count_nonzero(bits[i + 1 :] != bits[i], axis=1)
        for j in np.nonzero(distance <= limit)[0]:
            parent[find(i)] = find(i + 1 + int(j))
    return [f"dup{find(i)}" for i in range(len(samples))]


def assign_groups(samples: list[Sample]) -> None:
    """Samples without a declared group get their near-duplicate cluster as group."""
    missing = [s for s in samples if not s.group]
    if missing:
        for sample, group in zip(missing, near_duplicate_groups(missing)):
            sample.group = group


def split(samples: list[Sample], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Stratified by label, grouped by ``sample.group``: no group on both sides."""
    assign_groups(samples)
    n_splits = max(2, round(1 / val_fraction))
    labels = [s.label for s in samples]
    groups = [s.group for s in samples]
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(samples)), labels, groups))
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def split_following(samples: list[Sample], sides: dict[str, str], key, val_fraction: float = 0.2, seed: int = 0
                    ) -> tuple[list[Sample], list[Sample]]:
    """Samples named in ``sides`` (``key(sample)`` -> "train"/"val") stay on that side; the rest are split
    as ``split`` does. A network continued on new data must not be validated on images it was fitted on."""
    known = [s for s in samples if key(s) in sides]
    rest = [s for s in samples if key(s) not in sides]
    train, val = split(rest, val_fraction, seed) if rest else ([], [])
    return ([s for s in known if sides[key(s)] == "train"] + train, [s for s in known if sides[key(s)] == "val"] + val)


def describe(samples: list[Sample]) -> dict[str, int]:
    return dict(sorted(Counter(s.label for s in samples).items()))
