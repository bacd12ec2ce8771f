"""The study index: a folder (recursively) or a DICOMDIR as patients -> studies -> series -> slices.

Headers are read without pixel data (pydicom ``stop_before_pixels``, large elements deferred), so a folder
of hundreds of slices indexes in well under a second; pixels are loaded later by ``core.series.stack``.

Every file is opened through the loader's guarded door (``core.imaging.loader.open_regular``): FIFOs,
devices, links to them, dangling or looping links, folders named like files, files larger on disk than any
image decoded here and deflated data sets that would inflate past the memory budget are listed in the
index's ``problems`` with the reason, never opened by pydicom or PIL (nothing can block, stream without end
or inflate). Links to folders are not followed (listed too), as in batch discovery. An image cut short inside its
header (its SOP class an image's, its size not reached) is listed there too, and its series, where the file's UIDs
were read, says that a file of it could not be read.

Grouping: a series is one SeriesInstanceUID within its study; a multi-frame file is a series of its own
(its frames are the slices); a non-DICOM image (PNG, JPEG, TIFF, BMP) is a one-image series.

Order: slices are sorted along the slice normal (row cosines x column cosines of ImageOrientationPatient)
by the projection of ImagePositionPatient on it; where any slice lacks either attribute the series is
ordered by InstanceNumber (then file name) and says so in its warnings.

Plane: the axis the slice normal is closest to (x: sagittal, y: coronal, z: axial); ``oblique`` when the
normal is more than ``OBLIQUE_DEGREES`` from every axis.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.errors import DiagnosticError
from core.imaging.dicom import _ITEM, _ITEM_END, _LONG_VRS, _SEQUENCE_END, _UNDEFINED, frame_counts
from core.imaging.mammo_words import ViewCodes, view_codes

OBLIQUE_DEGREES = 20.0  # a normal further than this from every patient axis makes the plane 'oblique'
GAP_FACTOR = 1.5  # a step between neighbours larger than this times the series' median step is a gap ...
MISSING_SLICE_FACTOR = 1.8  # ... where it also spans this many of its shortest steps (about two: a slice missing)
DUPLICATE_MM = 0.01  # neighbours closer than this along the normal share a position
ORIENTATION_TOLERANCE = 1e-3  # direction cosines further apart than this are another orientation
_DEFER = "2 KB"
MAX_DICOMDIR_RECORDS = 200_000  # directory records of one DICOMDIR (a DVD of CT studies holds some 20,000)
_DIRECTORY_RECORDS = 0x00041220  # DirectoryRecordSequence
_RASTER = {"PNG", "JPEG", "TIFF", "BMP"}
_FILE_SUFFIXES = {".dcm", ".dicom", ".ima", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass
class SliceRef:
    """One slice: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    frame: int = 0
    instance: int | None = None  # InstanceNumber (frame number + 1 for frames of a multi-frame file)
    sop_uid: str = ""
    position: tuple[float, float, float] | None = None  # ImagePositionPatient (mm)
    orientation: tuple[float, ...] | None = None  # ImageOrientationPatient: row then column cosines
    rows: int | None = None
    columns: int | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    thickness_mm: float | None = None
    spacing_between_mm: float | None = None  # SpacingBetweenSlices
    position_mm: float | None = None  # along the series' slice normal; set when the series is ordered
    laterality: str = ""  # ImageLaterality, else the series' Laterality (mammography: R or L)
    view: str = ""  # ViewPosition (mammography: CC, MLO, ...)
    patient_orientation: tuple[str, ...] = ()  # PatientOrientation: row then column direction (e.g. 'P', 'L')
    echo: str = ""  # which echo of a multi-echo acquisition ("echo 2, TE 80 ms"); '' where not stated
    view_codes: ViewCodes | None = None  # a mammogram's coded view, modifiers and magnification (MG files only)
    intent: str = ""  # PresentationIntentType: 'FOR PRESENTATION' or 'FOR PROCESSING' (raw detector data)

    @property
    def key(self) -> str:
        """Stable identity of the slice (for result caches)."""
        return f"{self.sop_uid or self.path}#{self.frame}"


@dataclass
class Series:
    key: str  # unique within an index (the UID, or the file for multi-frame and non-DICOM series)
    uid: str  # SeriesInstanceUID ("" for a non-DICOM image)
    kind: str  # "dicom", "multiframe" or "image"
    modality: str = ""
    description: str = ""
    number: int | None = None
    patient_id: str = ""
    patient_name: str = ""
    study_uid: str = ""
    frame_of_reference: str = ""  # FrameOfReferenceUID: series sharing it share patient coordinates
    part: str = ""  # where one SeriesInstanceUID was split by plane or echo: which part ("echo 2, TE 80 ms")
    slices: list[SliceRef] = field(default_factory=list)
    plane: str | None = None  # axial, sagittal, coronal, oblique; None without orientation
    spacing_mm: float | None = None  # between neighbouring slice centres
    spacing_source: str | None = None  # "positions", "SpacingBetweenSlices", "SliceThickness"
    thickness_mm: float | None = None
    normal: tuple[float, float, float] | None = None
    ordered_by: str = "position"  # "position", "instance", "file" or "frame" (multi-frame without geometry)
    breaks: list[int] = field(default_factory=list)  # i: a gap lies between slice i and i + 1
    unread_files: list[str] = field(default_factory=list)  # files of the series that could not be indexed
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def history_key(self) -> str:
        """What the history files this series' analyses under: its SeriesInstanceUID, with the part where it was
        split (the parts share the UID, and one part's verdicts are not another's)."""
        return f"{self.uid}|{self.part}" if self.uid and self.part else self.uid

    @property
    def files(self) -> list[Path]:
        return list(dict.fromkeys(s.path for s in self.slices))

    def without_file_names(self, text: str) -> str:
        """``text`` (a warning) with the names of this series' files withheld, for an anonymised report: a file may
        be named after the patient. Warnings quote the file names they give ('IM0025.dcm', as ImageLoadError does),
        and only quoted names are withheld: a series of files named 1, 2, 3 keeps the numbers of its text."""
        names = {p.name for p in self.files} | {n for rel in self.unread_files for n in (rel, Path(rel).name)}
        for name in sorted(names, key=len, reverse=True):
            text = text.replace(f"'{name}'", "(file name withheld)")
        return text

    def summary(self) -> dict:
        return {"series_uid": self.uid or None, "description": self.description, "modality": self.modality,
                "plane": self.plane, "slices": len(self.slices),
                "spacing_mm": None if self.spacing_mm is None else round(self.spacing_mm, 4),
                "thickness_mm": self.thickness_mm, "ordered_by": self.ordered_by, "warnings": list(self.warnings)}


