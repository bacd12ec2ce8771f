"""Where the picture is in an ultrasound screen capture.

A scanner exports its whole screen: the scan area sits on black among patient text, presets, a grey-scale
bar, depth ticks and logos. The ultrasound models were trained on images already cut to the scan area
(BUSI, BUS-BRA), so a screen capture has to be cut the same way before it reaches them; cutting an image
that is already the scan area must change nothing, or next to nothing.

Rule: the screen's background is pure black, the scan area is not (even an anechoic cyst carries a few
grey levels of noise). Pixels above black, opened with a disc of 4 % of the image side, keep the scan area
and lose text, ticks and thin bars. The largest region is the scan area's core; a dark cyst or shadow can
cut it in two, so other large regions that lie within its columns (its far or near part, stacked above or
below) join it, while bars as wide as the screen and panels beside it do not. A region beside it as large as
half of it is a dual view's other pane and joins too: leaving out a pane would leave out what it shows.
"""

from __future__ import annotations

import cv2
import numpy as np

WORK_SIDE = 256  # the rule runs on a copy this size: speed, and kernel sizes that mean the same on any image
BLACK = 2  # grey levels at or below this (after a 3x3 median, which drops JPEG ringing) are background
THIN = 0.04  # parts thinner than this share of the image side are screen furniture, not scan area
JOIN_AREA = 0.02  # regions at least this share of the image may join the largest one...
JOIN_OVERLAP = 0.8  # ...if this share of their width lies within its columns
TWIN_AREA = 0.5  # ...or wherever they lie, if at least this share of the largest (both panes of a dual view)
MIN_AREA = 0.15  # a scan area smaller than this share of the image is not trusted: the whole image is kept


def scan_area(grey: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the scan area in a uint8 grey picture; the whole picture where none stands out."""
    return find_scan_area(grey) or (0, grey.shape[0], 0, grey.shape[1])


def capture_scan_area(record, samples: int = 8) -> tuple[int, int, int, int] | None:
    """The scan area of a screen capture, one box for all its frames: the union of the header's ultrasound
    regions where it states them (the scanner's own word, whatever the pixels look like), else the pixel rule on
    the brightest of up to ``samples`` frames spread over a cine (a fan that moves, or a frame of near-black scan,
    then shows its whole extent); None where neither finds one. For blacking out burned-in text: a box that
    misses part of the screen must not be taken for the whole picture."""
    if record.us_regions:
        y0s, y1s, x0s, x1s = zip(*record.us_regions)
        return max(0, min(y0s)), min(record.rows, max(y1s)), max(0, min(x0s)), min(record.columns, max(x1s))
    n = min(samples, record.frames)
    frames = sorted({round(k * (record.frames - 1) / max(n - 1, 1)) for k in range(n)})  # the first and last too
    brightest = None
    for frame in frames:
        picture = record.display(frame)
        grey = picture if picture.ndim == 2 else cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)
        brightest = grey if brightest is None else np.maximum(brightest, grey)
    return find_scan_area(brightest)


def trim_black(grey: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """``box`` less its outer rows and columns that are background at full resolution: the rule works on a copy
    256 pixels wide and its box, scaled back, carried 1-3 px of black screen on each side (a strip the models,
    trained on pictures cut exactly, read as part of the scan: up to 0.25 of a class probability)."""
    y0, y1, x0, x1 = box
    inside = grey[max(0, y0):y1, max(0, x0):x1]
    if inside.size == 0:
        return box
    above = cv2.medianBlur(np.ascontiguousarray(inside), 3) > BLACK
    rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    if not len(rows):
        return box
    y0, x0 = max(0, y0), max(0, x0)
    return y0 + int(rows[0]), y0 + int(rows[-1]) + 1, x0 + int(cols[0]), x0 + int(cols[-1]) + 1


def find_scan_area(grey: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the scan area in a uint8 grey picture; None where none stands out."""
    h, w = grey.shape
    s = min(1.0, WORK_SIDE / max(h, w))
    small = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    above = (cv2.medianBlur(small, 3) > BLACK).astype(np.uint8)
    k = max(3, round(THIN * max(small.shape))) | 1  # odd: an even disc shifts what it opens by a pixel
    opened = cv2.morphologyEx(above, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n < 2:
        return None
    order = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    x0, y0, bw, bh = (int(v) for v in stats[order[0], :4])
    x1, y1 = x0 + bw, y0 + bh
    for i in order[1:]:
        cx, cy, cw, ch, area = (int(v) for v in stats[i])
        if area < JOIN_AREA * opened.size:
            break
        beside_alike = area >= TWIN_AREA * stats[order[0], cv2.CC_STAT_AREA]  # a dual view's other pane
        if beside_alike or min(x1, cx + cw) - max(x0, cx) >= JOIN_OVERLAP * cw:
            x0, y0, x1, y1 = min(x0, cx), min(y0, cy), max(x1, cx + cw), max(y1, cy + ch)
    if (x1 - x0) * (y1 - y0) < MIN_AREA * opened.size:
        return None
    return trim_black(grey, (int(np.floor(y0 / s)), min(h, int(np.ceil(y1 / s))),
                             int(np.floor(x0 / s)), min(w, int(np.ceil(x1 / s)))))
