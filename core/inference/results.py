"""Result objects: everything a viewer draws and a report prints, free of Qt and TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from core.models.novelty import flagged_in


@dataclass
class Lesion:
    """One connected component of a predicted mask."""

    label: int
    area_px: int
    area_mm2: float | None
    bbox: tuple[int, int, int, int]  # x, y, width, height in image pixels
    max_diameter_px: float
    max_diameter_mm: float | None
    contour: np.ndarray = field(repr=False)  # (K, 2) x, y points of the outline
    spacing_mm: tuple[float, float] | None = None  # (row, column) pixel spacing, where the image states it
    # The two outline points the longest diameter joins, (x, y) each: the line a reader measures (RECIST-like).
    diameter_ends: tuple[tuple[float, float], tuple[float, float]] | None = None
    # Ultrasound: the image's vertical axis is the beam, so width and depth calipers and their ratio mean
    # something; on other modalities an axis-aligned box says nothing a reader would measure.
    calipers: bool = False
    aspect: float = 1.0  # a pixel's height over its width where no spacing is known (PixelAspectRatio)

    @property
    def width_mm(self) -> float | None:
        """Horizontal extent (transverse, across the ultrasound beam), as a sonographer's width caliper."""
        return None if self.spacing_mm is None or not self.calipers else self.bbox[2] * self.spacing_mm[1]

    @property
    def depth_mm(self) -> float | None:
        """Vertical extent (along the beam: anteroposterior on a breast scan), as the depth caliper."""
        return None if self.spacing_mm is None or not self.calipers else self.bbox[3] * self.spacing_mm[0]

    @property
    def depth_to_width(self) -> float | None:
        """Depth / width; above 1 the lesion is "taller than wide" (parallel to the skin it is not), a BI-RADS
        sign of malignancy in ultrasound. From millimetres where spacing is known, else from the pixels' aspect ratio
        (square where the file states none)."""
        if not self.calipers:
            return None
        dy, dx = self.spacing_mm or (self.aspect, 1.0)
        return (self.bbox[3] * dy) / max(self.bbox[2] * dx, 1e-9)

    def to_dict(self, scale: int = 1) -> dict:
        """``scale``: pixels of the file per pixel analysed (a file read smaller to fit in memory), so that pixel
        quantities are the file's (``in_file_pixels``); millimetres are the same either way."""
        ratio = self.depth_to_width
        shown = in_file_pixels(self, scale)
        return {
            "area_px": shown.area_px,
            "area_mm2": None if self.area_mm2 is None else round(self.area_mm2, 3),  # as lesion_area_mm2
            "bbox": list(shown.bbox),
            "max_diameter_px": round(shown.max_diameter_px, 2),
            "max_diameter_mm": None if self.max_diameter_mm is None else round(self.max_diameter_mm, 2),
            "diameter_ends": None if self.diameter_ends is None else [[round(v * scale, 1) for v in p]
                                                                      for p in self.diameter_ends],
            "width_mm": None if self.width_mm is None else round(self.width_mm, 2),
            "depth_mm": None if self.depth_mm is None else round(self.depth_mm, 2),
            "depth_to_width": None if ratio is None else round(ratio, 3),
            "text": shown.size_text(),
        }

    def size_text(self) -> str:
        """One line for a reader: area and longest diameter; on ultrasound also width x depth and their ratio (in
        the file's pixels where the picture was read smaller: ``in_file_pixels``)."""
        known = self.area_mm2 is not None
        text = (f"{self.area_mm2:.1f} mm2, max diameter {self.max_diameter_mm:.1f} mm" if known
                else f"{self.area_px} px, max diameter {self.max_diameter_px:.0f} px")
        if self.calipers:
            box = (f"{self.width_mm:.1f} x {self.depth_mm:.1f} mm" if known else f"{self.bbox[2]} x {self.bbox[3]} px")
            ratio = self.depth_to_width
            text += f", {box} (W x D), D/W {ratio:.2f}" + (" (taller than wide)" if ratio > 1 else "")
            if not known and self.aspect != 1.0:  # the ratio is of lengths, the box of pixels
                text += f" (pixels {self.aspect:.3g} times as tall as wide)"
        return text + ("" if known else " (spacing unknown)")

    def overlay_text(self) -> str:
        """The short label the viewer draws beside the outline."""
        if self.area_mm2 is None:
            text = f"{self.area_px} px, Ø {self.max_diameter_px:.0f} px"
        else:
            text = f"{self.area_mm2:.1f} mm², Ø {self.max_diameter_mm:.1f} mm"
            if self.calipers:
                text += f", {self.width_mm:.1f} × {self.depth_mm:.1f} mm"
        return text + (f", D/W {self.depth_to_width:.2f}" if self.calipers else "")