@dataclass
class Study:
    uid: str
    date: str = ""
    description: str = ""
    accession: str = ""
    series: list[Series] = field(default_factory=list)


@dataclass
class Patient:
    id: str
    name: str = ""
    studies: list[Study] = field(default_factory=list)


@dataclass
class StudyIndex:
    root: Path
    patients: list[Patient] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # entries that could not be indexed, with the reason
    skipped: int = 0  # files that are not images (reports, DICOMDIR, other files)

    @property
    def series(self) -> list[Series]:
        return [s for p in self.patients for st in p.studies for s in st.series]

    def find(self, key: str) -> Series:
        for s in self.series:
            if key in (s.key, s.uid):
                return s
        raise KeyError(key)


# ----------------------------------------------------------------------------------------------- entry points
def index_path(path: str | Path) -> StudyIndex:
    """A folder (recursively), a DICOMDIR, or a single file."""
    path = Path(path)
    if path.is_dir():
        return index_folder(path)
    if path.is_file() and is_dicomdir(path):
        return index_dicomdir(path)
    if not path.exists():
        raise DiagnosticError(f"'{path}' does not exist (moved or deleted?)")  # a reader's message, not a crash
    return index_files([path], root=path.parent)


def index_folder(folder: str | Path, recursive: bool = True) -> StudyIndex:
    """Every image file below ``folder`` (hidden files and folders and DICOMDIR files skipped).

    Entries that are neither (FIFOs, devices, broken links: see ``index_files``), links to folders (not
    followed), folders that cannot be listed and empty folders named like image files are in ``problems``.
    """
    folder = Path(folder)
    files, problems = _walk(folder, folder, recursive)
    index = index_files(files, root=folder)
    index.problems[:0] = problems
    return index


def index_paths(paths: list[Path]) -> StudyIndex:
    """Several files and folders at once (dropped together) as one index: each folder walked as ``index_folder``
    walks it, each file taken as it is; listed under the folder they share."""
    paths = [Path(p) for p in paths]
    root = Path(os.path.commonpath([str(p if p.is_dir() else p.parent) for p in paths]))
    files: list[Path] = []
    seen: set[Path] = set()  # a folder dropped with a file in it: each file once
    problems: list[str] = []
    for path in paths:
        found, said = _walk(path, root, True) if path.is_dir() else ([path], [])
        files.extend(f for f in found if f not in seen)
        seen.update(found)
        problems.extend(said)
    index = index_files(files, root=root)
    index.problems[:0] = problems
    return index


def _walk(folder: Path, root: Path, recursive: bool) -> tuple[list[Path], list[str]]:
    """The files below ``folder`` and the problems met on the way, named relative to ``root``."""
    files: list[Path] = []
    problems: list[str] = []
    named_like_files: list[Path] = []

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else folder
        problems.append(f"{_rel(where, root) if where != root else where}: a folder that cannot be read "
                        f"({exc.strerror or exc}): its files were not indexed")

    for here, dirs, names in os.walk(folder, onerror=unreadable):
        listed = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        dirs[:] = [d for d in listed if not os.path.islink(os.path.join(here, d))]
        for d in listed:
            path = Path(here) / d
            if d not in dirs:
                problems.append(f"{_rel(path, root)}: a link to a folder: not followed "
                                "(links to folders are not entered, to avoid loops)")
            elif path.suffix.lower() in _FILE_SUFFIXES:
                named_like_files.append(path)
        files.extend(Path(here) / n for n in sorted(names) if not n.startswith("."))
    holding: set[Path] = set()  # every folder with a file somewhere below it
    for here in {f.parent for f in files}:
        while here not in holding:
            holding.add(here)
            if here == folder or here == here.parent:
                break
            here = here.parent
    for path in named_like_files:  # a folder 'x.dcm' holding slices is a folder; an empty one is a mistake
        if path not in holding:
            problems.append(f"{_rel(path, root)}: this is a folder, not an image file (and no file is in it)")
    return files, problems


