"""Image preprocessing defined once per bundle (in its manifest) and used by training and inference.

The input is always the 8-bit display picture of an ImageRecord (what the reader sees), so a
DICOM and its PNG export give the model the same pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessSpec:
    """How a bundle turns a display image into its input tensor."""

    size: int = 224
    color: str = "grey3"  # "grey3": grey replicated to 3 channels; "rgb": colour kept
    crop: str = "none"  # "foreground": crop to the bright object (skull, breast) before resizing
    scale: str = "xception"  # "xception": [-1, 1] (also ResNet50V2); "unit": [0, 1]
    stain: str = "none"  # "macenko": H&E stain normalisation of the whole image before tiling

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessSpec":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def prepare_display(display: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Whole-image steps that precede cropping/tiling (stain normalisation for H&E)."""
    if spec.stain == "macenko" and display.ndim == 3:
        from core.imaging.stain import macenko_normalise

        return macenko_normalise(display)
    return display


def foreground_box(grey: np.ndarray, threshold: int = 12, margin: float = 0.03) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the largest bright object; the whole image when none stands out."""
    h, w = grey.shape
    small = cv2.GaussianBlur(grey, (5, 5), 0)
    _, binary = cv2.threshold(small, threshold, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0, h, 0, w
    x, y, bw, bh = cv2.boundingRect(max(contours, key=cv2.contourArea))
    if bw * bh < 0.05 * h * w:
        return 0, h, 0, w
    my, mx = int(margin * h), int(margin * w)
    return max(0, y - my), min(h, y + bh + my), max(0, x - mx), min(w, x + bw + mx)


def crop_box(display: np.ndarray, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """The region of the display image the model sees (used to map heatmaps back)."""
    h, w = display.shape[:2]
    if spec.crop != "foreground":
        return 0, h, 0, w
    grey = display if display.ndim == 2 else cv2.cvtColor(display, cv2.COLOR_RGB2GRAY)
    return foreground_box(grey)


def to_model_pixels(display: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 (size, size, 3) picture after colour handling, crop and resize (before scaling).

    Augmentation works on this stage, so it sees real pixel values.
    """
    y0, y1, x0, x1 = crop_box(display, spec)
    img = display[y0:y1, x0:x1]
    if spec.color == "grey3":
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    interp = cv2.INTER_AREA if max(img.shape[:2]) > spec.size else cv2.INTER_LINEAR
    return cv2.resize(img, (spec.size, spec.size), interpolation=interp)


def to_model_mask(mask: np.ndarray, display: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """A label mask at display resolution, cropped and resized exactly like its image (nearest)."""
    y0, y1, x0, x1 = crop_box(display, spec)
    return cv2.resize(mask[y0:y1, x0:x1].astype(np.uint8), (spec.size, spec.size), interpolation=cv2.INTER_NEAREST)


def scale_pixels(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 model pixels to the float range the backbone was trained with."""
    x = pixels.astype(np.float32)
    if spec.scale == "xception":
        return x / 127.5 - 1.0
    return x / 255.0


def preprocess(display: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Display image -> float32 (size, size, 3) model input."""
    return scale_pixels(to_model_pixels(display, spec), spec)
