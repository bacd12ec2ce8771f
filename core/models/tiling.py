"""Tiles over large images (histology, mammograms): tissue detection, the tile grid and aggregation.

An image of any size is covered by tiles of the bundle's tile size; tiles with too little tissue
are skipped; the image probability aggregates the tile probabilities (mean or max, documented in
the bundle's manifest), and the tile probabilities form a map over the whole image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from core.models.preprocessing import as_grey


@dataclass(frozen=True)
class TilingSpec:
    tile: int = 224  # tile side in image pixels (after ``scale``)
    stride: int = 224
    scale: float = 1.0  # resize factor applied before tiling (to match magnification)
    min_tissue: float = 0.4  # fraction of tissue pixels a tile needs
    # What tissue looks like: "stained" (H&E on bright glass) or "radiograph" (breast brighter than the
    # dark air around it; on a mammogram most of the frame is air and would otherwise count as tissue).
    tissue: str = "stained"
    aggregate: str = "mean"  # "mean" of tile probabilities, or "max": the most suspicious tile decides
    # (binary bundles, positive class last: a small lesion in one tile makes the image abnormal)
    # Physical scale of a tile's pixels (micrometres); None: tiles are cut at the image's own pixels (and ``scale``).
    # With it, an image of a known scale is tiled so each tile covers tile x microns_per_pixel um of tissue.
    microns_per_pixel: float | None = None
    # The scale an image is taken to have when neither the user nor the file says (its training images' usual
    # scale); None: ``microns_per_pixel``. The result then warns that the magnification was assumed.
    assumed_microns_per_pixel: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "TilingSpec | None":
        if not data:
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


RADIOGRAPH_AIR = 30  # display grey level below which a radiograph pixel is air (mini-MIAS air is 0-20)


def tissue_mask(rgb: np.ndarray, kind: str = "stained") -> np.ndarray:
    """Tissue pixels. Stained: coloured enough and not the bright slide background: a bright pixel counts only
    when strongly coloured (brightly lit eosin is tissue; glass is bright and at most faintly tinted). Grey: not
    bright. Radiograph: brighter than air."""
    if kind == "radiograph":
        return as_grey(rgb) > RADIOGRAPH_AIR
    if kind != "stained":
        raise ValueError(f"unknown tissue kind '{kind}'")
    if rgb.ndim == 2:
        return rgb < 235
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    saturation, value = hsv[..., 1], hsv[..., 2]
    return (saturation > 20) & ((value < 235) | (saturation > 50))


def tile_sides(spec: TilingSpec, image_um: tuple[float, float] | None = None) -> tuple[int, int, int, int]:
    """(side_y, side_x, step_y, step_x) of a tile in image pixels: ``tile`` pixels of ``microns_per_pixel`` um
    where the spec has a physical scale and the image's (um_y, um_x) is known, else ``tile / scale``."""
    if spec.microns_per_pixel and image_um:
        zy, zx = spec.microns_per_pixel / image_um[0], spec.microns_per_pixel / image_um[1]
    else:
        zy = zx = 1.0 / spec.scale
    return (max(1, int(round(spec.tile * zy))), max(1, int(round(spec.tile * zx))),
            max(1, int(round(spec.stride * zy))), max(1, int(round(spec.stride * zx))))


def _starts(length: int, side: int, step: int) -> list[int]:
    starts = list(range(0, length - side + 1, step)) or [0]
    if starts[-1] + side < length:
        starts.append(length - side)
    return starts


def tile_boxes(rgb: np.ndarray, spec: TilingSpec, image_um: tuple[float, float] | None = None
               ) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) boxes in original image pixels; at least one box even for tiny images.

    Without a physical scale (``spec.microns_per_pixel`` or ``image_um`` missing) an image smaller than a tile
    is one box, the whole image. With one, a box keeps its physical size and may reach beyond a small image
    (a 400x field is smaller than one tile): ``tile_pixels`` mirrors the image out to fill it.
    """
    h, w = rgb.shape[:2]
    side_y, side_x, step_y, step_x = tile_sides(spec, image_um)
    scaled = bool(spec.microns_per_pixel and image_um)
    if not scaled and (h < side_y or w < side_x):
        return [(0, h, 0, w)]
    tissue = tissue_mask(rgb, spec.tissue).astype(np.float32)
    integral = cv2.integral(tissue)
    boxes, fractions = [], []
    for y in _starts(h, side_y, step_y):
        for x in _starts(w, side_x, step_x):
            y1, x1 = min(h, y + side_y), min(w, x + side_x)
            total = integral[y1, x1] - integral[y, x1] - integral[y1, x] + integral[y, x]
            boxes.append((y, y + side_y, x, x + side_x))
            fractions.append(total / ((y1 - y) * (x1 - x)))
    kept = [b for b, f in zip(boxes, fractions) if f >= spec.min_tissue]
    # None reaches the minimum: the best one still, so the picture gets a call, but the result says how little
    # tissue it rests on (``tiling_warnings``).
    return kept or [boxes[int(np.argmax(fractions))]]


def tissue_share(rgb: np.ndarray, box: tuple[int, int, int, int], kind: str = "stained") -> float:
    """The tissue fraction of the box's part inside the image, as ``tile_boxes`` measures it."""
    y0, y1, x0, x1 = box
    h, w = rgb.shape[:2]
    inside = rgb[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    return float(tissue_mask(inside, kind).mean()) if inside.size else 0.0


# A small field, its tiles mirrored out, is called about as well as a coin: the bundle's leave-one-lab-out check
# of such fields (23-69 um, lab_transfer FIELD_SIDES) measured accuracy 0.50-0.60 (model card, "small fields").
SMALL_FIELD = ("it is mirrored out to fill the tile, and small fields (23-69 um, mirrored out the same way) were "
               "called at about chance in the histology model's check (see its model card)")
GREY_SPREAD = 8  # 99th percentile of a pixel's max - min over R, G, B below which a picture holds no colour


def is_grey(rgb: np.ndarray) -> bool:
    """A picture without colour: one channel, or three nearly equal ones (a grey picture saved as RGB or JPEG).
    H&E tissue differs between channels by tens of grey levels; sampled on a grid for large pictures."""
    if rgb.ndim == 2 or rgb.shape[2] == 1:
        return True
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 1_000_000)))
    sample = rgb[::step, ::step, :3].astype(np.int16)
    return float(np.percentile(sample.max(axis=2) - sample.min(axis=2), 99)) < GREY_SPREAD


