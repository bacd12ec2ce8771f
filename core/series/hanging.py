"""Mammography screening hanging (Qt-free): the four views of an exam side by side, chest walls facing.

Each mammogram of a study index gets its laterality (R/L) and view (CC/MLO) from ImageLaterality or
Laterality and ViewPosition, else from words in PatientID, SeriesDescription, PatientOrientation or the file
name ('RIGHT_CC', 'L MLO', 'LMLO', ...): CBIS-DDSM, for one, writes the view into PatientOrientation and
both into a per-view PatientID. An MG file's ViewCodeSequence decides the view where it codes one, and only the
screening views are hung: CC and MLO without a view modifier (a spot compression or magnification view, an XCCL,
stays a series to open on its own; ``core.imaging.mammo_words``).

Exams: images are grouped by woman and study, the woman told apart as the study index tells patients apart (the
PatientID, else the name); an image with neither by its StudyInstanceUID, else by its folder and its file name
without the side and view words ('alice_R_CC.png' and 'alice_L_MLO.png', not 'bea_L_CC.png'). When every view
carries a study of its own (CBIS-DDSM), by the patient ID with its laterality and view words taken off. Of a
woman's exams the most recent is hung unless the reader shows one of another (``exam_to_hang``).

Hanging: ``HANGING_ORDER`` left to right, right-breast images with the chest wall on their right edge and
left-breast images with it on their left edge, so each pair meets back to back, upright. Which edge a picture's
chest wall is on comes from PatientOrientation when it is a proper direction pair (the row direction 'P'
or 'A'), else from the pixels (``core.imaging.breast``: the edge with more breast along it). Which way is up
comes from PatientOrientation's column direction (``needs_flip``); without one the picture is taken as stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.imaging.breast import breast_region
from core.imaging.mammo_words import SCREENING_VIEWS, VIEWS, ViewCodes, side_and_view
from core.inference.results import Finding
from core.series.index import Series, SliceRef, StudyIndex

HANGING_ORDER = ("RCC", "LCC", "RMLO", "LMLO")
_SIDE_WORDS, _VIEW_NAMES = "RIGHT|LEFT|R|L", "CC|MLO|XCCL|XCCM"  # as a file name or patient ID writes them
_TAIL = re.compile(rf"[\s_\-.]*({_SIDE_WORDS})[\s_\-.]*({_VIEW_NAMES})$", re.IGNORECASE)


@dataclass
class MammoView:
    series: Series
    ref: SliceRef
    laterality: str  # "R" or "L"
    view: str  # "CC" or "MLO" (the screening views), "XCCL", ...
    source: str  # "DICOM" or where the words came from
    codes: ViewCodes = ViewCodes()  # what the MG header codes: view, modifiers, magnification

    @property
    def name(self) -> str:
        return self.laterality + self.view

    @property
    def screening(self) -> bool:
        """A screening view, the only kind hung and paired: CC or MLO, no view modifier, not magnified."""
        return self.view in SCREENING_VIEWS and not self.codes.modifiers and not self.codes.magnified


@dataclass
class Exam:
    key: str
    patient_id: str
    views: dict[str, MammoView] = field(default_factory=dict)  # by name: RCC, LCC, RMLO, LMLO
    patient_name: str = ""  # PatientName as the header has it ('SMITH^ALICE')
    date: str = ""  # StudyDate (YYYYMMDD) as the study index has it; '' when unknown
    woman: tuple = ()  # who the exam is of, as ``screening_exams`` tells women apart
    others: dict[str, int] = field(default_factory=dict)  # by view name: films of that view not hung (repeats)

    @property
    def complete(self) -> bool:
        return all(name in self.views for name in HANGING_ORDER)

    @property
    def missing(self) -> list[str]:
        return [name for name in HANGING_ORDER if name not in self.views]


def mammo_view(series: Series, ref: SliceRef) -> MammoView | None:
    """The laterality and view of one image, or None when it is not a mammogram with both known. An MG file's
    coded view is the Mammography Image module's own (ViewPosition is the generic DX one): it wins."""
    codes = ref.view_codes or ViewCodes()  # read with the header when the folder was indexed
    side = ref.laterality if ref.laterality in ("R", "L") else ""
    view = codes.view or VIEWS.get(ref.view, "")
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
    return MammoView(series, ref, side, view, source, codes)


