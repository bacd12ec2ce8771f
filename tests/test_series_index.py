"""The study index (core.series.index) and lazy slice access (core.series.stack): Qt-free, TensorFlow-free.

Series are real FLAIR slices of an LGG patient written as DICOM MR the way a scanner writes them, plus
pydicom's and deid-data's own test files.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import signal

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from core.errors import ImageLoadError
from core.series import index_dicomdir, index_folder, index_path
from core.series.index import plane_of
from core.series.stack import SeriesStack
from tests.series_data import (AXIAL, CORONAL, SAGITTAL, lgg_slices, ramp_images, read_grey, slice_positions,
                               write_enhanced_mr, write_lgg_series, write_series, write_slice)

PATIENT = "TCGA_CS_6188_20010812"  # 24 FLAIR slices


@pytest.fixture(scope="module")
def lgg(shared):
    folder = shared / "brain_mri_lgg" / PATIENT
    if not folder.is_dir():
        pytest.skip(f"{folder} missing")
    return folder


@pytest.fixture(scope="module")
def lgg_images(lgg):
    return [read_grey(p).astype(np.uint16) for p in lgg_slices(lgg)]


def _tilted(degrees: float) -> tuple:
    """Axial orientation rotated about the patient's left-right axis."""
    a = math.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, math.cos(a), -math.sin(a))


def test_slices_are_ordered_by_position_not_by_instance_number_or_file_name(tmp_path, lgg, lgg_images):
    n = len(lgg_images)
    assert n == 24
    instances = list(range(1, n + 1))
    random.Random(1).shuffle(instances)  # what a reconstruction after a re-send can look like
    names = [f"IMG{k:03d}.dcm" for k in random.Random(2).sample(range(n), n)]
    write_lgg_series(tmp_path / "series", lgg, instances=instances, names=names, spacing=3.3)
    index = index_folder(tmp_path)
    assert len(index.series) == 1 and not index.problems
    series = index.series[0]
    assert (series.modality, series.plane, len(series), series.ordered_by) == ("MR", "axial", 24, "position")
    assert series.spacing_mm == pytest.approx(3.3) and series.thickness_mm == pytest.approx(3.3)
    assert series.warnings == []
    positions = [s.position_mm for s in series.slices]
    assert np.allclose(np.diff(positions), 3.3)
    stack = SeriesStack(series)
    for k in (0, 7, 23):  # slice k of the JPEG numbering is the k-th slice along the normal
        assert np.array_equal(stack.values(k), lgg_images[k].astype(np.float32))
    assert [s.instance for s in series.slices] == instances


def test_feet_first_positions_still_run_along_the_normal(tmp_path, lgg_images):
    images = lgg_images[:6]
    positions = slice_positions(6, 5.0)[::-1]  # slice 0 of the acquisition is the highest one
    write_series(tmp_path, images, positions=positions)
    series = index_folder(tmp_path).series[0]
    assert [s.position_mm for s in series.slices] == sorted(s.position_mm for s in series.slices)
    assert np.array_equal(SeriesStack(series).values(0), images[5].astype(np.float32))


@pytest.mark.parametrize("orientation, plane", [(AXIAL, "axial"), (SAGITTAL, "sagittal"), (CORONAL, "coronal"),
                                                (_tilted(12), "axial"), (_tilted(45), "oblique"),
                                                (_tilted(75), "coronal")])
def test_plane_from_direction_cosines(orientation, plane):
    assert plane_of(orientation) == plane


def test_oblique_series_is_ordered_along_its_own_normal(tmp_path, lgg_images):
    orientation = _tilted(40)
    images = lgg_images[4:12]
    order = [3, 0, 6, 1, 7, 2, 5, 4]  # files written out of order, instance numbers shuffled with them
    positions = slice_positions(8, 2.5, orientation, origin=(-100.0, -80.0, 20.0))
    write_series(tmp_path, [images[i] for i in order], positions=[positions[i] for i in order], orientation=orientation,
                 instances=[10 - i for i in order], thickness=2.5)
    series = index_folder(tmp_path).series[0]
    assert series.plane == "oblique" and series.spacing_mm == pytest.approx(2.5, abs=1e-3)
    assert series.warnings == []
    stack = SeriesStack(series)
    assert all(np.array_equal(stack.values(k), images[k].astype(np.float32)) for k in range(8))


