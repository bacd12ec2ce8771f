"""Histology across labs: the image's physical scale, scale-true tiles, streamed stain normalisation,
the BACH reader and the leave-one-lab-out bookkeeping (synthetic tiles only, no training)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from core.imaging import load_image
from core.imaging.stain import apply_macenko, fit_macenko, macenko_normalise
from core.models.scale import (
    Scale,
    file_scale,
    magnification_from_name,
    resolve_scale,
    tiff_scale,
    um_at_magnification,
)
from core.models.tile_stream import TilePlan
from core.models.preprocessing import PreprocessSpec, preprocess, to_model_pixels
from core.models.tiling import TilingSpec, tile_boxes, tile_map, tile_pixels, tissue_mask
from tests.conftest import microscopy_bundle
from tests.test_histology import fake_he, two_stains


def test_breakhis_names_carry_the_magnification():
    assert magnification_from_name("SOB_B_A-14-22549AB-400-001.png") == 400
    assert magnification_from_name("/x/SOB_M_DC-14-2523-40-010.png") == 40
    assert magnification_from_name("SOB_M_DC-14-2523-100-010") == 100
    assert magnification_from_name("slide-300-001.png") is None and magnification_from_name("core_40.png") is None
    assert um_at_magnification(40) == pytest.approx(4.9)
    assert um_at_magnification(400) == pytest.approx(0.49)


def _tiff(path, um_y: float, um_x: float, unit: str = "CENTIMETER", size=(60, 80)):
    per_unit = 10000.0 if unit == "CENTIMETER" else 25400.0
    tifffile.imwrite(path, fake_he(0, True, size), photometric="rgb",
                     resolution=(per_unit / um_x, per_unit / um_y), resolutionunit=unit)
    return path


def test_tiff_resolution_is_read_in_either_unit_and_screen_dpi_is_ignored(tmp_path):
    assert tiff_scale(_tiff(tmp_path / "cm.tif", 0.25, 0.5)) == pytest.approx((0.25, 0.5))
    assert tiff_scale(_tiff(tmp_path / "inch.tif", 0.42, 0.42, unit="INCH")) == pytest.approx((0.42, 0.42))
    tifffile.imwrite(tmp_path / "dpi.tif", fake_he(0, True, (48, 48)), photometric="rgb", resolution=(72, 72),
                     resolutionunit="INCH")
    assert tiff_scale(tmp_path / "dpi.tif") is None  # 353 um per pixel: a screen default, not a microscope
    tifffile.imwrite(tmp_path / "aperio.tif", fake_he(0, True, (48, 48)), photometric="rgb",
                     description="Aperio Image Library |AppMag = 20|MPP = 0.4990")
    assert tiff_scale(tmp_path / "aperio.tif") == pytest.approx((0.499, 0.499))


def test_scale_resolution_order_and_downsampling(tmp_path):
    record = load_image(_tiff(tmp_path / "SOB_B_A-14-1-400-001.tif", 0.3, 0.3))
    assert file_scale(record) == Scale(pytest.approx(0.3), pytest.approx(0.3), "tiff")  # the header beats the name
    png = tmp_path / "SOB_B_A-14-1-200-001.png"
    Image.fromarray(fake_he(1, False)).save(png)
    named = resolve_scale(load_image(png), 0.5)
    assert (named.source, named.um_x) == ("file name", pytest.approx(0.98))
    plain = tmp_path / "core.png"
    Image.fromarray(fake_he(1, False)).save(plain)
    assumed = resolve_scale(load_image(plain), 0.5)
    assert assumed.assumed and assumed.um_y == 0.5
    assert resolve_scale(load_image(plain), 0.5, user_um=0.25) == Scale(0.25, 0.25, "user")
    with pytest.raises(ValueError):
        resolve_scale(load_image(plain), 0.5, user_um=300.0)
    shrunk = load_image(png)
    shrunk.downsample = 4  # loaded at a quarter of the file's size: pixels four times larger
    assert file_scale(shrunk).um_x == pytest.approx(4 * 0.98)


def test_dicom_pixel_spacing_and_whole_slide_extent(tmp_path):
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PixelSpacing = [0.0005, 0.00025]  # mm
    ds.save_as(tmp_path / "spacing.dcm")
    scale = file_scale(load_image(tmp_path / "spacing.dcm"))
    assert scale.source == "dicom" and (scale.um_y, scale.um_x) == pytest.approx((0.5, 0.25))
    del ds.PixelSpacing
    ds.ImagedVolumeWidth, ds.ImagedVolumeHeight = 12.8, 6.4  # mm over 25600 x 12800 pixels: 0.5 um
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = 25600, 12800
    ds.save_as(tmp_path / "wsi.dcm")
    record = load_image(tmp_path / "wsi.dcm")
    assert record.pixel_spacing_mm is None
    assert file_scale(record) == Scale(pytest.approx(0.5), pytest.approx(0.5), "dicom")


def test_tiles_keep_their_physical_size():
    img = fake_he(2, True, (400, 600))
    spec = TilingSpec(tile=100, stride=100, min_tissue=0.0, microns_per_pixel=0.5)
    boxes = tile_boxes(img, spec, (0.25, 0.5))  # rows at 0.25 um, columns at 0.5: 200 x 100 image px per tile
    assert {(y1 - y0, x1 - x0) for y0, y1, x0, x1 in boxes} == {(200, 100)}
    assert len(boxes) == 2 * 6
    assert tile_boxes(img, spec) == tile_boxes(img, TilingSpec(tile=100, stride=100, min_tissue=0.0))  # no scale: as 1.x


def test_brightly_lit_stain_is_tissue_and_tinted_glass_is_not():
    img = np.zeros((4, 4, 3), np.uint8)
    img[0] = (250, 170, 235)  # eosin pink under bright light: value 250, saturation 82
    img[1] = (245, 240, 242)  # glass, a faint tint (saturation 5)
    img[2] = (248, 236, 228)  # glass, a warm tint (saturation 21)
    img[3] = (150, 90, 170)  # haematoxylin purple
    mask = tissue_mask(img)
    assert mask[0].all() and not mask[1].any() and not mask[2].any() and mask[3].all()


def test_a_field_smaller_than_a_tile_is_mirrored_out_at_its_own_scale():
    small = fake_he(4, True, (46, 70))  # a field of 2.3 x 3.4 um at 0.049 um per pixel, 23 x 34 um at 0.5
    spec = TilingSpec(tile=224, stride=224, min_tissue=0.4, microns_per_pixel=0.5)
    (box,) = tile_boxes(small, spec, (0.049, 0.049))
    assert box == (0, 2286, 0, 2286)
    pixels = tile_pixels(small, box)
    assert pixels.shape == (2286, 2286, 3)
    np.testing.assert_array_equal(pixels[:46, :70], small)
    np.testing.assert_array_equal(pixels[46:92, :70], small[::-1])  # mirrored, not stretched
    heat = tile_map(small.shape[:2], [box], np.array([0.7]))
    assert heat.shape == (46, 70) and np.all(heat == pytest.approx(0.7))


def test_streamed_stain_normalisation_equals_the_whole_picture():
    img = two_stains(5, (300, 420))
    whole = macenko_normalise(img)
    fit = fit_macenko(img)
    assert fit is not None and not np.array_equal(whole, img)  # two stains: normalised, so streaming is tested
    for y0, y1, x0, x1 in ((0, 100, 0, 140), (150, 300, 200, 420)):
        np.testing.assert_array_equal(apply_macenko(img[y0:y1, x0:x1], fit), whole[y0:y1, x0:x1])
    blank = np.full((64, 64, 3), 245, np.uint8)
    assert fit_macenko(blank) is None and apply_macenko(blank, None) is blank


def test_tile_plan_streams_batches_of_the_normalised_tiles():
    img = two_stains(6, (300, 450))
    spec = PreprocessSpec(size=64, color="rgb", crop="none", stain="macenko")
    plan = TilePlan(img, TilingSpec(tile=64, stride=64, min_tissue=0.0, microns_per_pixel=1.0), spec, (0.5, 0.5))
    assert len(plan) == 3 * 4  # 128-px boxes of image pixels
    batches = list(plan.batches(5))
    assert [len(b) for b in batches] == [5, 5, 2]
    y0, y1, x0, x1 = plan.boxes[7]
    assert fit_macenko(img) is not None
    np.testing.assert_allclose(batches[1][2], preprocess(macenko_normalise(img)[y0:y1, x0:x1], spec), atol=1e-6)


@pytest.fixture
def tiled_bundle(tiny_models, tmp_path):
    folder = tmp_path / "models" / "tiled"
    shutil.copytree(tiny_models / "tiny-mr-classifier", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(id="tiny-scaled", tiling={"tile": 32, "stride": 32, "min_tissue": 0.0, "microns_per_pixel": 1.0})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder.parent


def test_analysis_tiles_at_the_bundle_scale_and_says_when_it_was_assumed(tiled_bundle, tmp_path):
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    analyzer = Analyzer(Registry([tiled_bundle]))
    img = fake_he(7, True, (128, 128))
    Image.fromarray(img).save(tmp_path / "plain.png")
    tifffile.imwrite(tmp_path / "half.tif", img, photometric="rgb", resolution=(20000, 20000), resolutionunit="CENTIMETER")

    def run(path, **kw):
        return analyzer.analyze(load_image(path, modality="MR"), **kw).results[0]

    assumed = run(tmp_path / "plain.png")
    assert assumed.tiles == 16 and any("Magnification unknown" in w for w in assumed.warnings)  # 32-px tiles at 1 um
    known = run(tmp_path / "half.tif")  # 0.5 um per pixel: 64-px tiles
    assert known.tiles == 4 and not any("Magnification" in w for w in known.warnings)
    user = run(tmp_path / "plain.png", microns_per_pixel=0.25)  # 128-px tiles: one
    assert user.tiles == 1 and not any("Magnification" in w for w in user.warnings)
    assert known.heatmap.shape == img.shape[:2] and assumed.tile_gradcam.shape == img.shape[:2]
    manifest_file = tiled_bundle / "tiled" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["tiling"]["assumed_microns_per_pixel"] = 0.5  # the training images' scale, not the tiles'
    manifest_file.write_text(json.dumps(manifest))
    analyzer = Analyzer(Registry([tiled_bundle]))
    taken = run(tmp_path / "plain.png")
    assert taken.tiles == 4 and any("taken to be at 0.50 um" in w for w in taken.warnings)


def test_bach_reader_maps_four_classes_to_two_and_blocks_numbers(tmp_path):
    from core.training.datasets import BACH_UM, bach_histology

    for cls, letter in (("normal", "n"), ("benign", "b"), ("insitu", "is"), ("invasive", "iv")):
        (tmp_path / f"{cls}_jpg").mkdir()
        for number in (0, 9, 10, 23):
            Image.fromarray(fake_he(number, cls in ("insitu", "invasive"), (48, 48))).save(
                tmp_path / f"{cls}_jpg" / f"{letter}{number:03d}.jpeg")
    samples = bach_histology(tmp_path)
    assert len(samples) == 16
    assert {s.extra["subtype"]: s.label for s in samples} == {"normal": "benign", "benign": "benign",
                                                               "insitu": "malignant", "invasive": "malignant"}
    groups = {s.path.name: s.group for s in samples}
    assert groups["n000.jpeg"] == groups["n009.jpeg"] != groups["n010.jpeg"] != groups["b010.jpeg"]
    assert samples[0].extra["um"] == list(BACH_UM) and BACH_UM[1] == pytest.approx(0.56)


def test_near_duplicates_join_their_blocks_and_splits_keep_groups_apart(tmp_path):
    from core.training.datasets import Sample
    from core.training.lab_transfer import choose, grouped, split_images

    samples = []
    for i in range(12):
        path = tmp_path / f"img{i}.png"
        coarse = np.random.default_rng(i).integers(60, 250, (17, 16, 3)).astype(np.uint8)  # unlike each other
        Image.fromarray(cv2.resize(coarse, (64, 68), interpolation=cv2.INTER_NEAREST)).save(path)
        samples.append(Sample(path, "malignant" if i % 2 else "benign", f"block{i // 2}", extra={"lab": "bach"}))
    shutil.copy(samples[0].path, tmp_path / "copy.png")  # a re-export of img0 in another block
    samples.append(Sample(tmp_path / "copy.png", "benign", "block5", extra={"lab": "bach"}))
    merged = {s.path.name: s.group for s in grouped(samples)}
    assert merged["copy.png"] == merged["img0.png"] == merged["img11.png"]  # block5 joined block0
    entries = [{"path": str(s.path), "image_label": s.label, "group": s.group, "lab": "bach"} for s in samples]
    config = type("C", (), {"val_fraction": 0.34, "seed": 0})()
    train, val = split_images(entries, config)
    assert train and val and not train & val
    assert not {merged[p.rsplit("/", 1)[1]] for p in train} & {merged[p.rsplit("/", 1)[1]] for p in val}
    rows = [{"option": o, "train_lab": lab, "finetune_epochs": 0, "roc_auc": auc, "accuracy": 0.5}
            for o, aucs in (("none", (0.6, 0.7)), ("macenko", (0.9, 0.5)), ("hed", (0.8, 0.75))) for lab, auc in
            zip(("ucsb", "bach"), aucs)]
    assert choose(rows) == "hed"  # best mean over both directions, not the best single direction
    rows += [{**r, "finetune_epochs": 2, "roc_auc": 0.99 if r["option"] == "none" else 0.1} for r in rows[:2]]
    assert choose(rows) == "hed"  # a deeper recipe counts only once every option has it


def test_small_fields_are_cut_and_mirrored_like_a_picture_smaller_than_a_tile():
    from core.training.lab_transfer import FIELD_SIDES, small_field

    tile = np.random.default_rng(0).integers(0, 255, (224, 224, 3)).astype(np.uint8)
    field = small_field(tile, np.random.default_rng(3))
    assert field.shape == tile.shape
    # the field's own rows repeat mirrored: find its height from the first row that mirrors an earlier one
    heights = [h for h in range(FIELD_SIDES[0], FIELD_SIDES[1] + 1) if np.array_equal(field[h], field[h - 1])]
    h = heights[0]
    assert np.array_equal(field[h:], field[:h][::-1][: 224 - h])


def test_a_low_power_view_is_what_the_analysis_makes_of_a_lower_magnification_picture():
    """The training view of a 40x-200x picture equals the model input the analysis cuts from such a picture: the
    same tissue at fewer pixels per tile, enlarged to the model's size by the preprocessing."""
    from core.training.lab_transfer import LOW_POWER, RAW, low_power

    tile = fake_he(8, True, (224, 224))
    rng = np.random.default_rng(5)
    view = low_power(tile, rng)
    factor = float(np.exp(np.random.default_rng(5).uniform(np.log(LOW_POWER[0]), np.log(LOW_POWER[1]))))
    side = round(224 / factor)
    picture = cv2.resize(tile, (side, side), interpolation=cv2.INTER_AREA)  # the tile's tissue at the lower power
    spec = TilingSpec(tile=224, stride=224, min_tissue=0.0, microns_per_pixel=0.5)
    (box,) = tile_boxes(picture, spec, (0.5 * 224 / side,) * 2)
    assert box == (0, side, 0, side)
    np.testing.assert_array_equal(view, to_model_pixels(tile_pixels(picture, box), RAW))
    assert view.shape == tile.shape and not np.array_equal(view, tile)


