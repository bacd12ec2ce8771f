"""How the exam window draws a hung mammography exam: each film at up to full resolution, one zoom, pan and window
for the four views, Qt-free (gui.hanging_view binds a widget per view to it).

Why: calcifications are specks of a few pixels of the film; a reader magnifies the same place of both breasts to
compare them, so the views zoom and pan together, the left breast's about the mirror point of the right's (the
pictures meet back to back: a point near the right breast's chest wall is near the left's too), and brighten or
darken together, each film from its own window (films of two detectors differ in grey levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from core.export.report import draw_findings
from core.imaging.record import VOI_LUT
from core.imaging.windowing import WindowPreset, apply_window, drawable_window
from core.inference.results import Finding
from core.measurements import RULER_RGB, Ruler, ruler_within
from core.series.hanging import MammoView, chest_wall_side, hung_findings, needs_flip, needs_mirror

MAX_FILM_ROWS = 4096  # a film is held at most this tall (4,096 x 3,328 float32: 54 MB; a 4,688-row film is 0.87 of it)
MIN_ZOOM, MAX_ZOOM = 1.0, 32.0  # the fitted exam to 32x (a 0.1-mm film's pixel over 10 screen pixels on a 1,200-px place)


@dataclass(frozen=True)
class HungFilm:
    """A view's film as hung: ``values`` (modality values, float32; uint8 RGB for colour) mirrored and turned upright
    as said, ``window`` its own default (None: colour), ``inverted`` for MONOCHROME1, ``source_shape`` the picture
    the analysis saw (its marks' pixels). ``levels``: the film halved again and again, made as a fitted view needs
    them (drawing a 4,096-row film into 800 rows averages a level of 1,024 rows, not the film: a quarter of the
    work per view and wheel step)."""

    values: np.ndarray
    window: WindowPreset | None
    inverted: bool
    mirrored: bool
    flipped: bool
    source_shape: tuple[int, int]
    # mm per pixel of that picture (rows, columns) as the main viewer measures with it (ImagerPixelSpacing, the
    # magnification and plausibility taken into account: core.imaging), None where unknown; ``downsample``: the
    # file's pixels per pixel of that picture
    picture_mm: tuple[float, float] | None = None
    downsample: int = 1
    levels: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def extent(self) -> tuple[float, float, bool]:
        """(height, width) of the film: in mm (True) where its spacing is known, else in the file's pixels (False)."""
        rows, columns = self.source_shape
        if self.picture_mm:
            return rows * self.picture_mm[0], columns * self.picture_mm[1], True
        return rows * self.downsample, columns * self.downsample, False

    def level(self, shrink: float) -> np.ndarray:
        """The film at the coarsest halving that still has a pixel for each view pixel where it is drawn ``shrink``
        times smaller (``shrink`` <= 1: the film itself). Each level covers the whole film (area-averaged)."""
        k = 0
        while 2 ** (k + 1) <= shrink and min(self.values.shape[:2]) >= 2 ** (k + 2):
            k += 1
        if k and k not in self.levels:
            finer = self.level(2 ** (k - 1))
            rows, columns = finer.shape[:2]
            self.levels[k] = cv2.resize(finer, (max(1, round(columns / 2)), max(1, round(rows / 2))),
                                        interpolation=cv2.INTER_AREA)
        return self.levels[k] if k else self.values

    def picture(self, window: WindowPreset | None = None) -> np.ndarray:
        """The whole film in 8 bits, in its own window or ``window``."""
        return self.windowed(self.values, window or self.window)

    def windowed(self, values: np.ndarray, window: WindowPreset | None) -> np.ndarray:
        """``values`` (this film's, or a part or level of it) in 8 bits through ``window``, inverted for MONOCHROME1."""
        if window is None:
            return np.ascontiguousarray(values)
        out = apply_window(values, window.center, window.width, window.function)
        return 255 - out if self.inverted else out


def hung_film(view: MammoView, max_rows: int = MAX_FILM_ROWS) -> HungFilm:
    """The view's film read, at most ``max_rows`` tall, mirrored for the hanging and turned upright where its
    PatientOrientation says it is upside down (core.series.hanging: ``needs_mirror``, ``needs_flip``)."""
    from core.imaging import load_image

    record = load_image(view.ref.path)
    display = record.display(view.ref.frame)
    values = record.values(view.ref.frame)
    window = record.default_window(view.ref.frame)
    inverted = record.inverted
    if window is not None and window.name == VOI_LUT:  # a curve no window is: the file's own picture, windowed 1:1
        values, window, inverted = display.astype(np.float32), WindowPreset(VOI_LUT, 127.5, 255.0, "LINEAR_EXACT"), False
    scale = min(1.0, max_rows / values.shape[0])
    if scale < 1.0:
        values = cv2.resize(values, (max(1, round(values.shape[1] * scale)), max_rows), interpolation=cv2.INTER_AREA)
    mirror = needs_mirror(view.laterality, chest_wall_side(display, view.ref.patient_orientation))
    flip = needs_flip(view.laterality, view.view, view.ref.patient_orientation)
    if mirror or flip:
        values = values[::-1 if flip else 1, ::-1 if mirror else 1]
    spacing, _ = record.measuring_spacing()
    return HungFilm(np.ascontiguousarray(values), window, inverted, mirror, flip, display.shape[:2],
                    tuple(spacing) if spacing else None, record.downsample)


@dataclass(frozen=True)
class Rect:
    """A film's place on its view, in the view's pixels (floats: the film's edges fall between pixels)."""

    x: float
    y: float
    width: float
    height: float


@dataclass
class ExamViewport:
    """One zoom, pan and window for every view of the exam.

    ``zoom`` and ``shift`` move each view's fitted film as x -> zoom * (x - centre) + centre + shift, in fractions of
    the view (x across, y down), in the right breast's frame: a left-breast view is moved as its mirror image, so
    its films move with the right's back to back. ``centre_shift`` moves each film's window centre by that share of its
    own width, ``contrast`` divides its width: one drag changes every film alike from its own window."""

    zoom: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    centre_shift: float = 0.0
    contrast: float = 1.0

    def reset(self) -> None:
        self.fit()
        self.own_window()

    def fit(self) -> None:
        """Every film fitted in its view again; the window as it is."""
        self.zoom, self.shift = 1.0, (0.0, 0.0)

    def own_window(self) -> None:
        """Every film in its own window again; zoom and pan as they are."""
        self.centre_shift, self.contrast = 0.0, 1.0

    @property
    def moved(self) -> bool:
        return (self.zoom, self.shift) != (1.0, (0.0, 0.0))

    @property
    def windowed(self) -> bool:
        return (self.centre_shift, self.contrast) != (0.0, 1.0)

    def zoom_at(self, factor: float, point: tuple[float, float], right: bool = True) -> None:
        """Zoom by ``factor`` (within MIN_ZOOM-MAX_ZOOM) keeping the film under ``point`` (fractions of a view; of a
        left-breast view where not ``right``) where it is; back at the fitted size the films are fitted again."""
        if not (math.isfinite(factor) and factor > 0 and all(math.isfinite(v) for v in point)):
            return
        x, y = self._frame(point, right)
        new = min(MAX_ZOOM, max(MIN_ZOOM, self.zoom * factor))
        if new == MIN_ZOOM:
            self.zoom, self.shift = 1.0, (0.0, 0.0)
            return
        f = new / self.zoom
        sx, sy = self.shift
        self.zoom, self.shift = new, (x - 0.5 - f * (x - 0.5 - sx), y - 0.5 - f * (y - 0.5 - sy))

    def pan(self, dx: float, dy: float, right: bool = True) -> None:
        """Move the films by (dx, dy) fractions of a view, as dragged on a right-breast view (else a left one)."""
        if self.zoom > MIN_ZOOM and math.isfinite(dx) and math.isfinite(dy):
            self.shift = (self.shift[0] + (dx if right else -dx), self.shift[1] + dy)

    def window_by(self, dx: float, dy: float) -> None:
        """A right-drag of dx view widths and dy view heights: right widens every window (less contrast), down
        brightens (the centre moves down), as the main viewer's drag does."""
        if not (math.isfinite(dx) and math.isfinite(dy)):
            return
        self.contrast = min(50.0, max(0.02, self.contrast * math.exp(min(10.0, max(-10.0, -dx * 2.0)))))
        self.centre_shift = min(5.0, max(-5.0, self.centre_shift - dy))

    def window(self, film: HungFilm) -> WindowPreset | None:
        """``film``'s window moved as every film's is (None for colour); a MONOCHROME1 film's centre the other way,
        so that one drag brightens every film (its grey levels are inverted after the window)."""
        if film.window is None:
            return None
        base = film.window
        if not self.windowed:
            return base
        shift = -self.centre_shift if film.inverted else self.centre_shift
        return drawable_window("Exam", base.center + shift * base.width, base.width / self.contrast, base.function)

    def place(self, fitted: Rect, view: tuple[int, int], right: bool) -> Rect:
        """Where the film fitted at ``fitted`` lies on a view of ``view`` (width, height) pixels."""
        width, height = view
        x0 = fitted.x if right else width - fitted.x - fitted.width  # in the right breast's frame
        nx = (x0 / width - 0.5) * self.zoom + 0.5 + self.shift[0]
        ny = (fitted.y / height - 0.5) * self.zoom + 0.5 + self.shift[1]
        w, h = fitted.width * self.zoom, fitted.height * self.zoom
        x = nx * width
        return Rect(x if right else width - x - w, ny * height, w, h)

    def _frame(self, point: tuple[float, float], right: bool) -> tuple[float, float]:
        return (point[0] if right else 1.0 - point[0]), point[1]


def fitted_rect(view: tuple[int, int], drawn: tuple[float, float], right: bool) -> Rect:
    """A film drawn ``drawn`` (width, height) at the fitted zoom: against the view's right edge for a right breast
    (its left edge for a left one) so the pair meets back to back, centred down the view."""
    width, height = view
    w, h = drawn
    return Rect(width - w if right else 0.0, (height - h) / 2, w, h)


def render(film: HungFilm, rect: Rect, view: tuple[int, int], window: WindowPreset | None) -> np.ndarray:
    """The view (height, width) uint8 (RGB for colour films): black, with ``film`` drawn where ``rect`` puts it, in
    ``window``. Only the visible part is resampled: area-averaged where the film is shrunk (from its coarsest
    level that still has a pixel per view pixel), linear where it is magnified."""
    width, height = view
    if rect.width <= 0 or rect.height <= 0:
        return np.zeros((height, width) + film.values.shape[2:], np.uint8)
    source = film.level(min(film.values.shape[1] / rect.width, film.values.shape[0] / rect.height))
    rows, columns = source.shape[:2]
    shape = (height, width) + film.values.shape[2:]
    canvas = np.zeros(shape, np.uint8)
    x0, y0 = max(0, math.floor(rect.x)), max(0, math.floor(rect.y))
    x1, y1 = min(width, math.ceil(rect.x + rect.width)), min(height, math.ceil(rect.y + rect.height))
    if x1 <= x0 or y1 <= y0:
        return canvas
    sx, sy = rect.width / columns, rect.height / rows  # view pixels per film pixel
    if sx < 1.0 and sy < 1.0:  # shrunk: the film pixels under the visible view pixels, averaged
        c0, c1 = _span((x0 - rect.x) / sx, (x1 - rect.x) / sx, columns)
        r0, r1 = _span((y0 - rect.y) / sy, (y1 - rect.y) / sy, rows)
        part = cv2.resize(source[r0:r1, c0:c1], (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    else:  # magnified: each view pixel's centre sampled from the film
        matrix = np.float32([[1 / sx, 0, (x0 + 0.5 - rect.x) / sx - 0.5], [0, 1 / sy, (y0 + 0.5 - rect.y) / sy - 0.5]])
        part = cv2.warpAffine(source, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
        # the film's own edge: view pixels whose centre lies outside the film stay black
        inside_x = (np.arange(x0, x1) + 0.5 >= rect.x) & (np.arange(x0, x1) + 0.5 <= rect.x + rect.width)
        inside_y = (np.arange(y0, y1) + 0.5 >= rect.y) & (np.arange(y0, y1) + 0.5 <= rect.y + rect.height)
        keep = inside_y[:, None] & inside_x[None, :]
    drawn = film.windowed(part, window)
    if sx < 1.0 and sy < 1.0:
        canvas[y0:y1, x0:x1] = drawn
    else:
        canvas[y0:y1, x0:x1][keep] = drawn[keep]
    return canvas


def _span(start: float, stop: float, size: int) -> tuple[int, int]:
    """Whole film pixels from ``start`` to ``stop`` (at least one), within the film."""
    a = min(max(0, math.floor(start)), size - 1)
    return a, min(size, max(a + 1, math.ceil(stop)))


def marks_on_view(findings: list[Finding], film: HungFilm, rect: Rect) -> list[Finding]:
    """A view's findings (pixels of the picture analysed) where they lie on the view: on the hung film (mirrored and
    flipped with it), then scaled and moved with it."""
    rows, columns = film.values.shape[:2]
    on_film = hung_findings(findings, film.source_shape, (rows, columns), film.mirrored, film.flipped)
    sx, sy = rect.width / columns, rect.height / rows
    return [replace(f, x=rect.x + (f.x + 0.5) * sx - 0.5, y=rect.y + (f.y + 0.5) * sy - 0.5, r=f.r * (sx + sy) / 2)
            for f in on_film]


def film_point(rect: Rect, film: HungFilm, x: float, y: float) -> tuple[float, float]:
    """The hung film's point (its pixel (i, j) covers [i, i + 1) x [j, j + 1)) under view point (x, y)."""
    rows, columns = film.values.shape[:2]
    return (x - rect.x) * columns / rect.width, (y - rect.y) * rows / rect.height


def view_point(rect: Rect, film: HungFilm, x: float, y: float) -> tuple[float, float]:
    """Where the hung film's point (x, y) lies on the view (``film_point``'s inverse)."""
    rows, columns = film.values.shape[:2]
    return rect.x + x * rect.width / columns, rect.y + y * rect.height / rows


def ruler_text(ruler: Ruler, film: HungFilm) -> str:
    """A ruler on the hung film (its pixels: a film over MAX_FILM_ROWS is held smaller than the file) as long as it is
    on the breast: '18.0 mm' where the film's spacing is known (``HungFilm.extent``), else in the file's pixels.
    Mirroring and turning the film upright change no length."""
    extent = film.extent
    rows, columns = film.values.shape[:2]
    per_row, per_column = extent[0] / rows, extent[1] / columns
    if extent[2]:
        return ruler.text((per_row, per_column))
    return Ruler(ruler.x0 * per_column, ruler.y0 * per_row, ruler.x1 * per_column, ruler.y1 * per_row).text(None)


def draw_rulers(canvas: np.ndarray, rulers: list[tuple[Ruler, str]], scale: float = 1.0) -> np.ndarray:
    """``canvas`` in RGB with each ruler (in the canvas's pixels) drawn as a line and its ``text`` on a dark box beside
    its end, as the main viewer draws them; ``scale``: canvas pixels per screen pixel (HiDPI), so the text reads alike."""
    if not rulers:
        return canvas
    rgb = np.ascontiguousarray(canvas if canvas.ndim == 3 else np.repeat(canvas[..., None], 3, axis=2))
    height, width = rgb.shape[:2]
    thickness, size = max(1, round(1.5 * scale)), 0.45 * scale
    pad = round(3 * scale)
    for ruler, text in rulers:
        if ruler_within(ruler.x0, ruler.y0, ruler.x1, ruler.y1, width, height) is None:
            continue  # panned off the view: its length is not left over other tissue
        # pixel k covers [k, k + 1): a point's pixel is its floor, as the marks are placed
        ends = [(round(ruler.x0 - 0.5), round(ruler.y0 - 0.5)), (round(ruler.x1 - 0.5), round(ruler.y1 - 0.5))]
        cv2.line(rgb, *ends, RULER_RGB, thickness, cv2.LINE_AA)
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, thickness)
        box_w, box_h = text_w + 2 * pad, text_h + baseline + 2 * pad
        left = min(max(ends[1][0] + round(8 * scale), 0), max(0, width - box_w - 1))  # kept inside: a cut length misreads
        top = min(max(ends[1][1] + round(4 * scale), 0), max(0, height - box_h - 1))
        cv2.rectangle(rgb, (left, top), (left + box_w, top + box_h), (0, 0, 0), -1)
        cv2.putText(rgb, text, (left + pad, top + pad + text_h), cv2.FONT_HERSHEY_SIMPLEX, size, RULER_RGB, thickness,
                    cv2.LINE_AA)
    return rgb


def draw_marks(canvas: np.ndarray, marks: list[Finding], scale: float = 1.0) -> np.ndarray:
    """``canvas`` in RGB with the marks whose circle reaches into it drawn as the report and the main viewer draw
    them (a mark zoomed or panned off the view is not drawn: its score had stayed, pushed inside, over other tissue),
    at one size on the screen (``scale``: canvas pixels per screen pixel), as the rulers."""
    rgb = canvas if canvas.ndim == 3 else np.repeat(canvas[..., None], 3, axis=2)
    height, width = rgb.shape[:2]
    shown = [m for m in marks if m.x + m.r >= 0 and m.x - m.r < width and m.y + m.r >= 0 and m.y - m.r < height]
    return draw_findings(rgb, shown, (max(1, round(1.5 * scale)), 0.45 * scale)) if shown else rgb
