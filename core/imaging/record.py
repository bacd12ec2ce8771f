"""The image record: pixels ready for display and models plus what a reader needs to know."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np

from core.imaging.windowing import WindowPreset, apply_window


class Modality(str, Enum):
    """The product's four modalities; OTHER is anything else (CT, X-ray, ...)."""

    MR = "MR"  # brain MRI
    MG = "MG"  # mammography
    US = "US"  # breast ultrasound
    SM = "SM"  # histology (slide microscopy)
    OTHER = "OT"

    @property
    def label(self) -> str:
        return _MODALITY_LABELS[self]


_MODALITY_LABELS = {
    Modality.MR: "Brain MRI",
    Modality.MG: "Mammography",
    Modality.US: "Breast ultrasound",
    Modality.SM: "Histology",
    Modality.OTHER: "Other",
}


@dataclass(frozen=True)
class StudyInfo:
    """Patient and study identifiers, kept apart from pixels so exports can anonymise."""

    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    sex: str = ""
    study_date: str = ""
    institution: str = ""
    accession_number: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_instance_uid: str = ""
    study_description: str = ""


FrameReader = Callable[[int], np.ndarray]
DefaultRenderer = Callable[[np.ndarray, int], np.ndarray]
FrameWindow = Callable[[np.ndarray, int], WindowPreset]  # the window a frame's default picture is drawn in
VOI_LUT = "VOI LUT"  # the name of the window a file's VOI LUT amounts to

_FRAME_CACHE_SIZE = 8
PLAUSIBLE_ASPECT = (0.25, 4.0)  # a pixel's height over its width; beyond, one of the two stated spacings is wrong
# The field a picture of a modality can cover, its larger side in mm: an MR picture's 10-600 (a crop of a slice to a
# whole-body field), an ultrasound picture's 5-400. Beyond, the stated spacing is a header error.
PLAUSIBLE_FIELD_MM = {"MR": (10.0, 600.0), "US": (5.0, 400.0)}
_FRAME_CACHE_BYTES = 512 * 1024**2  # big frames: fewer of them kept (at least the last one)


def plausible_spacing(spacing, rows: int, columns: int,
                      modality: Modality) -> tuple[tuple[float, float] | None, str | None]:
    """(The pixel spacing to measure with, a warning where the stated one is not believable for ``modality``): a
    header that puts a 256-px brain slice 2.56 m across (10 mm pixels), or pixels 30 times taller than wide, would
    give a tumour of 634 mm and a ruler of a metre; sizes are then given in pixels only. One rule for the
    segmenters' lesions, the window's rulers and regions and what they export."""
    if not spacing or len(spacing) != 2 or min(spacing) <= 0:
        return None, None
    row_mm, column_mm = float(spacing[0]), float(spacing[1])
    field_mm = max(rows * row_mm, columns * column_mm)
    low, high = PLAUSIBLE_FIELD_MM.get(modality.value, (0.0, math.inf))
    if not (low <= field_mm <= high and PLAUSIBLE_ASPECT[0] <= row_mm / column_mm <= PLAUSIBLE_ASPECT[1]):
        return None, (f"Implausible pixel spacing: the file states {row_mm:g} x {column_mm:g} mm (row x column), "
                      f"which makes the picture {columns * column_mm:.0f} x {rows * row_mm:.0f} mm, "
                      f"not a {modality.label} picture: sizes are given in pixels only.")
    return (row_mm, column_mm), None