def in_file_pixels(item: "Lesion | Finding", scale: int) -> "Lesion | Finding":
    """A lesion or finding, for its text, in the file's own pixels where the picture was read ``scale`` times
    smaller (what ``to_dict(scale)`` gives the JSON): pixel sizes and positions ``scale`` times larger, the spacing as
    much finer (millimetres stay). The panel, the viewer's label, the report and the JSON say the same numbers."""
    if scale == 1:
        return item
    spacing = None if item.spacing_mm is None else tuple(v / scale for v in item.spacing_mm)
    if isinstance(item, Lesion):
        return replace(item, area_px=item.area_px * scale * scale, bbox=tuple(v * scale for v in item.bbox),
                       max_diameter_px=item.max_diameter_px * scale, spacing_mm=spacing)
    return replace(item, x=item.x * scale, y=item.y * scale, r=item.r * scale, spacing_mm=spacing)


# CAD marks are drawn in one colour wherever they are shown (viewer, report): magenta, apart from the green
# lesion outline and mask and from every heatmap colour map.
FINDING_RGB = (255, 70, 220)


@dataclass
class Finding:
    """One suspicious spot a detector marks: a circle on the analysed frame with the detector's probability."""

    x: float  # centre, image pixels of the analysed frame, origin top-left
    y: float
    r: float  # radius in image pixels
    score: float  # the detector's probability for this mark, 0..1
    kind: str | None = None  # "mass", "calcification", ... when the detector says
    spacing_mm: tuple[float, float] | None = None  # (row, column) pixel spacing, where the image states it

    def to_dict(self, scale: int = 1) -> dict:
        """Image pixels to a tenth (marks are no finer), the score to four places; ``scale``: the file's pixels
        per pixel analysed (a film read smaller to fit in memory), so the marks land on the file's own grid."""
        shown = in_file_pixels(self, scale)
        return {"x": round(shown.x, 1), "y": round(shown.y, 1), "r": round(shown.r, 1),
                "score": round(self.score, 4), "kind": self.kind}

    @property
    def label(self) -> str:
        """The short label drawn beside the circle: the score, then the kind when known."""
        return f"{self.score:.2f}" + (f" {self.kind}" if self.kind else "")

    def size_text(self) -> str:
        """The circle's diameter, in mm where the spacing is known (the longer pixel side: a circle on
        non-square pixels is an ellipse in mm, and its longest diameter is what a reader measures)."""
        if self.spacing_mm is None:
            return f"Ø {2 * self.r:.0f} px"
        return f"Ø {2 * self.r * max(self.spacing_mm):.1f} mm"

    def line(self) -> str:
        """One line for a reader (findings panel, report): score and kind, position and size."""
        return f"{self.label} at x {self.x:.0f}, y {self.y:.0f} px, {self.size_text()}"