def test_a_localiser_in_another_plane_is_split_off_and_mixed_sizes_are_warned(tmp_path, lgg_images):
    series_uid, study_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    axial = slice_positions(5, 3.0)
    for k in range(5):
        write_slice(tmp_path / f"ax{k}.dcm", lgg_images[k], position=axial[k], instance=k + 1, series_uid=series_uid,
                    study_uid=study_uid)
    for k in range(2):  # a localiser in another plane, sent under the same SeriesInstanceUID
        write_slice(tmp_path / f"sag{k}.dcm", lgg_images[k], position=(k * 4.0, -120.0, 100.0), orientation=SAGITTAL,
                    instance=10 + k, series_uid=series_uid, study_uid=study_uid)
    write_slice(tmp_path / "small.dcm", lgg_images[9][::2, ::2], position=slice_positions(6, 3.0)[5], instance=6,
                series_uid=series_uid, study_uid=study_uid)
    main, scout = sorted(index_folder(tmp_path).series, key=len, reverse=True)
    assert len(main) == 6 and main.plane == "axial" and main.description == "AX FLAIR (axial)"
    assert len(scout) == 2 and scout.plane == "sagittal" and scout.description == "AX FLAIR (sagittal)"
    assert "Mixed image sizes: 256x256 (5), 128x128 (1)" in " ".join(main.warnings)


def test_gaps_and_duplicate_positions_are_warned(tmp_path, lgg_images):
    positions = slice_positions(10, 3.0)
    kept = [0, 1, 2, 3, 6, 7, 8, 9]  # slices 4 and 5 never arrived
    write_series(tmp_path / "gap", [lgg_images[i] for i in kept], positions=[positions[i] for i in kept])
    write_series(tmp_path / "dup", lgg_images[:5], positions=positions[:4] + [positions[3]])
    index = index_folder(tmp_path)
    gap, dup = sorted(index.series, key=len, reverse=True)
    assert gap.spacing_mm == pytest.approx(3.0) and gap.breaks == [3]
    assert any(w.startswith("Gap: 9.00 mm between slices 4 and 5") and "about 2 slice(s) missing" in w
               for w in gap.warnings)
    assert dup.breaks == [] and any(w.startswith("Duplicate positions: 1 slice") for w in dup.warnings)


def test_missing_geometry_falls_back_to_instance_number(tmp_path, lgg_images):
    images = lgg_images[:6]
    instances = [4, 1, 6, 2, 5, 3]
    write_series(tmp_path / "a", images, positions=[None] * 6, instances=instances)
    series = index_folder(tmp_path / "a").series[0]
    assert series.ordered_by == "instance" and series.plane == "axial"
    assert [s.instance for s in series.slices] == [1, 2, 3, 4, 5, 6]
    assert np.array_equal(SeriesStack(series).values(0), images[1].astype(np.float32))
    assert series.spacing_mm == pytest.approx(3.0) and series.spacing_source == "SliceThickness"
    assert any("6 of 6 slices lack ImagePositionPatient" in w and "ordered by InstanceNumber" in w
               for w in series.warnings)

    # one slice with a malformed position (two values), one without InstanceNumber: file name decides the rest
    positions = slice_positions(4, 3.0)
    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for k in range(4):
        write_slice(tmp_path / "b" / f"s{k}.dcm", images[k], position=positions[k], instance=None if k == 2 else 4 - k,
                    series_uid=uid, study_uid=study)
    bad = pydicom.dcmread(tmp_path / "b" / "s1.dcm")
    bad.ImagePositionPatient = ["1.0", "2.0"]
    bad.save_as(tmp_path / "b" / "s1.dcm")
    series = index_folder(tmp_path / "b").series[0]
    assert series.ordered_by == "file"
    assert [s.path.name for s in series.slices] == ["s3.dcm", "s1.dcm", "s0.dcm", "s2.dcm"]
    assert any("1 of 4 slices lack" in w for w in series.warnings)


def test_instance_number_gaps_and_repeats_without_positions(tmp_path, lgg_images):
    write_series(tmp_path, lgg_images[:5], positions=[None] * 5, instances=[1, 2, 2, 5, 6])
    warnings = " ".join(index_folder(tmp_path).series[0].warnings)
    assert "Duplicate InstanceNumbers: 1" in warnings and "InstanceNumbers skip: 2 number(s) between 1 and 6" in warnings


