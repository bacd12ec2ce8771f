"""How a mammography detector reads a film: its scale, the tiles it searches, the film score and the CAD marks.

One place for what training (core.training.mammo_finetune) and the product (core.inference.paths) both do, so the
cross-validated numbers are those of the code that runs: the film is brought to the detector's scale
(``FilmScoring.mm_per_pixel``, mini-MIAS's 200 um), tiles are cut on a grid where the breast search region
(core.imaging.breast: no air, labels or pectoral muscle) covers enough of them, each tile gets the detector's
probability, and the film's score is the mean of its highest few. A finding is what one breast shows and the
other does not, so where the woman's other film of the same view is there the score is taken against it
(this film's less the other's), with its own calibration; a film scored alone keeps the single-film one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from core.imaging.breast import breast_region


@dataclass(frozen=True)
class FilmScoring:
    """A mammography bundle's film reading (manifest ``film_scoring``); numbers chosen out of fold by woman."""

    mm_per_pixel: float = 0.2  # the film scale tiles are cut at (mini-MIAS: 200 um)
    tile: int = 224  # tile side at that scale (45 mm: a 5-30 mm mass fits in one)
    stride: int = 112
    min_breast: float = 0.25  # share of a tile that must be breast search region
    top: int = 3  # the film score is the mean of this many highest tile probabilities
    # p(abnormal) = 1 / (1 + exp(-(slope * score + intercept))): logistic calibration of the film score alone
    # and of the score less the other breast's (fitted on the out-of-fold scores).
    single_slope: float = 1.0
    single_intercept: float = 0.0
    paired_slope: float = 1.0
    paired_intercept: float = 0.0
    mark_threshold: float = 0.5  # tile probability a CAD mark needs (chosen for <= 1 false mark per film)
    # A mark moves to the strongest bright blob within one stride of it (scale-normalised Laplacian of Gaussian at
    # these two sigmas, film pixels; a mass of radius r answers most at sigma ~ r / 1.4); 0: marks stay where the
    # tiles put them.
    blob_sigma_small: float = 0.0
    blob_sigma_large: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mark_radius(self) -> float:
        """A mark's circle radius in film pixels: a quarter tile, how far a tile labelled positive may lie from
        the finding (its centre is in the tile's central half)."""
        return self.tile / 4

    def probability(self, score: float, paired: bool) -> float:
        slope, intercept = ((self.paired_slope, self.paired_intercept) if paired
                            else (self.single_slope, self.single_intercept))
        return float(1.0 / (1.0 + np.exp(-(slope * score + intercept))))


@dataclass(frozen=True)
class OtherBreast:
    """The woman's other film of the same view (found by core.series.contralateral)."""

    path: Path
    frame: int
    how: str  # what paired them, for the reader: "DICOM exam", "mini-MIAS numbering", "file name"


def tile_grid(shape: tuple[int, int], keep: np.ndarray, tile: int, stride: int, min_share: float
              ) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the tiles whose share of ``keep`` pixels reaches ``min_share``."""
    h, w = shape
    ys = list(range(0, max(1, h - tile + 1), stride))
    xs = list(range(0, max(1, w - tile + 1), stride))
    integral = cv2.integral(keep.astype(np.uint8))
    out = []
    for y in ys:
        for x in xs:
            inside = integral[y + tile, x + tile] - integral[y, x + tile] - integral[y + tile, x] + integral[y, x]
            if inside >= min_share * tile * tile:
                out.append((y, x))
    return out


def film_at_scale(grey: np.ndarray, mm: tuple[float, float], scoring: FilmScoring) -> np.ndarray:
    """The uint8 film resampled from (row, column) pixels of ``mm`` to the detector's scale (area averaging
    when shrinking, as a film scanned coarser would be)."""
    zy, zx = mm[0] / scoring.mm_per_pixel, mm[1] / scoring.mm_per_pixel
    if abs(zy - 1) < 1e-3 and abs(zx - 1) < 1e-3:
        return grey
    h, w = grey.shape
    size = (max(1, int(round(w * zx))), max(1, int(round(h * zy))))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA if zx * zy < 1 else cv2.INTER_LINEAR)


def search_region(film: np.ndarray, view: str = "MLO") -> np.ndarray:
    """Where findings are looked for on a film at the detector's scale: the breast without air, labels and pectoral
    muscle (core.imaging.breast)."""
    return breast_region(film, view=view).search


def search_tiles(film: np.ndarray, scoring: FilmScoring, search: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) int32 tile corners (y, x) over the film's breast search region (a film at the detector's scale;
    ``search``: that region, by default as for an MLO film, the view of every training film)."""
    if min(film.shape) < scoring.tile:  # smaller than one tile: nothing a 45-mm tile can be cut from
        return np.zeros((0, 2), np.int32)
    search = search_region(film) if search is None else search
    corners = tile_grid(film.shape, search, scoring.tile, scoring.stride, scoring.min_breast)
    return np.array(corners, np.int32).reshape(-1, 2)


