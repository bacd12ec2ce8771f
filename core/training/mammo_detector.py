"""Mammography finding detector on mini-MIAS films at their full 200-um resolution: tile features, tile head, image score.

``python -m core.training.mammo_detector`` runs the frozen ImageNet Xception once over every film's tiles
(``TILE`` px at 200 um, every ``STRIDE`` px, where the film holds tissue) and keeps pooled features of three depths
(fine texture at block 4, mid-level at block 13, the top at block 14) with each tile's box; ``python -m core.training.mammo_cv`` fits the
tile head and the image score in 5 folds grouped by woman (out-of-fold image ROC AUC, marks on masses, false marks
per film). Tiles outside the breast search region (core.imaging.breast: no air, labels or pectoral muscle)
are dropped before fitting, so that region can change without a new cache.
"""

from __future__ import annotations

import argparse

import numpy as np

from core.imaging.breast import breast_region
from core.imaging.loader import load_image
from core.models.backbones import build_backbone
from core.models.mammography import FilmScoring, tile_grid
from core.models.preprocessing import PreprocessSpec, as_grey, preprocess
from core.models.tiling import tissue_mask
from core.training.configs import BACKBONES, CACHE_ROOT, DATA_ROOT
from core.training.datasets import Sample, mini_mias
from core.training.networks import predict_chunks

SCORING = FilmScoring()  # 45 mm tiles every 22 mm at 200 um per pixel: masses of 5-30 mm fit in one
TILE, STRIDE, MIN_TISSUE = SCORING.tile, SCORING.stride, SCORING.min_breast
SPEC = PreprocessSpec(size=TILE, color="grey3", crop="none")
LAYERS = ("block4_sepconv2_bn", "block13_sepconv2_bn", "block14_sepconv2_act")
CACHE = CACHE_ROOT / "breast-mg-abnormal"


def feature_model():
    """The frozen backbone -> average-pooled features at LAYERS plus the max-pooled block-4 map (specks)."""
    import keras

    backbone = build_backbone("xception", BACKBONES["xception"])
    maps = [backbone.get_layer(name).output for name in LAYERS]
    pooled = [keras.layers.GlobalAveragePooling2D()(m) for m in maps] + [keras.layers.GlobalMaxPooling2D()(maps[0])]
    return keras.Model(backbone.input, keras.layers.Concatenate()(pooled), name="mammo_tile_features")


def film(sample: Sample) -> np.ndarray:
    """The film as the product displays it, in grey: what tiles are cut from and the breast region is found on."""
    return as_grey(load_image(sample.path).display(0))


def cache(samples: list[Sample], batch: int = 16) -> None:
    """Features of every film's tissue tiles: ``<ref>.npz`` with ``features`` (float16) and ``corners``; resumable."""
    CACHE.mkdir(parents=True, exist_ok=True)
    model = None
    for i, sample in enumerate(samples):
        target = CACHE / f"{sample.path.stem}.npz"
        if target.exists():
            continue
        grey = film(sample)
        corners = tile_grid(grey.shape, tissue_mask(grey, "radiograph"), TILE, STRIDE, MIN_TISSUE)
        x = np.stack([preprocess(grey[y:y + TILE, x0:x0 + TILE], SPEC) for y, x0 in corners])
        if model is None:
            model = feature_model()
        feats = predict_chunks(model, x, batch)
        np.savez(target, features=feats.astype(np.float16), corners=np.array(corners, np.int32))
        print(f"{i + 1}/{len(samples)} {sample.path.stem}: {len(corners)} tiles", flush=True)


def tile_labels(corners: np.ndarray, circles, tile: int = TILE) -> np.ndarray:
    """1 where an annotated circle's centre lies in the tile's central half (the tile sees the whole finding
    around it), 0 elsewhere."""
    labels = np.zeros(len(corners), np.int8)
    for c in circles:
        inside = ((corners[:, 1] + tile / 4 <= c.x) & (c.x < corners[:, 1] + 3 * tile / 4)
                  & (corners[:, 0] + tile / 4 <= c.y) & (c.y < corners[:, 0] + 3 * tile / 4))
        labels[inside] = 1
    return labels


def load_film(sample: Sample) -> dict:
    """Cached tile features of one film restricted to its breast search region, with tile labels."""
    data = np.load(CACHE / f"{sample.path.stem}.npz")
    grey = film(sample)
    search = breast_region(grey, view="MLO").search
    corners = data["corners"]
    share = np.array([search[y:y + TILE, x:x + TILE].mean() for y, x in corners])
    keep = share >= MIN_TISSUE
    return {"features": data["features"][keep].astype(np.float32), "corners": corners[keep],
            "labels": tile_labels(corners[keep], sample.circles), "shape": grey.shape}


def main() -> None:
    argparse.ArgumentParser(description="Cache the tile features of every mini-MIAS film (resumable).").parse_args()
    cache(mini_mias(DATA_ROOT / "mini_mias"))


if __name__ == "__main__":
    main()
