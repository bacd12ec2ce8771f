"""Image preprocessing defined once per bundle (in its manifest) and used by training and inference.

The input is always the 8-bit display picture of an ImageRecord (what the reader sees), so a
DICOM and its PNG export give the model the same pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from core.imaging.scan_area import scan_area


@dataclass(frozen=True)
class PreprocessSpec:
    """How a bundle turns a display image into its input tensor."""

    size: int = 224
    color: str = "grey3"  # "grey3": grey replicated to 3 channels; "rgb": colour kept
    # "foreground": crop to the bright object (skull, breast) before resizing; "head": to the head as the tissue
    # normalisation finds it (``head_box``), the same crop whatever the window, matrix or background noise;
    # "scan": to an ultrasound screen capture's scan area (core.imaging.scan_area), so text, bars and black around
    # it are left out.
    crop: str = "none"
    scale: str = "xception"  # "xception": [-1, 1] (also ResNet50V2); "unit": [0, 1]
    stain: str = "none"  # "macenko": H&E stain normalisation of the whole image before tiling
    # "pad": the crop widened to a square about its centre (zeros beyond the image), so the anatomy keeps
    # its aspect ratio; "stretch": the crop resized to a square as it is.
    aspect: str = "stretch"
    # "tissue": grey levels stretched between the 1st and 99th percentiles of the object's own pixels (the
    # head inside its mask), so a slice windowed brightly or darkly by its scanner looks like training
    # input; "display": the display picture's grey levels as they are.
    intensity: str = "display"

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


def object_mask(grey: np.ndarray) -> np.ndarray:
    """bool mask of the largest object above the background (Otsu's threshold on the blurred image, at
    least 5 grey levels), holes filled: the head, the breast. Otsu rather than a fixed level, so a dark
    vertex or skull-base slice still finds its few bright pixels and leaves the background noise out."""
    small = cv2.GaussianBlur(grey, (5, 5), 0)
    level, _ = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    _, binary = cv2.threshold(small, max(5.0, level), 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    mask = np.zeros(grey.shape, np.uint8)
    if contours:
        cv2.drawContours(mask, [max(contours, key=cv2.contourArea)], -1, 1, thickness=-1)
    return mask.astype(bool)


def head_box(grey: np.ndarray, margin: float = 0.04) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of ``object_mask``'s object widened by ``margin`` of its own longer side on every side (it may
    reach beyond the image: zeros there); the whole image where no object of at least 0.2 % of it stands out.

    Why not ``foreground_box``: its fixed grey level 12 on the display picture and its margin of 3 % of the matrix
    moved the crop with how a file was written (a hunt over 46 validation slices written as DICOMs: a 16-bit file
    without a window, whose automatic window lifts the background noise over 12, cropped the whole image; the same
    slice padded to a 384 matrix got a 4.6 % larger box; labels flipped on up to 5 of 46 slices). Otsu's level
    follows the picture's own contrast, and a margin of the head's own size does not change with the matrix."""
    h, w = grey.shape
    mask = object_mask(grey)
    if mask.sum() < 0.002 * mask.size:
        return 0, h, 0, w
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    m = round(margin * max(y1 - y0, x1 - x0))
    return y0 - m, y1 + m, x0 - m, x1 + m


def tissue_normalised(grey: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """uint8 grey levels stretched so the object's ``low``..``high`` percentiles span 0..255 (unchanged
    where no object of at least 0.2 % of the image stands out)."""
    mask = object_mask(grey)
    if mask.sum() < 0.002 * mask.size:
        return grey
    lo, hi = np.percentile(grey[mask], (low, high))
    if hi - lo < 1:
        return grey
    return np.clip((grey.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def as_grey(display: np.ndarray) -> np.ndarray:
    """The picture in grey (an RGB one converted, a grey one as it is)."""
    return display if display.ndim == 2 else cv2.cvtColor(display, cv2.COLOR_RGB2GRAY)


def crop_box(display: np.ndarray, spec: PreprocessSpec, row_to_column: float = 1.0) -> tuple[int, int, int, int]:
    """The region of the display image the model sees (used to map heatmaps back); with ``aspect="pad"``
    a square that may reach beyond the image (those pixels are zeros).

    ``row_to_column``: the pixel's height over its width where the file states both spacings; the padded square is then square in millimetres, so a 256 x 232 matrix of non-square pixels reaches
    the network with the head's proportions, as the square-pixel training slices did."""
    h, w = display.shape[:2]
    if spec.crop == "foreground":
        y0, y1, x0, x1 = foreground_box(as_grey(display))
    elif spec.crop == "head":
        y0, y1, x0, x1 = head_box(as_grey(display))
    elif spec.crop == "scan":
        y0, y1, x0, x1 = scan_area(as_grey(display))
    else:
        y0, y1, x0, x1 = 0, h, 0, w
    if spec.aspect == "pad":
        side_x = max((y1 - y0) * row_to_column, x1 - x0)  # in column pixels
        rows, cols = round(side_x / row_to_column), round(side_x)
        y0, x0 = (y0 + y1 - rows) // 2, (x0 + x1 - cols) // 2
        y1, x1 = y0 + rows, x0 + cols
    return y0, y1, x0, x1


def _cropped(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` with zeros where the box reaches beyond the image."""
    y0, y1, x0, x1 = box
    h, w = image.shape[:2]
    inside = image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    pads = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    return cv2.copyMakeBorder(inside, *pads, cv2.BORDER_CONSTANT, value=0) if any(pads) else inside


def to_model_pixels(display: np.ndarray, spec: PreprocessSpec,
                    box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """uint8 (size, size, 3) picture after colour handling, intensity normalisation, crop and resize
    (before scaling); ``box``: the crop box where the caller has it already.

    Augmentation works on this stage, so it sees real pixel values.
    """
    box = crop_box(display, spec) if box is None else box
    if spec.intensity == "tissue":
        display = tissue_normalised(as_grey(display))
    img = _cropped(display, box)
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
    return cv2.resize(_cropped(mask.astype(np.uint8), crop_box(display, spec)), (spec.size, spec.size),
                      interpolation=cv2.INTER_NEAREST)


def scale_pixels(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 model pixels to the float range the backbone was trained with."""
    x = pixels.astype(np.float32)
    if spec.scale == "xception":
        return x / 127.5 - 1.0
    return x / 255.0


def preprocess(display: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Display image -> float32 (size, size, 3) model input."""
    return scale_pixels(to_model_pixels(display, spec), spec)


class ModelInputs:
    """One display picture and what each preprocessing makes of it, made once however many bundles share that
    preprocessing (the brain models on one slice: one crop, one tissue normalisation, one scaling);
    ``row_to_column`` as ``crop_box`` takes it, from the picture's header."""

    def __init__(self, display: np.ndarray, row_to_column: float = 1.0) -> None:
        self.display = display
        self.row_to_column = row_to_column
        self._made: dict[PreprocessSpec, tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]] = {}

    @classmethod
    def of(cls, picture: "np.ndarray | ModelInputs") -> "ModelInputs":
        return picture if isinstance(picture, ModelInputs) else cls(picture)

    def made(self, spec: PreprocessSpec) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]:
        """(float32 model input, the crop box in the display, the display after its whole-image steps)."""
        if spec not in self._made:
            shown = prepare_display(self.display, spec)
            box = crop_box(shown, spec, self.row_to_column)
            self._made[spec] = (scale_pixels(to_model_pixels(shown, spec, box), spec), box, shown)
        return self._made[spec]
