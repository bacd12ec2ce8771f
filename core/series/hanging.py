"""Mammography screening hanging (Qt-free): the four views of an exam side by side, chest walls facing.

Each mammogram of a study index gets its laterality (R/L) and view (CC/MLO) from ImageLaterality or
Laterality and ViewPosition, else from words in PatientID, SeriesDescription, PatientOrientation or the file
name ('RIGHT_CC', 'L MLO', 'LMLO', ...): CBIS-DDSM, for one, writes the view into PatientOrientation and
both into a per-view PatientID. Images are grouped into exams by patient and study; when every view carries
a study of its own (CBIS-DDSM), by the patient ID with its laterality and view words taken off.

Hanging: ``HANGING_ORDER`` left to right, right-breast images with the chest wall on their right edge and
left-breast images with it on their left edge, so each pair meets back to back. Which edge a picture's
chest wall is on comes from PatientOrientation when it is a proper direction pair (the row direction 'P'
or 'A'), else from the pixels: the chest-wall side is the edge with more breast along it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.imaging.mammo_words import VIEWS, side_and_view
from core.inference.results import Finding
from core.series.index import Series, SliceRef, StudyIndex

HANGING_ORDER = ("RCC", "LCC", "RMLO", "LMLO")
EDGE_FRACTION = 0.15  # outer fraction of the width compared to find the chest wall
_TAIL = re.compile(r"[\s_\-.]*(RIGHT|LEFT|R|L)[\s_\-.]*(CC|MLO|XCCL|XCCM)$", re.IGNORECASE)


@dataclass
class MammoView:
    series: Series
    ref: SliceRef
    laterality: str  # "R" or "L"
    view: str  # "CC" or "MLO"
    source: str  # "DICOM" or where the words came from

    @property
    def name(self) -> str:
        return self.laterality + self.view


@dataclass
class Exam:
    key: str
    patient_id: str
    views: dict[str, MammoView] = field(default_factory=dict)  # by name: RCC, LCC, RMLO, LMLO

    @property
    def complete(self) -> bool:
        return all(name in self.views for name in HANGING_ORDER)

    @property
    def missing(self) -> list[str]:
        return [name for name in HANGING_ORDER if name not in self.views]


def mammo_view(series: Series, ref: SliceRef) -> MammoView | None:
    """The laterality and view of one image, or None when it is not a mammogram with both known."""
    side = ref.laterality if ref.laterality in ("R", "L") else ""
    view = VIEWS.get(ref.view, "")
    source = "DICOM" if side and view else ""
    if not (side and view):
        texts = [("PatientID", series.patient_id), ("SeriesDescription", series.description),
                 ("PatientOrientation", " ".join(ref.patient_orientation)), ("file name", Path(ref.path).stem),
                 ("folder name", Path(ref.path).parent.name)]
        found_side, found_view, where = side_and_view(texts)
        side, view, source = side or found_side, view or found_view, where or source
    is_mammo = series.modality == "MG" or (series.modality in ("", "OT") and side and view)
    if not (is_mammo and side and view):
        return None
    return MammoView(series, ref, side, view, source)


def exam_key(patient_id: str) -> str:
    """The patient ID without a trailing laterality and view ('P_00173_RIGHT_CC' -> 'P_00173')."""
    return _TAIL.sub("", patient_id.strip())


def screening_exams(index: StudyIndex) -> list[Exam]:
    """The mammography exams of an index, in index order; the first image found of each view is hung."""
    views = [v for s in index.series for ref in s.slices if (v := mammo_view(s, ref)) is not None]
    by_study: dict[tuple[str, str], list[MammoView]] = {}
    for v in views:
        by_study.setdefault((v.series.patient_id, v.series.study_uid), []).append(v)
    exams: dict[str, Exam] = {}
    for (patient, study), members in by_study.items():
        stripped = exam_key(patient)
        key = f"patient:{stripped}" if len(members) == 1 and stripped != patient else f"study:{patient}|{study}"
        exam = exams.setdefault(key, Exam(key, stripped if key.startswith("patient:") else patient))
        for v in members:
            exam.views.setdefault(v.name, v)
    return list(exams.values())


def chest_wall_side(picture: np.ndarray, patient_orientation: tuple[str, ...] = ()) -> str:
    """'left' or 'right': the edge of the picture (as stored) the chest wall is on.

    PatientOrientation's row direction decides when it is 'A' or 'P' (posterior = towards the chest wall);
    otherwise the brighter of the two outer ``EDGE_FRACTION`` strips of the picture (the breast lies along the
    chest wall and narrows towards the nipple; the background is dark)."""
    if patient_orientation and patient_orientation[0][:1] in ("A", "P"):
        return "right" if patient_orientation[0][:1] == "P" else "left"
    grey = np.asarray(picture, np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    strip = max(1, int(round(grey.shape[1] * EDGE_FRACTION)))
    return "left" if grey[:, :strip].mean() >= grey[:, -strip:].mean() else "right"


def needs_mirror(laterality: str, side: str) -> bool:
    """Whether to mirror a picture so that its chest wall faces the other breast (R: right edge, L: left)."""
    return (laterality == "R" and side == "left") or (laterality == "L" and side == "right")


def hung_picture(view: MammoView, height: int = 800) -> tuple[np.ndarray, bool]:
    """The view's 8-bit picture, at most ``height`` rows, mirrored for the hanging; and whether it was."""
    import cv2

    from core.imaging import load_image

    picture = load_image(view.ref.path).display(view.ref.frame)
    scale = min(1.0, height / picture.shape[0])
    if scale < 1.0:
        picture = cv2.resize(picture, (max(1, round(picture.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
    mirror = needs_mirror(view.laterality, chest_wall_side(picture, view.ref.patient_orientation))
    return (np.ascontiguousarray(picture[:, ::-1]) if mirror else picture), mirror


def hung_findings(findings: list[Finding], source_shape: tuple[int, ...], hung_shape: tuple[int, ...],
                  mirrored: bool) -> list[Finding]:
    """A view's findings (image pixels of the analysed picture) where they lie on its hung picture: scaled to its
    size and mirrored with it."""
    zy, zx = hung_shape[0] / source_shape[0], hung_shape[1] / source_shape[1]
    out = []
    for f in findings:
        x = f.x * zx
        out.append(replace(f, x=(hung_shape[1] - 1 - x) if mirrored else x, y=f.y * zy, r=f.r * (zx + zy) / 2))
    return out