def exam_key(patient_id: str) -> str:
    """The patient ID without a trailing laterality and view ('P_00173_RIGHT_CC' -> 'P_00173')."""
    return _TAIL.sub("", patient_id.strip())


_NAME_PARTS = re.compile(r"[\s_\-.]+")
_VIEW_WORDS = re.compile(rf"^({_SIDE_WORDS})?({_VIEW_NAMES})?$")


def _name_without_view(stem: str) -> str:
    """A file name's words without those that name a side or view, wherever they stand ('alice_CC_R',
    'alice_R_CC_2020', 'RCC_alice' -> 'ALICE', 'ALICE_2020', 'ALICE'): the woman a PNG export names. Only a
    trailing pair had been dropped, so such names made four one-view exams."""
    words = [w for w in _NAME_PARTS.split(stem.upper()) if w]
    return "_".join(w for w in words if not _VIEW_WORDS.match(w)) or exam_key(stem).upper()


def _woman(view: MammoView) -> tuple[str, ...]:
    """Who an image is of, told apart as the study index tells patients apart (``core.series.index``: the
    PatientID, else the name), never lumping two women into one exam: without either, its study (one woman's),
    else its folder and its file name without the side and view words (PNG exports name the woman there)."""
    series, path = view.series, Path(view.ref.path)
    if series.patient_id:
        return ("id", series.patient_id)
    if series.patient_name:
        return ("name", series.patient_name)
    if series.study_uid:
        return ("study", series.study_uid)
    return ("file", str(path.parent), _name_without_view(path.stem))


def _hang_first(view: MammoView) -> tuple:
    """Which of several films of one view is hung: one for presentation before raw detector data ('FOR
    PROCESSING', which is not read as a film), then the later instance (a repeat is taken after the first)."""
    return (view.ref.intent == "FOR PROCESSING", -(view.ref.instance or 0))


def screening_exams(index: StudyIndex) -> list[Exam]:
    """The mammography exams of an index, in index order; of several screening images of one view, the one
    ``_hang_first`` puts first is hung and the others are counted (``Exam.others``), so the reader is told."""
    dates = {id(s): study.date for patient in index.patients for study in patient.studies for s in study.series}
    views = [v for s in index.series for ref in s.slices if (v := mammo_view(s, ref)) is not None and v.screening]
    by_study: dict[tuple[tuple[str, ...], str], list[MammoView]] = {}
    for v in views:
        by_study.setdefault((_woman(v), v.series.study_uid), []).append(v)
    exams: dict[str, Exam] = {}
    for (woman, study), members in by_study.items():
        patient, name = members[0].series.patient_id, members[0].series.patient_name
        stripped = exam_key(patient)
        if len(members) == 1 and stripped != patient:  # CBIS-DDSM: a study per view, the view in the patient ID
            key, patient, name, woman = f"patient:{stripped}", stripped, exam_key(name), ("id", stripped)
        else:
            key = f"study:{'|'.join(woman)}|{study}"
        exam = exams.setdefault(key, Exam(key, patient, patient_name=name, woman=woman))
        for v in sorted(members, key=_hang_first):  # stable: index order among equals
            if exam.views.setdefault(v.name, v) is not v:
                exam.others[v.name] = exam.others.get(v.name, 0) + 1
            exam.date = max(exam.date, dates.get(id(v.series), ""))
    return list(exams.values())