def index_dicomdir(dicomdir: str | Path) -> StudyIndex:
    """The image files a DICOMDIR references (its directory records, read with pydicom)."""
    import pydicom

    from core.errors import ImageLoadError
    from core.imaging.dicom import check_deflated
    from core.imaging.limits import MAX_DICOMDIR_BYTES
    from core.imaging.loader import open_regular

    dicomdir = Path(dicomdir)
    problems: list[str] = []
    try:
        with open_regular(dicomdir, MAX_DICOMDIR_BYTES) as fh:  # read whole: it has a size limit of its own
            check_deflated(fh, dicomdir)
            fh.seek(0)
            _count_records(fh, dicomdir)
            fh.seek(0)
            records = pydicom.dcmread(fh, force=True).DirectoryRecordSequence
    except ImageLoadError as exc:
        index = StudyIndex(dicomdir.parent)
        index.problems.append(f"{dicomdir.name}: {exc.reason}")
        return index
    except Exception as exc:  # noqa: BLE001 - a damaged DICOMDIR is reported, not raised
        index = StudyIndex(dicomdir.parent)
        index.problems.append(f"{dicomdir.name}: not a readable DICOMDIR ({type(exc).__name__}: {exc})")
        return index
    files: list[Path] = []
    seen: set[Path] = set()  # a set beside the list: a DICOMDIR of 20,000 files is not searched 20,000 times
    listings: dict[Path, dict[str, Path]] = {}  # each folder listed once, whatever case its names are in
    base = os.path.realpath(dicomdir.parent)
    for record in records:
        parts = record.get("ReferencedFileID")
        if not parts:
            continue
        parts = [parts] if isinstance(parts, str) else [str(p) for p in parts]
        path = _find_case_insensitive(dicomdir.parent, parts, listings)
        if path is None:
            problems.append(f"{'/'.join(parts)}: listed in the DICOMDIR but missing on disk")
        elif os.path.commonpath([base, os.path.realpath(path)]) != base:  # '..', an absolute path, a link out
            problems.append(f"{'/'.join(parts)}: points outside the DICOMDIR's folder: not indexed (a DICOMDIR "
                            "references files on its own medium only)")
        elif path not in seen:
            files.append(path)
            seen.add(path)
    index = index_files(files, root=dicomdir.parent)
    index.problems[:0] = problems
    return index


def _count_records(fh, dicomdir: Path) -> None:
    """Refuse (``ImageLoadError``) a DICOMDIR of more than ``MAX_DICOMDIR_RECORDS`` directory records before pydicom
    reads them, each a data set (two million empty records took 83 s and 1.4 GB): counted by their item headers,
    their values skipped."""
    from pydicom.filereader import read_partial

    from core.errors import ImageLoadError

    ds = read_partial(fh, lambda tag, vr, length: tag == _DIRECTORY_RECORDS, force=True)  # the few elements before
    stream = ds.buffer if ds.buffer is not None else fh  # a deflated DICOMDIR: its inflated copy
    implicit, little = ds.original_encoding
    walk = _Walk(stream, little is not False, budget=MAX_DICOMDIR_RECORDS * 32)
    try:
        tag, vr, length = walk.header(bool(implicit))
        if tag != _DIRECTORY_RECORDS:
            return
        records = walk.items(length, bool(implicit) or vr == b"UN", MAX_DICOMDIR_RECORDS + 1)
    except _TooMany:
        raise ImageLoadError(dicomdir, f"its directory records hold more than {MAX_DICOMDIR_RECORDS * 32:,} data "
                                       "elements: too many to index (a damaged or hostile DICOMDIR?)") from None
    except (EOFError, OSError, ValueError):
        return  # damaged: pydicom's read says how
    if records > MAX_DICOMDIR_RECORDS:
        raise ImageLoadError(dicomdir, f"it lists more than {MAX_DICOMDIR_RECORDS:,} directory records: too many to "
                                       "index (a damaged or hostile DICOMDIR?)")


def _find_case_insensitive(root: Path, parts: list[str], listings: dict[Path, dict[str, Path]]) -> Path | None:
    """File IDs are upper case on the medium; copies to a case-sensitive disk are often lower case. ``listings``:
    each folder's entries by upper-case name, listed once for every file looked up in it.

    Whatever is found is returned, a FIFO or a folder too: ``index_files`` says why it cannot be indexed.
    """
    path = root.joinpath(*parts)
    if os.path.lexists(path):
        return path
    here = root
    for part in parts:
        if here not in listings:
            try:
                listings[here] = {c.name.upper(): c for c in sorted(here.iterdir(), reverse=True)}  # first name wins
            except OSError:
                listings[here] = {}
        match = listings[here].get(part.upper())
        if match is None:
            return None
        here = match
    return here


def index_files(files: list[Path], root: Path) -> StudyIndex:
    """The series of ``files``: images grouped, the rest counted as ``skipped`` (not images) or listed in
    ``problems`` with the reason (not regular files, too large, unreadable, damaged headers)."""
    from core.errors import ImageLoadError

    index = StudyIndex(Path(root))
    groups: dict[str, Series] = {}
    studies: dict[tuple[str, str], Study] = {}
    patients: dict[str | tuple[str, str], Patient] = {}
    unread: dict[str, list[str]] = {}  # series key -> its files cut short
    for path in files:
        try:
            entry = _read_entry(path)
        except _NotAnImage:
            index.skipped += 1
            continue
        except _CutShort as exc:  # an image, not a report: its series must not read as whole
            index.problems.append(f"{_rel(path, root)}: {exc.reason}")
            if exc.key:
                unread.setdefault(exc.key, []).append(_rel(path, root))
            continue
        except ImageLoadError as exc:  # refused by the guarded door: not a regular file, too large, ...
            index.problems.append(f"{_rel(path, root)}: {exc.reason}")
            continue
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the index
            index.problems.append(f"{_rel(path, root)}: {type(exc).__name__}: {exc}")
            continue
        series_fields, study_fields, patient_fields, slices = entry
        key = series_fields["key"]
        if key not in groups:
            groups[key] = Series(**series_fields)
            pid = patient_fields["id"]
            # Without a PatientID (anonymised folders) the name tells patients apart: never one patient's images
            # filed under another's name.
            pkey = pid if pid else ("", patient_fields["name"])
            patient = patients.setdefault(pkey, Patient(pid, patient_fields["name"]))
            skey = (pkey, study_fields["uid"])
            if skey not in studies:
                studies[skey] = Study(**study_fields)
                patient.studies.append(studies[skey])
            studies[skey].series.append(groups[key])
        else:
            groups[key].warnings.extend(w for w in series_fields.get("warnings", ()) if w not in groups[key].warnings)
        groups[key].slices.extend(slices)
    for key, names in unread.items():
        if key in groups:
            _add_unread(groups[key], names)
    for study in studies.values():
        study.series = [part for series in study.series for part in _split(series)]
        for series in study.series:
            _arrange(series)
    for patient in patients.values():
        for study in patient.studies:
            study.series.sort(key=lambda s: (s.number is None, s.number or 0, s.uid, s.key))
        patient.studies.sort(key=lambda st: (st.date, st.uid))
    index.patients = sorted(patients.values(), key=lambda p: (p.id == "", p.id, p.name))
    return index


