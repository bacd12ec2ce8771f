"""DICOM body-part terms (PS3.16 Annex L, CID 4031) and description words against the part a model was trained on
(core.imaging.body_part), and which header field is believed when fields disagree. Found by a helper's hunt:
spine, limb and breast MR got brain answers, leg-vein and groin ultrasound got breast answers, all silently, and a
scanner preset's BREAST hid a kidney study; each test failed before its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from core.imaging import load_image
from core.imaging.body_part import UNTESTED_BODY_PART, body_part_warnings
from core.imaging.record import ImageRecord, Modality, StudyInfo

# Annex L's BodyPartExamined terms for parts outside the head: every one is another part for the brain models.
NOT_HEAD = ("ABDOMEN", "ABDOMENPELVIS", "ACJOINT", "ADRENAL", "ANKLE", "AORTA", "ARM", "AXILLA", "BACK", "BILEDUCT",
            "BLADDER", "BREAST", "BRONCHUS", "BUTTOCK", "CALCANEUS", "CALF", "CAROTID", "CERVIX", "CHEEK", "CHEST",
            "CHESTABDOMEN", "CHESTABDPELVIS", "CLAVICLE", "COCCYX", "COLON", "CORONARYARTERY", "CSPINE", "CTSPINE",
            "DUODENUM", "ELBOW", "ESOPHAGUS", "EXTREMITY", "FACE", "FEMUR", "FIBULA", "FINGER", "FOOT", "FOREARM",
            "GALLBLADDER", "HAND", "HEART", "HIP", "HUMERUS", "ILEUM", "ILIUM", "JAW", "JEJUNUM", "KIDNEY", "KNEE",
            "LARGEINTESTINE", "LARYNX", "LEG", "LIVER", "LSPINE", "LSSPINE", "LUNG", "MAXILLA", "MEDIASTINUM",
            "MOUTH", "NECK", "NECKCHEST", "NECKCHESTABDOMEN", "NECKCHESTABDPELV", "NOSE", "OVARY", "PANCREAS",
            "PAROTID", "PATELLA", "PELVIS", "PENIS", "PHARYNX", "PROSTATE", "RADIUS", "RADIUSULNA", "RECTUM", "RIB",
            "SACRUM", "SCAPULA", "SCJOINT", "SCROTUM", "SESAMOID", "SHOULDER", "SIJOINT", "SMALLINTESTINE", "SPINE",
            "SPLEEN", "SSPINE", "STERNUM", "STOMACH", "SUBMANDIBULAR", "TESTIS", "THIGH", "THUMB", "THYMUS",
            "THYROID", "TIBIA", "TIBIAFIBULA", "TLSPINE", "TMJ", "TOE", "TONGUE", "TRACHEA", "TSPINE", "ULNA",
            "UPRURINARYTRACT", "URETER", "URETHRA", "UTERUS", "VAGINA", "VULVA", "WHOLEBODY", "WRIST", "ZYGOMA")
HEAD = ("BRAIN", "HEAD", "HEADNECK", "SKULL", "CEREBELLUM", "CIRCLEOFWILLIS", "ORBIT", "OPTICCANAL", "EYE", "IAC",
        "EAR", "MASTOID", "SELLA", "SCALP")


def _record(modality: Modality, texts: dict[str, str]) -> ImageRecord:
    return ImageRecord(path=Path("x.dcm"), file_format="DICOM", modality=modality, modality_source="dicom", rows=8,
                       columns=8, frames=1, samples_per_pixel=1, photometric="MONOCHROME2", bits_stored=8,
                       pixel_spacing_mm=None, window_presets=[], study=StudyInfo(), metadata=[],
                       _read_frame=lambda k: np.zeros((8, 8), np.float32),
                       _default_render=lambda values, frame: values.astype(np.uint8), header_texts=texts)


def _warned(modality: Modality, **texts: str) -> list[str]:
    return body_part_warnings(modality, "model", _record(modality, texts))


def test_every_annex_l_term_outside_the_head_is_untested_for_the_brain_models():
    """LSPINE, CSPINE, EXTREMITY, FEMUR, WHOLEBODY, BREAST ... were silent: a spine or a breast got brain answers."""
    silent = [term for term in NOT_HEAD if not _warned(Modality.MR, BodyPartExamined=term)]
    assert silent == []
    assert [term for term in HEAD if _warned(Modality.MR, BodyPartExamined=term)] == []


def test_every_annex_l_term_but_breast_and_axilla_is_untested_for_the_breast_models():
    for modality in (Modality.US, Modality.MG):
        others = [t for t in NOT_HEAD + HEAD if t not in ("BREAST", "AXILLA")]
        assert [term for term in others if not _warned(modality, BodyPartExamined=term)] == [], modality
        assert _warned(modality, BodyPartExamined="BREAST") == _warned(modality, BodyPartExamined="AXILLA") == []


@pytest.mark.parametrize("texts, said", [
    ({"StudyDescription": "US DVT LOWER EXTREMITY VEINS"}, "DVT"),
    ({"StudyDescription": "US LOWER EXTREMITY VENOUS DOPPLER"}, "EXTREMITY"),
    ({"StudyDescription": "US SOFT TISSUE LUMP FOREARM"}, "FOREARM"),
    ({"StudyDescription": "US VEINS LEFT LEG"}, "VEINS"),
    ({"BodyPartExamined": "GROIN"}, "GROIN"),
    ({"SeriesDescription": "US INGUINAL HERNIA"}, "INGUINAL"),
    ({"StudyDescription": "US LEGS BILATERAL"}, "LEGS"),
])
def test_limb_vein_and_groin_ultrasound_is_untested_for_the_breast_models(texts, said):
    (warning,) = _warned(Modality.US, **texts)
    assert warning.startswith(UNTESTED_BODY_PART) and f"says {said};" in warning


@pytest.mark.parametrize("texts", [
    {"BodyPartExamined": "BRAIN", "SeriesDescription": "AX T2 HIPPOCAMPUS"},
    {"StudyDescription": "MRA HEAD AND NECK", "SeriesDescription": "3D TOF"},
    {"StudyDescription": "MRI BRAIN W WO", "SeriesDescription": "COR T2 OB"},  # OB: oblique on MR, not obstetric
    {"StudyDescription": "MR BRAIN", "SeriesDescription": "AX T2 HIGH RES SPIN ECHO"},
    {"StudyDescription": "MR BRAIN", "SeriesDescription": "AX 3D VENOUS"},  # a venogram of the head
    {"BodyPartExamined": "HEAD", "ProtocolName": "8 channel head coil"},
])
def test_a_brain_header_is_the_brain_models_own_and_another_part_for_the_breast_models(texts):
    assert _warned(Modality.MR, **texts) == []
    assert _warned(Modality.US, **texts) and _warned(Modality.MG, **texts)


@pytest.mark.parametrize("texts", [
    {"StudyDescription": "US BREAST LEFT", "SeriesDescription": "AXILLA LYMPH NODES"},
    {"StudyDescription": "US BREASTS BILATERAL"},
    {"StudyDescription": "MAMMOGRAPHY SCREENING", "SeriesDescription": "L MLO"},
    {"BodyPartExamined": "BREAST", "ProcessingFunction": "SM_PRTS_ABDOMEN"},  # the field above a preset decides
])
def test_a_breast_header_is_the_breast_models_own_and_another_part_for_the_brain_models(texts):
    assert _warned(Modality.US, **texts) == [] and _warned(Modality.MG, **texts) == []
    assert _warned(Modality.MR, **texts)


@pytest.mark.parametrize("texts, keyword, said", [
    # a description outranks a scanner preset: deid-data's kidney scan on a breast small-parts preset
    ({"StudyDescription": "US KIDNEY", "SeriesDescription": "US KIDNEY", "ProtocolName": "Free Form",
      "ProcessingFunction": "SM_PRTS_ADV_BREAST"}, "StudyDescription", "KIDNEY"),
    ({"StudyDescription": "US KIDNEY", "SeriesDescription": "Breast preset"}, "StudyDescription", "KIDNEY"),
    # BodyPartExamined outranks the protocol, and a coil's name is not the anatomy
    ({"BodyPartExamined": "SPINE", "ProtocolName": "HEAD_NECK coil spine"}, "BodyPartExamined", "SPINE"),
    ({"ProtocolName": "HEAD_NECK coil spine"}, "ProtocolName", "SPINE"),
    ({"BodyPartExamined": "LSPINE", "StudyDescription": "MR HEAD"}, "BodyPartExamined", "LSPINE"),
    # a BodyPartExamined left at its default does not silence the series' own description
    ({"BodyPartExamined": "HEAD", "SeriesDescription": "SAG T2 C-SPINE"}, "SeriesDescription", "SPINE"),
])
def test_a_higher_ranked_field_naming_another_part_is_not_overruled_by_a_lower_one(texts, keyword, said):
    modality = Modality.US if "US" in texts.get("StudyDescription", "") else Modality.MR
    (warning,) = _warned(modality, **texts)
    assert f"the header's {keyword} says {said};" in warning


def test_the_warning_quotes_the_part_not_the_description():
    (warning,) = _warned(Modality.MR, StudyDescription="MRI L-SPINE for John Smith", ProtocolName="HEAD coil")
    assert "SPINE" in warning and "John" not in warning and "Smith" not in warning


def test_deid_datas_kidney_scan_on_a_breast_preset_is_untested(deid_file):
    record = load_image(deid_file("ultrasounds/GREYSCALE_IMAGE.dcm"))
    (warning,) = body_part_warnings(record.modality, "breast-us-3class", record)
    assert "StudyDescription says KIDNEY" in warning and "breast images only" in warning


def test_a_lumbar_spine_mr_gets_the_warning_from_the_analyzer(tiny_models, pydicom_file, tmp_path):
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    models = tmp_path / "models"
    shutil.copytree(tiny_models / "tiny-mr-classifier", models / "tiny-mr-classifier")
    manifest = json.loads((models / "tiny-mr-classifier" / "manifest.json").read_text())
    assert manifest["modality"] == "MR"
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.BodyPartExamined, ds.SeriesDescription = "LSPINE", "SAG T2 TSE"
    ds.save_as(tmp_path / "lspine.dcm")
    (result,) = Analyzer(Registry([models])).analyze(load_image(tmp_path / "lspine.dcm")).results
    assert [w for w in result.warnings if w.startswith(UNTESTED_BODY_PART)] == [
        "Untested body part: the header's BodyPartExamined says LSPINE; 'tiny-mr-classifier' was trained on brain "
        "images only: its output here is untested."]


@pytest.mark.parametrize("modality, texts, warned", [
    (Modality.MR, {"StudyDescription": "MRI BRAIN", "SeriesDescription": "AX 3D T1 BRAVO +C CARD GATED"}, False),
    (Modality.MR, {"StudyDescription": "MRI BRAIN", "SeriesDescription": "SAG T1 CARDIAC GATED"}, False),
    (Modality.MR, {"StudyDescription": "MR CHEST WALL"}, True),
])
def test_gating_is_not_another_part(modality, texts, warned):
    assert bool(_warned(modality, **texts)) is warned
