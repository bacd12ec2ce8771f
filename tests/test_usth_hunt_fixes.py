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


def test_the_segmenter_measures_on_the_files_pixel_aspect_and_the_files_pixels(tiny_models, pydicom_file, tmp_path,
                                                                               monkeypatch):
    """PixelAspectRatio reaches the lesion's depth-to-width ratio through the analysis (not only find_lesions), and
    the lesion's text gives the file's pixels where the picture was read smaller, as its JSON does."""
    from core.imaging import load_image
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    ds = bright_block_ultrasound(pydicom_file)
    for name in ("PixelSpacing", "SequenceOfUltrasoundRegions"):
        if name in ds:
            delattr(ds, name)
    ds.PixelAspectRatio = [2, 1]
    ds.save_as(tmp_path / "tall.dcm")
    analyzer = Analyzer(Registry([tiny_models]))
    record = load_image(tmp_path / "tall.dcm")
    (lesion, *_) = analyzer.analyze(record, model_ids=["tiny-us-segmenter"]).results[0].lesions
    x, y, w, h = lesion.bbox
    assert lesion.aspect == 2.0 and lesion.depth_to_width == pytest.approx(2.0 * h / w)
    assert "(pixels 2 times as tall as wide)" in lesion.size_text()
    described = lesion.to_dict(scale=2)
    assert described["area_px"] == lesion.area_px * 4 and f"{lesion.area_px * 4} px" in described["text"]
    assert f"{w * 2} x {h * 2} px (W x D)" in described["text"]


def test_info_says_the_scale_a_microscopy_picture_will_be_tiled_at(tmp_path, capsys):
    """info gave pixel_spacing_mm null for a TIFF stating 0.42 um per pixel and for a BreakHis-named file: the scale
    analyze would use was never shown."""
    import json

    import numpy as np
    import tifffile

    rgb = np.full((64, 64, 3), 200, np.uint8)
    tifffile.imwrite(tmp_path / "slide.tif", rgb, resolution=(1e4 / 0.42, 1e4 / 0.42), resolutionunit=3)  # per cm
    assert main(["info", str(tmp_path / "slide.tif"), "--modality", "SM"]) == 0
    scale = json.loads(capsys.readouterr().out)["microscope_scale"]
    assert (scale["um_x"], scale["source"]) == (pytest.approx(0.42), "tiff")
    tifffile.imwrite(tmp_path / "plain.tif", rgb)
    assert main(["info", str(tmp_path / "plain.tif"), "--modality", "SM"]) == 0
    assert json.loads(capsys.readouterr().out)["microscope_scale"] is None


def test_batch_lists_every_lesion_in_results_jsonl(tiny_models, pydicom_file, tmp_path, monkeypatch):
    """results.csv gives the largest lesion's sizes only; results.jsonl had no per-lesion sizes at all."""
    import csv
    import json

    import numpy as np

    monkeypatch.setenv("MIDA_USER_MODELS", str(tiny_models))
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))
    ds = bright_block_ultrasound(pydicom_file)
    pixels = np.frombuffer(ds.PixelData, np.uint16).reshape(64, 64).copy()
    pixels[44:58, 40:60] = 2000  # a second block
    ds.PixelData = pixels.tobytes()
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "two.dcm")
    assert main(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", "tiny-us-segmenter"]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    details = row["lesion_details"]
    assert len(details) == int(row["lesions"]) >= 1
    assert {"area_px", "bbox", "max_diameter_px", "depth_to_width", "text"} <= set(details[0])
    with (tmp_path / "out" / "results.csv").open(newline="", encoding="utf-8") as fh:
        (written,) = list(csv.DictReader(fh))
    assert "lesion_details" not in written and written["lesions"] == str(len(details))
