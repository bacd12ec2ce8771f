"""MR sequences outside the brain models' list (core.imaging.mr_sequence): proton density, STIR, steady-state,
gradient echo, double inversion recovery and parametric maps were read as T1 or T2 or as nothing, so the slice got
no 'Untested sequence' warning. Found by a helper's hunt; each test failed before its fix."""

from __future__ import annotations

import json
import shutil

import pydicom
import pytest

from core.imaging import load_image
from core.imaging.mr_sequence import SEQUENCES, UNTESTED_SEQUENCE, mr_sequence


def _rows(**tags) -> list[tuple[str, str, str]]:
    return [("", keyword, str(value)) for keyword, value in tags.items()]


@pytest.mark.parametrize("tags, expected", [
    ({"SeriesDescription": "AX PD", "RepetitionTime": "3000", "EchoTime": "12"}, "PD"),
    ({"SeriesDescription": "sPDW_TSE"}, "PD"),
    ({"SeriesDescription": "COR Proton Density FS"}, "PD"),
    ({"SeriesDescription": "PD FS SAG"}, "PD"),
    ({"SeriesDescription": "PD_T2", "RepetitionTime": "3000", "EchoTime": "15"}, "PD"),  # a dual echo, per echo
    ({"SeriesDescription": "PD_T2", "RepetitionTime": "3000", "EchoTime": "90"}, "T2"),
    ({"SeriesDescription": "AX PD/T2"}, "PD / T2"),  # no echo time: both
    ({"SeriesDescription": "COR STIR", "RepetitionTime": "4000", "EchoTime": "40", "InversionTime": "150"}, "STIR"),
    ({"SeriesDescription": "t2_tirm_cor", "InversionTime": "160"}, "STIR"),  # Siemens' STIR, named T2
    ({"SeriesDescription": "Series 4", "RepetitionTime": "4000", "EchoTime": "40", "InversionTime": "150"}, "STIR"),
    ({"SeriesDescription": "T1_mapping", "ImageType": "['DERIVED', 'PRIMARY', 'T1 MAP']"}, "parametric map"),
    ({"ImageType": "DERIVED\\PRIMARY\\T2_MAP"}, "parametric map"),
    ({"SeriesDescription": "T2map"}, "parametric map"),
    ({"SeriesDescription": "T2* map"}, "parametric map"),
    ({"SeriesDescription": "3D CISS"}, "SSFP"),
    ({"SeriesDescription": "AX FIESTA-C"}, "SSFP"),
    ({"SeriesDescription": "B-FFE"}, "SSFP"),
    ({"SeriesDescription": "TrueFISP"}, "SSFP"),
    ({"SeriesDescription": "AX GRE"}, "gradient echo"),
    ({"SeriesDescription": "AX T2 GRE"}, "gradient echo"),  # T2*-weighted, not the spin-echo T2 fitted on
    ({"SeriesDescription": "T2_FFE"}, "gradient echo"),
    ({"SeriesDescription": "MPGR"}, "gradient echo"),
    ({"SeriesDescription": "DIR"}, "DIR"),
    ({"SeriesDescription": "3D double inversion recovery"}, "DIR"),
    ({"RepetitionTime": "3000", "EchoTime": "12"}, "PD"),  # timing alone: long TR, short TE
])
def test_sequences_outside_the_models_list_are_named(tags, expected):
    assert mr_sequence(_rows(**tags)).name == expected


@pytest.mark.parametrize("tags, expected", [
    ({"SeriesDescription": "t1_mprage_sag", "RepetitionTime": "2300", "EchoTime": "3", "InversionTime": "900"}, "T1"),
    ({"SeriesDescription": "AX 3D FSPGR BRAVO", "RepetitionTime": "8", "EchoTime": "3", "InversionTime": "450"}, "T1"),
    ({"SeriesDescription": "SAG 3D SPGR"}, "T1"),
    ({"SeriesDescription": "t1_fl2d_tra"}, "T1"),
    ({"SeriesDescription": "AX T1 3D GRE +C"}, "T1 post-contrast"),
    ({"SeriesDescription": "T1 FFE"}, "T1"),
    ({"SeriesDescription": "AX T1 FLAIR", "RepetitionTime": "2500", "EchoTime": "12", "InversionTime": "800"}, "T1"),
    ({"SeriesDescription": "t2_tse_tra", "RepetitionTime": "5000", "EchoTime": "100"}, "T2"),
    ({"SeriesDescription": "AX DWI 25 dir"}, "DWI"),  # 'dir' of a diffusion series is a direction
    ({"SeriesDescription": "Ax ADC map"}, "ADC"),
    ({"RepetitionTime": "2500", "EchoTime": "12", "InversionTime": "800"}, None),  # T1 FLAIR timing is no PD
])
def test_t1_t2_and_the_other_known_sequences_keep_their_names(tags, expected):
    """The new names must not take the models' own sequences: MPRAGE, SPGR and BRAVO are 3D T1 gradient echoes."""
    sequence = mr_sequence(_rows(**tags))
    assert (sequence.name if sequence else None) == expected
    assert mr_sequence(_rows(SeriesDescription="AX PD")).name == "PD"


def test_the_dual_echos_evidence_says_which_echo():
    said = str(mr_sequence(_rows(SeriesDescription="DOE PD_T2", EchoTime="15")))
    assert said == "PD (from SeriesDescription word 'pd t2', TE 15)" and "DOE" not in said


def test_no_shipped_brain_bundle_lists_the_new_sequences():
    """The analyzer warns on a sequence the manifest does not list: each new name must be outside every list."""
    from tests.conftest import REPO

    new = ("PD", "PD / T2", "STIR", "SSFP", "gradient echo", "DIR", "parametric map")
    assert set(new) <= set(SEQUENCES)
    for name in ("brain-mri-tumor-4class", "brain-mri-tumor-yesno", "brain-mri-tumor-seg"):
        listed = json.loads((REPO / "models" / name / "manifest.json").read_text())["mr_sequences"]
        assert not set(listed) & set(new), name


def test_a_proton_density_slice_gets_the_warning_from_the_analyzer(tiny_models, pydicom_file, tmp_path):
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    models = tmp_path / "models"
    shutil.copytree(tiny_models / "tiny-mr-classifier", models / "tiny-mr-classifier")
    manifest = models / "tiny-mr-classifier" / "manifest.json"
    manifest.write_text(json.dumps(dict(json.loads(manifest.read_text()),
                                        mr_sequences=["T1", "T1 post-contrast", "T2", "FLAIR"])))
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.SeriesDescription, ds.RepetitionTime, ds.EchoTime = "AX PD", "3000", "12"
    ds.save_as(tmp_path / "pd.dcm")
    (result,) = Analyzer(Registry([models])).analyze(load_image(tmp_path / "pd.dcm")).results
    (said,) = [w for w in result.warnings if w.startswith(UNTESTED_SEQUENCE)]
    assert "the header says PD (from SeriesDescription word 'pd')" in said


def test_a_phase_direction_note_is_not_a_double_inversion():
    for said in ("T2 TSE AX dir FH", "AX T2 FSE dir AP", "t2_tse_tra dir SI"):
        assert mr_sequence(_rows(SeriesDescription=said)).name == "T2", said
