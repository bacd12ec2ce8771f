"""The command line's stable interface as the README states it (each case found by driving main.py; each test failed
before its fix): outputs never written over the input under their numbered or per-model names, a series no slice
of which can be read is an error, Ctrl+C exits 3 with the frames done, a Grad-CAM class asked of several models,
series plane independent of file order, TIFF pages not read are said, --series lists files it cannot read."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest


@pytest.fixture
def two_classifiers(tiny_models, tmp_path, monkeypatch):
    """The tiny MR classifier (clear, lesion) and a copy of it as another MR classifier with classes no, yes."""
    folder = tmp_path / "models"
    shutil.copytree(tiny_models / "tiny-mr-classifier", folder / "tiny-mr-classifier")
    shutil.copytree(tiny_models / "tiny-mr-classifier", folder / "tiny-mr-other")
    manifest = json.loads((folder / "tiny-mr-other" / "manifest.json").read_text())
    manifest.update(id="tiny-mr-other", classes=["no", "yes"])
    (folder / "tiny-mr-other" / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("MIDA_USER_MODELS", str(folder))
    return folder


def test_a_numbered_or_per_model_output_name_over_the_input_is_refused(cli, two_classifiers, pydicom_file,
                                                                      planted_png, tmp_path):
    image = tmp_path / "x_f0.dcm"  # frame 0's SR of --dicom-sr-out x.dcm is named x_f0.dcm
    shutil.copy(pydicom_file("SC_rgb_rle_2frame.dcm"), image)
    before = image.read_bytes()
    code, said = cli("analyze", str(image), "--all-frames", "--modality", "MR", "--model", "tiny-mr-classifier",
                     "--dicom-sr-out", str(tmp_path / "x.dcm"), "--json", "--no-history")
    assert code == 2 and "is the input" in said["error"] and image.read_bytes() == before
    assert not (tmp_path / "x_f1.dcm").exists()  # nothing written before the refusal
    picture = tmp_path / "h_tiny-mr-classifier.png"  # the classifier's heatmap of --heatmap-out h.png, two models
    shutil.copy(planted_png[0], picture)
    before = picture.read_bytes()
    code, said = cli("analyze", str(picture), "--modality", "MR", "--model", "tiny-mr-classifier", "--model",
                     "tiny-mr-other", "--heatmap-out", str(tmp_path / "h.png"), "--json", "--no-history")
    assert code == 2 and "is the input" in said["error"] and picture.read_bytes() == before
    assert not (tmp_path / "h_tiny-mr-other.png").exists()


def test_an_output_name_over_the_input_is_refused_before_any_frame_is_analysed(cli, two_classifiers, pydicom_file,
                                                                               planted_png, tmp_path, monkeypatch):
    """An --all-frames run analysed every frame, then refused the names it would write."""
    from core.inference.analyzer import Engine

    def never(self, record, cancel=None, **options):
        raise AssertionError(f"frame {options.get('frame')} analysed before the refusal")

    monkeypatch.setattr(Engine, "submit", never)
    image = tmp_path / "x_f1.dcm"  # frame 1's SR of --dicom-sr-out x.dcm
    shutil.copy(pydicom_file("SC_rgb_rle_2frame.dcm"), image)
    code, said = cli("analyze", str(image), "--all-frames", "--modality", "MR", "--model", "tiny-mr-classifier",
                     "--dicom-sr-out", str(tmp_path / "x.dcm"), "--json", "--no-history")
    assert code == 2 and "x_f1.dcm, which is the input" in said["error"]
    picture = tmp_path / "h_tiny-mr-other.png"  # the second classifier's heatmap of --heatmap-out h.png
    shutil.copy(planted_png[0], picture)
    code, said = cli("analyze", str(picture), "--modality", "MR", "--model", "tiny-mr-classifier", "--model",
                     "tiny-mr-other", "--heatmap-out", str(tmp_path / "h.png"), "--json", "--no-history")
    assert code == 2 and "h_tiny-mr-other.png, which is the input" in said["error"], said


def test_a_series_none_of_whose_slices_can_be_read_is_an_error_with_the_default_models(cli, pydicom_file, tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(2):
        ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
        ds.PixelData = ds.PixelData[:119]  # cut short: the header reads, the pixels do not
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{k + 1}"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0, 0, 5 * k]
        ds.save_as(folder / f"b{k}.dcm")
    code, said = cli("analyze", str(folder), "--series", "--json", "--no-history")
    (series,) = said["series"]
    assert code == 2 and series["error"].startswith("no slice of this series could be analysed: Cannot open 'b0.dcm'")


def test_ctrl_c_during_all_frames_prints_the_frames_done_and_exits_3(cli, pydicom_file, tmp_path, monkeypatch):
    from core.inference.analyzer import Engine

    submit, calls = Engine.submit, []

    class Interrupted:
        def result(self, timeout=None):
            raise KeyboardInterrupt

    def interrupted_after_one(self, record, cancel=None, **options):
        calls.append(options["frame"])
        return submit(self, record, cancel=cancel, **options) if len(calls) == 1 else Interrupted()

    monkeypatch.setattr(Engine, "submit", interrupted_after_one)
    code, said = cli("analyze", str(pydicom_file("SC_rgb_rle_2frame.dcm")), "--all-frames", "--modality", "MR",
                     "--model", "tiny-mr-classifier", "--json", "--no-history")
    assert code == 3 and said["cancelled"] is True and calls == [0, 1]
    assert [f["frame"] for f in said["frames"]] == [0] and said["frames"][0]["results"][0]["model"] == "tiny-mr-classifier"


def test_a_gradcam_class_of_one_chosen_model_is_drawn_by_it_and_the_others_say_so(cli, two_classifiers, planted_png):
    models = ("--model", "tiny-mr-classifier", "--model", "tiny-mr-other")
    code, said = cli("analyze", str(planted_png[0]), "--modality", "MR", *models, "--target-class", "clear", "--json",
                     "--no-history")
    assert code == 0, said
    mine, other = said["results"]
    assert mine["heatmap_class"] == "clear" and not any("Grad-CAM class" in w for w in mine["warnings"])
    assert other["heatmap_class"] in ("no", "yes")
    assert any(w.startswith("Grad-CAM class 'clear' is not a class of tiny-mr-other") for w in other["warnings"])
    code, said = cli("analyze", str(planted_png[0]), "--modality", "MR", *models, "--target-class", "banana",
                     "--json", "--no-history")
    assert code == 2 and said["error"].startswith("'banana' is not a class of any chosen model")


def test_a_mixed_orientation_series_has_one_plane_whatever_the_file_order(pydicom_file):
    from core.series.index import index_dicomdir, index_files

    base = pydicom_file("dicomdirtests")
    (angio,) = [s for s in index_dicomdir(base / "DICOMDIR").series if s.description.startswith("ANGIO")]
    files = angio.files
    seen = set()
    for order in (files, sorted(files), sorted(files, reverse=True)):
        (series,) = index_files(order, base).series
        seen.add((series.plane, tuple(round(s.position_mm, 3) for s in series.slices), series.warnings[0]))
    assert len(seen) == 1 and angio.plane == next(iter(seen))[0], seen


def test_tiff_pages_of_another_image_are_said_not_lost(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from core.imaging import load_image

    rgb, grey = np.zeros((32, 32, 3), np.uint8), np.full((32, 32), 200, np.uint8)
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tif:  # no shape metadata: pages grouped by their kind
        for page in (rgb, grey, rgb):
            tif.write(page, photometric="rgb" if page.ndim == 3 else "minisblack", metadata=None)
    record = load_image(tmp_path / "mixed.tif")
    assert record.frames == 2  # as before: the first image's pages
    (warning,) = [w for w in record.warnings if "TIFF" in w]
    assert "(pages 1, 3)" in warning and "page 2 (32 x 32 grey)" in warning
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.stack([grey, grey]), photometric="minisblack")
    assert load_image(plain).warnings == []


def test_series_lists_an_unreadable_image_file_and_gives_an_image_series_its_modality(cli, pydicom_file,
                                                                                    planted_png, tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(planted_png[0], folder / "picture.png")
    (folder / "bad.dcm").write_text("not a DICOM file")
    (folder / "notes.txt").write_text("not an image, not named as one")
    code, said = cli("analyze", str(folder), "--series", "--model", "tiny-mr-classifier", "--json", "--no-history")
    assert code == 0, said
    (problem,) = said["problems"]
    assert problem.startswith("bad.dcm: ") and "neither DICOM" in problem
    (series,) = said["series"]
    assert series["file"].endswith("picture.png") and series["modality"] in ("MR", "MG", "US", "SM", "OT")


def test_one_frame_of_a_multi_frame_file_analysed_says_so(cli, pydicom_file):
    code, said = cli("analyze", str(pydicom_file("SC_rgb_rle_2frame.dcm")), "--modality", "MR", "--model",
                     "tiny-mr-classifier", "--frame", "1", "--json", "--no-history")
    assert code == 0 and "only frame 2 of 2 was analysed (--all-frames analyses each)" in said["warnings"]
    code, said = cli("analyze", str(pydicom_file("SC_rgb_rle_2frame.dcm")), "--modality", "MR", "--model",
                     "tiny-mr-classifier", "--all-frames", "--json", "--no-history")
    assert code == 0 and not any("only frame" in w for f in said["frames"] for w in f["warnings"])
