"""A DICOM whose header names a modality no model is for (CT, CR, ...) keeps that word: `info` shows it, and a model
chosen for it anyway warns that its output is not meaningful, as for a modality of another model."""

from __future__ import annotations

import shutil

import pydicom
import pytest

from core.imaging import Modality, load_image


@pytest.fixture
def mr_models(tiny_models, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_models / "tiny-mr-classifier", models / "tiny-mr-classifier")
    return models


@pytest.mark.parametrize("stated", ["CT", "CR", "DX", "pt"])
def test_a_modality_no_model_is_for_warns_a_model_chosen_anyway(mr_models, pydicom_file, tmp_path, stated):
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))  # MR pixels under another modality's header
    ds.Modality = stated
    ds.save_as(tmp_path / "slice.dcm")
    record = load_image(tmp_path / "slice.dcm")
    assert record.modality is Modality.OTHER and record.modality_source == "dicom"
    assert record.info()["dicom_modality"] == stated
    (result,) = Analyzer(Registry([mr_models])).analyze(record, model_ids=["tiny-mr-classifier"]).results
    assert f"Wrong modality: the DICOM header says this is a {stated.upper()} image but 'tiny-mr-classifier' was " \
           "trained on Brain MRI; its output is not meaningful here." in result.warnings


@pytest.mark.parametrize("stated", ["OT", "SC", ""])
def test_an_untyped_header_is_guessed_and_not_called_wrong(mr_models, pydicom_file, tmp_path, stated):
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.Modality = stated
    ds.save_as(tmp_path / "slice.dcm")
    record = load_image(tmp_path / "slice.dcm")
    assert record.modality_source == "guess"
    analysis = Analyzer(Registry([mr_models])).analyze(record, model_ids=["tiny-mr-classifier"])
    assert not any("DICOM header says" in w for r in analysis.results for w in r.warnings)


def test_a_guessed_modality_gives_its_confidence_with_the_analysis(mr_models, planted_png):
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    record = load_image(planted_png[0])
    assert record.modality_source == "guess"
    analysis = Analyzer(Registry([mr_models])).analyze(record, model_ids=["tiny-mr-classifier"])
    assert analysis.to_dict()["modality_confidence"] == record.modality_confidence is not None
