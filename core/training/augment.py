"""Augmentation presets from the published comparison, built with albumentations.

"filter" (CLAHE, Gaussian blur, histogram equalisation, fancy PCA) beat "geometric" (rotation,
flips, grid distortion) for breast segmentation; MixUp and CutMix act on batches of classifier
inputs and live in the training loop (``mix_batch``).
"""

from __future__ import annotations

import cv2
import numpy as np

# Each preset names its transform groups in order; the groups are built lazily in ``build_augmentation``
# (albumentations stays out of start-up), and the CLI offers exactly these names.
PRESETS: dict[str, tuple[str, ...]] = {
    "filter": ("filters",),
    "geometric": ("geometric",),
    "filter+geometric": ("filters", "geometric"),
    # Ultrasound from any scanner: burned-in calipers, measurement text and depth ticks drawn at random on the
    # image (never on the mask), so a model cannot learn a source's marks as a sign of its lesions.
    "filter+geometric+marks": ("filters", "geometric", "marks"),
    # MR from any scanner: magnitude (Rician) noise over the head and its background, as a scanner's own noise
    # (the training JPEGs have black backgrounds; a hunt saw 4 % noise move probabilities on written DICOMs).
    "filter+geometric+mrnoise": ("filters", "geometric", "mrnoise"),
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
    groups = {"filters": filters, "geometric": geometric, "stain": stain, "mirror": mirror, "hed": hed,
              "marks": [_burned_in_marks()(p=0.6)], "mrnoise": [_magnitude_noise()(p=0.5)]}
    return A.Compose([t for group in PRESETS[name] for t in groups[group]], seed=seed)


def _burned_in_marks():
    """The albumentations transform class that draws scanner marks (built here: albumentations loads lazily)."""
    import albumentations as A

    class BurnedInMarks(A.ImageOnlyTransform):
        """Caliper crosses (often a pair joined by a dotted line), measurement text and a depth scale of
        ticks along one edge, in a bright grey, as ultrasound scanners burn them into exported images."""

        def get_params(self) -> dict:
            return {"seed": int(self.random_generator.integers(2**31))}

        def apply(self, img: np.ndarray, seed: int = 0, **params) -> np.ndarray:
            rng = np.random.default_rng(seed)
            out = img.copy()
            h, w = out.shape[:2]
            level = int(rng.integers(170, 256))  # grey: the product converts ultrasound to grey before the model
            shade = (level,) * 3 if out.ndim == 3 else level
            for _ in range(int(rng.integers(1, 3))):  # caliper pairs
                ends = rng.integers([0, 0], [w, h], size=(2, 2))
                for x, y in ends:
                    arm = int(rng.integers(3, 7))
                    if rng.random() < 0.5:
                        cv2.line(out, (x - arm, y), (x + arm, y), shade, 1)
                        cv2.line(out, (x, y - arm), (x, y + arm), shade, 1)
                    else:
                        cv2.line(out, (x - arm, y - arm), (x + arm, y + arm), shade, 1)
                        cv2.line(out, (x - arm, y + arm), (x + arm, y - arm), shade, 1)
                if rng.random() < 0.5:
                    steps = max(2, int(np.hypot(*(ends[1] - ends[0])) // 6))
                    for t in np.linspace(0, 1, steps)[1:-1]:
                        x, y = (ends[0] + t * (ends[1] - ends[0])).astype(int)
                        cv2.circle(out, (int(x), int(y)), 0, shade, -1)
            if rng.random() < 0.7:  # measurement text in a corner
                text = f"{int(rng.integers(1, 3))} D {rng.uniform(0.3, 3.5):.2f}cm"
                corner = (int(rng.integers(2, max(3, w // 3))), int(rng.choice([int(rng.integers(10, max(11, h // 6))), h - 4])))
                cv2.putText(out, text, corner, cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.25, 0.45)), shade, 1)
            if rng.random() < 0.5:  # depth scale
                x = int(rng.choice([int(rng.integers(1, 6)), w - int(rng.integers(2, 7))]))
                for y in range(int(rng.integers(0, 10)), h, int(rng.integers(12, 30))):
                    cv2.line(out, (x, y), (x + (3 if x < w // 2 else -3), y), shade, 1)
            return out

    return BurnedInMarks


def _magnitude_noise():
    """The albumentations transform class that adds MR magnitude noise (built here: albumentations loads lazily)."""
    import albumentations as A

    class MagnitudeNoise(A.ImageOnlyTransform):
        """|grey + n1 + i n2| with n1, n2 Gaussian of one sigma (0-8 grey levels, up to ~6 % of a tissue level): a
        magnitude image's noise, Rayleigh over the black background, about Gaussian over tissue."""

        def get_params(self) -> dict:
            return {"seed": int(self.random_generator.integers(2**31))}

        def apply(self, img: np.ndarray, seed: int = 0, **params) -> np.ndarray:
            rng = np.random.default_rng(seed)
            sigma = float(rng.uniform(1.0, 8.0))
            grey = (img[..., 0] if img.ndim == 3 else img).astype(np.float32)
            noisy = np.hypot(grey + rng.normal(0.0, sigma, grey.shape), rng.normal(0.0, sigma, grey.shape))
            out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
            return np.repeat(out[..., None], img.shape[2], axis=2) if img.ndim == 3 else out

    return MagnitudeNoise


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
