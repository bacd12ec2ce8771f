"""Histology: BreakHis/IDC layouts, tissue tiling, stain normalisation, tiled inference, one-command retrain."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from core.imaging import load_image
from core.imaging.stain import macenko_normalise
from core.inference.analyzer import Analyzer
from core.models.registry import Registry
from tests.conftest import REPO, link_shared_backbone
from core.models.tiling import TilingSpec, tile_boxes, tile_map
from core.training.datasets import breakhis, idc_patches
from core.training.splits import split


def fake_he(seed: int, malignant: bool, size=(230, 350)) -> np.ndarray:
    """Pink stroma with purple nuclei on white background: denser, larger nuclei when 'malignant'."""
    rng = np.random.default_rng(seed)
    img = np.full(size + (3,), (245, 245, 245), np.uint8)
    cv2.ellipse(img, (size[1] // 2, size[0] // 2), (size[1] // 2 - 10, size[0] // 2 - 10), 0, 0, 360, (230, 150, 200), -1)
    for _ in range(rng.integers(120, 160) if malignant else rng.integers(20, 40)):
        centre = (int(rng.integers(20, size[1] - 20)), int(rng.integers(20, size[0] - 20)))
        cv2.circle(img, centre, int(rng.integers(5, 9) if malignant else 3), (90, 50, 150), -1)
    return img


@pytest.fixture
def breakhis_tree(tmp_path):
    root = tmp_path / "BreaKHis_v1"
    for cls, code, sub in (("benign", "B", "adenosis"), ("malignant", "M", "ductal_carcinoma")):
        for patient in range(3):
            slide = f"14-{1000 + patient}{code}"
            for mag in (40, 200):
                folder = root / cls / "SOB" / sub / f"SOB_{code}_{sub[0].upper()}-{slide}" / f"{mag}X"
                folder.mkdir(parents=True)
                for seq in range(2):
                    name = f"SOB_{code}_{sub[0].upper()}-{slide}-{mag}-{seq:03d}.png"
                    Image.fromarray(fake_he(patient * 10 + seq + mag, code == "M")).save(folder / name)
    return root


def test_breakhis_layout_groups_by_patient(breakhis_tree):
    samples = breakhis(breakhis_tree)
    assert len(samples) == 24
    assert {s.label for s in samples} == {"benign", "malignant"}
    assert {s.extra["magnification"] for s in samples} == {40, 200}
    assert len({s.group for s in samples}) == 6
    train, val = split(samples, 0.34)
    assert not {s.group for s in train} & {s.group for s in val}


def test_idc_layout(tmp_path):
    for patient in ("10253", "10254"):
        for label in ("0", "1"):
            folder = tmp_path / patient / label
            folder.mkdir(parents=True)
            Image.fromarray(fake_he(int(patient) + int(label), label == "1", (50, 50))).save(
                folder / f"{patient}_idx5_x1_y1_class{label}.png")
    samples = idc_patches(tmp_path)
    assert sorted(s.label for s in samples) == ["benign", "benign", "malignant", "malignant"]
    assert {s.group for s in samples} == {"patient-10253", "patient-10254"}


def test_tiles_skip_background_and_cover_tissue():
    img = np.full((448, 672, 3), 250, np.uint8)
    img[:224, :224] = fake_he(1, True, (224, 224))
    boxes = tile_boxes(img, TilingSpec(tile=224, stride=224, min_tissue=0.4))
    assert boxes == [(0, 224, 0, 224)]
    heat = tile_map(img.shape[:2], boxes, np.array([0.8]))
    assert heat[100, 100] == pytest.approx(0.8) and heat[300, 500] == 0


def test_radiograph_tiles_cover_the_breast_not_the_air():
    """A mammogram is mostly dark air: as "stained" tissue every tile would count, as radiograph only breast."""
    img = np.zeros((512, 512), np.uint8)
    img[:, :180] = 120  # breast along the left edge: 41 % of the second tile column
    spec = TilingSpec(tile=128, stride=128, min_tissue=0.3, tissue="radiograph")
    assert {x0 for _, _, x0, _ in tile_boxes(img, spec)} == {0, 128}
    assert len(tile_boxes(img, TilingSpec(tile=128, stride=128, min_tissue=0.3))) == 16


def two_stains(seed: int, size=(200, 240)) -> np.ndarray:
    """Eosin stroma dark enough to count as stained (fake_he's light pink does not: its only stained colour is
    the nuclei's, one colour) with haematoxylin nuclei and a little noise, on glass."""
    rng = np.random.default_rng(seed)
    img = np.full(size + (3,), (245, 245, 245), np.float64)
    img[10:-10, 10:-10] = (200, 110, 170)
    for _ in range(80):
        y, x = rng.integers(15, size[0] - 15), rng.integers(15, size[1] - 15)
        img[y - 4:y + 4, x - 4:x + 4] = (90, 60, 150)
    return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)


def test_macenko_maps_different_stains_closer():
    base = two_stains(3, (230, 350))
    bluish = np.clip(base.astype(int) + np.array([-30, 0, 40]), 0, 255).astype(np.uint8)
    raw_gap = np.abs(base.astype(int) - bluish).mean()
    norm_gap = np.abs(macenko_normalise(base).astype(int) - macenko_normalise(bluish)).mean()
    assert norm_gap < raw_gap


