"""Brain MRI inputs from any scanner: tissue intensity, padded crop, every source in one split (Qt- and TF-free)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from core.inference.paths import _to_image_grid
from core.models.preprocessing import (PreprocessSpec, _cropped, crop_box, tissue_normalised, to_model_mask,
                                        to_model_pixels)
from core.training.by_source import source_metrics
from core.training.sources import source_of
from core.training.datasets import Sample, brain_mri_all, brain_mri_outlined
from core.training.splits import split_following

MRI = PreprocessSpec(size=64, color="grey3", crop="foreground", aspect="pad", intensity="tissue")


def _head(shape=(120, 200), scale=1.0, offset=0.0, seed=0) -> np.ndarray:
    """A bright elliptical 'head' with a textured inside and a darker 'lesion', on a noisy background."""
    rng = np.random.default_rng(seed)
    img = rng.normal(3, 1, shape).clip(0, None)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    head = ((yy - shape[0] / 2) / (shape[0] * 0.4)) ** 2 + ((xx - shape[1] / 2) / (shape[1] * 0.3)) ** 2 < 1
    img[head] = 100 + 40 * np.sin(xx[head] / 5.0) + rng.normal(0, 5, head.sum())
    img[(yy - 60) ** 2 + (xx - 110) ** 2 < 100] = 180
    return np.clip(img * scale + offset * head, 0, 255).astype(np.uint8)


def test_tissue_intensity_makes_a_dim_and_a_bright_window_alike():
    plain, dim, bright = _head(), _head(scale=0.45), _head(scale=1.3, offset=10)
    assert np.abs(plain.astype(float) - dim).mean() > 15  # the scanners' pictures differ a lot
    a, b, c = (tissue_normalised(x).astype(float) for x in (plain, dim, bright))
    assert np.abs(a - b).mean() < 4 and np.abs(a - c).mean() < 6
    assert (tissue_normalised(plain)[:5, :5] == 0).all()  # background noise is not stretched into the picture


def test_tissue_intensity_leaves_an_image_without_object_alone():
    empty = np.random.default_rng(1).integers(0, 3, (50, 50)).astype(np.uint8)
    assert np.array_equal(tissue_normalised(empty), empty)


def test_padded_crop_keeps_the_aspect_ratio():
    img = np.zeros((100, 300), np.uint8)
    cv2.circle(img, (150, 50), 40, 200, -1)  # a round object in a wide picture
    stretched = to_model_pixels(img, PreprocessSpec(size=64, crop="none"))[..., 0] > 100
    padded = to_model_pixels(img, PreprocessSpec(size=64, crop="none", aspect="pad"))[..., 0] > 100
    ys, xs = np.nonzero(padded)
    assert abs((np.ptp(ys) + 1) - (np.ptp(xs) + 1)) <= 2  # still round
    ys, xs = np.nonzero(stretched)
    assert (np.ptp(ys) + 1) > 2 * (np.ptp(xs) + 1)  # the old stretch squeezed it


def test_padded_box_maps_masks_and_heatmaps_back_to_the_same_place():
    img = _head()
    mask = np.zeros(img.shape, np.uint8)
    mask[(np.mgrid[:120, :200][0] - 60) ** 2 + (np.mgrid[:120, :200][1] - 110) ** 2 < 100] = 1
    box = crop_box(img, MRI)
    assert box[1] - box[0] == box[3] - box[2]  # square, reaching beyond the image
    small = to_model_mask(mask, img, MRI).astype(np.float32)
    back = _to_image_grid(small, box, img.shape) > 0.5
    assert back.shape == img.shape
    overlap = (back & (mask > 0)).sum() / (back | (mask > 0)).sum()
    assert overlap > 0.7


def test_a_matrix_of_non_square_pixels_reaches_the_network_in_its_true_proportions():
    """A round head on a matrix whose pixels are twice as tall as wide is an ellipse twice as wide as tall in
    pixels; the crop, square in millimetres, gives the network a round head again (it reached it squeezed)."""
    img = np.zeros((120, 240), np.uint8)
    cv2.ellipse(img, (120, 60), (80, 40), 0, 0, 360, 200, -1)  # 160 x 80 px = 80 x 80 mm with 1 x 0.5 mm pixels
    box = crop_box(img, MRI, row_to_column=2.0)
    assert abs((box[1] - box[0]) * 2.0 - (box[3] - box[2])) <= 2  # square in mm
    head = to_model_pixels(img, MRI, box)[..., 0] > 100
    ys, xs = np.nonzero(head)
    assert abs((np.ptp(ys) + 1) - (np.ptp(xs) + 1)) <= 2
    ys, xs = np.nonzero(to_model_pixels(img, MRI)[..., 0] > 100)
    assert (np.ptp(xs) + 1) > 1.8 * (np.ptp(ys) + 1)  # taken as square pixels: squeezed to half its height
    mask = (img > 100).astype(np.uint8)
    back = _to_image_grid(cv2.resize(_cropped(mask, box), (64, 64), interpolation=cv2.INTER_NEAREST)
                          .astype(np.float32), box, img.shape) > 0.5
    assert (back & (mask > 0)).sum() / (back | (mask > 0)).sum() > 0.95  # and maps back onto the file's grid


def test_the_analysis_crops_a_dicom_of_non_square_pixels_square_in_millimetres(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    from core.imaging import load_image

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PixelSpacing = [1.0, 0.5]
    ds.save_as(tmp_path / "tall.dcm")
    assert load_image(tmp_path / "tall.dcm").row_to_column() == 2.0
    ds.PixelSpacing = [1e200, 1.0]  # a header error, not a pixel shape
    ds.save_as(tmp_path / "absurd.dcm")
    assert load_image(tmp_path / "absurd.dcm").row_to_column() == 1.0


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def test_brain_reader_joins_every_source_with_patient_groups(tmp_path):
    head, empty = _head(), np.zeros((120, 200), np.uint8)
    lesion = (_head() > 170).astype(np.uint8) * 255
    _write(tmp_path / "brain_mri_4class/train/meningioma/Tr-me_0001.jpg", head)
    _write(tmp_path / "brain_mri_4class/masks/meningioma/Tr-me_0001_mask.png", lesion)
    _write(tmp_path / "brain_mri_4class/train/notumor/Tr-no_0001.jpg", head)
    (tmp_path / "brain_mri_4class/figshare_patients.csv").write_text(
        "file,figshare_id,patient\nmeningioma/Tr-me_0001.jpg,12,MR999\n")
    patient = tmp_path / "brain_mri_lgg/TCGA_CS_0001_19990101"
    for n, m in ((1, empty), (2, lesion), (10, empty)):
        _write(patient / f"TCGA_CS_0001_19990101_{n}_flair.jpg", head)
        _write(patient / f"TCGA_CS_0001_19990101_{n}_mask.png", m)
    samples = brain_mri_all(tmp_path)
    got = {(s.path.name, s.label, s.group, s.extra["source"], s.mask_path is not None) for s in samples}
    assert ("Tr-me_0001.jpg", "meningioma", "figshare-MR999", "figshare", True) in got
    assert ("Tr-no_0001.jpg", "notumor", "", "kaggle-other", False) in got
    lgg = [s for s in samples if s.extra["source"] == "lgg"]
    assert [s.path.name.split("_")[4] for s in lgg] == ["1", "2", "10"]  # slice order, not name order
    assert [s.label for s in lgg] == ["notumor", "glioma", "notumor"]
    assert {s.group for s in lgg} == {"lgg-TCGA_CS_0001"}
    assert {source_of(str(s.path), s.group) for s in samples} == {"figshare", "kaggle-other", "lgg"}


def test_the_outlined_reader_adds_tumour_free_slices_and_the_stand_ins(tmp_path, monkeypatch):
    """The segmenter's data: masked slices, Kaggle tumour-free slices (empty masks) and each stand-in pair (the healthy
    half without a mask, its tumour twin with the twin's); a Kaggle tumour slice without an outline stays out."""
    from core.training import mirrored_halves

    head, lesion = _head(), (_head() > 170).astype(np.uint8) * 255
    _write(tmp_path / "brain_mri_4class/train/meningioma/Tr-me_0001.jpg", head)
    _write(tmp_path / "brain_mri_4class/masks/meningioma/Tr-me_0001_mask.png", lesion)
    _write(tmp_path / "brain_mri_4class/train/glioma/Tr-gl_0009.jpg", head)  # no mask, not in figshare's list
    _write(tmp_path / "brain_mri_4class/train/notumor/Tr-no_0001.jpg", head)
    (tmp_path / "brain_mri_4class/figshare_patients.csv").write_text(
        "file,figshare_id,patient\nmeningioma/Tr-me_0001.jpg,12,MR999\n")
    stand_ins = tmp_path / "mirrored-halves"
    monkeypatch.setattr(mirrored_halves, "STAND_INS", stand_ins)
    assert {s.path.name for s in brain_mri_outlined(tmp_path)} == {"Tr-me_0001.jpg", "Tr-no_0001.jpg"}  # none made
    stand_ins.mkdir()
    (stand_ins / "slices.csv").write_text("file,label,group,used\nTr-me_0001.jpg,meningioma,figshare-MR999,1\n"
                                          "Tr-me_0002.jpg,meningioma,figshare-MR999,0\n")
    with pytest.raises(FileNotFoundError, match="make them again"):
        brain_mri_outlined(tmp_path)
    _write(stand_ins / "tumour" / "Tr-me_0001_mask.png", lesion)
    got = {(str(s.path.relative_to(tmp_path)), s.label, s.group, s.mask_path is not None)
           for s in brain_mri_outlined(tmp_path)}
    assert got == {("brain_mri_4class/train/meningioma/Tr-me_0001.jpg", "meningioma", "figshare-MR999", True),
                   ("brain_mri_4class/train/notumor/Tr-no_0001.jpg", "notumor", "", False),
                   ("mirrored-halves/healthy/Tr-me_0001.png", "notumor", "figshare-MR999", False),
                   ("mirrored-halves/tumour/Tr-me_0001.png", "meningioma", "figshare-MR999", True)}


