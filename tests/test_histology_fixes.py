"""Histology defects found by a review, each seen to fail before its fix: a verdict on glass or on a field smaller
than a tile said nothing, the user's scale ignored a picture loaded smaller, any '-400-1' name read as BreakHis,
grey pictures, OME-TIFF and rotated TIFF scales, --tta skipped silently, Macenko on degenerate pictures."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from core.imaging import load_image
from core.imaging.stain import fit_macenko, macenko_normalise
from core.models.scale import Scale, file_scale, magnification_from_name, resolve_scale, tiff_scale
from tests.conftest import microscopy_bundle
from tests.test_histology import fake_he, two_stains


@pytest.fixture(scope="module")
def sm_bundle(tiny_models, tmp_path_factory):
    """The tiny classifier as a microscopy bundle: 32-px tiles at 1 um per pixel (32 um), 40 % tissue needed."""
    return microscopy_bundle(tiny_models, tmp_path_factory.mktemp("fixes") / "models", "tiny-he", tile=32, stride=32,
                             min_tissue=0.4, microns_per_pixel=1.0)


def _analyse(bundle_root, path, **options):
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    analyzer = Analyzer(Registry([bundle_root]))
    return analyzer.analyze(load_image(path, modality="SM"), gradcam=False, **options).results[0]


def _pink(size) -> np.ndarray:
    """Stroma and nuclei filling the whole picture: tissue everywhere."""
    img = np.full(size + (3,), (225, 140, 195), np.uint8)
    img[::6, ::6] = (90, 50, 150)
    return img


def test_a_verdict_on_glass_says_how_little_tissue_it_rests_on(sm_bundle, tmp_path):
    glass = np.full((128, 128, 3), (244, 244, 246), np.uint8)
    glass[40:50, 40:50] = (180, 90, 160)  # a fragment: 100 of a 32-px tile's 1024 pixels
    Image.fromarray(glass).save(tmp_path / "glass.png")
    result = _analyse(sm_bundle, tmp_path / "glass.png", microns_per_pixel=1.0)
    assert result.label is not None and result.tiles == 1
    (warning,) = [w for w in result.warnings if "tissue" in w]
    assert warning.startswith("Low confidence") and "10%" in warning and "40%" in warning and "means little" in warning
    Image.fromarray(_pink((128, 128))).save(tmp_path / "tissue.png")
    assert not any("tissue" in w for w in _analyse(sm_bundle, tmp_path / "tissue.png", microns_per_pixel=1.0).warnings)


def test_a_field_smaller_than_a_tile_is_called_about_chance(sm_bundle, tmp_path):
    Image.fromarray(_pink((20, 24))).save(tmp_path / "tiny.png")
    result = _analyse(sm_bundle, tmp_path / "tiny.png", microns_per_pixel=1.0)  # 24 x 20 um against a 32-um tile
    (warning,) = [w for w in result.warnings if "smaller than one" in w]
    assert warning.startswith("Low confidence") and "24 x 20 um" in warning and "32-um" in warning
    assert "chance" in warning
    Image.fromarray(_pink((40, 40))).save(tmp_path / "field.png")
    assert not any("smaller than one" in w for w in _analyse(sm_bundle, tmp_path / "field.png",
                                                               microns_per_pixel=1.0).warnings)


def test_the_users_scale_is_of_the_files_pixels_when_the_picture_is_loaded_smaller(tmp_path, monkeypatch):
    rgb = np.full((2000, 2000, 3), 205, np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", rgb, resolution=(101600, 101600), resolutionunit=2)  # 0.25 um per pixel
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "40")
    record = load_image(tmp_path / "big.tif", "SM")
    assert record.downsample == 2
    from_file = resolve_scale(record, 0.42)
    from_user = resolve_scale(record, 0.42, 0.25)  # the same fact, stated by the user
    assert (from_file.um_y, from_file.um_x) == pytest.approx((0.5, 0.5))
    assert from_user == Scale(pytest.approx(0.5), pytest.approx(0.5), "user", 2)
    assert from_user.describe() == "0.25 um per pixel (user; the picture was read at 1/2)"
    assert from_user.to_dict()["um_x"] == 0.25 and from_user.to_dict()["read_at"] == "1/2"
    monkeypatch.delenv("MIDA_MEMORY_BUDGET_MB")
    assert resolve_scale(load_image(tmp_path / "big.tif", "SM"), 0.42, 0.25).um_x == pytest.approx(0.25)


def test_the_assumed_scale_is_of_the_files_pixels_when_the_picture_is_loaded_smaller(tmp_path, monkeypatch):
    """A picture read at 1/2 without a stated scale had been tiled at twice the assumed magnification (a hunt: a
    malignant core 0.80 whole, 0.42 'benign' read at half), and its warning named the loaded pixels' scale."""
    from core.models.scale import assumed_warning

    tifffile.imwrite(tmp_path / "plain.tif", np.full((2000, 2000, 3), 205, np.uint8))  # no resolution stated
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "40")
    record = load_image(tmp_path / "plain.tif", "SM")
    assert record.downsample == 2
    assumed = resolve_scale(record, 0.42)
    assert assumed.source == "assumed"
    assert (assumed.um_y, assumed.um_x) == pytest.approx((0.84, 0.84)) and assumed.file_um == pytest.approx((0.42, 0.42))
    assert "taken to be at 0.42 um per pixel" in assumed_warning(assumed)