def test_dicomdir_written_by_pydicom_fileset(tmp_path, lgg_images):
    source = tmp_path / "source"
    flair = write_series(source / "flair", lgg_images[:7], instances=[7, 6, 5, 4, 3, 2, 1])
    sag = write_series(source / "sag", lgg_images[10:13], orientation=SAGITTAL, description="SAG T1", series_number=2,
                       study_uid=pydicom.dcmread(flair[0]).StudyInstanceUID)
    fileset = FileSet()
    for path in random.Random(3).sample(flair + sag, len(flair + sag)):
        fileset.add(pydicom.dcmread(path))
    media = tmp_path / "media"
    fileset.write(media)
    index = index_path(media / "DICOMDIR")
    assert not index.problems
    assert len(index.patients) == 1 and len(index.patients[0].studies) == 1
    study = index.patients[0].studies[0]
    assert [(s.description, len(s), s.plane) for s in study.series] == [("AX FLAIR", 7, "axial"), ("SAG T1", 3, "sagittal")]
    flair_series = study.series[0]
    assert all(p.parent != source / "flair" for p in flair_series.files)  # the DICOMDIR's copies were indexed
    assert np.array_equal(SeriesStack(flair_series).values(2), lgg_images[2].astype(np.float32))

    next(p for p in media.rglob("*") if p.is_file() and p.name != "DICOMDIR").unlink()
    index = index_dicomdir(media / "DICOMDIR")
    assert len(index.problems) == 1 and "missing on disk" in index.problems[0]
    assert sum(len(s) for s in index.series) == 9


def test_pydicom_dicomdir_matches_its_records(pydicom_file):
    dicomdir = pydicom_file("dicomdirtests/DICOMDIR")
    records = pydicom.dcmread(dicomdir).DirectoryRecordSequence
    images = [r for r in records if r.DirectoryRecordType == "IMAGE"]
    series_uids = {r.SeriesInstanceUID for r in records if r.DirectoryRecordType == "SERIES"}
    index = index_path(dicomdir)
    assert not index.problems
    assert sum(len(s) for s in index.series) == len(images)
    assert {s.uid for s in index.series} == series_uids
    assert {p.id for p in index.patients} == {r.PatientID for r in records if r.DirectoryRecordType == "PATIENT"}
    ct = [s for s in index.series if s.modality == "CT" and len(s) == 5][0]
    assert ct.plane == "axial" and ct.spacing_mm == pytest.approx(2.5)
    assert all(b > a for a, b in zip([s.position_mm for s in ct.slices], [s.position_mm for s in ct.slices][1:]))


def test_multiframe_file_is_one_series_ordered_by_frame_positions(tmp_path, lgg_images, pydicom_file):
    positions = slice_positions(5, 2.0)
    order = [2, 4, 0, 3, 1]
    write_enhanced_mr(tmp_path / "mf" / "enhanced.dcm", [lgg_images[i] for i in order], [positions[i] for i in order])
    series = index_folder(tmp_path / "mf").series[0]
    assert (series.kind, len(series), series.plane, series.ordered_by) == ("multiframe", 5, "axial", "position")
    assert [s.frame for s in series.slices] == [2, 4, 0, 3, 1]
    assert series.spacing_mm == pytest.approx(2.0) and series.thickness_mm == pytest.approx(3.0)
    stack = SeriesStack(series)
    assert all(np.array_equal(stack.values(k), lgg_images[k].astype(np.float32)) for k in range(5))
    assert stack.loads == 1  # one file holds every frame

    shutil.copy(pydicom_file("rtdose.dcm"), tmp_path / "rtdose.dcm")  # frames placed by GridFrameOffsetVector
    dose = index_folder(tmp_path).find(pydicom.dcmread(pydicom_file("rtdose.dcm")).SeriesInstanceUID)
    assert (dose.kind, len(dose), dose.plane) == ("multiframe", 15, "axial")


def test_cine_without_geometry_keeps_frame_order(deid_file, tmp_path):
    shutil.copy(deid_file("ultrasounds/ultrasound-multiframe.dcm"), tmp_path / "cine.dcm")
    series = index_folder(tmp_path).series[0]
    assert (series.kind, series.modality, series.ordered_by, series.plane) == ("multiframe", "US", "frame", None)
    assert [s.frame for s in series.slices] == list(range(len(series))) and len(series) > 1
    assert series.warnings == []


