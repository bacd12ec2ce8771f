"""PNG, JPEG, TIFF (16-bit, multi-page), BMP, lying extensions, and the shared data sets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from core.imaging import Modality, load_image


def test_shared_images_open_with_right_guess(shared):
    cases = {
        next((shared / "brain_mri_4class/train/glioma").glob("*.jpg")): Modality.MR,
        shared / "busi/benign/benign (1).png": Modality.US,
        shared / "mini_mias/images/mdb001.png": Modality.MG,
        next((shared / "histology_ucsb/malignant").glob("*.jpg")): Modality.SM,
    }
    for path, modality in cases.items():
        record = load_image(path)
        assert record.modality == modality, path
        assert record.modality_source == "guess" and record.modality_confidence > 0.5
        shown = record.display(0)
        assert shown.dtype == np.uint8 and shown.shape[:2] == (record.rows, record.columns)


def test_histology_is_colour_and_mri_jpeg_is_grey(shared):
    histology = load_image(next((shared / "histology_ucsb/benign").glob("*.jpg")))
    assert histology.is_color and histology.display(0).shape == (768, 896, 3)
    mri = load_image(next((shared / "brain_mri_4class/train/notumor").glob("*.jpg")))
    assert not mri.is_color


def test_8bit_png_displays_unchanged(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    record = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(record.display(0), pixels)
    assert record.bits_stored == 8


def test_16bit_tiff_keeps_values(tmp_path):
    pixels = (np.arange(64 * 80).reshape(64, 80) * 13 % 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", pixels)
    record = load_image(tmp_path / "deep.tif")
    assert record.bits_stored == 16 and record.file_format == "TIFF"
    np.testing.assert_array_equal(record.values(0), pixels.astype(np.float32))
    assert record.display(0).max() == 255 and record.display(0).min() == 0


def test_float_tiff_in_unit_range_displays_like_its_8bit_source(tmp_path):
    # DICOM's LINEAR window divides by (width - 1): a 0-1 float image came out all white through it.
    pixels = np.tile(np.arange(256, dtype=np.uint8), (20, 1))
    tifffile.imwrite(tmp_path / "unit.tif", pixels.astype(np.float32) / 255.0)
    record = load_image(tmp_path / "unit.tif")
    assert record.bits_stored == 32
    full = next(p for p in record.window_presets if p.name == "Full range")
    np.testing.assert_array_equal(record.display(0, full), pixels)
    auto = record.display(0)
    assert auto.min() == 0 and auto.max() == 255 and abs(float(auto.mean()) - 127.5) < 2


def test_multipage_tiff_frames(tmp_path):
    stack = np.stack([np.full((20, 30), i * 20, np.uint8) for i in range(5)])
    tifffile.imwrite(tmp_path / "stack.tiff", stack)
    record = load_image(tmp_path / "stack.tiff")
    assert record.frames == 5
    assert record.values(3).mean() == 60


def test_16bit_png(tmp_path):
    pixels = np.linspace(0, 4095, 50 * 50).reshape(50, 50).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a16.png"), pixels)
    record = load_image(tmp_path / "a16.png")
    np.testing.assert_array_equal(record.values(0), pixels.astype(np.float32))


def test_bmp_and_rgba_and_palette(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    np.testing.assert_array_equal(load_image(tmp_path / "c.bmp").display(0), rgb)
    Image.fromarray(np.dstack([rgb, np.full((10, 12), 255, np.uint8)])).save(tmp_path / "c.png")
    np.testing.assert_array_equal(load_image(tmp_path / "c.png").display(0), rgb)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").display(0)[0, 0, 0] == 200


def test_extension_that_lies(tmp_path):
    pixels = np.full((8, 8), 77, np.uint8)
    Image.fromarray(pixels).save(tmp_path / "really_png.jpg", format="PNG")
    record = load_image(tmp_path / "really_png.jpg")
    assert record.file_format == "PNG"
    np.testing.assert_array_equal(record.display(0), pixels)


def test_dicom_without_extension(pydicom_file, tmp_path):
    target = tmp_path / "IM0001"
    target.write_bytes(pydicom_file("MR_small.dcm").read_bytes())
    assert load_image(target).file_format == "DICOM"


def test_user_modality_wins(shared):
    record = load_image(shared / "busi/benign/benign (1).png", modality="MG")
    assert record.modality == Modality.MG and record.modality_source == "user"


def test_rgb_tiff_and_multipage_rgb(tmp_path):
    rgb = np.zeros((16, 20, 3), np.uint8)
    rgb[..., 2] = 180
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    record = load_image(tmp_path / "rgb.tif")
    assert record.frames == 1 and record.is_color
    np.testing.assert_array_equal(record.display(0), rgb)
    tifffile.imwrite(tmp_path / "rgb_stack.tif", np.stack([rgb, rgb // 2]), photometric="rgb")
    stack = load_image(tmp_path / "rgb_stack.tif")
    assert stack.frames == 2 and stack.values(1)[0, 0, 2] == 90


def test_modality_layout_measures_ignore_which_side_the_breast_is_on(shared):
    """The guesser's layout measures are the same for a left breast and its mirror image (a right one),
    which its thumbnail pixels are not."""
    from core.imaging.modality_guess import THUMB, _layout, modality_features

    left = load_image(shared / "mini_mias/images/mdb001.png").display(0)
    a, b = modality_features(left), modality_features(np.ascontiguousarray(left[:, ::-1]))
    pixels, layout = THUMB * THUMB, len(_layout(np.zeros((THUMB, THUMB), np.float32)))
    assert not np.allclose(a[:pixels], b[:pixels])
    np.testing.assert_allclose(a[-layout:], b[-layout:], atol=1e-5)


def test_default_picture_is_rendered_once_and_handed_out_as_copies(tmp_path, monkeypatch):
    """The loader's modality guess and the analysis both read frame 0's default picture: it is windowed once, and
    what one caller draws on its copy does not reach the next; an explicit window is always rendered."""
    from core.imaging import record as record_module

    pixels = np.random.default_rng(1).integers(0, 4096, (48, 64)).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    calls = []
    real = record_module.apply_window
    monkeypatch.setattr(record_module, "apply_window", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    first = image.display(0)
    first[:] = 0  # a caller drawing on its picture
    again = image.display(0)
    assert again.any() and not calls  # rendered at load (for the guess): neither call windowed again
    preset = image.window_presets[-1]
    image.display(0, preset)
    assert calls == [(preset.center, preset.width, preset.function)]


def test_analysis_reuses_the_loaders_modality_guess(shared, tiny_models, monkeypatch):
    from core.inference import analyzer as analyzer_module
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    record = load_image(shared / "busi/benign/benign (1).png")
    assert record.frame0_guess == (record.modality, record.modality_confidence)
    analyzer = Analyzer(Registry([tiny_models]))
    monkeypatch.setattr(analyzer_module, "guess_modality", lambda display: (_ for _ in ()).throw(AssertionError))
    analysis = analyzer.analyze(record, gradcam=False)  # the tiny US segmenter runs; the guess is not made again
    assert [r.model_id for r in analysis.results] == ["tiny-us-segmenter"]
    typed = load_image(shared / "busi/benign/benign (1).png", modality="US")  # the user's choice: nothing guessed
    assert typed.frame0_guess is None
    with pytest.raises(AssertionError):
        analyzer.analyze(typed, gradcam=False)  # the analysis asks the guesser itself


def test_white_is_zero_tiff_is_shown_as_pillow_renders_it(tmp_path):
    """Photometric 0 (WhiteIsZero, film digitisers): stored 0 is white. The values stay as stored and the record
    says MONOCHROME1, so the picture is inverted as a DICOM MONOCHROME1 image is; 8-bit and 1-bit alike."""
    grey = np.random.default_rng(2).integers(0, 256, (12, 20), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "white.tif", grey, photometric="miniswhite")
    bilevel = np.zeros((8, 16), bool)
    bilevel[:, 5:11] = True
    tifffile.imwrite(tmp_path / "fax.tif", bilevel, photometric="miniswhite")
    for name, stored in (("white.tif", grey), ("fax.tif", bilevel.astype(np.uint8) * 255)):
        record = load_image(tmp_path / name)
        assert record.photometric == "MONOCHROME1" and record.inverted and not record.is_color
        with Image.open(tmp_path / name) as im:
            np.testing.assert_array_equal(record.display(0), np.asarray(im.convert("L")))
        np.testing.assert_array_equal(record.display(0), 255 - stored)
        np.testing.assert_array_equal(record.values(0), stored.astype(np.float32))


def test_palette_tiff_is_shown_in_its_colour_map_also_downsampled(tmp_path, monkeypatch):
    """Photometric 3: each index is looked up in the 16-bit ColorMap (shown / 256, as Pillow does), also when a big
    page is read downsampled (indices picked, never averaged)."""
    rng = np.random.default_rng(3)
    indices = rng.integers(0, 256, (60, 90), dtype=np.uint8)
    colormap = rng.integers(0, 65536, (3, 256), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "palette.tif", indices, photometric="palette", colormap=colormap, rowsperstrip=4)
    expected = (colormap >> 8).astype(np.uint8).T[indices]
    record = load_image(tmp_path / "palette.tif")
    assert record.is_color and record.photometric == "RGB"
    np.testing.assert_array_equal(record.display(0), expected)
    with Image.open(tmp_path / "palette.tif") as im:
        np.testing.assert_array_equal(record.display(0), np.asarray(im.convert("RGB")))
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "0.05")
    small = load_image(tmp_path / "palette.tif")
    f = small.downsample
    assert f > 1 and small.is_color
    np.testing.assert_array_equal(small.display(0), expected[: 60 // f * f : f, : 90 // f * f : f])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_tag_turns_the_picture_as_pillow_does(tmp_path, monkeypatch, orientation):
    """Orientation (tag 274) 1-8 as in TIFF 6.0 / Pillow's exif_transpose; 5-8 swap rows and columns, also in the
    size reported for a page read downsampled."""
    stored = np.random.default_rng(orientation).integers(0, 256, (60, 90), dtype=np.uint8)
    path = tmp_path / "turned.tif"
    tifffile.imwrite(path, stored, extratags=[(274, 3, 1, orientation, True)], rowsperstrip=4)
    with Image.open(path) as im:
        upright = np.asarray(ImageOps.exif_transpose(im))
    record = load_image(path)
    np.testing.assert_array_equal(record.display(0), upright)
    assert (record.rows, record.columns) == upright.shape
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "0.05")
    small = load_image(path)
    f = small.downsample
    assert f > 1 and (small.info()["rows"], small.info()["columns"]) == upright.shape
    picked = Image.fromarray(stored[: 60 // f * f : f, : 90 // f * f : f])  # the pixels read, turned by Pillow
    picked.getexif()[274] = orientation
    np.testing.assert_array_equal(small.display(0), np.asarray(ImageOps.exif_transpose(picked)))


@pytest.mark.parametrize("mode", ["L", "RGB", "P"])
def test_a_large_picture_read_smaller_is_the_area_average_of_the_whole(tmp_path, monkeypatch, mode):
    """Shrunk by Pillow before it becomes an array (half the peak memory of a 10000 x 10000 RGB PNG); a palette
    picture, which Pillow cannot reduce, still goes the array way. Either way the area average of the whole."""
    import cv2

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
    picture = Image.fromarray(rgb).convert(mode) if mode != "P" else Image.fromarray(rgb).quantize(16)
    picture.save(tmp_path / "big.png")
    whole = load_image(tmp_path / "big.png").values(0)
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "2")  # decodes, but works at half size
    small = load_image(tmp_path / "big.png")
    assert small.downsample > 1
    f = small.downsample
    expected = cv2.resize(np.ascontiguousarray(whole), (small.columns, small.rows), interpolation=cv2.INTER_AREA)
    assert np.abs(small.values(0).astype(int) - expected.astype(int)).max() <= 1, f


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_read_as_black_whatever_colour_they_hide(tmp_path, mode):
    """Two pictures that look the same (a slice on a transparent background) read the same: the colour a program
    left under the transparent pixels (white here, black there) never reaches the models."""
    rng = np.random.default_rng(0)
    grey = rng.integers(40, 220, (64, 80), dtype=np.uint8)
    alpha = np.zeros((64, 80), np.uint8)
    alpha[8:56, 10:70] = 255
    alpha[8:56, 10] = 128  # a soft edge: half the value shows
    shown = []
    for hidden in (0, 255):
        under = np.where(alpha > 0, grey, hidden).astype(np.uint8)
        if mode == "LA":
            Image.fromarray(np.dstack([under, alpha]), "LA").save(tmp_path / f"{hidden}.png")
        elif mode == "RGBA":
            Image.fromarray(np.dstack([under, under, under, alpha]), "RGBA").save(tmp_path / f"{hidden}.png")
        else:  # a palette picture whose last entry is transparent (tRNS)
            palette_index = np.where(alpha == 0, 255, under // 2).astype(np.uint8)
            im = Image.fromarray(palette_index, "P")
            im.putpalette([v for i in range(256) for v in ((hidden,) * 3 if i == 255 else (min(2 * i, 255),) * 3)])
            im.save(tmp_path / f"{hidden}.png", transparency=255)
        shown.append(load_image(tmp_path / f"{hidden}.png").display(0))
    np.testing.assert_array_equal(shown[0], shown[1])
    first = shown[0] if shown[0].ndim == 2 else shown[0][..., 0]
    assert first[0, 0] == 0 and first[30, 40] in (grey[30, 40], grey[30, 40] // 2 * 2)
    if mode != "P":
        assert abs(int(first[30, 10]) - round(int(grey[30, 10]) * 128 / 255)) <= 1


def test_one_colour_is_blank_like_one_grey_level():
    """A flat pink or blue picture shows no tissue, as a flat grey one does; colour with content is not blank."""
    from core.imaging.windowing import is_blank

    for colour in ((230, 120, 200), (40, 60, 220), (128, 128, 128)):
        assert is_blank(np.broadcast_to(np.array(colour, np.uint8), (300, 400, 3)).copy())
    stained = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    assert not is_blank(stained)
    one_channel = np.zeros((300, 400, 3), np.uint8)
    one_channel[..., 2] = np.linspace(0, 255, 400, dtype=np.uint8)  # only blue varies: a picture, not blank
    assert not is_blank(one_channel)


def test_a_tiffs_alpha_and_a_pngs_key_colour_read_over_black_as_a_pngs_alpha_does(tmp_path):
    """The same half-transparent picture as PNG and as TIFF read alike (the TIFF's alpha had been dropped, so the
    two went to different modalities); a grey or RGB PNG's transparent key colour (tRNS) is black too."""
    grey = (np.arange(64 * 64).reshape(64, 64) % 200 + 40).astype(np.uint8)
    alpha = np.where(np.arange(64)[None, :] < 32, 255, 0).astype(np.uint8).repeat(64, 0)
    Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA").save(tmp_path / "rgba.png")
    tifffile.imwrite(tmp_path / "rgba.tif", np.dstack([grey, grey, grey, alpha]), photometric="rgb",
                     extrasamples=["unassalpha"])
    tifffile.imwrite(tmp_path / "la.tif", np.dstack([grey, alpha]), photometric="minisblack",
                     extrasamples=["unassalpha"])
    png = load_image(tmp_path / "rgba.png").display(0)
    for name in ("rgba.tif", "la.tif"):
        np.testing.assert_array_equal(load_image(tmp_path / name).display(0), png)
    key = int(grey[0, 40])
    Image.fromarray(grey, "L").save(tmp_path / "l.png", transparency=key)
    Image.fromarray(np.dstack([grey] * 3), "RGB").save(tmp_path / "rgb.png", transparency=(key,) * 3)
    for name in ("l.png", "rgb.png"):
        shown = load_image(tmp_path / name).display(0)
        assert shown[0, 40] == 0 and shown[0, 41] == grey[0, 41]