@dataclass
class ImageRecord:
    """One opened image file.

    ``values(i)`` gives frame *i* in modality units (float32, greyscale) or as uint8 RGB;
    ``display(i)`` gives the uint8 picture a reader sees (VOI applied, MONOCHROME1 inverted).
    Frames are decoded on demand and a few are cached, so large multi-frame files stay cheap.
    """

    path: Path
    file_format: str
    modality: Modality
    modality_source: str  # "dicom", "user" or "guess"
    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    photometric: str
    bits_stored: int
    pixel_spacing_mm: tuple[float, float] | None
    window_presets: list[WindowPreset]
    study: StudyInfo
    metadata: list[tuple[str, str, str]]  # (tag, keyword, value) for the tag browser
    _read_frame: FrameReader = field(repr=False)
    _default_render: DefaultRenderer | None = field(default=None, repr=False)
    _frame_window: FrameWindow | None = field(default=None, repr=False)  # set with _default_render
    modality_confidence: float | None = None
    # A pixel's height over its width from PixelAspectRatio, where the file states no spacing (DICOM requires the
    # attribute for non-square pixels without one); None where it states none.
    pixel_aspect: float | None = None
    downsample: int = 1  # frames are loaded at 1/downsample of the file's size (core.imaging.limits)
    source_size: tuple[int, int] | None = None  # (rows, columns) in the file when downsampled
    warnings: list[str] = field(default_factory=list)  # what a reader should know about this file
    # Mammography: the detector's spacing where pixel_spacing_mm was corrected to the breast by the magnification
    # factor; the film detector reads at this one, as it was trained on film-plane pixels.
    detector_spacing_mm: tuple[float, float] | None = None
    # Ultrasound: the calibrated regions' boxes (y0, y1, x0, x1) in the picture as loaded, from the header's
    # SequenceOfUltrasoundRegions: where the scan is, whatever the pixels look like.
    us_regions: tuple[tuple[int, int, int, int], ...] = ()
    # What the header says the picture shows (Modality as written, BodyPartExamined, Study/SeriesDescription,
    # ProtocolName, ProcessingFunction, TransducerType): read where a model's domain is narrower than its modality,
    # and where the header names a modality no model is for (CT, CR: ``modality`` is then OTHER).
    header_texts: dict[str, str] = field(default_factory=dict)
    # The modality guesser's answer for frame 0's default picture, where the loader asked it (the analysis reuses it).
    frame0_guess: tuple[Modality, float | None] | None = None
    _cache: OrderedDict[int, np.ndarray] = field(default_factory=OrderedDict, repr=False)
    # The last default picture (frame, pixels): the loader's modality guess and the analysis both read it.
    _rendered: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def is_color(self) -> bool:
        return self.samples_per_pixel == 3

    @property
    def inverted(self) -> bool:
        return self.photometric == "MONOCHROME1"

    def values(self, frame: int = 0) -> np.ndarray:
        """Frame pixels: float32 modality values for greyscale, uint8 (H, W, 3) for colour."""
        if not 0 <= frame < self.frames:
            raise IndexError(f"frame {frame} out of range 0..{self.frames - 1}")
        if frame in self._cache:
            self._cache.move_to_end(frame)
            return self._cache[frame]
        arr = self._read_frame(frame)
        self._cache[frame] = arr
        while len(self._cache) > 1 and (len(self._cache) > _FRAME_CACHE_SIZE or
                                        sum(a.nbytes for a in self._cache.values()) > _FRAME_CACHE_BYTES):
            self._cache.popitem(last=False)
        return arr

    def display(self, frame: int = 0, window: WindowPreset | None = None) -> np.ndarray:
        """The 8-bit picture for a viewer and for the models (which were trained on 8-bit images)."""
        arr = self.values(frame)
        if self.is_color:
            return arr
        rendered = self._rendered  # read once: the viewer and an analysis worker may ask for frames at once
        if window is None and rendered is not None and rendered[0] == frame:
            return rendered[1].copy()
        if window is None and self._default_render is not None:
            out = self._default_render(arr, frame)
        else:
            preset = window or self.window_presets[0]
            out = apply_window(arr, preset.center, preset.width, preset.function)
        out = 255 - out if self.inverted else out
        if window is None:
            self._rendered = (frame, out.copy())
        return out

    def default_window(self, frame: int = 0) -> WindowPreset | None:
        """The window the default picture of ``frame`` is drawn in, what a W/L readout says and a drag starts from:
        the file's own, that frame's automatic one (frames differ: a cine), or the window its VOI LUT amounts to
        (named ``VOI_LUT``); None for colour."""
        if self.is_color:
            return None
        if self._frame_window is not None:
            return self._frame_window(self.values(frame), frame)
        return self.window_presets[0]

    def row_to_column(self) -> float:
        """A pixel's height over its width where the file states both spacings (else its PixelAspectRatio): 1 for
        square or unknown pixels, and beyond ``PLAUSIBLE_ASPECT`` (a header error, not pixels). The models' crop,
        the picture drawn, the report's picture and an ultrasound lesion's depth-to-width ratio all keep the
        anatomy's proportions by it."""
        spacing = self.pixel_spacing_mm
        if not spacing or len(spacing) != 2 or min(spacing) <= 0:
            ratio = self.pixel_aspect or 1.0
        else:
            ratio = spacing[0] / spacing[1]
        low, high = PLAUSIBLE_ASPECT
        return ratio if 1e-3 < abs(ratio - 1.0) and low <= ratio <= high else 1.0

    def measuring_spacing(self, modality: Modality | None = None) -> tuple[tuple[float, float] | None, str | None]:
        """``plausible_spacing`` of the picture's own spacing and size, for ``modality`` (the picture's by default)."""
        return plausible_spacing(self.pixel_spacing_mm, self.rows, self.columns, modality or self.modality)

    def file_spacing_mm(self) -> list[float] | None:
        """(row, column) spacing of the file's own pixels: ``pixel_spacing_mm`` is the loaded picture's, which is
        ``downsample`` times coarser where the file was read smaller."""
        if not self.pixel_spacing_mm:
            return None
        return [v / self.downsample for v in self.pixel_spacing_mm]

    def info(self) -> dict:
        """The fields of ``main.py info`` (identifiers excluded: they are not image facts)."""
        return {
            "path": str(self.path),
            "format": self.file_format,
            "modality": self.modality.value,
            "modality_name": self.modality.label,
            "modality_source": self.modality_source,
            "modality_confidence": self.modality_confidence,
            "dicom_modality": self.header_texts.get("Modality"),  # as the header writes it (CT, CR, ...); None: none
            "rows": self.source_size[0] if self.source_size else self.rows,
            "columns": self.source_size[1] if self.source_size else self.columns,
            "frames": self.frames,
            "samples_per_pixel": self.samples_per_pixel,
            "photometric": self.photometric,
            "bits_stored": self.bits_stored,
            "pixel_spacing_mm": self.file_spacing_mm(),  # the file's pixels, as rows and columns above
            **({"pixel_aspect_ratio": self.pixel_aspect} if self.pixel_aspect else {}),
            "window_presets": [
                {"name": w.name, "center": w.center, "width": w.width} for w in self.window_presets
            ],
            **({"downsample_factor": self.downsample, "loaded_rows": self.rows, "loaded_columns": self.columns,
                "loaded_pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None}
               if self.downsample > 1 else {}),
            **({"warnings": list(self.warnings)} if self.warnings else {}),
        }