def _add_unread(series: Series, names: list[str]) -> None:
    """Record the files of ``series`` that could not be read, and say so in its warnings."""
    series.unread_files.extend(names)
    listed = ", ".join(f"'{name}'" for name in names[:3]) + (", ..." if len(names) > 3 else "")
    what = "1 file of this series could not be read and is" if len(names) == 1 else \
        f"{len(names)} files of this series could not be read and are"
    series.warnings.append(f"{what} not among its slices: {listed}.")


# ----------------------------------------------------------------------------------------------- headers
class _NotAnImage(Exception):
    pass


class _CutShort(Exception):
    """An image file whose header ends before the image's size: ``key`` is its series' key where its UIDs were read."""

    def __init__(self, reason: str, key: str | None) -> None:
        super().__init__(reason)
        self.reason, self.key = reason, key


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def is_dicomdir(path: Path, header=None) -> bool:
    """Whether ``path`` is a DICOMDIR: by its name, or the media storage class of its file meta (``header``, where
    it was read already); False for anything unreadable."""
    if path.name.upper() == "DICOMDIR":
        return True
    meta = _file_meta(path) if header is None else getattr(header, "file_meta", None) or {}
    return str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_SOP_CLASS


def _file_meta(path: Path):
    """The file meta group of ``path`` only (a data set of two million sequence items is not parsed to ask what the
    file is), read through the guarded door; {} for anything unreadable, refused or not DICOM."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    from core.imaging.loader import open_regular

    try:
        with open_regular(path) as fh:
            read_preamble(fh, True)
            return _read_file_meta_info(fh)
    except Exception:  # noqa: BLE001 - not DICOM, truncated, refused: not a DICOMDIR
        return {}


def _read_entry(path: Path):
    """One file's series, study, patient and slices; ``_NotAnImage`` or ``ImageLoadError`` (refused, with why).

    The file is opened once, through the guarded door, and read through that descriptor only: the header
    bytes, the deflate check, pydicom's header read (and any deferred element it needs) or PIL's.
    """
    from core.imaging import limits
    from core.imaging.loader import open_regular, sniff_format

    with open_regular(path, limits.MAX_FILE_BYTES) as fh:  # a FIFO named DICOMDIR is refused too
        if path.name.upper() == "DICOMDIR":
            raise _NotAnImage
        fmt = sniff_format(fh.read(132))
        fh.seek(0)
        if fmt in _RASTER:
            return _raster_entry(path, fh)
        if fmt != "DICOM":
            if path.suffix.lower() in _FILE_SUFFIXES:  # named as an image (bad.dcm): listed, as batch lists it
                from core.errors import ImageLoadError

                raise ImageLoadError(path, f"named like an image ({path.suffix}), but its content is neither DICOM "
                                           "nor a PNG, JPEG, TIFF or BMP picture")
            raise _NotAnImage
        import pydicom

        from core.imaging.dicom import check_deflated

        check_deflated(fh, path)  # pydicom would inflate a deflated data set whole, headers only or not
        fh.seek(0)
        ds = pydicom.dcmread(fh, stop_before_pixels=True, defer_size=_DEFER, force=True)
        stream = ds.buffer if ds.buffer is not None else fh  # a deflated data set is read from its inflated copy
        frames = frame_counts(ds, stream)  # read where dcmread stopped: at the pixel data element, if any
        if stream is fh:
            ds.buffer = fh  # deferred elements are read from this descriptor, not by opening the path again
        if str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")) == _DICOMDIR_SOP_CLASS:
            raise _NotAnImage
        if "Rows" not in ds or "Columns" not in ds:
            _refuse_cut_short(ds)
            raise _NotAnImage  # structured reports, presentation states, plans: no image
        return _dicom_entry(path, ds, frames)


def _refuse_cut_short(ds) -> None:
    """``_CutShort`` for a DICOM file without an image size that its SOP class calls an image, or that ends before
    saying what it holds (no SOP class: every DICOM file states one): a copy cut short (an interrupted transfer)
    that would otherwise drop out of its series unnoticed."""
    from pydicom.uid import UID

    sop_class = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "") or _text(ds, "SOPClassUID"))
    if not sop_class:
        raise _CutShort("a DICOM file cut short or damaged before it says what it holds (no SOP class): it cannot be "
                        "shown or analysed", None)
    name = UID(sop_class).name
    if "Image Storage" in name:
        series_uid = _text(ds, "SeriesInstanceUID")
        raise _CutShort(f"a truncated DICOM image ({name}): its header ends before the image size (Rows, Columns), "
                        "so it cannot be shown or analysed",
                        _series_key(_text(ds, "StudyInstanceUID"), series_uid) if series_uid else None)


class _TooMany(Exception):
    pass


class _Walk:
    """Element and item headers of a DICOM stream passed over without reading values (``budget`` headers at most:
    ``_TooMany`` beyond). The contents of an undefined-length UN element are implicit VR (PS3.5 6.2.2)."""

    def __init__(self, fp, little: bool, budget: float = math.inf) -> None:
        import struct

        self.fp, self.budget = fp, budget
        self.pair, self.long = struct.Struct("<HH" if little else ">HH"), struct.Struct("<I" if little else ">I")
        self.short = struct.Struct("<H" if little else ">H")
        self.count = 0  # items counted by the last ``items``, also when it ended in an error

    def header(self, implicit: bool) -> tuple[int, bytes | None, int]:
        """(tag, VR (None for items and implicit VR), length) of the header at the stream's position."""
        self.budget -= 1
        if self.budget < 0:
            raise _TooMany
        raw = self.fp.read(8)
        if len(raw) < 8:
            raise EOFError("the data set ends inside a sequence")
        group, element = self.pair.unpack_from(raw)
        if group == 0xFFFE or implicit or not (0x40 < raw[4] < 0x5B and 0x40 < raw[5] < 0x5B):
            return group << 16 | element, None, self.long.unpack_from(raw, 4)[0]  # no VR (pydicom's test too)
        vr = raw[4:6]
        if vr in _LONG_VRS:
            rest = self.fp.read(4)
            if len(rest) < 4:
                raise EOFError("the data set ends inside a sequence")
            return group << 16 | element, vr, self.long.unpack(rest)[0]
        return group << 16 | element, vr, self.short.unpack_from(raw, 6)[0]

    def items(self, length: int, implicit: bool, limit: float = math.inf) -> int:
        """The items of the sequence (or encapsulated pixel data) whose header was just read, passed over and counted up
        to ``limit``: the stream then stands after the sequence, or after item ``limit``."""
        end = None if length == _UNDEFINED else self.fp.tell() + length
        self.count = 0
        while self.count < limit and (end is None or self.fp.tell() < end):
            tag, _, size = self.header(implicit)
            if tag == _SEQUENCE_END:
                break
            if tag != _ITEM:
                raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where a sequence item was expected")
            self.count += 1
            self.value(size, _ITEM_END, implicit)
        return self.count

    def value(self, length: int, closing: int, implicit: bool) -> None:
        """Pass over a value whose header was just read: seek past a defined length; an undefined one ends at its
        delimiter (``closing``), nested ones at theirs (no recursion: any depth)."""
        if length != _UNDEFINED:
            self.fp.seek(length, 1)
            return
        open_ = [(closing, implicit)]
        while open_:
            tag, vr, size = self.header(open_[-1][1])
            if tag in (_ITEM_END, _SEQUENCE_END):
                open_.pop()
            elif size == _UNDEFINED:
                open_.append((_ITEM_END if tag == _ITEM else _SEQUENCE_END, open_[-1][1] or vr == b"UN"))
            else:
                self.fp.seek(size, 1)


