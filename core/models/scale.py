"""Physical scale of a microscopy image (micrometres per pixel), resolved in one place.

A tiled histology bundle records the scale its tiles were cut at (``tiling.microns_per_pixel``); an
image is resampled to it before tiling, so a 40x and a 400x picture of the same tissue give the model
the same cells at the same size. Where the scale of the loaded image comes from, first found wins:

1. the user (``microns_per_pixel`` handed to the analysis: the magnification set or confirmed by hand);
2. the file: DICOM ``PixelSpacing`` (already in ``ImageRecord.pixel_spacing_mm``) or, for a whole-slide
   DICOM, ``ImagedVolumeWidth/Height`` over ``TotalPixelMatrixColumns/Rows``; TIFF ``XResolution`` /
   ``YResolution`` with ``ResolutionUnit`` inch or centimetre, or an Aperio ``MPP = ...`` description;
   or an OME-TIFF's ``PhysicalSizeX/Y`` (micrometres unless its unit says nm or mm); turned with the picture
   where the TIFF's Orientation shows it turned 90 degrees (rows and columns swap);
3. a BreakHis file name, ``SOB_<B|M>_<type>-<year>-<slide>-<magnification>-<seq>`` (``SOB_B_A-14-22549AB-400-001.png``);
4. the bundle's assumed scale (the one of its training images), with a warning in the result.

A scale the user gives or the file states is for the file's full resolution (a magnification is the camera's,
a typed micrometre value is read as the file's pixel); a record loaded downsampled (``ImageRecord.downsample``)
has pixels ``downsample`` times larger, and the scale returned is the loaded pixels'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# BreakHis (Spanhol et al. 2016): Olympus BX-50, Samsung SCC-131AN camera (1/3" CCD, 6.5 um pixels) on the
# trinocular through a relay the paper gives as "3.3x". Read as a magnifying 3.3x, 400x would be 0.049 um per pixel:
# eight times finer than a 40x objective resolves (~0.4 um), and a 200x picture 69 um wide where BACH's 200x
# microscope pictures are 860 um wide (0.42 um per pixel). Read as the usual 0.33x C-mount reducer of a 1/3" camera,
# the 4x objective ("40x") gives 6.5 / (4 x 0.33) = 4.9 um per pixel (700 px = 3.4 mm of tissue) and 400x 0.49 um
# (343 um): a 200x picture 690 um wide, as BACH's. That reading is used; a user who knows their camera sets the scale.
BREAKHIS_40X_UM = 4.9
MAGNIFICATIONS = (40, 100, 200, 400)
# Plausible microscopy scales; a TIFF's 72 or 96 dpi (350 or 265 um per pixel) is a screen default, not a scale.
PLAUSIBLE_UM = (0.02, 20.0)
# BreakHis's own names, SOB_<B|M>_<tumour type>-<year>-<slide>-<magnification>-<sequence> (SOB_B_A-14-22549AB-400-001):
# only those. Any name ending in -400-1 (patient-400-1.png, slide-200-3.png) is not a statement of magnification.
_NAME = re.compile(r"^SOB_[BM]_[A-Z]+-\d+-[0-9A-Z]+-(40|100|200|400)-\d+$", re.IGNORECASE)


@dataclass(frozen=True)
class Scale:
    """Micrometres per pixel of the loaded image along y (rows) and x (columns), and where it came from;
    ``downsample``: the image was loaded that many times smaller than its file (what a reader is told is the file's
    pixel, ``file_um``)."""

    um_y: float
    um_x: float
    source: str  # "user", "dicom", "tiff", "file name" or "assumed"
    downsample: int = 1

    @classmethod
    def of_file(cls, um_y: float, um_x: float, source: str, downsample: int) -> "Scale":
        """The scale of pictures loaded ``downsample`` times smaller than a file of (um_y, um_x) per pixel."""
        return cls(um_y * downsample, um_x * downsample, source, downsample)

    @property
    def assumed(self) -> bool:
        return self.source == "assumed"

    @property
    def file_um(self) -> tuple[float, float]:
        """(y, x) micrometres per pixel of the file (the loaded picture's are ``downsample`` times larger)."""
        return self.um_y / self.downsample, self.um_x / self.downsample

    def describe(self, unit: str = "um") -> str:
        """'0.49 um per pixel (tiff)', the file's pixel; ``unit`` "mm" for a film ('0.2 mm per pixel (file)')."""
        y, x = (v / (1000.0 if unit == "mm" else 1.0) for v in self.file_um)
        value = f"{x:.3g}" if abs(x - y) < 1e-6 * max(abs(x), 1e-9) else f"{y:.3g} x {x:.3g}"
        read = f"; the picture was read at 1/{self.downsample}" if self.downsample > 1 else ""
        return f"{value} {unit} per pixel ({self.source}{read})"

    def to_dict(self, unit: str = "um") -> dict:
        """What a result records: the file's scale (in um, whatever ``unit`` the text uses), as the reader states it
        and the text says."""
        um_y, um_x = self.file_um
        return {"um_y": round(um_y, 5), "um_x": round(um_x, 5), "source": self.source,
                "text": self.describe(unit)} | ({"read_at": f"1/{self.downsample}"} if self.downsample > 1 else {})


def magnification_from_name(name: str | Path) -> int | None:
    """The objective magnification a BreakHis file name carries (``SOB_B_A-14-22549AB-400-001.png`` -> 400)."""
    match = _NAME.search(Path(name).stem)
    return int(match.group(1)) if match else None


def um_at_magnification(magnification: float) -> float:
    """Micrometres per pixel of a BreakHis-type camera at this magnification (40x: 4.9; 400x: 0.49)."""
    if magnification <= 0:
        raise ValueError(f"magnification must be positive, not {magnification}")
    return BREAKHIS_40X_UM * 40.0 / magnification


def magnification_at(um: float) -> int | None:
    """The BreakHis magnification whose scale ``um`` is (0.49 -> 400), else None: how a scale set by
    magnification is named again."""
    return next((m for m in MAGNIFICATIONS if abs(um_at_magnification(m) - um) < 1e-9), None)


def check_user_um(um: float) -> float:
    """A scale the user gives, in micrometres per pixel, if it is one a microscope gives (PLAUSIBLE_UM): a slip
    such as 50 for 0.5 is refused rather than tiling 100 times the tissue into each tile."""
    um = float(um)
    lo, hi = PLAUSIBLE_UM
    if not lo <= um <= hi:  # NaN too
        raise ValueError(f"{um:g} um per pixel is not a microscopy scale (give {lo:g} to {hi:g})")
    return um


def _plausible(um_y: float, um_x: float) -> bool:
    lo, hi = PLAUSIBLE_UM
    return lo <= um_y <= hi and lo <= um_x <= hi


def tiff_scale(path: str | Path) -> tuple[float, float] | None:
    """(um_y, um_x) per pixel of a TIFF's first page at full resolution as shown (turned by its Orientation, as
    core.imaging.raster shows it), or None where it states none."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            stored = _stored_tiff_scale(page)
            # Orientation 5-8: the picture is shown turned 90 degrees, its stored columns as rows.
            return stored[::-1] if stored and page.tags.valueof(274, 1) in (5, 6, 7, 8) else stored
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError, TypeError, ZeroDivisionError):
        return None


# OME's length units (PhysicalSizeXUnit, micrometres when absent) in micrometres.
_OME_UNITS = {"µm": 1.0, "μm": 1.0, "um": 1.0, "nm": 0.001, "mm": 1000.0}


def _ome_scale(description: str) -> tuple[float, float] | None:
    """(um_y, um_x) of an OME-XML description's first Pixels element, or None."""
    import xml.etree.ElementTree as ET

    if "<OME" not in description:
        return None
    try:
        root = ET.fromstring(description)
    except ET.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib or "PhysicalSizeY" not in pixels.attrib:
        return None
    units = [_OME_UNITS.get(pixels.get(f"PhysicalSize{a}Unit", "µm")) for a in ("Y", "X")]
    if None in units:  # a unit not known here (Å, m, ...): no scale rather than a wrong one
        return None
    um_y, um_x = float(pixels.get("PhysicalSizeY")) * units[0], float(pixels.get("PhysicalSizeX")) * units[1]
    return (um_y, um_x) if _plausible(um_y, um_x) else None


def _stored_tiff_scale(page) -> tuple[float, float] | None:
    """(um_y, um_x) of a TIFF page's stored rows and columns: Aperio MPP, OME PhysicalSize, else the resolution tags."""
    description = str(getattr(page, "description", "") or "")
    mpp = re.search(r"MPP\s*=\s*([0-9.]+)", description)
    if mpp and _plausible(float(mpp.group(1)), float(mpp.group(1))):
        return float(mpp.group(1)), float(mpp.group(1))
    ome = _ome_scale(description)
    if ome:
        return ome
    tags = page.tags
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    per_unit = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimetre; 1 = no unit
    if per_unit is None or "XResolution" not in tags or "YResolution" not in tags:
        return None
    xres, yres = (_rational(tags[k].value) for k in ("XResolution", "YResolution"))
    if not xres or not yres:
        return None
    um_y, um_x = per_unit / yres, per_unit / xres
    return (um_y, um_x) if _plausible(um_y, um_x) else None


def _rational(value) -> float:
    if isinstance(value, tuple):
        num, den = value
        return float(num) / float(den) if den else 0.0
    return float(value)


def dicom_scale(path: str | Path) -> tuple[float, float] | None:
    """(um_y, um_x) of a whole-slide DICOM from its imaged volume over its total pixel matrix."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        width, height = float(ds.ImagedVolumeWidth), float(ds.ImagedVolumeHeight)  # mm
        columns, rows = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
        um_y, um_x = height * 1000.0 / rows, width * 1000.0 / columns
        return (um_y, um_x) if _plausible(um_y, um_x) else None
    except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError, OSError, pydicom.errors.InvalidDicomError):
        return None


def file_scale(record) -> Scale | None:
    """The scale an ImageRecord's file states (header or BreakHis-style name), for the pixels as loaded."""
    factor = _downsample(record)
    spacing = getattr(record, "pixel_spacing_mm", None)
    if spacing and _plausible(spacing[0] * 1000.0, spacing[1] * 1000.0):
        return Scale(spacing[0] * 1000.0, spacing[1] * 1000.0, "dicom", factor)  # the loader scaled it already
    path = Path(record.path)
    found = None
    if record.file_format == "TIFF":
        found = tiff_scale(path), "tiff"
    elif record.file_format == "DICOM":
        found = dicom_scale(path), "dicom"
    if found and found[0]:
        (um_y, um_x), source = found
        return Scale.of_file(um_y, um_x, source, factor)
    magnification = magnification_from_name(path)
    if magnification:
        um = um_at_magnification(magnification)
        return Scale.of_file(um, um, "file name", factor)
    return None


def _downsample(record) -> int:
    """How many times smaller than its file the record's picture was loaded (1 for anything else)."""
    return max(1, int(getattr(record, "downsample", 1) or 1))


def resolve_scale(record, assumed_um: float, user_um: float | None = None) -> Scale:
    """The loaded image's scale: the user's, else the file's, else ``assumed_um`` (the bundle's own).

    The user's scale is of the file's pixels (a magnification is the camera's; the command line and the window
    say "micrometres per image pixel"), as the file's own is, and so is the one assumed (the training images' usual
    scale, of whole pictures): each is multiplied by ``record.downsample`` where the picture was loaded smaller, so
    the same fact tiles the same whoever states it (an assumed scale on a picture read at 1/2 had tiled it at twice
    the magnification: a malignant core called benign)."""
    factor = _downsample(record)
    if user_um is not None:
        um = check_user_um(user_um)
        return Scale.of_file(um, um, "user", factor)
    return file_scale(record) or Scale.of_file(float(assumed_um), float(assumed_um), "assumed", factor)


def assumed_warning(scale: Scale) -> str:
    """What a result says when the magnification was not known."""
    return (f"Magnification unknown: the image was taken to be at {scale.file_um[1]:.2f} um per pixel, the usual scale of "
            "the model's training images; if it was taken at another magnification, set it and analyse again.")