def blob_response(film: np.ndarray, search: np.ndarray, scoring: FilmScoring) -> np.ndarray | None:
    """Bright-blob strength per film pixel (the larger of the two scale-normalised negative Laplacians of
    Gaussian), -inf outside the search region; None where the scoring does not move marks."""
    sigmas = [s for s in (scoring.blob_sigma_small, scoring.blob_sigma_large) if s > 0]
    if not sigmas:
        return None
    grey = film.astype(np.float32)
    response = np.max([-s * s * cv2.Laplacian(cv2.GaussianBlur(grey, (0, 0), s), cv2.CV_32F) for s in sigmas], axis=0)
    response[~search] = -np.inf
    edge = int(round(max(sigmas)))  # where the blur reflects the picture's border: no blob of its own
    response[:edge], response[-edge:], response[:, :edge], response[:, -edge:] = -np.inf, -np.inf, -np.inf, -np.inf
    return response


def cad_marks(corners: np.ndarray, probs: np.ndarray, scoring: FilmScoring, blobs: np.ndarray | None = None,
              threshold: float | None = None) -> list[tuple[float, float, float]]:
    """The CAD marks (x, y, score) in film pixels: ``marks`` at the scoring's threshold (or ``threshold``), each
    moved to the strongest blob of ``blobs`` (``blob_response``) within one stride of it where that is given; a
    mark moved within half a stride of a stronger one is the same finding and is dropped."""
    found = marks(corners, probs, scoring.mark_threshold if threshold is None else threshold, scoring.tile,
                  scoring.stride)
    if blobs is None:
        return found
    h, w = blobs.shape
    out = []
    for x, y, score in found:
        y0, y1 = int(max(0, y - scoring.stride)), int(min(h, y + scoring.stride))
        x0, x1 = int(max(0, x - scoring.stride)), int(min(w, x + scoring.stride))
        window = blobs[y0:y1, x0:x1]
        if window.size and np.isfinite(window).any():
            iy, ix = np.unravel_index(int(np.argmax(window)), window.shape)
            x, y = float(x0 + ix), float(y0 + iy)
        if all(np.hypot(x - kx, y - ky) > scoring.stride / 2 for kx, ky, _ in out):  # strongest first
            out.append((x, y, score))
    return out


def film_score(probs: np.ndarray, top: int) -> float:
    """The mean of the ``top`` highest tile probabilities (0 for a film without tiles)."""
    return float(np.sort(probs)[-top:].mean()) if len(probs) else 0.0


def marks(corners: np.ndarray, probs: np.ndarray, threshold: float, tile: int, suppress: float
          ) -> list[tuple[float, float, float]]:
    """Findings (x, y, score) in film pixels: tile centres above ``threshold``, strongest first, each taking
    the tiles within ``suppress`` px of it; a mark sits at the score-weighted centre of the tiles it took."""
    centres = corners[:, ::-1] + tile / 2  # (x, y)
    order = np.argsort(-probs)
    taken = np.zeros(len(probs), bool)
    out = []
    for i in order:
        if probs[i] < threshold:
            break
        if taken[i]:
            continue
        near = (np.hypot(*(centres - centres[i]).T) <= suppress) & ~taken
        taken |= near
        w = probs[near]
        x, y = (centres[near] * w[:, None]).sum(0) / w.sum()
        out.append((float(x), float(y), float(probs[i])))
    return out