def test_split_following_keeps_known_sides_and_groups_the_rest():
    known = [Sample(f"k{i}.jpg", "a" if i % 2 else "b", f"k{i}") for i in range(6)]
    new = [Sample(f"n{i}.jpg", "a" if i % 2 else "b", f"p{i // 3}") for i in range(30)]
    sides = {f"k{i}.jpg": "val" if i < 2 else "train" for i in range(6)}
    train, val = split_following(known + new, sides, key=lambda s: str(s.path), val_fraction=0.2)
    assert {str(s.path) for s in val} >= {"k0.jpg", "k1.jpg"}
    assert not {str(s.path) for s in train} & {"k0.jpg", "k1.jpg"}
    assert {s.group for s in train if s.group.startswith("p")}.isdisjoint({s.group for s in val})
    assert any(str(s.path).startswith("n") for s in val)


def test_source_metrics_count_tumour_free_calls():
    classes = ["glioma", "notumor"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = source_metrics(probs, np.array([0, 1, 1, 0]), classes)
    assert m["correct"] == 2 and m["none_images"] == 2 and m["none_called_none"] == 0.5
    assert m["finding_called_finding"] == 0.5 and m["finding_vs_none_roc_auc"] == 0.75


def test_the_head_crop_is_the_same_whatever_the_window_matrix_or_background_noise():
    """A hunt wrote 46 validation slices as DICOMs the way other scanners and PACS do: 'foreground' (grey level 12 on
    the display, a margin of 3 % of the matrix) cropped the whole image where noise rose over 12 and a 4.6 % larger
    box in a 384 matrix. 'head' (Otsu's object, a margin of its own size) finds the same head in every version."""
    rng = np.random.default_rng(3)
    head = _head((200, 200))
    inside = head > 40
    noisy = head.astype(float)
    noisy[~inside] = np.hypot(rng.normal(0, 11, (~inside).sum()), rng.normal(0, 11, (~inside).sum()))  # mean ~14
    padded = np.zeros((300, 300), np.uint8)
    padded[50:250, 50:250] = head
    versions = {  # each picture, and how its pixels map to the original's: (scale, offset)
        "as is": (head, 1.0, 0), "wide window": ((head * 0.5).astype(np.uint8), 1.0, 0),
        "noisy background": (noisy.clip(0, 255).astype(np.uint8), 1.0, 0), "384 matrix": (padded, 1.0, 50),
        "512 matrix": (cv2.resize(head, (400, 400), interpolation=cv2.INTER_CUBIC), 0.5, 0)}

    def boxes(spec):
        out = {}
        for name, (picture, scale, offset) in versions.items():
            y0, y1, x0, x1 = crop_box(picture, spec)
            out[name] = np.array([(y0 - offset) * scale, (y1 - offset) * scale, (x0 - offset) * scale,
                                  (x1 - offset) * scale])
        return out

    def moved(found):  # the largest edge move from the original's box, as a share of its side
        return {name: float(np.abs(b - found["as is"]).max() / (found["as is"][1] - found["as is"][0]))
                for name, b in found.items()}

    head_moves = moved(boxes(dataclasses.replace(MRI, crop="head")))
    assert max(head_moves.values()) < 0.02, head_moves
    foreground_moves = moved(boxes(dataclasses.replace(MRI, crop="foreground")))
    assert foreground_moves["noisy background"] > 0.05 and foreground_moves["384 matrix"] > 0.015, foreground_moves


def test_magnitude_noise_lifts_the_black_background_as_a_scanner_s_noise_does():
    from core.training.augment import build_augmentation

    img = np.zeros((128, 128, 3), np.uint8)
    img[32:96, 32:96] = 120
    noisy = [build_augmentation("filter+geometric+mrnoise", seed)(image=img)["image"] for seed in range(40)]
    background = [n[:16, :16, 0].mean() for n in noisy]
    assert max(background) > 3  # Rayleigh noise over black, as the written DICOMs' backgrounds have
    assert all((n[..., 0] == n[..., 1]).all() for n in noisy)  # still grey