def _raster_entry(path: Path, fh):
    from PIL import Image

    with Image.open(fh) as img:  # header only
        columns, rows = img.size
    key = f"file:{path}"
    series = dict(key=key, uid="", kind="image", modality="", description=path.name, patient_id="", patient_name="",
                  study_uid="")
    return series, dict(uid=""), dict(id="", name=""), [SliceRef(path, rows=rows, columns=columns)]


def _text(ds, keyword: str) -> str:
    try:
        return str(ds.get(keyword, "") or "").strip()
    except Exception:  # noqa: BLE001 - a malformed value reads as absent
        return ""


def _int(value) -> int | None:
    try:
        return None if value is None or value == "" else int(float(value))
    except (TypeError, ValueError):
        return None


def _floats(value, n: int) -> tuple[float, ...] | None:
    """``n`` finite floats from a multi-valued attribute, else None (absent, short or malformed)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = [value]
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(values) != n or not all(math.isfinite(v) for v in values):
        return None
    return tuple(values)


def _get(ds, keyword: str):
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001
        return None


def _item(ds, sequence: str, keyword: str):
    """``keyword`` from the first item of ``sequence`` in ``ds`` (a functional-group macro), else None."""
    try:
        items = ds.get(sequence)
        if items and len(items) and keyword in items[0]:
            return items[0].get(keyword)
    except Exception:  # noqa: BLE001
        return None
    return None


def _orientation_text(ds) -> tuple[str, ...]:
    """PatientOrientation as its values ('P', 'L'); empty when absent or malformed."""
    try:
        value = ds.get("PatientOrientation")
        if value is None:
            return ()
        values = [value] if isinstance(value, str) else list(value)
        return tuple(str(v).strip().upper() for v in values)
    except Exception:  # noqa: BLE001
        return ()


def _orientation(value) -> tuple[float, ...] | None:
    cosines = _floats(value, 6)
    if cosines is None:
        return None
    row, col = np.array(cosines[:3]), np.array(cosines[3:])
    if not (0.9 < np.linalg.norm(row) < 1.1 and 0.9 < np.linalg.norm(col) < 1.1) or abs(float(row @ col)) > 0.1:
        return None  # not two unit, perpendicular vectors
    return cosines


def _dicom_entry(path: Path, ds, counts: tuple[int, int | None] | None = None):
    """``counts``: (frames listed, frames the pixel data holds) as the loader counts them (``frame_counts``): the
    index lists the frames ``load_image`` lists, a few missing ones included (each named when read)."""
    frames = _int(_get(ds, "NumberOfFrames")) or 1
    warnings = []
    if counts is not None:
        listed, held = counts
        if held is not None and frames > max(1, held):
            holds = f"holds {held}" if held else "is missing"
            more = f"{listed} indexed." if listed < frames else f"frames {held + 1} to {frames} cannot be read."
            warnings.append(f"'{path.name}': its header states {frames} frames, but its pixel data {holds}: {more}")
        frames = listed
    series_uid = _text(ds, "SeriesInstanceUID")
    study_uid = _text(ds, "StudyInstanceUID")
    modality = _text(ds, "Modality").upper()
    if frames > 1:
        key = f"{series_uid}|{path}"
        kind = "multiframe"
    elif series_uid:
        key, kind = _series_key(study_uid, series_uid), "dicom"
    else:
        key, kind = f"nouid|{path.parent}|{modality}", "dicom"
    series = dict(key=key, uid=series_uid, kind=kind, modality=modality, description=_text(ds, "SeriesDescription"),
                  number=_int(_get(ds, "SeriesNumber")), patient_id=_text(ds, "PatientID"),
                  patient_name=_text(ds, "PatientName"), study_uid=study_uid,
                  frame_of_reference=_text(ds, "FrameOfReferenceUID"), warnings=warnings)
    study = dict(uid=study_uid, date=_text(ds, "StudyDate"), description=_text(ds, "StudyDescription"),
                 accession=_text(ds, "AccessionNumber"))
    patient = dict(id=_text(ds, "PatientID"), name=_text(ds, "PatientName"))
    rows, columns = _int(_get(ds, "Rows")), _int(_get(ds, "Columns"))
    spacing = _floats(_get(ds, "PixelSpacing"), 2)
    base = dict(rows=rows, columns=columns, pixel_spacing_mm=spacing, thickness_mm=_length(_get(ds, "SliceThickness")),
                spacing_between_mm=_length(_get(ds, "SpacingBetweenSlices")),
                laterality=(_text(ds, "ImageLaterality") or _text(ds, "Laterality")).upper(),
                view=_text(ds, "ViewPosition").upper(), patient_orientation=_orientation_text(ds),
                echo=_echo(ds), view_codes=view_codes(ds) if modality == "MG" else None,
                intent=_text(ds, "PresentationIntentType").upper())
    if frames == 1:
        position, orientation = _floats(_get(ds, "ImagePositionPatient"), 3), \
            _orientation(_get(ds, "ImageOrientationPatient"))
        if (position is None or orientation is None) and (_get(ds, "PerFrameFunctionalGroupsSequence") or
                                                           _get(ds, "SharedFunctionalGroupsSequence")):
            # an enhanced single-frame file: its plane, position and thickness are in its functional groups
            (one,) = _frames(path, ds, 1, base)
            return series, study, patient, [replace(one, instance=_int(_get(ds, "InstanceNumber")))]
        return series, study, patient, [SliceRef(path, 0, _int(_get(ds, "InstanceNumber")),
                                                 _text(ds, "SOPInstanceUID"), position, orientation, **base)]
    return series, study, patient, _frames(path, ds, frames, base)


def _series_key(study_uid: str, series_uid: str) -> str:
    """The index's key of a single-frame file's series."""
    return f"{study_uid}|{series_uid}"


def _length(value) -> float | None:
    """A slice thickness or spacing in mm: its size where a writer gave it a sign; None where it is zero or not a
    number (unknown: a lesion volume over it would be negative or nothing)."""
    number = _floats(value, 1)
    return abs(number[0]) if number and number[0] else None


def _echo(ds) -> str:
    """'echo 2, TE 80 ms' from EchoNumbers and EchoTime (either may be absent); '' when neither is stated."""
    number, time = _floats(_get(ds, "EchoNumbers"), 1), _floats(_get(ds, "EchoTime"), 1)
    parts = ([f"echo {number[0]:g}"] if number else []) + ([f"TE {time[0]:g} ms"] if time else [])
    return ", ".join(parts)


def _frames(path: Path, ds, frames: int, base: dict) -> list[SliceRef]:
    """The frames of a multi-frame file, with per-frame geometry from the functional groups where present."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    sop = _text(ds, "SOPInstanceUID")
    top_orientation = _orientation(_get(ds, "ImageOrientationPatient"))
    top_position = _floats(_get(ds, "ImagePositionPatient"), 3)
    offsets = _get(ds, "GridFrameOffsetVector")  # RT dose: frame z offsets from ImagePositionPatient
    offsets = _floats(offsets, frames) if offsets is not None else None
    shared_orientation = _orientation(_item(shared, "PlaneOrientationSequence", "ImageOrientationPatient")) \
        if shared is not None else None
    shared_measures = {}
    if shared is not None:
        spacing = _floats(_item(shared, "PixelMeasuresSequence", "PixelSpacing"), 2)
        thickness = _length(_item(shared, "PixelMeasuresSequence", "SliceThickness"))
        if spacing:
            shared_measures["pixel_spacing_mm"] = spacing
        if thickness:
            shared_measures["thickness_mm"] = thickness
    slices = []
    for i in range(frames):
        group = per_frame[i] if i < len(per_frame) else None
        position = orientation = None
        fields = dict(base, **shared_measures)
        if group is not None:
            position = _floats(_item(group, "PlanePositionSequence", "ImagePositionPatient"), 3)
            orientation = _orientation(_item(group, "PlaneOrientationSequence", "ImageOrientationPatient"))
            thickness = _length(_item(group, "PixelMeasuresSequence", "SliceThickness"))
            if thickness:
                fields["thickness_mm"] = thickness
        orientation = orientation or shared_orientation or top_orientation
        if position is None and top_position is not None and offsets is not None and orientation is not None:
            normal = np.cross(orientation[:3], orientation[3:])
            position = tuple(float(v) for v in np.array(top_position) + offsets[i] * normal)
        slices.append(SliceRef(path, i, i + 1, sop, position, orientation, **fields))
    return slices


