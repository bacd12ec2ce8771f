"""The command line's outputs and refusals: never a traceback, never an input or another output overwritten,
never an option silently ignored (each case found by driving main.py; each test failed before its fix)."""

from __future__ import annotations

import shutil

import pydicom
import pytest

from core.cli import main


def test_an_output_over_the_input_or_over_another_output_is_refused(cli, pydicom_file, tmp_path):
    image = tmp_path / "MR_small.dcm"
    shutil.copy(pydicom_file("MR_small.dcm"), image)
    code, said = cli("analyze", str(image), "--dicom-sr-out", str(image), "--json")
    assert code == 2 and "is the input" in said["error"] and pydicom.dcmread(image).Modality == "MR"  # not replaced
    code, said = cli("analyze", str(image), "--dicom-sr-out", str(tmp_path / "o.dcm"), "--dicom-seg-out",
                     str(tmp_path / "o.dcm"), "--json")
    assert code == 2 and "also given to --dicom-seg-out" in said["error"] and not (tmp_path / "o.dcm").exists()


def test_per_image_options_are_refused_with_series(cli, tmp_path):
    code, said = cli("analyze", str(tmp_path), "--series", "--mask-out", str(tmp_path / "m.png"), "--frame", "7")
    assert code == 2 and said["error"].startswith("--mask-out, --frame apply to one image, not to --series")


def test_an_export_the_file_cannot_make_is_an_error_not_a_traceback(cli, pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    del ds.StudyInstanceUID  # what highdicom needs to reference the image
    ds.save_as(tmp_path / "no_study.dcm")
    for option in ("--dicom-sr-out", "--dicom-seg-out"):
        code, said = cli("analyze", str(tmp_path / "no_study.dcm"), "--model", "tiny-us-segmenter", option,
                         str(tmp_path / "x.dcm"), "--json", "--no-history")
        assert code == 2 and said["error"].startswith("cannot write the DICOM S"), option


def test_a_report_asked_for_where_no_model_ran_says_so(cli, pydicom_file, tmp_path):
    code, said = cli("analyze", str(pydicom_file("CT_small.dcm")), "--dicom-sr-out", str(tmp_path / "sr.dcm"),
                     "--json", "--no-history")
    assert code == 2 and "no model result to report" in said["error"] and not (tmp_path / "sr.dcm").exists()


def test_history_of_a_missing_file_or_a_folder_is_an_error(cli, tmp_path):
    for target in (tmp_path / "missing.dcm", tmp_path):
        code, said = cli("history", str(target))
        assert code == 2 and said["path"] == str(target) and said["error"], target


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["batch", str(tmp_path), "--out", str(tmp_path / "o"), "--resume", "--overwrite"])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_history_names_files_and_series_folders_wherever_it_is_read_from(cli, pydicom_file, tmp_path,
                                                                             monkeypatch):
    shutil.copy(pydicom_file("MR_small.dcm"), tmp_path / "scan.dcm")
    monkeypatch.chdir(tmp_path)
    assert cli("analyze", "scan.dcm", "--model", "tiny-mr-classifier", "--json")[0] == 0
    (entry,) = cli("history")[1]["entries"]
    assert entry["path"] == str(tmp_path / "scan.dcm")


def test_a_batch_runs_when_its_history_cannot_be_opened(cli, planted_png, tmp_path, monkeypatch, capsys):
    (tmp_path / "homefile").write_text("a file where the history folder should be")
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "homefile"))
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(planted_png[0], folder / "a.png")
    assert main(["batch", str(folder), "--out", str(tmp_path / "out"), "--model", "tiny-mr-classifier"]) == 0
    assert "history cannot be opened" in capsys.readouterr().err and (tmp_path / "out" / "results.csv").exists()


def test_an_anonymised_seg_of_an_enhanced_mr_frame_keeps_its_geometry(tiny_models, tmp_path):
    """De-identification deleted groups 5000-60FF, which hold the functional groups (5200,9229/9230) of an enhanced
    multi-frame image, not only curves and overlays: the SEG of one of its frames could not be made."""
    import highdicom as hd

    from core.export.anonymise import anonymise_dataset
    from core.export.dicom_export import export_seg
    from core.imaging import load_image
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry
    from tests.series_data import ramp_images, slice_positions, write_enhanced_mr

    path = write_enhanced_mr(tmp_path / "e.dcm", ramp_images(3, 64), slice_positions(3, 3.0))
    original = pydicom.dcmread(path)
    assert "PerFrameFunctionalGroupsSequence" in anonymise_dataset(original)
    assert "PerFrameFunctionalGroupsSequence" in original and original.PatientName == pydicom.dcmread(path).PatientName
    record = load_image(path, modality="US")
    result = Analyzer(Registry([tiny_models])).analyze(record, frame=1, model_ids=["tiny-us-segmenter"]).results[0]
    seg = hd.seg.segread(export_seg(record, result, tmp_path / "seg.dcm", frame=1))
    assert seg.PatientIdentityRemoved == "YES" and seg.NumberOfFrames >= 1
