"""The woman's other breast: the film of the same view of the other side, found beside a mammogram.

A mammography detector reads a finding as what one breast shows and the other does not (a reader compares the
two side by side), so it scores a film against its partner where one is there.

A view of an exam the hanging hung ('Analyse exam'): the same view of the other side in that exam
(``partner_in_exam``: same woman, same study), wherever its file lies; TCIA and PACS exports put each series in a
folder of its own, where a search of the film's folder finds nothing. A film opened alone: found beside it, most
trusted first:

1. DICOM: the folder's mammograms grouped into exams as the hanging protocol groups them (patient and study,
   laterality and view from the header or the words CBIS-DDSM writes; ``core.series.hanging``), the same view
   of the other side in the same exam; screening views only (a spot, magnification or XCCL view has no partner
   and is no partner);
2. mini-MIAS numbering: ``mdb001`` and ``mdb002`` are one woman's two MLO films (odd with the next even);
3. a file name that names its side once (``case7_L_CC.png``, ``LEFT-MLO``, ``RCC``): the file whose name is the
   same with the other side.

Nothing else is guessed: two women's films in one folder are never paired by order or size. Folders of more
than ``MAX_FOLDER_FILES`` entries are not indexed for a DICOM partner (a whole archive is not read for one film).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from core.imaging.record import ImageRecord, Modality
from core.models.mammography import OtherBreast
from core.series.hanging import Exam, MammoView, screening_exams
from core.series.index import index_folder

MAX_FOLDER_FILES = 400
_MINI_MIAS = re.compile(r"^mdb(\d{3})$", re.IGNORECASE)
_OTHER = {"R": "L", "L": "R", "RIGHT": "LEFT", "LEFT": "RIGHT"}
# A side word between separators or at either end of the name, alone or fused to the view (RCC, LMLO).
_SIDE = re.compile(r"(?<![A-Za-z])(RIGHT|LEFT|R|L)(?=(?:CC|MLO)?(?![A-Za-z]))", re.IGNORECASE)


def other_breast(record: ImageRecord, frame: int = 0) -> OtherBreast | None:
    """The other breast's film of the same view for a mammogram ``record``, or None (a header or the user says it
    is another modality, or no partner is found by the rules above). A guessed modality does not stop the search:
    the guesser may take a film for ultrasound (2 of the 258 mini-MIAS films out of fold), and a film detector was
    chosen."""
    if record.modality is not Modality.MG and record.modality_source != "guess":
        return None
    path = Path(record.path)
    if record.file_format == "DICOM":
        return _dicom_partner(path, frame)
    return _numbered_partner(path) or _named_partner(path)


def _siblings(path: Path) -> list[Path]:
    try:
        with os.scandir(path.parent) as entries:
            return [Path(e.path) for e in entries if e.is_file() and not e.name.startswith(".")]
    except OSError:
        return []


def _numbered_partner(path: Path) -> OtherBreast | None:
    match = _MINI_MIAS.match(path.stem)
    if not match:
        return None
    number = int(match.group(1))
    wanted = f"mdb{number + 1 if number % 2 else number - 1:03d}"
    found = [p for p in _siblings(path) if p.stem.lower() == wanted and p.suffix.lower() == path.suffix.lower()]
    return OtherBreast(found[0], 0, "mini-MIAS numbering") if len(found) == 1 else None


def _named_partner(path: Path) -> OtherBreast | None:
    sides = list(_SIDE.finditer(path.stem))
    if len(sides) != 1:  # no side, or more than one word that could be one: not guessed
        return None
    side = sides[0]
    word = side.group(1)
    other = _OTHER[word.upper()]
    other = other.lower() if word.islower() else other if word.isupper() else other.capitalize()
    wanted = path.stem[:side.start()] + other + path.stem[side.end():]
    found = [p for p in _siblings(path) if p.stem == wanted and p.suffix.lower() == path.suffix.lower()]
    return OtherBreast(found[0], 0, "file name") if len(found) == 1 else None


def _dicom_partner(path: Path, frame: int) -> OtherBreast | None:
    siblings = _siblings(path)
    if len(siblings) > MAX_FOLDER_FILES:
        return None
    try:
        stamp = path.parent.stat().st_mtime_ns
    except OSError:
        return None
    for exam in _exams(str(path.parent), stamp, len(siblings)):
        mine = _view_of(exam, path, frame)
        if mine is not None:
            return _other_side(exam, mine)
    return None


def partner_in_exam(exam: Exam, record: ImageRecord, frame: int = 0) -> OtherBreast | None:
    """The other breast's film for ``record`` (frame ``frame``) taken from ``exam``, the exam hung: the same view of
    the other side, wherever its file is; None when the film is not one of the exam's views or the exam lacks
    that view. ``functools.partial(partner_in_exam, exam)`` is a ``find_other_breast`` for the Analyzer."""
    mine = _view_of(exam, Path(record.path), frame)
    return None if mine is None else _other_side(exam, mine)


def _view_of(exam: Exam, path: Path, frame: int) -> MammoView | None:
    """The exam's view held in ``path`` at ``frame``, else None."""
    path = path.resolve()
    return next((v for v in exam.views.values() if v.ref.frame == frame and Path(v.ref.path).resolve() == path), None)


def _other_side(exam: Exam, mine: MammoView) -> OtherBreast | None:
    partner = exam.views.get(("L" if mine.laterality == "R" else "R") + mine.view)
    if partner is None:
        return None
    return OtherBreast(partner.ref.path, partner.ref.frame,
                       "DICOM exam" if partner.series.kind != "image" else "exam hung")


@lru_cache(maxsize=8)
def _exams(folder: str, stamp: int, files: int) -> tuple:
    """The folder's screening exams, indexed once per state of the folder (a batch asks for each of its films)."""
    return tuple(screening_exams(index_folder(Path(folder), recursive=False)))