@dataclass
class ModelResult:
    """What one bundle said about one frame."""

    model_id: str
    version: str
    task: str
    device: str
    classes: list[str] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    label: str | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)  # float 0..1 at image resolution
    heatmap_class: str | None = None
    tile_gradcam: np.ndarray | None = field(default=None, repr=False)  # Grad-CAM of the top tile, image grid
    tiles: int = 0  # tiles analysed (tiled bundles: the heatmap is then the tile probability map)
    probability_map: np.ndarray | None = field(default=None, repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)  # uint8 0/1 at image resolution
    lesions: list[Lesion] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tta_agreement: float | None = None
    seconds: float = 0.0
    # Bundles that tile at a physical scale: the scale of the file's pixels used, {"um_y", "um_x", "source", "text"},
    # and "read_at" ("1/2") where the picture was read smaller than its file.
    scale: dict | None = None
    # None: this bundle does not mark findings; []: it marks none here. Kept highest score first.
    findings: list[Finding] | None = None
    # Segmenters: whether the picture's pixel spacing was known, so that "no lesion" reads 0 mm², not unknown.
    spacing_known: bool = False
    # Bundles with a novelty reference (core.models.novelty): the share of held-out pictures (validation images; a film
    # detector's films, each measured out of fold) that lie closer
    # to the images the model's network learnt from than this picture (near 1: unlike what it was fitted on).
    novelty: float | None = None

    @property
    def lesion_area_mm2(self) -> float | None:
        """The lesions' total area; 0.0 for none where the spacing is known; None where it is not."""
        if not self.spacing_known or any(l.area_mm2 is None for l in self.lesions):
            return None
        return float(sum(l.area_mm2 for l in self.lesions))

    def lesion_area_px(self, scale: int = 1) -> int:
        """The lesions' total area in the file's pixels (``scale``: the file's pixels per pixel analysed), as the JSON
        and the Findings panel give it."""
        return int(sum(l.area_px for l in self.lesions)) * scale * scale

    def __post_init__(self) -> None:
        if self.findings is not None:
            self.findings = sorted(self.findings, key=lambda f: -f.score)

    @property
    def unusual(self) -> bool:
        """Whether its input check flagged the picture as unlike the model's training images (core.models.novelty)."""
        return flagged_in(self.warnings)

    @property
    def confidence(self) -> float | None:
        return self.probabilities.get(self.label) if self.label else None

    def to_dict(self, scale: int = 1) -> dict:
        """``scale``: the file's pixels per pixel analysed (``ImageRecord.downsample``): lesion and mark positions
        and pixel sizes in the file's own pixels, as the command line and batch outputs give them."""
        out = {
            "model": self.model_id,
            "version": self.version,
            "task": self.task,
            "device": self.device,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }
        if self.task == "classification":
            out.update(probabilities={k: round(v, 6) for k, v in self.probabilities.items()}, label=self.label,
                       probability=None if self.confidence is None else round(self.confidence, 6),
                       heatmap_class=self.heatmap_class)
            if self.tiles:
                out["tiles"] = self.tiles
            if self.scale is not None:
                out["scale"] = self.scale
            if self.tta_agreement is not None:
                out["tta_agreement"] = round(self.tta_agreement, 4)
        else:
            area = self.lesion_area_mm2
            out.update(lesions=len(self.lesions),
                       lesion_area_px=self.lesion_area_px(scale),
                       lesion_area_mm2=None if area is None else round(area, 3),
                       lesion_details=[l.to_dict(scale) for l in self.lesions])
        if self.findings is not None:
            out["findings"] = [f.to_dict(scale) for f in self.findings]
        if self.novelty is not None:
            out["novelty"] = round(self.novelty, 4)
        return out


# A classifier's finding-free class, where it has one: its call and a segmenter's outline on the same picture
# cannot both be right.
NONE_CLASSES = ("notumor", "no", "normal")


DISAGREE = "Models disagree"