def test_tiled_inference_aggregates_tiles(tiny_models, tmp_path, planted_png):
    folder = tmp_path / "tiled"
    shutil.copytree(tiny_models / "tiny-mr-classifier", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(id="tiny-tiled", tiling={"tile": 32, "stride": 32, "min_tissue": 0.0})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    analyzer = Analyzer(Registry([tmp_path]))
    bundle = analyzer.registry.get("tiny-tiled")
    record = load_image(planted_png[0], modality="MR")
    result = analyzer.analyze(record).results[0]
    assert result.tiles == 4
    from core.models.preprocessing import preprocess

    display = record.display(0)
    x = np.stack([preprocess(display[y0:y1, x0:x1], bundle.spec) for y0, y1, x0, x1 in tile_boxes(display, bundle.tiling)])
    logits = bundle.load().predict(x, verbose=0)
    tile_probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert result.probabilities["lesion"] == pytest.approx(float(tile_probs[:, 1].mean()), abs=1e-5)
    k = bundle.classes.index(result.heatmap_class)
    assert result.heatmap[5, 5] == pytest.approx(float(tile_probs[0, k]), abs=1e-5)
    assert result.tile_gradcam is not None and result.tile_gradcam.shape == display.shape


@pytest.mark.slow
def test_one_command_retrain_on_breakhis_layout(breakhis_tree, tmp_path, monkeypatch):
    """The real pipeline (frozen Xception trunk, top block + head) on synthetic BreakHis files."""
    from core.training import __main__ as training_cli
    from core.training import configs

    monkeypatch.setattr(configs, "CACHE_ROOT", tmp_path / "cache")
    small = configs.CONFIGS["breast-histology-2class"]
    import dataclasses

    monkeypatch.setitem(configs.CONFIGS, small.id, dataclasses.replace(  # a one-lab layout with Macenko normalisation
        small, spec=dataclasses.replace(small.spec, stain="macenko"), augmented_views=1, epochs_head=1,
        epochs_finetune=1, batch_size=8, val_fraction=0.34))
    out = tmp_path / "models"
    (out / "backbones").mkdir(parents=True)
    link_shared_backbone(out)
    assert training_cli.main(["train", small.id, "--reader", "breakhis", "--root", str(breakhis_tree),
                              "--out", str(out)]) == 0
    manifest = json.loads((out / small.id / "manifest.json").read_text())
    assert manifest["tiling"]["tile"] == 224 and manifest["preprocessing"]["stain"] == "macenko"
    assert manifest["validation_metrics"]["n"] >= 4  # images, not tiles
    analysis = Analyzer(Registry([out])).analyze(load_image(next(breakhis_tree.rglob("*.png")), modality="SM"))
    assert set(analysis.results[0].probabilities) == {"benign", "malignant"}

    # Grouped cross-validation over the same files: every image judged once, recorded in manifest and card.
    assert training_cli.main(["cv", small.id, "--reader", "breakhis", "--root", str(breakhis_tree),
                              "--out", str(out), "--folds", "2"]) == 0
    cv = json.loads((out / small.id / "manifest.json").read_text())["cross_validation"]
    images = sum(1 for _ in breakhis_tree.rglob("*.png"))
    assert cv["folds"] == 2 and cv["n"] == images == sum(f["n"] for f in cv["per_fold"])
    assert not set(cv["per_fold"][0]["groups"]) & set(cv["per_fold"][1]["groups"])
    card = (out / small.id / "model_card.md").read_text()
    assert "Grouped cross-validation (2 folds" in card and "[95 % CI " in card


def test_max_and_mean_aggregation():
    from core.models.tiling import aggregate

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.95, 0.05]])
    np.testing.assert_allclose(aggregate(probs, TilingSpec(aggregate="max")), [0.2, 0.8])
    np.testing.assert_allclose(aggregate(probs, TilingSpec(aggregate="mean")), probs.mean(0))


def test_the_cards_breakhis_table_says_how_many_pictures_the_check_flagged():
    from core.training.lab_transfer import card_section

    manifest = json.loads((REPO / "models" / "breast-histology-2class" / "manifest.json").read_text())
    manifest["breakhis_style_check"] = {"field_px": [460, 700], "images_per_lab": None,
                                        "correct_of_n": {"bach": {"40": [80, 100], "400": [90, 100]}},
                                        "flagged_unusual": {"bach": {"40": 7, "400": 1}}}
    section = card_section(manifest)
    assert "| BACH | 80 of 100 (7 unusual) | 90 of 100 (1 unusual) |" in section
    assert "(n unusual): pictures the input check flags" in section
    del manifest["breakhis_style_check"]["flagged_unusual"]
    assert "| BACH | 80 of 100 | 90 of 100 |" in card_section(manifest) and "unusual" not in card_section(manifest)


def test_the_fields_check_replaces_only_its_own_section_of_the_card():
    """Measuring the BreakHis-style pictures again rewrites their table, not the card: a card made again from the
    manifest had dropped paragraphs written after training."""
    from core.training.lab_transfer import CHOSEN, FIELDS_TITLE, with_fields_section

    folder = REPO / "models" / "breast-histology-2class"
    card, manifest = (folder / "model_card.md").read_text(), json.loads((folder / "manifest.json").read_text())
    manifest["breakhis_style_check"]["correct_of_n"]["bach"]["40"][0] = 1
    again = with_fields_section(card, manifest)
    assert "| BACH | 1 of 100" in again and "How an image's call was made here" in again
    assert again.replace("| BACH | 1 of 100", "| BACH | 79 of 100") == card
    start = card.index(FIELDS_TITLE)
    without = card[:start] + card[card.index(CHOSEN, start):]
    added = with_fields_section(without, manifest)
    assert added.index(FIELDS_TITLE) < added.index(CHOSEN) and "| BACH | 1 of 100" in added
