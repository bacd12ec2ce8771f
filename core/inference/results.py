"""Result objects: everything a viewer draws and a report prints, free of Qt and TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

    def to_dict(self) -> dict:
        return {
            "area_px": self.area_px,
            "area_mm2": self.area_mm2,
            "bbox": list(self.bbox),
            "max_diameter_px": round(self.max_diameter_px, 2),
            "max_diameter_mm": None if self.max_diameter_mm is None else round(self.max_diameter_mm, 2),
        }


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

    @property
    def confidence(self) -> float | None:
        return self.probabilities.get(self.label) if self.label else None

    def to_dict(self) -> dict:
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
            if self.tta_agreement is not None:
                out["tta_agreement"] = round(self.tta_agreement, 4)
        else:
            area = [l.area_mm2 for l in self.lesions if l.area_mm2 is not None]
            out.update(lesions=len(self.lesions), lesion_area_px=int(sum(l.area_px for l in self.lesions)),
                       lesion_area_mm2=round(sum(area), 3) if area and len(area) == len(self.lesions) else None,
                       lesion_details=[l.to_dict() for l in self.lesions])
        return out


@dataclass
class Analysis:
    """All model results for one frame of one image."""

    path: str
    modality: str
    modality_source: str
    frame: int
    results: list[ModelResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "modality": self.modality,
            "modality_source": self.modality_source,
            "frame": self.frame,
            "warnings": self.warnings,
            "results": [r.to_dict() for r in self.results],
        }