def test_two_versions_fields_calls_are_compared_picture_by_picture(tmp_path, monkeypatch):
    from core.training import lab_transfer
    from core.training.configs import CONFIGS

    monkeypatch.setattr(lab_transfer, "work_dir", lambda config: tmp_path)
    config = CONFIGS[lab_transfer.BUNDLE]
    rng = np.random.default_rng(0)
    calls = {"old": [], "new": []}
    for i in range(40):
        label = ["benign", "malignant"][i % 2]
        for m in (40, 400):
            right = {"old": m == 400 or i % 4 == 0, "new": True}  # the new one also gets 40x right
            for version, ok in right.items():
                p = float(rng.uniform(0.6, 0.9))
                called = label if ok else ("malignant" if label == "benign" else "benign")
                probs = {called: p, next(c for c in config.classes if c != called): 1 - p}
                calls[version].append({"image": f"im{i}", "group": f"g{i // 2}", "magnification": m, "label": label,
                                       "called": called, "probabilities": probs})
    for version, rows in calls.items():
        (tmp_path / f"fields-{version}.json").write_text(json.dumps(rows))
    result = lab_transfer.compare_fields(config, "old", "new", rounds=200)
    assert result["400x"]["accuracy"]["diff"] == 0.0
    assert result["40x"]["accuracy"]["old"] == 0.25 and result["40x"]["accuracy"]["new"] == 1.0
    assert result["40x"]["accuracy"]["interval"][0] > 0 and result["all"]["accuracy"]["diff"] == pytest.approx(0.375)
    (tmp_path / "fields-new.json").write_text(json.dumps(calls["new"][:-1]))
    with pytest.raises(ValueError, match="nothing to pair"):
        lab_transfer.compare_fields(config, "old", "new")


