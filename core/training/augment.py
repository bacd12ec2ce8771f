"""Augmentation presets from the published comparison, built with albumentations.

"filter" (CLAHE, Gaussian blur, histogram equalisation, fancy PCA) beat "geometric" (rotation,
flips, grid distortion) for breast segmentation; MixUp and CutMix act on batches of classifier
inputs and live in the training loop (``mix_batch``).
"""

from __future__ import annotations

import numpy as np

# Each preset names its transform groups in order; the groups are built lazily in ``build_augmentation``
# (albumentations stays out of start-up), and the CLI offers exactly these names.
PRESETS: dict[str, tuple[str, ...]] = {
    "filter": ("filters",),
    "geometric": ("geometric",),
    "filter+geometric": ("filters", "geometric"),
    "stain": ("stain", "mirror"),
    # Strong H&E variation for other labs' slides: every tile gets new stain vectors and intensities (HED
    # space), stronger hue/saturation/brightness shifts and a slight defocus now and then.
    "hed-strong": ("hed", "mirror"),
}
AUGMENTATIONS = ("none", *PRESETS)


def build_augmentation(name: str | None, seed: int = 0):
    """An albumentations Compose for uint8 RGB model pixels (and an optional mask), or None."""
    if not name or name == "none":
        return None
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation '{name}' (choose from {', '.join(AUGMENTATIONS)})")
    import albumentations as A

    filters = [
        A.CLAHE(clip_limit=2.0, p=0.5),
        A.GaussianBlur(blur_limit=(3, 5), p=0.3),
        A.Equalize(p=0.2),
        A.FancyPCA(alpha=0.1, p=0.5),
        A.RandomBrightnessContrast(0.15, 0.15, p=0.5),
    ]
    mirror = [A.HorizontalFlip(p=0.5)]
    geometric = mirror + [
        A.Affine(rotate=(-15, 15), scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), p=0.7),
        A.GridDistortion(p=0.2),
    ]
    stain = [
        A.HEStain(method="random_preset", intensity_scale_range=(0.7, 1.3), intensity_shift_range=(-0.15, 0.15), p=0.8),
        A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=15, val_shift_limit=10, p=0.5),
        A.RandomRotate90(p=1.0),
        A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
        A.VerticalFlip(p=0.5),
    ]
    hed = [
        A.HEStain(method="random_preset", intensity_scale_range=(0.5, 1.5), intensity_shift_range=(-0.3, 0.3), p=1.0),
        A.HueSaturationValue(hue_shift_limit=15, sat_shift_limit=30, val_shift_limit=15, p=0.8),
        A.RandomBrightnessContrast(0.25, 0.25, p=0.7),
        A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        A.RandomRotate90(p=1.0),
        A.VerticalFlip(p=0.5),
    ]
    groups = {"filters": filters, "geometric": geometric, "stain": stain, "mirror": mirror, "hed": hed}
    return A.Compose([t for group in PRESETS[name] for t in groups[group]], seed=seed)


def mix_batch(x: np.ndarray, y: np.ndarray, mode: str, rng: np.random.Generator, alpha: float = 0.4):
    """MixUp or CutMix on a batch of images (N, H, W, C) and one-hot labels (N, K)."""
    if mode not in ("mixup", "cutmix"):
        return x, y
    lam = float(rng.beta(alpha, alpha))
    order = rng.permutation(len(x))
    if mode == "mixup":
        return lam * x + (1 - lam) * x[order], lam * y + (1 - lam) * y[order]
    h, w = x.shape[1:3]
    ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
    mixed = x.copy()
    mixed[:, y0:y1, x0:x1] = x[order, y0:y1, x0:x1]
    area = (y1 - y0) * (x1 - x0) / float(h * w)
    return mixed, (1 - area) * y + area * y[order]