def exams_of_woman(exams: list[Exam], exam: Exam) -> list[Exam]:
    """``exam`` and the other exams of its woman, oldest first (unknown dates first)."""
    return sorted((e for e in exams if e.woman == exam.woman), key=lambda e: e.date)


def exam_to_hang(exams: list[Exam], series: Series | None = None) -> Exam | None:
    """The exam holding ``series`` (the one the reader shows; None where it is in none: another woman's exam is
    never hung in its place); with no series, the most recent exam of the first exam's woman: a prior exam listed
    first (the index orders studies by date) is not hung in place of the current one."""
    if series is not None:
        return next((e for e in exams if any(v.series is series for v in e.views.values())), None)
    return max(exams_of_woman(exams, exams[0]), key=lambda e: e.date)  # equal dates: the first listed


def chest_wall_side(picture: np.ndarray, patient_orientation: tuple[str, ...] = ()) -> str:
    """'left' or 'right': the edge of the picture (as stored) the chest wall is on.

    PatientOrientation's row direction decides when it is 'A' or 'P' (posterior = towards the chest wall);
    otherwise the breast region's chest wall (``core.imaging.breast``, the one rule for it: the edge of the breast
    with more breast along it, measured right on all 258 mini-MIAS films; the brightness of the edge strips was
    wrong on 17, a label or a bright film edge outshining the tissue)."""
    if patient_orientation and patient_orientation[0][:1] in ("A", "P"):
        return "right" if patient_orientation[0][:1] == "P" else "left"
    grey = np.asarray(picture)
    if grey.ndim == 3:
        grey = grey.mean(axis=2).astype(grey.dtype)
    if grey.dtype != np.uint8:  # modality values: stretched onto 8 bits as breast_region needs
        grey = grey.astype(np.float32)
        low, span = float(grey.min()), float(np.ptp(grey))
        grey = ((grey - low) * (255.0 / span) if span > 0 else np.zeros_like(grey)).astype(np.uint8)
    return breast_region(grey, "CC").chest_wall  # 'CC': only the edge is asked, no pectoral muscle searched


def needs_mirror(laterality: str, side: str) -> bool:
    """Whether to mirror a picture so that its chest wall faces the other breast (R: right edge, L: left)."""
    return (laterality == "R" and side == "left") or (laterality == "L" and side == "right")


def needs_flip(laterality: str, view: str, patient_orientation: tuple[str, ...] = ()) -> bool:
    """Whether to turn a picture upside down so that it hangs upright as the standard layouts have it ('P\\L' or
    'A\\R' on a CC, 'P\\FL' or 'A\\FR' on an MLO): PatientOrientation's column direction (top to bottom) pointing
    the other way, towards the head on an MLO, towards the breast's own side on a CC (a film stored upside down,
    or rotated 180 degrees, which the row direction mirrors back). Without a proper direction pair (the row 'A' or
    'P') nothing is flipped."""
    if len(patient_orientation) < 2 or patient_orientation[0][:1] not in ("A", "P"):
        return False
    column = patient_orientation[1]
    if not column or set(column) - set("LRAPHF"):
        return False
    if view == "MLO":
        return "H" in column and "F" not in column
    if view == "CC":
        other = "L" if laterality == "R" else "R"
        return laterality in column and other not in column
    return False


def hung_findings(findings: list[Finding], source_shape: tuple[int, ...], hung_shape: tuple[int, ...],
                  mirrored: bool, flipped: bool = False) -> list[Finding]:
    """A view's findings (image pixels of the analysed picture) where they lie on its hung picture: scaled to its
    size, mirrored and flipped (``needs_flip``) with it."""
    zy, zx = hung_shape[0] / source_shape[0], hung_shape[1] / source_shape[1]
    out = []
    for f in findings:
        x, y = f.x * zx, f.y * zy
        out.append(replace(f, x=(hung_shape[1] - 1 - x) if mirrored else x,
                           y=(hung_shape[0] - 1 - y) if flipped else y, r=f.r * (zx + zy) / 2))
    return out
