"""Ultrasound and histology results a reader sees, from a hunt on real data (each test failed before its fix)."""

from __future__ import annotations

import pytest

from core.cli import main
from tests.conftest import bright_block_ultrasound

pytestmark = pytest.mark.slow


def test_analyze_prints_each_lesions_sizes_as_a_sonographer_reads_them(tiny_models, pydicom_file, tmp_path,
                                                                       monkeypatch, capsys):
    """The text said only '1 lesion(s), 255.5 mm2': the diameter, width x depth and D/W were in the JSON alone."""
    identified_dicom = tmp_path / "us.dcm"
    bright_block_ultrasound(pydicom_file).save_as(identified_dicom)
    monkeypatch.setenv("MIDA_USER_MODELS", str(tiny_models))
    assert main(["analyze", str(identified_dicom), "--model", "tiny-us-segmenter", "--json", "--no-history"]) == 0
    import json

    details = json.loads(capsys.readouterr().out)["results"][0]["lesion_details"]
    assert details and all("D/W" in d["text"] and "(W x D)" in d["text"] for d in details)
    assert main(["analyze", str(identified_dicom), "--model", "tiny-us-segmenter", "--no-history"]) == 0
    printed = capsys.readouterr().out
    for k, detail in enumerate(details, 1):
        assert f"    lesion {k}: {detail['text']}" in printed