def test_only_breakhis_names_carry_a_magnification():
    for name in ("SOB_B_A-14-22549AB-400-001.png", "SOB_M_DC-14-2523-40-012.PNG", "SOB_B_TA-14-16184CD-100-001.png",
                 "/x/SOB_M_LC-14-12204-200-025.png", "SOB_B_A-14-1-400-001.tif"):
        assert magnification_from_name(name) in (40, 100, 200, 400), name
    for name in ("patient-40-1.png", "HE-slide-200-3.png", "biopsy-40-1.jpg", "patient-100-2.tif",
                 "bach-005-400-001.png", "SOB_X_A-14-1-400-001.png"):
        assert magnification_from_name(name) is None, name


def test_a_grey_picture_is_said_to_be_outside_the_models_training(sm_bundle, tmp_path):
    Image.fromarray(fake_he(3, True, (96, 96))).convert("L").save(tmp_path / "grey.png")
    Image.fromarray(np.asarray(Image.open(tmp_path / "grey.png").convert("RGB"))).save(tmp_path / "grey_rgb.png")
    Image.fromarray(fake_he(3, True, (96, 96))).save(tmp_path / "colour.png")
    for name in ("grey.png", "grey_rgb.png"):
        assert any("colour H&E" in w for w in _analyse(sm_bundle, tmp_path / name, microns_per_pixel=1.0).warnings), name
    assert not any("colour" in w for w in _analyse(sm_bundle, tmp_path / "colour.png", microns_per_pixel=1.0).warnings)


def _ome(size_x: str, size_y: str, unit: str | None) -> str:
    units = "" if unit is None else f' PhysicalSizeXUnit="{unit}" PhysicalSizeYUnit="{unit}"'
    return ('<?xml version="1.0"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
            f'<Pixels DimensionOrder="XYCZT" ID="Pixels:0" PhysicalSizeX="{size_x}" PhysicalSizeY="{size_y}"{units} '
            'SizeC="3" SizeT="1" SizeX="80" SizeY="60" SizeZ="1" Type="uint8"></Pixels></Image></OME>')


