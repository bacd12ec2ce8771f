"""MR sequence from the header (core.imaging.mr_sequence) and the warning of a bundle fitted on other sequences."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from core.imaging import load_image
from core.imaging.mr_sequence import mr_sequence
from core.models.manifest import BundleManifest
from core.models.registry import ModelError


def _rows(**tags) -> list[tuple[str, str, str]]:
    return [("", keyword, str(value)) for keyword, value in tags.items()]


@pytest.mark.parametrize("tags, expected", [
    ({"SeriesDescription": "ep2d_diff_3scan_trace_p2", "ImageType": "ORIGINAL\\PRIMARY\\DIFFUSION\\TRACEW"}, "DWI"),
    ({"SeriesDescription": "DWI b1000", "ImageType": "DERIVED\\PRIMARY\\ADC\\ADC"}, "ADC"),
    ({"SeriesDescription": "AX DIFFUSION", "DiffusionBValue": "1000"}, "DWI"),
    ({"SeriesDescription": "Ax ADC map"}, "ADC"),
    ({"SeriesDescription": "SWI_Images"}, "SWI / T2*"),
    ({"SeriesDescription": "AX T2* GRE"}, "SWI / T2*"),
    ({"SeriesDescription": "AX T1 3D GRE +C"}, "T1 post-contrast"),  # a GRE alone is no SWI
    ({"SeriesDescription": "t1_mprage_sag", "ContrastBolusAgent": "Gadovist"}, "T1 post-contrast"),
    ({"SeriesDescription": "T1W_SE", "RepetitionTime": "500", "EchoTime": "12"}, "T1"),
    ({"SeriesDescription": "AX T2 FLAIR"}, "FLAIR"),
    ({"ProtocolName": "t2_tse_tra"}, "T2"),
    ({"SeriesDescription": "3-plane localizer"}, "localizer"),
    ({"SeriesDescription": "TOF 3D multi-slab"}, "angiography"),
    ({"SeriesDescription": "ep2d_perf"}, "perfusion"),
    ({"InversionTime": "2500", "RepetitionTime": "9000", "EchoTime": "120"}, "FLAIR"),  # timing alone
    ({"RepetitionTime": "4000", "EchoTime": "100"}, "T2"),
    ({"RepetitionTime": "450", "EchoTime": "10", "ContrastBolusAgent": "GD"}, "T1 post-contrast"),
    # scanner names a reviewer found read wrong: GE's ADC maps, Siemens' RESOLVE diffusion (T2-like timing),
    # T1 before contrast, GE's T1-weighted FLAIR, Philips' sT1W / sT2W
    ({"SeriesDescription": "eADC"}, "ADC"),
    ({"SeriesDescription": "dADC", "RepetitionTime": "6000", "EchoTime": "85"}, "ADC"),
    ({"SeriesDescription": "RESOLVE", "RepetitionTime": "6000", "EchoTime": "85"}, "DWI"),
    ({"SeriesDescription": "AX T1 PRE GAD"}, "T1"),
    ({"SeriesDescription": "T1 pre-contrast"}, "T1"),
    ({"SeriesDescription": "AX T1 non contrast"}, "T1"),
    ({"SeriesDescription": "AX T1 FLAIR"}, "T1"),
    ({"SeriesDescription": "AX T1 FLAIR +C"}, "T1 post-contrast"),
    ({"SeriesDescription": "sT1W_3D_TFE"}, "T1"),
    ({"SeriesDescription": "sT2W_TSE"}, "T2"),
    ({"SeriesDescription": "t2_tirm_tra_dark-fluid"}, "FLAIR"),
    ({"SeriesDescription": "Apparent Diffusion Coefficient (mm2/s)"}, "ADC"),
])
def test_the_sequence_is_read_from_markers_names_then_timing(tags, expected):
    assert mr_sequence(_rows(**tags)).name == expected


@pytest.mark.parametrize("description, expected", [
    # contrast-enhanced T1 as scanners and data sets spell it, with no ContrastBolusAgent: read as plain T1 (a false
    # "Untested sequence" warning) or as nothing
    ("T1C", "T1 post-contrast"), ("T1CE", "T1 post-contrast"), ("T1+C", "T1 post-contrast"),
    ("T1 C+", "T1 post-contrast"), ("T1c+", "T1 post-contrast"), ("T1Gd", "T1 post-contrast"),
    ("T1 GD", "T1 post-contrast"), ("T1_POST", "T1 post-contrast"), ("AX T1 POST GAD", "T1 post-contrast"),
    ("T1 FS POST", "T1 post-contrast"), ("MPRAGE POST", "T1 post-contrast"), ("BraTS_t1ce", "T1 post-contrast"),
    ("T1CE FS", "T1 post-contrast"),
    # without contrast words as before: a 'C' alone may be a coronal T1, 'precontrast' is before it
    ("T1", "T1"), ("COR T1 C", "T1"), ("T1 precontrast", "T1"), ("AX T1 PRE GAD", "T1"),
    ("T2", "T2"), ("T2 CE", "T2"), ("FLAIR", "FLAIR"), ("FLAIR post", "FLAIR"), ("DWI", "DWI"),
    # the operation's time is not the contrast's
    ("post-op T1", "T1"), ("POST OP AX T1", "T1"), ("pre-op T1 C+", "T1 post-contrast"),
    ("PRE OP T1 POST GAD", "T1 post-contrast"), ("post-op T1 post", "T1 post-contrast"),
    ("post-operative T1", "T1"), ("pre-operative T1 C+", "T1 post-contrast"), ("T1 postoperatively", "T1"),
])
def test_contrast_enhanced_t1_spellings_are_read_as_post_contrast(description, expected):
    assert mr_sequence(_rows(SeriesDescription=description)).name == expected


def test_a_run_on_contrast_word_is_quoted_apart():
    said = str(mr_sequence(_rows(SeriesDescription="T1CE")))
    assert said == "T1 post-contrast (from SeriesDescription words 't1', 'ce')"


def test_no_sequence_is_claimed_where_the_header_says_nothing_usable():
    assert mr_sequence([]) is None
    assert mr_sequence(_rows(SeriesDescription="Series 3", RepetitionTime="1500", EchoTime="40")) is None


def test_the_manifest_names_known_sequences_only(tiny_models):
    data = json.loads((tiny_models / "tiny-mr-classifier" / "manifest.json").read_text())
    assert BundleManifest.from_dict(dict(data, mr_sequences=["FLAIR", "T1 post-contrast"])).mr_sequences == (
        "FLAIR", "T1 post-contrast")
    with pytest.raises(ModelError, match="mr_sequences"):
        BundleManifest.from_dict(dict(data, mr_sequences=["T1+C"]))


def test_a_bundle_fitted_on_other_sequences_warns_on_a_diffusion_slice(tiny_models, pydicom_file, tmp_path):
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    models = tmp_path / "models"
    shutil.copytree(tiny_models / "tiny-mr-classifier", models / "tiny-mr-classifier")
    manifest = models / "tiny-mr-classifier" / "manifest.json"
    manifest.write_text(json.dumps(dict(json.loads(manifest.read_text()), mr_sequences=["T1 post-contrast", "FLAIR"])))
    analyzer = Analyzer(Registry([models]))
    warnings = {}
    for description in ("ep2d_diff_b1000", "AX FLAIR"):
        ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
        ds.SeriesDescription = description
        ds.save_as(tmp_path / f"{description}.dcm")
        (result,) = analyzer.analyze(load_image(tmp_path / f"{description}.dcm")).results
        warnings[description] = [w for w in result.warnings if w.startswith("Untested sequence")]
    assert warnings["AX FLAIR"] == []
    (said,) = warnings["ep2d_diff_b1000"]
    assert "DWI (from SeriesDescription word 'diff')" in said and "T1 post-contrast, FLAIR only" in said


def test_the_evidence_quotes_the_matched_words_not_the_description():
    """SeriesDescription is removed by DICOM's de-identification profile: a warning in an anonymised report must
    not carry the whole description ('DOE JOHN t1 mprage +C' quoted the patient's name)."""
    said = str(mr_sequence(_rows(SeriesDescription="DOE JOHN t1_mprage_sag +C")))
    assert said == "T1 post-contrast (from SeriesDescription words 't1', '+c')"
    assert "DOE" not in said.upper()
    assert str(mr_sequence(_rows(ProtocolName="Smith AX FLAIR"))) == "FLAIR (from ProtocolName word 'flair')"


def test_the_shipped_brain_bundles_state_their_sequences():
    from tests.conftest import REPO

    stated = {name: json.loads((REPO / "models" / name / "manifest.json").read_text()).get("mr_sequences")
              for name in ("brain-mri-tumor-4class", "brain-mri-tumor-yesno", "brain-mri-tumor-seg")}
    assert stated["brain-mri-tumor-seg"] == ["T1 post-contrast", "FLAIR"]  # its card: these two only
    assert all("DWI" not in seqs and "ADC" not in seqs for seqs in stated.values())


def test_a_series_verdict_says_once_on_how_many_slices_the_sequence_is_untested():
    from core.series.analysis import SliceOutcome, verdict
    from core.series.index import Series, SliceRef

    said = "Untested sequence: the header says DWI (from SeriesDescription word 'dwi'); 'seg' was fitted on FLAIR only: ..."
    outcomes = [SliceOutcome(lesions=0, lesion_area_mm2=0.0, warnings=[said] if k < 3 else []) for k in range(4)]
    series = Series(key="s", uid="1.2", kind="dicom", slices=[SliceRef(path=Path(f"{k}.dcm")) for k in range(4)])
    warnings = verdict("seg", "1", "segmentation", ["lesion"], outcomes, series).warnings
    assert [w for w in warnings if w.startswith("Untested sequence")] == [f"{said} (3 of 4 slices)"]