# ----------------------------------------------------------------------------------------------- geometry
def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    """Unit normal of a slice from its row and column direction cosines."""
    n = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    return n / np.linalg.norm(n)


def plane_of(orientation: tuple[float, ...] | None) -> str | None:
    """axial, coronal, sagittal or oblique from ImageOrientationPatient (None when absent)."""
    if orientation is None:
        return None
    n = np.abs(slice_normal(orientation))
    axis = int(np.argmax(n))
    angle = math.degrees(math.acos(min(1.0, float(n[axis]))))
    if angle > OBLIQUE_DEGREES:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _same_orientation(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b)) <= ORIENTATION_TOLERANCE


def _arrange(series: Series) -> None:
    """Order the slices and fill plane, spacing, thickness and the warnings."""
    slices = series.slices
    if series.kind == "dicom" and not series.uid:
        series.warnings.append("No SeriesInstanceUID: the files of this folder were grouped as one series.")
    _drop_duplicate_instances(series)
    slices = series.slices
    oriented = [s for s in slices if s.position is not None and s.orientation is not None]
    orientations = Counter(tuple(round(v, 4) for v in s.orientation) for s in slices if s.orientation is not None)
    main = _main_orientation(orientations)
    if main is not None:
        series.plane = plane_of(main)
        normal = slice_normal(main)
        series.normal = tuple(float(v) for v in normal)
        others = sum(1 for s in slices if s.orientation is not None and not _same_orientation(s.orientation, main))
        if others:
            planes = Counter(plane_of(s.orientation) for s in slices if s.orientation is not None)
            counts = sorted(planes.items(), key=lambda pn: (-pn[1], pn[0]))
            series.warnings.append(f"Mixed orientations: {others} of {len(slices)} slices are not in the series' main "
                                   f"orientation ({', '.join(f'{p} {n}' for p, n in counts)}); "
                                   "positions along one normal mean little for them.")
    sizes = Counter((s.rows, s.columns) for s in slices)
    if len(sizes) > 1:
        series.warnings.append("Mixed image sizes: " + ", ".join(f"{r}x{c} ({n})" for (r, c), n in sizes.most_common())
                               + ".")
    if main is not None and len(oriented) == len(slices):
        for s in slices:
            s.position_mm = float(np.dot(s.position, normal))
        slices.sort(key=lambda s: (s.position_mm, s.instance if s.instance is not None else 0, str(s.path), s.frame))
        series.ordered_by = "position"
        _spacing_from_positions(series)
    elif series.kind == "multiframe" and not oriented:
        series.ordered_by = "frame"  # no geometry at all (cine, colour loops): the frames' own order
        _spacing_from_tags(series)
    else:
        series.ordered_by = "file"
        if len(slices) > 1:
            with_instance = sum(1 for s in slices if s.instance is not None)
            series.ordered_by = "instance" if with_instance == len(slices) else "file"
            missing = len(slices) - len(oriented)
            how = "InstanceNumber" if series.ordered_by == "instance" else \
                "InstanceNumber where present, then file name"
            series.warnings.append(f"{missing} of {len(slices)} slices lack ImagePositionPatient/"
                                   f"ImageOrientationPatient: ordered by {how}; positions and gaps unknown.")
            slices.sort(key=lambda s: (s.instance is None, s.instance or 0, str(s.path), s.frame))
            _instance_warnings(series)
        _spacing_from_tags(series)
    thicknesses = Counter(s.thickness_mm for s in slices if s.thickness_mm is not None)
    series.thickness_mm = min(thicknesses, key=lambda t: (-thicknesses[t], t)) if thicknesses else None