def test_non_dicom_images_are_one_image_series_beside_dicom(tmp_path, lgg, lgg_images):
    write_series(tmp_path / "dicom", lgg_images[:3])
    for path in lgg_slices(lgg)[:2]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "notes.txt").write_text("not an image")
    os.mkfifo(tmp_path / "pipe.dcm")  # opening it would block: never opened, listed as a problem
    index = index_folder(tmp_path)
    kinds = sorted((s.kind, len(s)) for s in index.series)
    assert kinds == [("dicom", 3), ("image", 1), ("image", 1)]
    assert index.skipped == 1 and index.problems == ["pipe.dcm: this is a FIFO (named pipe), not a regular file: refused"]
    image = next(s for s in index.series if s.kind == "image")
    assert (image.plane, image.slices[0].rows, image.slices[0].columns) == (None, 256, 256)
    assert SeriesStack(image).display(0).shape[:2] == (256, 256)


def test_reports_and_broken_files_do_not_become_series(tmp_path, pydicom_file):
    shutil.copy(pydicom_file("test-SR.dcm"), tmp_path / "report.dcm")  # no pixels: not an image
    shutil.copy(pydicom_file("MR_truncated.dcm"), tmp_path / "truncated.dcm")  # header fine, pixels cut short
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    index = index_folder(tmp_path)
    assert index.skipped >= 1
    names = [s.slices[0].path.name for s in index.series]
    assert "report.dcm" not in names and "truncated.dcm" in names
    truncated = next(s for s in index.series if s.slices[0].path.name == "truncated.dcm")
    with pytest.raises(ImageLoadError):  # headers only at index time: the damage shows when pixels are asked for
        SeriesStack(truncated).display(0)


def test_deid_data_ct_brain_headers(deid_file):
    index = index_folder(deid_file("humans"))
    assert [(s.modality, s.plane) for s in index.series] == [("CT", "axial")]
    assert index.series[0].slices[0].pixel_spacing_mm is not None


def test_stack_keeps_only_the_neighbourhood(tmp_path, lgg_images):
    write_series(tmp_path, lgg_images[:12])
    series = index_folder(tmp_path).series[0]
    stack = SeriesStack(series, neighbourhood=2)
    for k in range(12):
        stack.display(k)
    assert stack.loads == 12 and len(stack.cached()) == 5
    assert stack.cached() == [s.path for s in series.slices[7:12]]
    stack.display(10)
    assert stack.loads == 12  # still open
    stack.display(0)
    assert stack.loads == 13


def test_prefetch_loads_the_neighbours_in_the_background(tmp_path, lgg_images):
    write_series(tmp_path, lgg_images[:10])
    series = index_folder(tmp_path).series[0]
    stack = SeriesStack(series, neighbourhood=2, prefetch=True)
    stack.set_current(5)
    stack._prefetcher.submit(lambda: None).result(timeout=30)  # wait for the queued prefetch
    assert set(stack.cached()) == {s.path for s in series.slices[3:8]}
    loads = stack.loads
    stack.display(4), stack.display(6)
    assert stack.loads == loads
    stack.close()


def test_missing_identifiers_and_malformed_orientation(tmp_path, lgg_images):
    paths = write_series(tmp_path / "anon", lgg_images[:4])
    for k, path in enumerate(paths):  # stripped by a careless anonymiser
        ds = pydicom.dcmread(path)
        for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "PatientID", "SOPInstanceUID"):
            delattr(ds, keyword)
        if k == 2:
            ds.ImageOrientationPatient = ["1", "0", "0", "1", "0", "0"]  # parallel vectors: no plane
        ds.save_as(path)
    index = index_folder(tmp_path)
    (series,) = index.series
    assert (series.uid, series.patient_id, len(series)) == ("", "", 4)
    assert series.ordered_by == "instance" and [s.instance for s in series.slices] == [1, 2, 3, 4]
    assert any(w.startswith("No SeriesInstanceUID") for w in series.warnings)
    assert any("1 of 4 slices lack" in w for w in series.warnings)