def test_ome_tiff_physical_size_is_the_files_scale(tmp_path):
    rgb = fake_he(0, True, (60, 80))
    for name, sizes, unit, expected in (("um", ("0.25", "0.5"), None, (0.5, 0.25)),
                                        ("micro", ("0.25", "0.25"), "µm", (0.25, 0.25)),
                                        ("nm", ("250", "500"), "nm", (0.5, 0.25)),
                                        ("mm", ("0.0005", "0.0005"), "mm", (0.5, 0.5))):
        path = tmp_path / f"{name}.ome.tif"
        tifffile.imwrite(path, rgb, description=_ome(*sizes, unit).encode(), metadata=None)  # UTF-8, as OME is
        assert tiff_scale(path) == pytest.approx(expected), name
    tifffile.imwrite(tmp_path / "written.ome.tif", rgb, ome=True,
                     metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "axes": "YXS"})
    scale = file_scale(load_image(tmp_path / "written.ome.tif", "SM"))
    assert scale.source == "tiff" and (scale.um_y, scale.um_x) == pytest.approx((0.25, 0.25))
    tifffile.imwrite(tmp_path / "screen.ome.tif", rgb, description=_ome("350", "350", None), metadata=None)
    assert tiff_scale(tmp_path / "screen.ome.tif") is None  # no microscope's scale


def test_a_turned_tiff_has_its_scales_turned_too(tmp_path):
    rgb = fake_he(1, True, (60, 80))
    for orientation in (5, 6, 7, 8):
        path = tmp_path / f"o{orientation}.tif"  # stored rows at 0.5 um, columns at 0.25
        tifffile.imwrite(path, rgb, resolution=(40000, 20000), resolutionunit=3,
                         extratags=[(274, "H", 1, orientation, True)])
        record = load_image(path, "SM")
        assert record.display().shape[:2] == (80, 60)  # shown turned: the stored columns are its rows
        assert tiff_scale(path) == pytest.approx((0.25, 0.5)), orientation
        assert (file_scale(record).um_y, file_scale(record).um_x) == pytest.approx((0.25, 0.5))
    tifffile.imwrite(tmp_path / "o3.tif", rgb, resolution=(40000, 20000), resolutionunit=3,
                     extratags=[(274, "H", 1, 3, True)])
    assert tiff_scale(tmp_path / "o3.tif") == pytest.approx((0.5, 0.25))  # turned 180 degrees: as stored


def test_tta_asked_of_a_tiled_classifier_is_said_to_be_unused(sm_bundle, tmp_path):
    Image.fromarray(_pink((64, 64))).save(tmp_path / "tissue.png")
    result = _analyse(sm_bundle, tmp_path / "tissue.png", microns_per_pixel=1.0, tta=True)
    assert result.tta_agreement is None
    assert any("Test-time augmentation is not used" in w for w in result.warnings)
    assert not any("Test-time" in w for w in _analyse(sm_bundle, tmp_path / "tissue.png", microns_per_pixel=1.0).warnings)


def test_macenko_leaves_pictures_without_two_stains_unchanged():
    he = two_stains(2)
    rng = np.random.default_rng(0)
    grey = np.asarray(Image.fromarray(he).convert("L"))
    for name, picture in (("black", np.zeros(he.shape, np.uint8)),
                          ("uniform", np.full(he.shape, (200, 120, 180), np.uint8)),
                          ("grey", np.repeat(grey[..., None], 3, 2)),
                          ("grey, noisy", np.clip(np.repeat(grey[..., None], 3, 2) + rng.normal(0, 2, he.shape), 0,
                                                  255).astype(np.uint8)),
                          ("one stained colour", fake_he(2, True, (200, 240)))):
        assert fit_macenko(picture) is None, name
        assert macenko_normalise(picture) is picture, name
    fit = fit_macenko(he)  # two stains: fitted and normalised, tile by tile as the whole picture
    assert fit is not None and not np.array_equal(macenko_normalise(he), he)
    assert float(fit.stains[0] @ fit.stains[1]) / np.prod(np.linalg.norm(fit.stains, axis=1)) < 0.99
    from core.imaging.stain import apply_macenko

    np.testing.assert_array_equal(apply_macenko(he[50:150, 60:200], fit), macenko_normalise(he)[50:150, 60:200])