def _main_orientation(orientations: Counter) -> tuple[float, ...] | None:
    """The orientation most slices share; a tie goes to the orientation in the plane most slices are in, then
    by plane name and cosines: never to whichever file came first (a DICOMDIR and a folder walk list the same
    files in other orders, and the series' plane and positions must not depend on it)."""
    if not orientations:
        return None
    planes = Counter()
    for orientation, n in orientations.items():
        planes[plane_of(orientation)] += n
    return min(orientations, key=lambda o: (-orientations[o], -planes[plane_of(o)], plane_of(o), o))


MAX_PLANES_SPLIT = 3  # a series in up to this many orientations is split by plane (a three-plane scout at most)


def _split(series: Series) -> list[Series]:
    """What a reader scrolls apart, as series of their own: slices in another orientation (a localizer stored in
    the series, a three-plane scout) and echoes of one acquisition at the same positions (dual-echo PD/T2), which
    would otherwise interleave in one stack and read as a gap or duplicate positions."""
    if series.kind != "dicom" or len(series.slices) < 2:
        return [series]
    parts = [series.slices]
    if all(s.orientation is not None for s in series.slices):
        by_plane: dict[tuple, list[SliceRef]] = {}
        for s in series.slices:
            key = next((k for k in by_plane if _same_orientation(k, s.orientation)), s.orientation)
            by_plane.setdefault(key, []).append(s)
            if len(by_plane) > MAX_PLANES_SPLIT:
                break  # kept whole whatever the rest: comparing every slice with every orientation was quadratic
        if len(by_plane) <= MAX_PLANES_SPLIT:  # more: a radial or free-angle acquisition, kept whole (warned)
            parts = [part for _, part in sorted(by_plane.items(), key=lambda kp: (-len(kp[1]), plane_of(kp[0]), kp[0]))]
    split: list[tuple[str, list[SliceRef]]] = []
    for part in parts:
        plane = plane_of(part[0].orientation) if len(parts) > 1 else ""
        echoes: dict[str, list[SliceRef]] = {}
        for s in part:
            echoes.setdefault(s.echo, []).append(s)
        positions = {tuple(round(v, 1) for v in s.position) for s in part if s.position is not None}
        if len(echoes) > 1 and "" not in echoes and len(positions) < len(part):
            split += [(", ".join(filter(None, (plane, echo))), slices) for echo, slices in sorted(echoes.items())]
        else:
            split.append((plane or "", part))
    if len(split) == 1:
        return [series]
    out = []
    for k, (what, slices) in enumerate(split):
        note = (f"One of {len(split)} parts of series {series.number if series.number is not None else series.uid} "
                f"(split by orientation or echo): {len(slices)} of its {len(series.slices)} images.")
        out.append(replace(series, key=f"{series.key}|part{k + 1}", slices=slices, warnings=[*series.warnings, note],
                           breaks=[], part=what or f"part {k + 1}",
                           description=f"{series.description} ({what or f'part {k + 1}'})".strip()))
    return out