# ----------------------------------------------------------------------------------------------- hostile entries
class _Hung(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging: a blocking open() of a FIFO is interrupted by the alarm."""
    def alarm(*_):
        raise _Hung(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _problem(index, name: str) -> str:
    found = [p for p in index.problems if p.startswith(f"{name}: ")]
    assert len(found) == 1, (name, index.problems)
    return found[0]


def test_fifo_device_links_and_folders_named_like_files_are_warned_never_opened(tmp_path, monkeypatch):
    import pydicom.filereader

    root = tmp_path / "scan"
    write_series(root / "ax", ramp_images(3), description="AX")
    write_series(root / "inside.dcm", ramp_images(2), description="IN A FOLDER NAMED LIKE A FILE")
    os.mkfifo(root / "pipe.dcm")
    os.mkfifo(root / "ax" / "DICOMDIR")  # a FIFO with the name of an index file
    for name, target in (("zero.dcm", "/dev/zero"), ("urandom.png", "/dev/urandom"), ("loop.dcm", "loop.dcm"),
                         ("gone.dcm", "nowhere.dcm"), ("again", ".")):
        os.symlink(target, root / name)
    (root / "empty.dcm").mkdir()
    (root / "nested.png" / "deeper").mkdir(parents=True)
    opened = []
    real_dcmread = pydicom.dcmread

    def spy(fp, *args, **kwargs):
        opened.append(os.path.basename(getattr(fp, "name", str(fp))))
        return real_dcmread(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    with _deadline(20):
        index = index_folder(root)
    assert sorted((s.description, len(s)) for s in index.series) == [("AX", 3), ("IN A FOLDER NAMED LIKE A FILE", 2)]
    assert "FIFO" in _problem(index, "pipe.dcm") and "FIFO" in _problem(index, "ax/DICOMDIR")
    assert "a device, not a regular file" in _problem(index, "zero.dcm")
    assert "a device, not a regular file" in _problem(index, "urandom.png")
    assert "loops back" in _problem(index, "loop.dcm") and "does not exist" in _problem(index, "gone.dcm")
    assert "link to a folder: not followed" in _problem(index, "again")
    assert "folder, not an image file" in _problem(index, "empty.dcm")
    assert "folder, not an image file" in _problem(index, "nested.png")
    assert len(index.problems) == 9 and not any(p.startswith("inside.dcm") for p in index.problems)
    assert sorted(opened) == sorted(p.name for s in index.series for p in s.files)  # nothing else reached pydicom


@pytest.mark.parametrize("name, target", [("pipe.dcm", None), ("zero.dcm", "/dev/zero"), ("DICOMDIR", None),
                                          ("folder.dcm", "dir")])
def test_index_path_and_dicomdir_on_a_hostile_entry_answer_at_once(tmp_path, name, target):
    path = tmp_path / name
    if target is None:
        os.mkfifo(path)
    elif target == "dir":
        path.mkdir()
    else:
        os.symlink(target, path)
    with _deadline(20):
        index = index_path(path)
        direct = index_dicomdir(path)
    if target == "dir":  # a folder is indexed as a folder: an empty one says so
        assert not index.series and not index.problems
    else:
        assert not index.series and len(index.problems) == 1 and "not a regular file" in index.problems[0]
    assert not direct.series and len(direct.problems) == 1
    assert ("folder" if target == "dir" else "not a regular file") in direct.problems[0]


def test_a_dicomdir_that_lists_a_fifo_names_it(tmp_path):
    source = write_series(tmp_path / "source", ramp_images(3))
    fileset = FileSet()
    for path in source:
        fileset.add(pydicom.dcmread(path))
    media = tmp_path / "media"
    fileset.write(media)
    victim = next(p for p in media.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    victim.unlink()
    os.mkfifo(victim)
    with _deadline(20):
        index = index_dicomdir(media / "DICOMDIR")
    assert sum(len(s) for s in index.series) == 2
    assert len(index.problems) == 1 and "FIFO" in index.problems[0]


def test_files_larger_than_any_image_and_deflate_bombs_are_refused_unread(tmp_path, monkeypatch):
    from core.imaging import limits
    from tests.test_hostile_info import deflated_bomb

    write_series(tmp_path / "big", ramp_images(2))
    deflated_bomb(tmp_path / "bomb.dcm", 300 * 1024**2)
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "64")
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 4 * 1024**2)  # the bomb is some 300 KB on disk
    os.truncate(tmp_path / "big" / "IM0000.dcm", limits.MAX_FILE_BYTES + 1)  # a sparse tail: nothing to read
    with _deadline(20):
        index = index_folder(tmp_path)
    assert [len(s) for s in index.series] == [1]
    assert "too large" in _problem(index, "big/IM0000.dcm") and "on disk" in _problem(index, "big/IM0000.dcm")
    assert "inflates to more than" in _problem(index, "bomb.dcm")
    monkeypatch.setattr(limits, "MAX_DICOMDIR_BYTES", 10)
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 200)
    assert "too large" in index_dicomdir(tmp_path / "DICOMDIR").problems[0]


def test_a_dual_echo_series_is_split_into_one_series_per_echo(tmp_path):
    """PD and T2 at every position in one SeriesInstanceUID interleaved slice by slice while scrolling."""
    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    files = write_series(tmp_path, ramp_images(3), series_uid=uid, study_uid=study, names=[f"a{k}.dcm" for k in range(3)])
    files += write_series(tmp_path, ramp_images(3), series_uid=uid, study_uid=study, names=[f"b{k}.dcm" for k in range(3)])
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.EchoNumbers, ds.EchoTime = (1, 10) if k < 3 else (2, 80)
        ds.save_as(path)
    series = index_folder(tmp_path).series
    assert sorted(s.description for s in series) == ["AX FLAIR (echo 1, TE 10 ms)", "AX FLAIR (echo 2, TE 80 ms)"]
    for s in series:
        assert len(s) == 3 and s.spacing_mm == pytest.approx(3.0) and not any("Duplicate" in w for w in s.warnings)
        assert len({sl.echo for sl in s.slices}) == 1


def test_a_localizer_stored_in_the_series_is_a_series_of_its_own_not_a_gap(tmp_path):
    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    write_series(tmp_path, ramp_images(4), series_uid=uid, study_uid=study, spacing=5.0)
    write_slice(tmp_path / "scout.dcm", ramp_images(1)[0], position=(0.0, -120.0, 120.0), orientation=SAGITTAL,
                series_uid=uid, study_uid=study)
    series = sorted(index_folder(tmp_path).series, key=len)
    assert [len(s) for s in series] == [1, 4]
    assert series[0].plane == "sagittal" and series[1].plane == "axial"
    assert series[1].breaks == [] and not any("Gap" in w for w in series[1].warnings)
    assert series[0].breaks is not series[1].breaks  # each part's gaps are its own


def test_enhanced_single_frame_files_are_ordered_by_the_positions_in_their_functional_groups(tmp_path):
    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    order = [2, 0, 3, 1]  # instance k+1 lies at position order[k]
    for k, at in enumerate(order):
        path = write_enhanced_mr(tmp_path / f"e{k}.dcm", [ramp_images(1)[0]], [(0.0, 0.0, 5.0 * at)])
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.InstanceNumber = uid, study, k + 1
        ds.save_as(path)
    (series,) = index_folder(tmp_path).series
    assert series.ordered_by == "position" and series.plane == "axial" and series.spacing_mm == pytest.approx(5.0)
    assert [s.instance for s in series.slices] == [2, 4, 1, 3]


def test_a_radial_acquisition_in_many_orientations_stays_one_series(tmp_path):
    """Split by plane is for a scout beside a stack; six radial slices are one acquisition, not six series."""
    import math as _math

    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for k in range(6):
        a = _math.radians(30 * k)
        orientation = (_math.cos(a), _math.sin(a), 0.0, 0.0, 0.0, -1.0)
        write_slice(tmp_path / f"r{k}.dcm", ramp_images(1)[0], position=(0.0, 0.0, 0.0), orientation=orientation,
                    instance=k + 1, series_uid=uid, study_uid=study)
    (series,) = index_folder(tmp_path).series
    assert len(series) == 6 and any("Mixed orientations" in w for w in series.warnings)


def test_a_dicomdir_copied_with_lower_case_names_lists_the_same_series(tmp_path, pydicom_file):
    """A CD copied to a case-sensitive disk: every file found again, each folder listed once (it was listed once
    per file: minutes for a 20,000-file DICOMDIR)."""
    source = pydicom_file("dicomdirtests/DICOMDIR").parent
    copy = tmp_path / "cd"
    shutil.copytree(source, copy)
    for path in sorted(copy.rglob("*"), key=lambda p: -len(p.parts)):  # deepest first: parents renamed last
        if path.name != "DICOMDIR":
            path.rename(path.with_name(path.name.lower()))
    original, lowered = index_dicomdir(source / "DICOMDIR"), index_dicomdir(copy / "DICOMDIR")
    assert len(lowered.series) == len(original.series) > 0
    assert sum(len(s) for s in lowered.series) == sum(len(s) for s in original.series)
    assert not any("missing on disk" in p for p in lowered.problems)


def test_a_folder_that_no_longer_exists_is_a_readers_error(tmp_path):
    """A History entry whose folder was deleted said 'Unexpected problem' (a FileNotFoundError)."""
    from core.errors import DiagnosticError
    from core.series.index import index_path

    with pytest.raises(DiagnosticError, match="does not exist"):
        index_path(tmp_path / "gone")