# H&E hues (degrees): eosin's pinks and haematoxylin's purples and blue-purples, 240-360 and 0-20. Of the stained
# pixels of the 146 breast H&E pictures looked at (UCSB's 46 and every fourth BACH picture, two labs), at least 54 %
# lie there (median 99 %); of a landscape photograph's 0 %, a photographed whiteboard's 2 %.
H_AND_E_HUES = (240.0, 20.0)
MIN_H_AND_E_SHARE = 0.2


def h_and_e_share(rgb: np.ndarray) -> float | None:
    """The share of a colour picture's stained pixels (``tissue_mask``) whose hue is an H&E hue; None where fewer
    than 100 pixels are stained. Sampled on a grid of about 250,000 pixels."""
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 250_000)))
    sample = np.ascontiguousarray(rgb[::step, ::step, :3])
    stained = tissue_mask(sample)
    if stained.sum() < 100:
        return None
    hue = cv2.cvtColor(sample, cv2.COLOR_RGB2HSV_FULL)[..., 0][stained].astype(np.float32) * (360.0 / 256.0)
    low, high = H_AND_E_HUES
    return float(np.mean((hue >= low) | (hue <= high)))


def stain_warnings(rgb: np.ndarray) -> list[str]:
    """A colour picture whose colours are not H&E's (another stain, a photograph, a diagram): the H&E model's answer
    there is untested, however sure it is."""
    share = None if rgb.ndim == 2 else h_and_e_share(rgb)
    if share is None or share >= MIN_H_AND_E_SHARE:
        return []
    return [f"Not H&E colours: only {share:.0%} of the picture's coloured pixels have the pinks and purples of an "
            "H&E stain (at least 54 % in every H&E training picture looked at); the model was trained on H&E only: "
            "its output here is untested (another stain, or not a slide?)."]


def tiling_warnings(rgb: np.ndarray, boxes: list[tuple[int, int, int, int]], spec: TilingSpec,
                    image_um: tuple[float, float] | None = None) -> list[str]:
    """What a reader must know about a call made from ``tile_boxes``'s boxes: that no tile held the tissue the
    model needs (the call rests on the best one, mostly glass), or that the picture is smaller than one tile at
    the bundle's scale (both start "Low confidence", as a call below the confidence threshold does); for an H&E
    bundle, that the picture's colours are not H&E's."""
    out = []
    h, w = rgb.shape[:2]
    # Several boxes are only returned when each reached the minimum; one may be the fallback of an empty picture.
    if len(boxes) == 1:
        share = tissue_share(rgb, boxes[0], spec.tissue)
        if share < spec.min_tissue:
            out.append(f"Low confidence: no part of the picture holds the tissue the model needs: the best tile is "
                       f"{share:.0%} tissue where the model needs {spec.min_tissue:.0%}; the call rests on mostly "
                       "glass or background and means little.")
    side_y, side_x = tile_sides(spec, image_um)[:2]
    if spec.microns_per_pixel and image_um and (h < side_y or w < side_x):
        tile_um = spec.tile * spec.microns_per_pixel
        out.append(f"Low confidence: the picture ({w * image_um[1]:.0f} x {h * image_um[0]:.0f} um) is smaller than "
                   f"one {tile_um:.0f}-um tile: {SMALL_FIELD}.")
    if spec.tissue == "stained":
        out += stain_warnings(rgb)
    return out


def tile_pixels(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box's pixels; where it reaches beyond the image, the image mirrored out (same tissue, same scale)."""
    y0, y1, x0, x1 = box
    h, w = rgb.shape[:2]
    inside = rgb[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    pads = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w))) + ((0, 0),) * (rgb.ndim - 2)
    return np.pad(inside, pads, mode="symmetric") if any(sum(p) for p in pads[:2]) else inside


def aggregate(tile_probs: np.ndarray, spec: TilingSpec) -> np.ndarray:
    """Image-level class probabilities from tile probabilities (N, K)."""
    if spec.aggregate == "mean":
        return tile_probs.mean(axis=0)
    if spec.aggregate == "max" and tile_probs.shape[1] == 2:
        positive = float(tile_probs[:, 1].max())
        return np.array([1.0 - positive, positive])
    raise ValueError(f"unknown aggregation '{spec.aggregate}' for {tile_probs.shape[1]} classes")


def tile_map(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]], values: np.ndarray) -> np.ndarray:
    """Per-pixel average of the values of the tiles covering it (0 where no tile)."""
    total = np.zeros(shape, np.float32)
    count = np.zeros(shape, np.float32)
    for (y0, y1, x0, x1), v in zip(boxes, values):
        total[y0:y1, x0:x1] += v
        count[y0:y1, x0:x1] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
