"""What the viewer shows, free of Qt: the series and slice, window/level, models, analysis, overlay layers.

The window and its panels bind to one ``ViewerState``: they call its methods when the user acts and
redraw when its events fire, so every rule of the view (which slice, which window, when an analysis no
longer applies, how a drag moves the window) lives here and is tested without a display.

Two ways to show images: ``open(record)`` shows one file (its frames are the slices), ``open_series(series)``
a series of the study index (``core.series``): its slices in position order, each loaded through a
``SeriesStack`` when it is shown, the neighbours prefetched. A window/level the user chose stays while
scrolling; analyses belong to the slice they were made on, and a series analysis gives every slice its
own results (probabilities, mask and outlines), so the overlays follow the slice.

Events are plain callback lists: ``state.events.window.connect(callback)``; each fires after the change,
and only when something changed, with the new value.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.imaging.record import VOI_LUT, ImageRecord, Modality, plausible_spacing
from core.imaging.windowing import WindowPreset, drawable_window
from core.inference.results import Analysis, ModelResult
from core.measurements import (Region, Ruler, patient_point, patient_position_text, region_within, ruler_within,
                               slice_position_text)
from core.models.scale import check_user_um
from core.series.analysis import SeriesAnalysis, SliceCache
from core.series.geometry import orientation_markers
from core.series.index import Series, SliceRef, index_files
from core.series.linking import slice_centre
from core.series.stack import SeriesStack

Callback = Callable[..., Any]

# Heatmap colour maps a viewer offers (OpenCV colour map ids).
COLORMAPS: dict[str, int] = {"jet": 2, "inferno": 14, "viridis": 16, "hot": 11}

# Window/level drag: a drag of 256 display pixels moves the centre by one window width, 128 pixels
# doubles or halves the width, so dragging feels the same on 8-bit, CT and 0-1 float data.
CENTER_STEP_PX = 256.0
WIDTH_DOUBLING_PX = 128.0
MICROMETRE_READOUT_MM = 0.01  # pixels finer than this (slide microscopy) have the cursor's offset in micrometres

# Windows by DICOM modality, in its units. CT in Hounsfield units (the usual reading windows); MR has no
# fixed units, so its brain window is measured on the slice shown when it is chosen (then kept while
# scrolling): the 1-99.5 % intensities of the head, the pixels above 10 % of the slice's 99.5th percentile.
CT_PRESETS = (
    WindowPreset("CT brain", 40.0, 80.0),
    WindowPreset("CT subdural", 75.0, 215.0),
    WindowPreset("CT bone", 400.0, 1800.0),
    WindowPreset("CT lung", -600.0, 1500.0),
    WindowPreset("CT soft tissue", 50.0, 350.0),
)
MR_BRAIN = "MR brain"


def mr_brain_preset(values: np.ndarray) -> WindowPreset:
    """The MR brain window of one slice: the 1-99.5 % intensities of the head (background left out)."""
    values = np.asarray(values, np.float32)
    top = float(np.percentile(values, 99.5))
    head = values[values > 0.1 * top] if top > 0 else values.ravel()
    if head.size < 16:
        head = values.ravel()
    lo, hi = (float(v) for v in np.percentile(head, [1.0, 99.5]))
    if hi <= lo:  # one grey level: mid grey (percentile_window's rule)
        lo, hi = lo - 0.5, hi + 0.5
    return WindowPreset(MR_BRAIN, (lo + hi) / 2.0, hi - lo, "LINEAR_EXACT")


_OPPOSITE = str.maketrans("LRAPHF", "RLPAFH")


def patient_orientation_markers(values: tuple[str, ...]) -> dict[str, str] | None:
    """The patient direction at each screen edge from PatientOrientation, for a projection image (a mammogram, a
    radiograph) that states no plane: its first value is the direction of the rows (towards the right edge), the second
    of the columns (towards the bottom), the opposite edges the opposite letters ('A\\R': left P, right A, top L,
    bottom R; 'FL': top HR). None unless it is two values made of the letters L, R, A, P, H and F (not a
    quadruped's terms, CR or D)."""
    if len(values) != 2 or not all(value and set(value) <= set("LRAPHF") for value in values):
        return None
    right, bottom = values
    return {"left": right.translate(_OPPOSITE), "right": right, "top": bottom.translate(_OPPOSITE), "bottom": bottom}


def _indexed_frames(path: Path) -> dict[int, SliceRef]:
    """Each frame of the file at ``path`` as the study index reads it (an enhanced file's plane from its functional
    groups, a projection's PatientOrientation); {} where it cannot be read again."""
    return {ref.frame: ref for series in index_files([path], root=path.parent).series for ref in series.slices}


def _listed_orientation(record: ImageRecord) -> tuple[float, ...] | None:
    """The top-level ImageOrientationPatient among the record's listed tags (six numbers), else None."""
    text = next((value for _, keyword, value in record.metadata if keyword == "ImageOrientationPatient"), "")
    try:
        cosines = tuple(float(v) for v in str(text).strip("[]() ").replace("\\", ",").split(","))
    except ValueError:
        return None
    return cosines if len(cosines) == 6 else None


class Event:
    """A list of callbacks called in order with the new value."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Callback] = []

    def connect(self, callback: Callback) -> Callback:
        self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callback) -> None:
        self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for callback in list(self._callbacks):
            callback(*args)

    def __len__(self) -> int:
        return len(self._callbacks)


class Events:
    """Named events of one object: ``events.name.connect(callback)``."""

    def __init__(self, *names: str) -> None:
        self._names = names
        for name in names:
            setattr(self, name, Event(name))

    def __iter__(self):
        return (getattr(self, name) for name in self._names)


def _fraction(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be between 0 and 1, not {value}")
    return value


class OverlayLayer:
    """One layer drawn over the image: shown or hidden, its opacity and (heatmaps) its threshold.

    ``events.changed`` fires with the layer after any field changes.
    """

    def __init__(self, name: str, visible: bool = True, opacity: float = 1.0, threshold: float = 0.0) -> None:
        self.name = name
        self.events = Events("changed")
        self._visible = bool(visible)
        self._opacity = _fraction(opacity, "opacity")
        self._threshold = _fraction(threshold, "threshold")

    def _set(self, attribute: str, value: Any) -> None:
        if getattr(self, attribute) != value:
            setattr(self, attribute, value)
            self.events.changed.emit(self)

    @property
    def visible(self) -> bool:
        return self._visible

    @visible.setter
    def visible(self, value: bool) -> None:
        self._set("_visible", bool(value))

    @property
    def opacity(self) -> float:
        return self._opacity

    @opacity.setter
    def opacity(self, value: float) -> None:
        self._set("_opacity", _fraction(value, "opacity"))

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._set("_threshold", _fraction(value, "threshold"))

    def toggle(self) -> None:
        self.visible = not self.visible


class HeatmapLayer(OverlayLayer):
    """The Grad-CAM layer: also its colour map and, for tiled histology, the top tile's own Grad-CAM."""

    def __init__(self, visible: bool = True, opacity: float = 0.45, threshold: float = 0.20,
                 colormap: str = "jet", tile: bool = False) -> None:
        super().__init__("heatmap", visible, opacity, threshold)
        self._colormap = self._check_colormap(colormap)
        self._tile = bool(tile)

    @staticmethod
    def _check_colormap(name: str) -> str:
        if name not in COLORMAPS:
            raise ValueError(f"unknown colour map {name!r}; one of {', '.join(COLORMAPS)}")
        return name

    @property
    def colormap(self) -> str:
        return self._colormap

    @colormap.setter
    def colormap(self, name: str) -> None:
        self._set("_colormap", self._check_colormap(name))

    @property
    def colormap_id(self) -> int:
        return COLORMAPS[self._colormap]

    @property
    def tile(self) -> bool:
        return self._tile

    @tile.setter
    def tile(self, value: bool) -> None:
        self._set("_tile", bool(value))


class MaskLayer(OverlayLayer):
    """The segmentation layer: filled at its opacity, or its outline only."""

    def __init__(self, visible: bool = True, opacity: float = 0.40, outline_only: bool = False) -> None:
        super().__init__("mask", visible, opacity)
        self._outline_only = bool(outline_only)

    @property
    def outline_only(self) -> bool:
        return self._outline_only

    @outline_only.setter
    def outline_only(self, value: bool) -> None:
        self._set("_outline_only", bool(value))


@dataclass
class Overlays:
    """The four layers: Grad-CAM heatmap, segmentation mask, lesion outlines with their sizes, and a
    detector's findings (CAD marks: circles with their scores)."""

    heatmap: HeatmapLayer = field(default_factory=HeatmapLayer)
    mask: MaskLayer = field(default_factory=MaskLayer)
    lesions: OverlayLayer = field(default_factory=lambda: OverlayLayer("lesions"))
    findings: OverlayLayer = field(default_factory=lambda: OverlayLayer("findings"))

    def __iter__(self):
        return iter((self.heatmap, self.mask, self.lesions, self.findings))


MAX_SERIES_KEPT = 4  # series whose slice outcomes and last series analysis stay in memory


def _file_span(i: int, loaded: int, in_file: int) -> tuple[int, int]:
    """The file's pixels (first, last) a picture pixel read ``in_file / loaded`` times smaller covers: the factor
    need not divide the file's side, so the span is taken from the two sides, not the factor (a 20-column file read
    at 1/3 in 6 columns: column 5 covers 16-19, not 15-17)."""
    scale = in_file / loaded
    first = min(in_file - 1, int(i * scale))
    return first, max(first, min(in_file - 1, int(np.ceil((i + 1) * scale)) - 1))


def _recent(kept: OrderedDict, key: str, value):
    """``kept[key] = value`` as the most recent entry, the oldest dropped beyond MAX_SERIES_KEPT; returns value."""
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > MAX_SERIES_KEPT:
        kept.popitem(last=False)
    return value


@dataclass(frozen=True)
class ViewSettings:
    """What the reader set on the image shown (slice or frame, window, inversion, rulers and regions by slice), to
    be set again when the same image is read again: its own modality restored, or History reopening it at a frame."""

    slice: int = 0
    window: WindowPreset | None = None
    inverted: bool = False
    rulers: dict[str | int, tuple[Ruler, ...]] = field(default_factory=dict)
    regions: dict[str | int, tuple[Region, ...]] = field(default_factory=dict)


class ViewerState:
    """The image on screen and everything about how it is shown.

    Events (each called with the new value): ``record`` (another image or series, or None), ``series``
    (the series opened, None for a single file), ``slice`` (index), ``window`` (the chosen window, None for
    the file's own default), ``modality``, ``scale`` (the user's micrometres per pixel of a microscopy image,
    None: the file's own), ``chosen_models``, ``analysis`` (or None: the analysis of the slice shown),
    ``series_analysis`` (or None), ``heatmap`` (the analysis, after Grad-CAM for another class replaced a
    heatmap), ``overlays`` (the layer that changed), ``rulers`` and ``regions`` (the rulers or the ellipse regions
    of the slice shown, after one was drawn or they were cleared) and ``inverted`` (the reader turned inverted
    grey levels on or off; another image opens with them off, read on ``record``). Scrolling a series fires
    ``slice`` only (and ``analysis`` when the results shown change), never ``record``.
    """

    def __init__(self, overlays: Overlays | None = None) -> None:
        self.events = Events("record", "series", "slice", "window", "modality", "scale", "chosen_models",
                             "analysis", "series_analysis", "heatmap", "overlays", "rulers", "regions", "inverted")
        self._record: ImageRecord | None = None
        self._slice = 0
        self._series: Series | None = None
        self._stack: SeriesStack | None = None
        self._slice_error: str | None = None
        self._slice_analyses: dict[str, Analysis] = {}  # series mode: single-slice analyses by slice key
        self._derived: dict[int, Analysis | None] = {}  # series mode: per-slice results of the series analysis
        self._series_analysis: SeriesAnalysis | None = None
        # Per series key, for the MAX_SERIES_KEPT series opened last: a series' slice outcomes hold a mask per slice
        # (a 600-slice CT: 150 MB per segmenter), so a long session must not keep every series it ever opened.
        self._caches: OrderedDict[str, SliceCache] = OrderedDict()
        self._series_analyses: OrderedDict[str, SeriesAnalysis] = OrderedDict()  # the last one per series key
        self.slice_cache = SliceCache()
        self._window: WindowPreset | None = None
        self._chosen_models: list[str] = []
        self._microns_per_pixel: float | None = None
        self._analysis: Analysis | None = None
        self.heatmap_model: str | None = None  # whose heatmap is drawn (``show_heatmap_of``); None: the first's
        self._file_frames: dict[int, SliceRef] | None = None  # a file opened on its own: its frames, read once
        self._rulers: dict[str | int, list[Ruler]] = {}  # by slice key in a series, else by frame
        self._regions: dict[str | int, list[Region]] = {}  # the same
        self._inverted = False
        self.overlays = overlays or Overlays()
        for layer in self.overlays:
            layer.events.changed.connect(self.events.overlays.emit)

    # ----- series and slice
    @property
    def record(self) -> ImageRecord | None:
        return self._record

    @property
    def downsample(self) -> int:
        """The file's pixels per pixel of the picture shown (a file read smaller to fit in memory), 1 without one."""
        return self._record.downsample if self._record is not None else 1

    def open(self, record: ImageRecord | None) -> None:
        """Show another image from its first slice, in its own window, with no analysis yet."""
        had_analysis, had_series = self._analysis is not None, self._series is not None
        had_series_analysis = self._series_analysis is not None
        self._close_stack()
        self._series, self._series_analysis, self._slice_error = None, None, None
        self._slice_analyses, self._derived = {}, {}
        self._record, self._slice, self._window, self._analysis = record, 0, None, None
        self._rulers, self._regions, self._inverted, self._file_frames = {}, {}, False, None
        self.heatmap_model = None
        had_scale = self._reset_scale()
        if had_series:
            self.events.series.emit(None)
        self.events.record.emit(record)
        if had_scale:
            self.events.scale.emit(None)
        if had_analysis:
            self.events.analysis.emit(None)
        if had_series_analysis:
            self.events.series_analysis.emit(None)

    def open_series(self, series: Series, stack: SeriesStack | None = None, start: int = 0,
                    modality: str | None = None) -> None:
        """Show ``series`` from slice ``start``: slices load through ``stack`` (default: a prefetching
        ``SeriesStack``), in their own window until one is chosen. Raises ImageLoadError, changing nothing,
        when the first slice cannot be loaded. Its slice cache and last series analysis are kept per series."""
        if not len(series):
            raise ValueError("the series has no slices")
        stack = stack or SeriesStack(series, modality=modality, prefetch=True)
        start = max(0, min(len(series) - 1, int(start)))
        record, _ = stack.record(start)  # may raise: nothing has changed yet
        had_analysis, had_series_analysis = self._analysis is not None, self._series_analysis is not None
        if self._stack is not stack:
            self._close_stack()
        self._series, self._stack, self._record, self._slice = series, stack, record, start
        self._window, self._slice_error, self._slice_analyses, self._derived = None, None, {}, {}
        self._rulers, self._regions, self._inverted = {}, {}, False
        self.heatmap_model = None
        had_scale = self._reset_scale()
        cache = self._caches.get(series.key)  # not `or`: an empty cache is falsy (len 0) and must be kept too
        self.slice_cache = _recent(self._caches, series.key, cache if cache is not None else SliceCache())
        self._series_analysis = self._series_analyses.get(series.key)
        if self._series_analysis is not None and ([r.key for r in self._series_analysis.series.slices]
                                                  != [r.key for r in series.slices]):
            # The folder was read again with slices added or gone: the kept verdicts (by slice position) no
            # longer describe this series; its slice outcomes (by slice) stay in the cache.
            del self._series_analyses[series.key]
            self._series_analysis = None
        self._analysis = self._analysis_for_slice()
        stack.set_current(start)
        self.events.series.emit(series)
        self.events.record.emit(record)
        if had_scale:
            self.events.scale.emit(None)
        if had_analysis or self._analysis is not None:
            self.events.analysis.emit(self._analysis)
        if had_series_analysis or self._series_analysis is not None:
            self.events.series_analysis.emit(self._series_analysis)

    def view_settings(self) -> ViewSettings:
        return ViewSettings(self._slice, self._window, self._inverted,
                            {key: tuple(rulers) for key, rulers in self._rulers.items()},
                            {key: tuple(regions) for key, regions in self._regions.items()})

    def restore_view(self, view: ViewSettings) -> None:
        """Show the slice, window, inversion, rulers and regions of ``view``, taken from this same image before it
        was read again (a window that no longer applies, e.g. to a colour picture, is not set)."""
        if self._record is None:
            return
        self.set_slice(view.slice)
        self.set_window(view.window)
        self.set_inverted(view.inverted)
        if view.rulers:
            self._rulers = {key: list(rulers) for key, rulers in view.rulers.items()}
            self.events.rulers.emit(self.rulers)
        if view.regions:
            self._regions = {key: list(regions) for key, regions in view.regions.items()}
            self.events.regions.emit(self.regions)

    def _close_stack(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = None

    @property
    def series(self) -> Series | None:
        """The series shown (None for a file opened on its own)."""
        return self._series

    @property
    def stack(self) -> SeriesStack | None:
        return self._stack

    @property
    def current_slice(self) -> SliceRef | None:
        """The series slice shown (None for a file opened on its own)."""
        return self._series.slices[self._slice] if self._series is not None else None

    @property
    def frame(self) -> int:
        """The frame of ``record`` shown: the slice's frame in a series, else the slice index."""
        ref = self.current_slice
        return ref.frame if ref is not None else self._slice

    @property
    def slice_error(self) -> str | None:
        """Why the series slice shown could not be loaded (it is drawn black), else None."""
        return self._slice_error

    @property
    def slice_index(self) -> int:
        return self._slice

    @property
    def slice_count(self) -> int:
        if self._series is not None:
            return len(self._series)
        return self._record.frames if self._record is not None else 0

    def set_slice(self, index: int) -> None:
        """Show slice ``index`` (clamped to the series); an analysis of another slice no longer applies.

        In a series the slice is loaded through the stack (its neighbours prefetched); a slice that fails to
        load is shown black with ``slice_error`` set. The chosen window stays."""
        if self._record is None:
            return
        index = max(0, min(self.slice_count - 1, int(index)))
        if index == self._slice:
            return
        if self._series is not None:
            try:
                self._record, _ = self._stack.record(index)
                self._slice_error = None
            except Exception as exc:  # noqa: BLE001 - a damaged slice is shown black and said, not raised
                self._slice_error = f"slice {index + 1}: {exc}"
            self._stack.set_current(index)
        self._slice = index
        self.events.slice.emit(index)
        if self._series is not None:
            shown = self._analysis_for_slice()
            if shown is not self._analysis:
                self._analysis = shown
                self.events.analysis.emit(shown)
        elif self._analysis is not None and self._analysis.frame != index:
            self.set_analysis(None)

    def step(self, delta: int, wrap: bool = False) -> None:
        """Move ``delta`` slices; ``wrap`` goes round (cine), otherwise stops at either end."""
        if self.slice_count < 2:
            return
        target = self._slice + delta
        self.set_slice(target % self.slice_count if wrap else target)

    def slice_text(self) -> str:
        """'3/30' for a file's frames; 'slice 3 / 24 · z = 12.5 mm' in a series: the coordinate of the middle of the
        slice's picture (where the comparison links it: a tilted slice's corner lies elsewhere) along the patient axis
        its plane faces (x sagittal, y coronal, z axial), or its position along the normal of an oblique plane
        (``core.measurements.slice_position_text``)."""
        ref = self.current_slice
        if ref is None:
            return f"{self._slice + 1}/{max(self.slice_count, 1)}"
        text = f"slice {self._slice + 1} / {self.slice_count}"
        where = slice_position_text(slice_centre(ref), ref.orientation)
        if where is not None:
            text += f" · {where}"
        return text

    def display(self):
        """The 8-bit picture of the current slice in the current window, its grey levels inverted where the reader
        chose so (black for a slice that failed). What is shown only: the models read the file's own rendering."""
        if self._slice_error is not None:
            return np.zeros(self._picture_shape(), np.uint8)
        picture = self._record.display(self.frame, self._window)
        return 255 - picture if self._inverted and self.has_window else picture

    def _picture_shape(self) -> tuple[int, int]:
        """(rows, columns) of the picture shown: the slice as loaded, or for a slice that failed its header's size."""
        if self._slice_error is not None:
            ref = self.current_slice
            return ref.rows or self._record.rows, ref.columns or self._record.columns
        return self._record.rows, self._record.columns

    @property
    def inverted(self) -> bool:
        """Grey levels shown inverted (white bone, black air in a radiograph's way; a mammogram read the other
        way round); kept while scrolling, off for the next image. Colour images are never inverted."""
        return self._inverted

    def set_inverted(self, on: bool) -> None:
        on = bool(on) and self.has_window
        if on != self._inverted:
            self._inverted = on
            self.events.inverted.emit(on)

    def orientation_markers(self) -> dict[str, str] | None:
        """The patient direction at each screen edge (left, right, top, bottom) of the slice shown, from its
        ImageOrientationPatient, else (a projection image) its PatientOrientation; None when neither is known."""
        ref = self._geometry()
        if ref is None:
            return None
        return orientation_markers(ref.orientation) or patient_orientation_markers(ref.patient_orientation)

    def _geometry(self) -> SliceRef | None:
        """The slice shown as the study index reads it (plane, position, pixel spacing, PatientOrientation): the series'
        slice, or the frame shown of a file opened on its own, its header read again once (an enhanced file's plane
        is in its functional groups); where that file cannot be read again, its listed ImageOrientationPatient."""
        ref = self.current_slice
        if ref is not None or self._record is None:
            return ref
        if self._file_frames is None:
            self._file_frames = _indexed_frames(self._record.path)
        indexed = self._file_frames.get(self.frame)
        return indexed or SliceRef(self._record.path, self.frame, orientation=_listed_orientation(self._record))

    @property
    def pixel_aspect(self) -> float:
        """How many times taller than wide a pixel of the picture shown is drawn: its spacing between rows over that
        between columns, by the analyzer's rule (1 for square or unknown pixels, and beyond 1:4, a header error);
        1 where the reader set a microscopy image's scale (one number: square pixels)."""
        if self._record is None or self._microns_per_pixel is not None:
            return 1.0
        return self._record.row_to_column()

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        """(between rows, between columns) in mm of the picture shown; None when unknown. A loaded slice's own (its
        file's, scaled where it was read smaller to fit in memory); for a slice that failed, its header's (its black
        picture has the header's size), where both are above zero. Where the reader set the scale of a microscopy
        image (``microns_per_pixel``, per pixel of the file: ``downsample`` times finer than the picture where the file
        was read smaller, as the analyses read it too), that one: it overrides the file's,
        and a histology PNG states none of its own, so rulers and regions would otherwise read in pixels. A file's
        spacing that is not believable for its picture (``spacing_warning``) is not measured with, as the
        segmenters do not."""
        return self._measuring_spacing()[0]

    @property
    def spacing_warning(self) -> str | None:
        """Why the file's pixel spacing is not used to measure (a 256-px brain slice 2.56 m across), else None."""
        return self._measuring_spacing()[1]

    def _measuring_spacing(self) -> tuple[tuple[float, float] | None, str | None]:
        if self._record is None:
            return None, None
        if self._microns_per_pixel is not None:
            mm = self._microns_per_pixel * self._record.downsample / 1000.0
            return (mm, mm), None
        if self._slice_error is None:
            return self._record.measuring_spacing()
        return plausible_spacing(self.current_slice.pixel_spacing_mm, *self._picture_shape(), self._record.modality)

    @property
    def spacing_source(self) -> str | None:
        """Where ``pixel_spacing_mm`` comes from: 'reader' (the scale the reader set on a microscopy image), 'file'
        (its header), None where it is unknown; so a measurement can say whose scale it rests on."""
        if self.pixel_spacing_mm is None:
            return None
        return "reader" if self._microns_per_pixel is not None else "file"

    # ----- rulers
    @property
    def rulers(self) -> list[Ruler]:
        """The rulers drawn on the slice shown (each slice keeps its own while the image or series is open)."""
        return list(self._rulers.get(self._ruler_key(), []))

    def _ruler_key(self) -> str | int:
        ref = self.current_slice
        return ref.key if ref is not None else self._slice

    def add_ruler(self, x0: float, y0: float, x1: float, y1: float) -> Ruler | None:
        """Measure from (x0, y0) to (x1, y1) in image pixels on the slice shown, the part inside the picture; None
        (nothing kept) without an image, for a line outside the picture or a click under two pixels."""
        if self._record is None:
            return None
        rows, columns = self._picture_shape()
        ruler = ruler_within(x0, y0, x1, y1, columns, rows, self.downsample)
        if ruler is not None:
            self._rulers.setdefault(self._ruler_key(), []).append(ruler)
            self.events.rulers.emit(self.rulers)
        return ruler

    def clear_rulers(self) -> None:
        """Remove the rulers of the slice shown."""
        if self._rulers.pop(self._ruler_key(), None):
            self.events.rulers.emit([])

    @property
    def regions(self) -> list[Region]:
        """The ellipse regions drawn on the slice shown (each slice keeps its own, as rulers do)."""
        return list(self._regions.get(self._ruler_key(), []))

    def measure_region(self, x0: float, y0: float, x1: float, y1: float) -> Region | None:
        """The ellipse in the box from (x0, y0) to (x1, y1), image pixels, with the statistics of the slice's own
        values inside it (Hounsfield units for CT; on a picture read smaller, averages of the file's, and it says so),
        not kept; None without a picture to read, for a box outside the picture or a click."""
        if self._record is None or self._slice_error is not None:
            return None
        unit = "HU" if self.dicom_modality == "CT" else ""
        return region_within(x0, y0, x1, y1, self._record.values(self.frame), unit, self._record.downsample)

    def add_region(self, x0: float, y0: float, x1: float, y1: float) -> Region | None:
        """``measure_region``, kept on the slice shown."""
        region = self.measure_region(x0, y0, x1, y1)
        if region is not None:
            self._regions.setdefault(self._ruler_key(), []).append(region)
            self.events.regions.emit(self.regions)
        return region

    def clear_measurements(self) -> None:
        """Remove the rulers and the regions of the slice shown."""
        self.clear_rulers()
        if self._regions.pop(self._ruler_key(), None):
            self.events.regions.emit([])

    # ----- window/level
    @property
    def has_window(self) -> bool:
        """Greyscale images have a window; colour images (histology, colour ultrasound) do not."""
        return self._record is not None and not self._record.is_color

    @property
    def window(self) -> WindowPreset | None:
        """The window the user chose; None means the file's own default rendering."""
        return self._window

    @property
    def effective_window(self) -> WindowPreset | None:
        """The window in use: the chosen one, else the one the frame on screen is drawn in by default (None for
        colour images); what the W/L readout says and a drag starts from."""
        if not self.has_window:
            return None
        return self._window or self._default_window()

    def _default_window(self) -> WindowPreset:
        """The window the frame on screen is drawn in by default (``ImageRecord.default_window``: a cine's frames
        each their own automatic one, a VOI LUT's equivalent); a slice that failed to load is drawn in the first."""
        if self._slice_error is not None:
            return self._record.window_presets[0]
        return self._record.default_window(self.frame) or self._record.window_presets[0]

    @property
    def dicom_modality(self) -> str:
        """The DICOM Modality of what is shown ('CT', 'MR', ...; '' when unknown)."""
        if self._series is not None and self._series.modality:
            return self._series.modality
        if self._record is None:
            return ""
        tag = next((value for _, keyword, value in self._record.metadata if keyword == "Modality"), "")
        return str(tag).strip().upper() or (self._record.modality.value if self._record.modality_source == "dicom"
                                            else "")

    @property
    def presets(self) -> list[WindowPreset]:
        """The windows this image offers: the modality's (CT: brain, subdural, bone, lung, soft tissue; MR:
        brain, measured on the slice shown), then the file's own DICOM windows, automatic and full range."""
        if not self.has_window:
            return []
        modality = self.dicom_modality
        ours: list[WindowPreset] = []
        if modality == "CT":
            ours = list(CT_PRESETS)
        elif modality == "MR" and self._slice_error is None:
            ours = [mr_brain_preset(self._record.values(self.frame))]
        return ours + list(self._record.window_presets)

    def set_window(self, preset: WindowPreset | None) -> None:
        if not self.has_window or preset == self._window:
            return
        self._window = preset
        self.events.window.emit(preset)

    def apply_preset(self, name: str) -> None:
        preset = next((p for p in self.presets if p.name == name), None)
        if preset is None:
            raise KeyError(f"no window preset {name!r}; one of {', '.join(p.name for p in self.presets)}")
        self.set_window(preset)

    def reset_window(self) -> None:
        self.set_window(None)

    def adjust(self, d_center: float, d_width: float) -> None:
        """Window/level drag by (vertical, horizontal) display pixels, in steps relative to the width.

        ``d_center`` = 256 moves the centre up by one width; ``d_width`` = 128 doubles the width
        (-128 halves it); a LINEAR window narrowed below 1 goes on narrowing as LINEAR_EXACT (``drawable_window``).
        """
        current = self.effective_window
        if current is None:
            return
        self.set_window(drawable_window("Custom", current.center + d_center * current.width / CENTER_STEP_PX,
                                        current.width * 2.0 ** (d_width / WIDTH_DOUBLING_PX), current.function))

    def window_text(self) -> str:
        """'C 40 / W 80' (float data has windows below 1); 'VOI LUT ≈ C … / W …' where the file's VOI LUT is shown."""
        w = self.effective_window
        if w is None:
            return ""
        text = f"C {w.center:.5g} / W {w.width:.5g}"
        return f"{VOI_LUT} ≈ {text}" if self._window is None and w.name == VOI_LUT else text

    # ----- modality and models
    def set_modality(self, modality: Modality) -> None:
        """The user's modality for this image (in a series: for all its slices); results of the old one no
        longer apply."""
        if self._record is None:
            return
        if self._stack is not None:
            self._stack.set_modality(Modality(modality).value)
        self._record.modality, self._record.modality_source = Modality(modality), "user"
        self._slice_analyses.clear()
        if self._series_analysis is not None:  # made for the old modality's models
            self._series_analysis, self._derived = None, {}
            self._series_analyses.pop(self._series.key, None)
            self.events.series_analysis.emit(None)
        self.events.modality.emit(self._record.modality)
        if not self.scale_applies and self._reset_scale():  # no control shows it now: it must not act unseen
            self.events.scale.emit(None)
        self.set_analysis(None)

    def modality_text(self) -> str:
        r = self._record
        if r is None:
            return ""
        note = f"  {r.modality.label} — from {r.modality_source}"
        if r.modality_source == "guess" and r.modality_confidence is not None:
            note += f" ({r.modality_confidence:.0%}); set it if wrong"
        return note

    # ----- microscopy scale
    @property
    def scale_applies(self) -> bool:
        """Only a microscopy image has a magnification to set: bundles that tile at a physical scale read it."""
        return self._record is not None and self._record.modality is Modality.SM

    @property
    def microns_per_pixel(self) -> float | None:
        """The image's scale as the user set or confirmed it, handed to every analysis; None: the file's own
        (else the bundle's assumed one, with a warning)."""
        return self._microns_per_pixel

    def set_microns_per_pixel(self, um: float | None) -> None:
        """Set (or, None, go back to the file's) scale of the microscopy image shown; analyses at another scale
        no longer apply, a series' kept ones included. ValueError for a scale no microscope gives."""
        um = None if um is None else check_user_um(um)
        if um == self._microns_per_pixel or (um is not None and not self.scale_applies):
            return
        self._forget_scaled_results()
        self._microns_per_pixel = um
        if self._series_analysis is not None:
            self._series_analysis, self._derived = None, {}
            self.events.series_analysis.emit(None)
        self.events.scale.emit(um)
        self.set_analysis(None)

    def _reset_scale(self) -> bool:
        """Back to the file's scale (another image has its own magnification); True if the user's was set."""
        if self._microns_per_pixel is None:
            return False
        self._forget_scaled_results()
        self._microns_per_pixel = None
        return True

    def _forget_scaled_results(self) -> None:
        """Drop every kept result made at the current scale: slice analyses, series analyses, slice caches."""
        self._slice_analyses.clear()
        self._series_analyses.clear()
        self._caches.clear()
        self.slice_cache = _recent(self._caches, self._series.key, SliceCache()) if self._series else SliceCache()

    @property
    def chosen_models(self) -> list[str]:
        """Models to run on every image; empty = chosen automatically by modality."""
        return list(self._chosen_models)

    def set_chosen_models(self, model_ids: list[str]) -> None:
        model_ids = list(dict.fromkeys(model_ids))
        if model_ids != self._chosen_models:
            self._chosen_models = model_ids
            # Series verdicts made with the models chosen before: the one shown stays on screen until the reader
            # moves on, none is brought back as current when its series is shown again (it is analysed anew).
            self._series_analyses.clear()
            self.events.chosen_models.emit(list(model_ids))

    # ----- analysis
    @property
    def analysis(self) -> Analysis | None:
        return self._analysis

    def set_analysis(self, analysis: Analysis | None, slice_key: str | None = None) -> None:
        """The analysis of the slice shown. In a series it is kept for its slice (``slice_key``, default the
        slice shown) and shown again when the reader scrolls back; one of another slice is only kept. An analysis
        that no longer applies is dropped: one made for another modality than the image has now, or, in a file
        of several frames, for another frame than the one shown (the reader scrolled while it ran)."""
        if analysis is not None and not self._applies(analysis):
            return
        ref = self.current_slice
        if ref is not None:
            key = slice_key or ref.key
            if analysis is None:
                self._slice_analyses.pop(key, None)
            else:
                self._slice_analyses[key] = analysis
            if key != ref.key:
                return
            analysis = analysis or self._analysis_for_slice()
        if analysis is None and self._analysis is None:
            return
        self._analysis = analysis
        self.events.analysis.emit(analysis)

    def _applies(self, analysis: Analysis) -> bool:
        if self._record is None:
            return True  # no image to contradict it
        if analysis.modality != self._record.modality.value:
            return False
        return self.current_slice is not None or analysis.frame == self._slice

    @property
    def slice_key(self) -> str | None:
        ref = self.current_slice
        return ref.key if ref is not None else None

    # ----- series analysis
    @property
    def series_analysis(self) -> SeriesAnalysis | None:
        return self._series_analysis

    def set_series_analysis(self, analysis: SeriesAnalysis | None) -> None:
        """The series analysis of the series shown; the slice shown then gets its results unless it has an
        analysis of its own. One of another series (the reader chose it while the run went on) is kept for that
        series, shown when it is opened again."""
        if analysis is not None and analysis.series is not self._series:
            _recent(self._series_analyses, analysis.series.key, analysis)
            return
        if self._series is None:
            return
        self._series_analysis = analysis
        if analysis is None:
            self._series_analyses.pop(self._series.key, None)
        else:
            _recent(self._series_analyses, self._series.key, analysis)
        self._derived = {}
        self.events.series_analysis.emit(analysis)
        shown = self._analysis_for_slice()
        if shown is not self._analysis:
            self._analysis = shown
            self.events.analysis.emit(shown)

    def _analysis_for_slice(self) -> Analysis | None:
        """Series mode: the slice's own analysis, else its results from the series analysis, else None."""
        ref = self.current_slice
        if ref is None:
            return None
        own = self._slice_analyses.get(ref.key)
        if own is not None:
            return own
        if self._series_analysis is None:
            return None
        if self._slice not in self._derived:
            self._derived[self._slice] = self._slice_results(self._slice, ref)
        return self._derived[self._slice]

    def _slice_results(self, index: int, ref: SliceRef) -> Analysis | None:
        results = []
        for v in self._series_analysis.results:
            o = v.slices[index] if index < len(v.slices) else None
            if o is None or o.error:
                continue
            results.append(ModelResult(v.model, v.version, v.task, "series analysis",
                                       classes=list(o.probabilities), probabilities=dict(o.probabilities),
                                       label=o.label, mask=o.mask, lesions=list(o.outlines),
                                       warnings=list(o.warnings)))
        if not results:
            return None
        shown = self._record  # the slice's own file as read (a file read smaller says so)
        return Analysis(str(ref.path), self._series.modality, "series", ref.frame, results, downsample=self.downsample,
                        file_warnings=list(shown.warnings) if shown is not None else [])

    def clear_analysis(self) -> None:
        self.set_analysis(None)

    @property
    def heatmap_result(self) -> ModelResult | None:
        """The result whose heatmap the heatmap layer draws: that of the model whose Grad-CAM the reader chose last
        (``heatmap_model``), else the first with a heatmap (``Analysis.heatmap_result``)."""
        return self._analysis.heatmap_result(self.heatmap_model) if self._analysis else None

    def show_heatmap_of(self, model_id: str) -> None:
        """Draw ``model_id``'s heatmap (a second classifier's Grad-CAM chosen: the layer had kept drawing the first
        model's, for another class, whatever the reader chose)."""
        if self.heatmap_model != model_id:
            self.heatmap_model = model_id
            if self._analysis is not None:
                self.events.heatmap.emit(self._analysis)

    @property
    def segmentation_result(self) -> ModelResult | None:
        """The first result with a mask (what the mask and lesion layers draw)."""
        return next((r for r in self._analysis.results if r.mask is not None), None) if self._analysis else None

    @property
    def findings_result(self) -> ModelResult | None:
        """The first result of a bundle that marks findings (what the findings layer draws), even one that
        marked none here."""
        return next((r for r in self._analysis.results if r.findings is not None), None) if self._analysis else None

    def heatmap_to_draw(self):
        """The heatmap array the heatmap layer shows now, or None (hidden, or nothing to show)."""
        result = self.heatmap_result
        if result is None or not self.overlays.heatmap.visible:
            return None
        if self.overlays.heatmap.tile and result.tile_gradcam is not None:
            return result.tile_gradcam
        return result.heatmap

    def replace_heatmap(self, model_id: str, update: ModelResult, analysis: Analysis | None = None) -> None:
        """Grad-CAM for another class: ``update``'s heatmap (and a tiled model's top-tile Grad-CAM) replaces that of
        ``model_id`` in ``analysis`` (default: the one shown). An analysis the reader scrolled away from keeps it,
        shown on coming back."""
        target = analysis or self._analysis
        if target is None:
            return
        for result in target.results:
            if result.model_id == model_id:
                result.heatmap, result.heatmap_class = update.heatmap, update.heatmap_class
                result.tile_gradcam = update.tile_gradcam
        self.heatmap_model = model_id  # the reader's choice is drawn, here and on the slices scrolled to
        if target is self._analysis:
            self.events.heatmap.emit(self._analysis)

    # ----- pixel readout
    def pixel_text(self, x: int, y: int) -> str:
        """The status-bar readout at image pixel (x, y); empty outside the image."""
        r = self._record
        if r is None or not (0 <= x < r.columns and 0 <= y < r.rows):
            return ""
        if self._slice_error is not None:
            return ""
        value = r.values(self.frame)[y, x]
        shown = value if r.is_color else f"{float(value):g}"
        if r.downsample > 1 and r.source_size:  # read smaller (core.imaging.limits): named by the file's pixels
            (x0, x1), (y0, y1) = (_file_span(x, r.columns, r.source_size[1]), _file_span(y, r.rows, r.source_size[0]))
            text = f"x {x0}-{x1}, y {y0}-{y1}: {shown} (the picture was read at 1/{r.downsample})"
        else:
            text = f"x {x}, y {y}: {shown}"
        where = self._position_text(x, y)
        return f"{text}  ({where})" if where else text

    def _position_text(self, x: int, y: int) -> str:
        """Where picture pixel (x, y) lies: its patient position where the slice states its plane, position and pixel
        spacing (``core.measurements.patient_position_text``); else its offset from the top-left corner where the
        pixel spacing is known (the reader's scale on a microscopy image: micrometres, which '0.0 mm' would hide);
        else '' (a spacing not believed, ``spacing_warning``, places nothing)."""
        ref = self._geometry()
        spacing, implausible = self._measuring_spacing()  # once per mouse move
        if implausible is not None:
            return ""
        if ref.position is not None and ref.orientation is not None and ref.pixel_spacing_mm:
            factor = self._record.downsample  # the file's pixel under the middle of the picture's
            return patient_position_text(patient_point(ref.position, ref.orientation, ref.pixel_spacing_mm,
                                                       (x + 0.5) * factor - 0.5, (y + 0.5) * factor - 0.5))
        if not spacing:
            return ""
        dy, dx = spacing
        if max(spacing) >= MICROMETRE_READOUT_MM:
            return f"{x * dx:.1f} mm, {y * dy:.1f} mm"
        return f"{x * dx * 1000:.1f} µm, {y * dy * 1000:.1f} µm"