def disagreements(result: ModelResult, earlier: list[ModelResult]) -> list[str]:
    """Warnings for ``result`` where it contradicts a result of the same picture and modality before it
    (``earlier``): an outline where a classifier calls the picture finding-free, or a classifier's finding (a class
    other than its finding-free one) where the segmenter outlines nothing. Said on the later of the two, so that
    results shown as they arrive are never changed afterwards (and a series' cached slice results keep the warnings
    they were given)."""
    def outline(r: ModelResult) -> bool:
        return r.task == "segmentation" and bool(r.lesions)

    def nothing(r: ModelResult) -> bool:
        return r.task == "segmentation" and not r.lesions

    def free(r: ModelResult) -> bool:
        return r.label in NONE_CLASSES and r.confidence is not None

    def finding(r: ModelResult) -> bool:  # only a classifier that has a finding-free class says 'a finding'
        return (r.task == "classification" and r.confidence is not None and r.label not in NONE_CLASSES
                and any(c in NONE_CLASSES for c in r.classes))

    out = []
    for other in earlier:
        seg, call = (result, other) if outline(result) and free(other) else \
            (other, result) if outline(other) and free(result) else (None, None)
        if seg is not None:
            out.append(f"{DISAGREE}: {call.model_id} calls this picture '{call.label}' ({call.confidence:.0%}) "
                       f"where {seg.model_id} outlines {len(seg.lesions)} lesion(s); one of them is wrong.")
            continue
        seg, call = (result, other) if nothing(result) and finding(other) else \
            (other, result) if nothing(other) and finding(result) else (None, None)
        if seg is not None:
            out.append(f"{DISAGREE}: {call.model_id} calls this picture '{call.label}' ({call.confidence:.0%}) "
                       f"where {seg.model_id} outlines no lesion; read the picture yourself.")
    return out


@dataclass
class ModelFailure:
    """A model chosen for a picture that could not run on it (a damaged bundle, an export that does not load): said
    for that model, so that one broken bundle never hides the results of the others."""

    model_id: str
    version: str
    task: str
    error: str

    @property
    def message(self) -> str:
        """The failure in one sentence, naming the model (the window's warnings, the command's error)."""
        return f"{self.model_id} did not run: {self.error}"

    def to_dict(self) -> dict:
        return {"model": self.model_id, "version": self.version, "task": self.task, "error": self.error}


@dataclass
class Analysis:
    """All model results for one frame of one image; ``failures``: the chosen models that could not run."""

    path: str
    modality: str
    modality_source: str
    frame: int
    results: list[ModelResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: list[ModelFailure] = field(default_factory=list)
    modality_confidence: float | None = None  # the guesser's, where the modality was guessed
    # the file's own: its pixels per pixel analysed (ImageRecord.downsample) and what reading it said (read smaller)
    downsample: int = 1
    file_warnings: list[str] = field(default_factory=list)

    def heatmap_result(self, model_id: str | None = None) -> "ModelResult | None":
        """The result whose heatmap is drawn: ``model_id``'s where it has one (the model whose Grad-CAM the reader
        chose), else the first with a heatmap. One place for the window, the PDF and the Secondary Capture."""
        with_heatmap = [r for r in self.results if r.heatmap is not None]
        return next((r for r in with_heatmap if r.model_id == model_id), with_heatmap[0] if with_heatmap else None)

    def to_dict(self, scale: int = 1) -> dict:
        """``scale``: as ``ModelResult.to_dict``. ``failures`` only where a model could not run."""
        out = {
            "path": self.path,
            "modality": self.modality,
            "modality_source": self.modality_source,
            "modality_confidence": self.modality_confidence,
            "frame": self.frame,
            "warnings": self.warnings,
            "results": [r.to_dict(scale) for r in self.results],
        }
        if self.failures:
            out["failures"] = [f.to_dict() for f in self.failures]
        return out

    def file_dict(self) -> dict:
        """As ``to_dict``, in the file's own pixels and with what reading the file said first: what analyze --json
        prints and the history keeps (the history had kept a film read at 1/3 in its reduced pixels)."""
        out = self.to_dict(self.downsample)
        out["warnings"] = list(self.file_warnings) + list(out["warnings"])
        return out