def test_the_generic_train_command_refuses_the_two_lab_config():
    from core.training.__main__ import main

    with pytest.raises(SystemExit):
        main(["train", "breast-histology-2class"])


# ----- the user's scale: command line, batch and series (core.cli, core.batch, core.series)

def test_user_scale_is_checked_and_named():
    from core.models.scale import check_user_um, magnification_at

    assert magnification_at(um_at_magnification(400)) == 400 and magnification_at(0.25) is None
    assert check_user_um("0.5") == 0.5
    for wrong in (-0.5, 0.0, 50.0, float("nan")):
        with pytest.raises(ValueError, match="not a microscopy scale"):
            check_user_um(wrong)


@pytest.fixture
def sm_bundle(tiny_models, tmp_path):
    """The tiny classifier as a microscopy bundle tiling 32-px tiles at 1 um per pixel."""
    return microscopy_bundle(tiny_models, tmp_path / "models", "tiny-scaled", tile=32, stride=32, min_tissue=0.0,
                             microns_per_pixel=1.0)


def test_analyze_command_hands_the_users_scale_to_the_analysis(sm_bundle, tmp_path, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.setenv("MIDA_USER_MODELS", str(sm_bundle))
    png = tmp_path / "plain.png"
    Image.fromarray(fake_he(7, True, (128, 128))).save(png)

    def result(*options: str) -> dict:
        assert main(["analyze", str(png), "--model", "tiny-scaled", "--json", "--no-history", *options]) == 0
        return json.loads(capsys.readouterr().out)["results"][0]

    assumed = result()
    assert assumed["scale"]["source"] == "assumed" and assumed["tiles"] == 16  # 32-px tiles at 1 um
    assert any("Magnification unknown" in w for w in assumed["warnings"])
    at_400 = result("--magnification", "400")  # 0.49 um per pixel: 65-px tiles, 2 x 2 of them
    assert at_400["scale"] == {"um_y": 0.49, "um_x": 0.49, "source": "user", "text": "0.49 um per pixel (user)"}
    assert at_400["tiles"] == 4 and not any("Magnification" in w for w in at_400["warnings"])
    at_fine = result("--microns-per-pixel", "0.2")  # 160-px tiles: one, mirrored out, covers the image
    assert (at_fine["scale"]["source"], at_fine["tiles"]) == ("user", 1)
    assert main(["analyze", str(png), "--model", "tiny-scaled", "--no-history", "--magnification", "400x"]) == 0
    assert "scale: 0.49 um per pixel (user)" in capsys.readouterr().out


@pytest.mark.parametrize("options, message", [
    (["--magnification", "400", "--microns-per-pixel", "0.5"], "not allowed with argument --magnification"),
    (["--magnification", "300"], "'300' is not one of 40, 100, 200, 400"),
    (["--microns-per-pixel", "-0.5"], "-0.5 um per pixel is not a microscopy scale"),
    (["--microns-per-pixel", "50"], "50 um per pixel is not a microscopy scale (give 0.02 to 20)"),
    (["--microns-per-pixel", "half"], "'half' is not a number"),
])
@pytest.mark.parametrize("command", ["analyze", "batch"])
def test_a_wrong_or_doubled_scale_is_a_usage_error(command, options, message, tmp_path, capsys):
    from core.cli import main

    target = ["batch", str(tmp_path), "--out", str(tmp_path / "out")] if command == "batch" else ["analyze", "x.png"]
    with pytest.raises(SystemExit) as stop:
        main([*target, *options])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_batch_command_analyses_every_file_at_the_users_scale(sm_bundle, tmp_path, monkeypatch, capsys):
    import csv

    from core.cli import main

    monkeypatch.setenv("MIDA_USER_MODELS", str(sm_bundle))
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(fake_he(i, True, (96, 96))).save(folder / f"field{i}.png")

    def rows(out: str, *options: str) -> list[dict]:
        assert main(["batch", str(folder), "--out", str(tmp_path / out), "--model", "tiny-scaled", "--no-history",
                     "--no-heatmaps", *options]) == 0
        capsys.readouterr()
        with (tmp_path / out / "results.csv").open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    assumed = rows("assumed")
    assert all("Magnification unknown" in r["warnings"] and r["scale"].endswith("(assumed)") for r in assumed)
    user = rows("user", "--magnification", "100")
    assert len(user) == 2 and not any("Magnification" in r["warnings"] or r["error"] for r in user)
    assert {r["scale"] for r in user} == {"1.96 um per pixel (user)"}  # the scale each row was analysed at
    # --no-heatmaps: no picture of a tiled model's tile map either (one was written for every image)
    assert not any(r["heatmap_file"] for r in assumed + user) and not (tmp_path / "user" / "heatmaps").exists()


def test_series_analysis_runs_every_slice_at_the_users_scale(sm_bundle, tmp_path, monkeypatch, capsys):
    from core.cli import main
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry
    from core.series import index_folder
    from core.series.analysis import analyse_series
    from tests.series_data import ramp_images, write_series

    write_series(tmp_path / "series", ramp_images(3))
    (series,) = index_folder(tmp_path / "series").series
    analyzer = Analyzer(Registry([sm_bundle]))

    def warned(**options) -> list[bool]:
        (verdict,) = analyse_series(series, analyzer, ["tiny-scaled"], **options).results
        return [any("Magnification unknown" in w for w in o.warnings) for o in verdict.slices]

    assert warned() == [True] * 3  # 0.94 mm pixels are no microscope's: assumed
    assert warned(microns_per_pixel=0.25) == [False] * 3
    handed = {}
    monkeypatch.setattr("core.series.report.analyse_series",
                        lambda *args, **kwargs: handed.update(kwargs) or analyse_series(*args, **kwargs))
    monkeypatch.setenv("MIDA_USER_MODELS", str(sm_bundle))
    assert main(["analyze", str(tmp_path / "series"), "--series", "--model", "tiny-scaled", "--json", "--no-history",
                 "--magnification", "40"]) == 0
    assert handed["microns_per_pixel"] == pytest.approx(4.9)
    capsys.readouterr()
