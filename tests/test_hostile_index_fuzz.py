"""Hostile inputs a fuzz hunt found for the series index and the batch journal: a file the program dies in, a
NumberOfFrames of millions on a few bytes, DICOMDIRs of millions of records or pointing outside their folder,
and folders and series shaped to make the index quadratic. Each test failed before its fix; all are fast."""

from __future__ import annotations

import csv
import json
import pathlib
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from core.batch.runner import BatchRun
from core.inference.analyzer import Analyzer
from core.models.registry import Registry
import core.series.index as series_index
from core.series.index import index_dicomdir, index_files, index_path
from tests.conftest import run_cancelled
from tests.series_data import ramp_images, write_slice
from tests.tiny_models import planted_images

MODELS = ["tiny-mr-classifier", "tiny-us-segmenter"]
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------------------------- 1: batch journal
@pytest.fixture(scope="module")
def analyzer(tiny_models):
    return Analyzer(Registry([tiny_models]))


def _pngs(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, planted_images(len(names), seed=5)[0]):
        Image.fromarray(img).save(root / name, format="PNG")
    return root


def _cancelled_in(folder: Path, out: Path, analyzer, name: str) -> None:
    """A run cancelled (the dialog's Cancel, Ctrl+C) while it analyses ``name``."""
    run_cancelled(BatchRun(folder, out, analyzer, model_ids=MODELS), analyzer,
                  lambda record: record.path.name == name)


def _died_in(out: Path, name: str, times: int) -> None:
    """What ``times`` runs that died while analysing ``name`` (a decoder's abort, the memory killer) leave."""
    with (out / "done.jsonl").open("a", encoding="utf-8") as fh:
        fh.write((json.dumps({"started": name}) + "\n") * times)


