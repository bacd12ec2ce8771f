"""What the viewer shows, free of Qt: the series and slice, window/level, models, analysis, overlay layers.

The window and its panels bind to one ``ViewerState``: they call its methods when the user acts and
redraw when its events fire, so every rule of the view (which slice, which window, when an analysis no
longer applies, how a drag moves the window) lives here and is tested without a display.

Events are plain callback lists: ``state.events.window.connect(callback)``; each fires after the change,
and only when something changed, with the new value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from core.imaging.record import ImageRecord, Modality
from core.imaging.windowing import WindowPreset, min_window_width
from core.inference.results import Analysis, ModelResult

Callback = Callable[..., Any]

# Heatmap colour maps a viewer offers (OpenCV colour map ids).
COLORMAPS: dict[str, int] = {"jet": 2, "inferno": 14, "viridis": 16, "hot": 11}

# Window/level drag: a drag of 256 display pixels moves the centre by one window width, 128 pixels
# doubles or halves the width, so dragging feels the same on 8-bit, CT and 0-1 float data.
CENTER_STEP_PX = 256.0
WIDTH_DOUBLING_PX = 128.0


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
    """The three layers: Grad-CAM heatmap, segmentation mask, lesion outlines with their sizes."""

    heatmap: HeatmapLayer = field(default_factory=HeatmapLayer)
    mask: MaskLayer = field(default_factory=MaskLayer)
    lesions: OverlayLayer = field(default_factory=lambda: OverlayLayer("lesions"))

    def __iter__(self):
        return iter((self.heatmap, self.mask, self.lesions))


class ViewerState:
    """The image on screen and everything about how it is shown.

    Events (each called with the new value): ``record`` (another image, or None), ``slice`` (index),
    ``window`` (the chosen window, None for the file's own default), ``modality``, ``chosen_models``,
    ``analysis`` (or None), ``heatmap`` (the analysis, after Grad-CAM for another class replaced a
    heatmap) and ``overlays`` (the layer that changed).
    """

    def __init__(self, overlays: Overlays | None = None) -> None:
        self.events = Events("record", "slice", "window", "modality", "chosen_models", "analysis", "heatmap",
                             "overlays")
        self._record: ImageRecord | None = None
        self._slice = 0
        self._window: WindowPreset | None = None
        self._chosen_models: list[str] = []
        self._analysis: Analysis | None = None
        self.overlays = overlays or Overlays()
        for layer in self.overlays:
            layer.events.changed.connect(self.events.overlays.emit)

    # ----- series and slice
    @property
    def record(self) -> ImageRecord | None:
        return self._record

    def open(self, record: ImageRecord | None) -> None:
        """Show another image from its first slice, in its own window, with no analysis yet."""
        had_analysis = self._analysis is not None
        self._record, self._slice, self._window, self._analysis = record, 0, None, None
        self.events.record.emit(record)
        if had_analysis:
            self.events.analysis.emit(None)

    @property
    def slice_index(self) -> int:
        return self._slice

    @property
    def slice_count(self) -> int:
        return self._record.frames if self._record is not None else 0

    def set_slice(self, index: int) -> None:
        """Show slice ``index`` (clamped to the series); an analysis of another slice no longer applies."""
        if self._record is None:
            return
        index = max(0, min(self.slice_count - 1, int(index)))
        if index == self._slice:
            return
        self._slice = index
        self.events.slice.emit(index)
        if self._analysis is not None and self._analysis.frame != index:
            self.set_analysis(None)

    def step(self, delta: int, wrap: bool = False) -> None:
        """Move ``delta`` slices; ``wrap`` goes round (cine), otherwise stops at either end."""
        if self.slice_count < 2:
            return
        target = self._slice + delta
        self.set_slice(target % self.slice_count if wrap else target)

    def slice_text(self) -> str:
        return f"{self._slice + 1}/{max(self.slice_count, 1)}"

    def display(self):
        """The 8-bit picture of the current slice in the current window."""
        return self._record.display(self._slice, self._window)

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
        """The window in use: the chosen one, else the file's first preset (None for colour images)."""
        if not self.has_window:
            return None
        return self._window or self._record.window_presets[0]

    @property
    def presets(self) -> list[WindowPreset]:
        """The windows this image offers: its DICOM windows, then automatic and full range."""
        return list(self._record.window_presets) if self.has_window else []

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
        (-128 halves it), never below DICOM's narrowest width for the window's function.
        """
        current = self.effective_window
        if current is None:
            return
        self.set_window(WindowPreset(
            "Custom",
            current.center + d_center * current.width / CENTER_STEP_PX,
            max(min_window_width(current.function), current.width * 2.0 ** (d_width / WIDTH_DOUBLING_PX)),
            current.function,
        ))

    def window_text(self) -> str:
        w = self.effective_window
        return f"C {w.center:.5g} / W {w.width:.5g}" if w is not None else ""  # float data has windows below 1

    # ----- modality and models
    def set_modality(self, modality: Modality) -> None:
        """The user's modality for this image; results of the old one no longer apply."""
        if self._record is None:
            return
        self._record.modality, self._record.modality_source = Modality(modality), "user"
        self.events.modality.emit(self._record.modality)
        self.set_analysis(None)

    def modality_text(self) -> str:
        r = self._record
        if r is None:
            return ""
        note = f"  {r.modality.label} — from {r.modality_source}"
        if r.modality_source == "guess" and r.modality_confidence is not None:
            note += f" ({r.modality_confidence:.0%}); set it if wrong"
        return note

    @property
    def chosen_models(self) -> list[str]:
        """Models to run on every image; empty = chosen automatically by modality."""
        return list(self._chosen_models)

    def set_chosen_models(self, model_ids: list[str]) -> None:
        model_ids = list(dict.fromkeys(model_ids))
        if model_ids != self._chosen_models:
            self._chosen_models = model_ids
            self.events.chosen_models.emit(list(model_ids))

    # ----- analysis
    @property
    def analysis(self) -> Analysis | None:
        return self._analysis

    def set_analysis(self, analysis: Analysis | None) -> None:
        if analysis is None and self._analysis is None:
            return
        self._analysis = analysis
        self.events.analysis.emit(analysis)

    def clear_analysis(self) -> None:
        self.set_analysis(None)

    @property
    def heatmap_result(self) -> ModelResult | None:
        """The first result with a heatmap (what the heatmap layer draws)."""
        return next((r for r in self._analysis.results if r.heatmap is not None), None) if self._analysis else None

    @property
    def segmentation_result(self) -> ModelResult | None:
        """The first result with a mask (what the mask and lesion layers draw)."""
        return next((r for r in self._analysis.results if r.mask is not None), None) if self._analysis else None

    def heatmap_to_draw(self):
        """The heatmap array the heatmap layer shows now, or None (hidden, or nothing to show)."""
        result = self.heatmap_result
        if result is None or not self.overlays.heatmap.visible:
            return None
        if self.overlays.heatmap.tile and result.tile_gradcam is not None:
            return result.tile_gradcam
        return result.heatmap

    def replace_heatmap(self, model_id: str, update: ModelResult) -> None:
        """Grad-CAM for another class: ``update``'s heatmap replaces the one of ``model_id``."""
        if self._analysis is None:
            return
        for result in self._analysis.results:
            if result.model_id == model_id:
                result.heatmap, result.heatmap_class = update.heatmap, update.heatmap_class
        self.events.heatmap.emit(self._analysis)

    # ----- pixel readout
    def pixel_text(self, x: int, y: int) -> str:
        """The status-bar readout at image pixel (x, y); empty outside the image."""
        r = self._record
        if r is None or not (0 <= x < r.columns and 0 <= y < r.rows):
            return ""
        value = r.values(self._slice)[y, x]
        text = f"x {x}, y {y}: {value if r.is_color else f'{float(value):g}'}"
        if r.pixel_spacing_mm:
            dy, dx = r.pixel_spacing_mm
            text += f"  ({x * dx:.1f} mm, {y * dy:.1f} mm)"
        return text