def _drop_duplicate_instances(series: Series) -> None:
    """The same SOP instance found twice (copied files): keep the first, say so."""
    seen: set[tuple[str, int]] = set()
    kept, dropped = [], 0
    for s in series.slices:
        ident = (s.sop_uid, s.frame)
        if s.sop_uid and ident in seen:
            dropped += 1
            continue
        seen.add(ident)
        kept.append(s)
    if dropped:
        series.warnings.append(f"{dropped} file(s) repeat a SOPInstanceUID already in the series: ignored.")
    series.slices = kept


def _spacing_from_positions(series: Series) -> None:
    positions = np.array([s.position_mm for s in series.slices])
    if len(positions) < 2:
        _spacing_from_tags(series)
        return
    steps = np.diff(positions)
    distinct = steps[steps > DUPLICATE_MM]
    duplicates = int((steps <= DUPLICATE_MM).sum())
    if duplicates:
        series.warnings.append(f"Duplicate positions: {duplicates} slice(s) share a position with a neighbour "
                               "(repeated acquisition, echoes or time points?).")
    if not len(distinct):
        _spacing_from_tags(series)
        return
    # A gap: a step over GAP_FACTOR times the median step that also spans about two of the shortest steps or more (a
    # slice missing); steps alternating 2.5 and 4.0 mm are the series' spacing, irregular, not a missing slice at
    # every 4.0 mm step. Measured against the median, not a quartile: a quarter of the steps missing a slice each
    # must still be gaps.
    gap_over = max(GAP_FACTOR * float(np.median(distinct)), MISSING_SLICE_FACTOR * float(distinct.min()))
    regular = distinct[distinct <= gap_over]
    series.spacing_mm, series.spacing_source = float(np.median(regular)), "positions"
    series.breaks = [i for i, step in enumerate(steps) if step > gap_over]
    series.warnings += [f"Gap: {gap_text(series, i)}." for i in series.breaks]
    if len(regular) > 2 and float(regular.max() - regular.min()) > 0.1 * series.spacing_mm:
        series.warnings.append(f"Irregular spacing: steps from {regular.min():.2f} to {regular.max():.2f} mm.")


def gap_text(series: Series, i: int) -> str:
    """The gap between slice ``i`` and ``i + 1`` (0-based, in a series ordered by position) in words: the series'
    warning and a verdict's over it say it alike."""
    step = series.slices[i + 1].position_mm - series.slices[i].position_mm
    return (f"{step:.2f} mm between slices {i + 1} and {i + 2} (spacing {series.spacing_mm:.2f} mm): "
            f"about {int(round(step / series.spacing_mm)) - 1} slice(s) missing")


def _spacing_from_tags(series: Series) -> None:
    """Spacing where positions cannot give it: SpacingBetweenSlices, else SliceThickness (contiguous slices)."""
    if series.spacing_mm is not None or len(series.slices) < 2:
        return
    for keyword, attr in (("SpacingBetweenSlices", "spacing_between_mm"), ("SliceThickness", "thickness_mm")):
        values = Counter(getattr(s, attr) for s in series.slices if getattr(s, attr))
        if values:
            series.spacing_mm, series.spacing_source = values.most_common(1)[0][0], keyword
            return


def _instance_warnings(series: Series) -> None:
    numbers = [s.instance for s in series.slices if s.instance is not None]
    if not numbers:
        return
    repeated = len(numbers) - len(set(numbers))
    if repeated:
        series.warnings.append(f"Duplicate InstanceNumbers: {repeated} slice(s) repeat a number.")
    span = max(numbers) - min(numbers) + 1
    if span > len(set(numbers)):
        series.warnings.append(f"InstanceNumbers skip: {span - len(set(numbers))} number(s) between "
                               f"{min(numbers)} and {max(numbers)} are missing.")