def test_a_file_the_program_died_in_twice_is_an_error_row_and_the_run_finishes(tmp_path, analyzer):
    folder = _pngs(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "run"
    _cancelled_in(folder, out, analyzer, "b.png")  # a done; b started and stopped in order
    _died_in(out, "b.png", 2)
    summary = BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()
    assert summary["complete"] and summary["files_done"] == 3
    rows = _rows(out / "results.csv")
    (died,) = [r for r in rows if r["file"] == "b.png"]
    assert died["error"] == ("the program stopped while analysing this file in 2 earlier runs (a crash?); it was "
                             "not analysed again") and not died["model"]
    assert all(r["model"] and not r["error"] for r in rows if r["file"] != "b.png")


def test_a_run_killed_once_in_a_file_or_cancelled_redoes_it_and_matches_an_uninterrupted_run(tmp_path, analyzer):
    folder = _pngs(tmp_path / "in", ["a.png", "b.png", "c.png"])
    BatchRun(folder, tmp_path / "ref", analyzer, model_ids=MODELS).run()
    out = tmp_path / "run"
    _cancelled_in(folder, out, analyzer, "b.png")
    _died_in(out, "b.png", 1)  # kill -9 in b: one start without an end
    assert BatchRun(folder, out, analyzer, model_ids=MODELS, resume=True).run()["complete"]
    assert (out / "results.csv").read_bytes() == (tmp_path / "ref" / "results.csv").read_bytes()
    journal = [json.loads(line) for line in (out / "done.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(n for n in journal if isinstance(n, str)) == ["a.png", "b.png", "c.png"]
    assert {"started": "b.png"} in journal and {"stopped": "b.png"} in journal


# ----------------------------------------------------------------------------------------------- 2: frames held
def _multiframe(path: Path, declared: int, frames: int, encapsulated: bool = False, per_frame: int = 0) -> Path:
    """A 1 x 1 multi-frame file declaring ``declared`` frames and holding ``frames``, ``per_frame`` per-frame
    functional groups with plane positions."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = RLELossless if encapsulated else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "OT", "P", generate_uid(), generate_uid()
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = str(declared)
    if per_frame:
        items = []
        for k in range(per_frame):
            where, item = Dataset(), Dataset()
            where.ImagePositionPatient = ["0", "0", str(k * 2)]
            item.PlanePositionSequence = Sequence([where])
            items.append(item)
        ds.PerFrameFunctionalGroupsSequence = Sequence(items)
        plane, shared = Dataset(), Dataset()
        plane.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        shared.PlaneOrientationSequence = Sequence([plane])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
    if encapsulated:
        ds.PixelData = encapsulate([b"\0\x01\0\0"] * frames)  # an RLE header's worth each: only counted here
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = bytes(frames + frames % 2)
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("encapsulated", [False, True])
def test_a_lying_number_of_frames_is_bounded_by_what_the_pixel_data_holds(tmp_path, encapsulated):
    path = _multiframe(tmp_path / "liar.dcm", declared=100_000, frames=2, encapsulated=encapsulated, per_frame=3)
    for index in (index_path(path), index_files([path], root=tmp_path)):  # analyze --series; batch's series.csv
        (series,) = index.series
        assert len(series) == 2 and not index.problems
        assert [s.position for s in series.slices] == [(0.0, 0.0, 0.0), (0.0, 0.0, 2.0)]
        assert series.warnings[0] == "'liar.dcm': its header states 100000 frames, but its pixel data holds 2: 2 indexed."


def test_the_index_lists_the_frames_load_image_lists_of_a_cine_cut_short(tmp_path):
    from core.imaging import load_image

    stated = _multiframe(tmp_path / "stated.dcm", declared=10, frames=8, encapsulated=False)
    cut = _multiframe(tmp_path / "whole.dcm", declared=10, frames=10, encapsulated=False)
    data = cut.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-2])  # the file cut short: its pixel data element says 10 bytes, 8 are there
    for path in (stated, cut):
        record = load_image(path)
        for index in (index_path(path), index_files([path], root=tmp_path)):
            (series,) = index.series
            assert len(series) == record.frames == 10, path.name  # two missing: listed, named when read
            assert series.warnings == [f"'{path.name}': its header states 10 frames, but its pixel data holds 8: "
                                       "frames 9 to 10 cannot be read."]
        assert any("holds only 8" in w for w in record.warnings), record.warnings


def test_a_truthful_multiframe_file_keeps_every_frame(tmp_path):
    for encapsulated in (False, True):
        path = _multiframe(tmp_path / f"true{encapsulated}.dcm", 5, 5, encapsulated, per_frame=5)
        (series,) = index_path(path).series
        assert len(series) == 5 and not any("frames" in w for w in series.warnings)


# ----------------------------------------------------------------------------------------------- 3, 4: DICOMDIR
def _dicomdir(path: Path, file_ids: list) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DICOMDIR_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "FUZZ"
    records = []
    with warnings.catch_warnings():  # pydicom warns of file IDs that are no valid CS values: the point here
        warnings.simplefilter("ignore")
        for file_id in file_ids:
            record = Dataset()
            if file_id is not None:
                record.DirectoryRecordType = "IMAGE"
                record.ReferencedFileID = file_id
            records.append(record)
    ds.DirectoryRecordSequence = Sequence(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_dicomdir_of_too_many_records_is_refused_before_pydicom_reads_them(tmp_path, monkeypatch):
    monkeypatch.setattr(series_index, "MAX_DICOMDIR_RECORDS", 50)
    at_limit = index_dicomdir(_dicomdir(tmp_path / "ok" / "DICOMDIR", [None] * 50))
    assert not at_limit.problems and not at_limit.series
    calls = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    over = index_dicomdir(_dicomdir(tmp_path / "over" / "DICOMDIR", [None] * 51))
    assert over.problems == ["DICOMDIR: it lists more than 50 directory records: too many to index (a damaged or "
                             "hostile DICOMDIR?)"]
    assert not calls  # refused on the count of its item headers, not after pydicom built 51 data sets


def test_asking_whether_a_file_is_a_dicomdir_reads_its_file_meta_only(tmp_path, monkeypatch):
    listing = _dicomdir(tmp_path / "media" / "INDEX.DIR", [["IMG1"]])
    image = write_slice(tmp_path / "media" / "IMG1", ramp_images(1)[0], series_uid=generate_uid(),
                        study_uid=generate_uid())
    calls = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    assert series_index.is_dicomdir(listing) and not series_index.is_dicomdir(image)
    assert not calls  # a header of two million sequence items took 37 s to ask this
    assert len(index_path(listing).series) == 1


def test_a_dicomdir_cannot_pull_in_files_outside_its_folder(tmp_path):
    media = tmp_path / "media"
    uid, study = generate_uid(), generate_uid()
    write_slice(media / "IMG1", ramp_images(1)[0], series_uid=uid, study_uid=study)
    write_slice(tmp_path / "outside.dcm", ramp_images(1)[0], series_uid=uid, study_uid=study)
    (media / "LINK").symlink_to(tmp_path / "outside.dcm")
    (media / "SUB").mkdir()
    ids = [["IMG1"], ["..", "outside.dcm"], str(tmp_path / "outside.dcm"), ["LINK"], ["SUB", "..", "..", "outside.dcm"]]
    index = index_dicomdir(_dicomdir(media / "DICOMDIR", ids))
    assert [p.name for s in index.series for p in s.files] == ["IMG1"]
    outside = [p for p in index.problems if "points outside the DICOMDIR's folder" in p]
    assert [p.split(": ")[0] for p in outside] == ["../outside.dcm", str(tmp_path / "outside.dcm"), "LINK",
                                                    "SUB/../../outside.dcm"]
    assert len(index.problems) == 4


# ----------------------------------------------------------------------------------------------- 5: quadratic work
def test_folders_named_like_files_are_checked_in_one_pass(tmp_path, monkeypatch):
    root = tmp_path / "scan"
    for k in range(40):
        (root / f"empty{k:02d}.dcm").mkdir(parents=True)
    (root / "full.dcm" / "deeper").mkdir(parents=True)
    (root / "full.dcm" / "deeper" / "x.txt").write_text("x")
    for k in range(400):
        (root / f"f{k:03d}.txt").write_text("x")
    looked = [0]
    parents = pathlib.PurePath.parents

    def counted(self):
        looked[0] += 1
        return parents.__get__(self)

    monkeypatch.setattr(pathlib.PurePath, "parents", property(counted))
    files, problems = series_index._walk(root, root, True)
    monkeypatch.undo()
    assert len(files) == 401
    assert sorted(p.split(":")[0] for p in problems) == [f"empty{k:02d}.dcm" for k in range(40)]
    assert looked[0] < 100  # was one look per folder and file: 41 x 401


def test_a_series_in_thousands_of_orientations_is_not_compared_pairwise(monkeypatch):
    n = 1500
    slices = []
    for k in range(n):
        a = 2 * np.pi * k / n
        slices.append(series_index.SliceRef(Path(f"s{k}.dcm"), sop_uid=f"1.{k}", position=(0.0, 0.0, float(k)),
                                            orientation=(float(np.cos(a)), float(np.sin(a)), 0.0, 0.0, 0.0, -1.0)))
    series = series_index.Series(key="k", uid="1.2", kind="dicom", slices=slices)
    compared = [0]
    same = series_index._same_orientation

    def counted(a, b):
        compared[0] += 1
        return same(a, b)

    monkeypatch.setattr(series_index, "_same_orientation", counted)
    assert series_index._split(series) == [series]  # a radial acquisition stays one series
    assert compared[0] <= 4 * n  # was every slice against every orientation found: about n * n / 2
