"""A learnt mammography tile detector: Xception's last block fine-tuned on mini-MIAS tiles, judged out of fold.

The frozen-feature detector (``core.training.mammo_cv``) scores tiles with a linear model over pooled ImageNet
features. Here the top block (block 14) and a new head are trained on the tiles themselves, in the same 5 folds
grouped by woman. Two CPU cores cannot fine-tune the whole network over thousands of tiles per fold, so the frozen
network below block 14 runs once per view and its 7 x 7 x 1024 map is cached (float16):

* every tile of the film's breast search region on the detector's grid (``mammo_detector.TILE`` / ``STRIDE``), as
  the product would cut them: the views that are scored out of fold, and the training negatives;
* ``POSITIVE_VIEWS`` extra views around each annotated circle: its centre shifted at random inside the tile's central
  half, flipped and turned by quarter turns, so that ~90 lesions give the training more than one view each.

Training augments the cached maps by their own flips and quarter turns. Each epoch sees every positive view and
``NEGATIVE_RATIO`` times as many negatives drawn afresh. Image scores are those of the frozen detector (the highest
tile, the mean of the three highest, and that mean less the woman's other film's), so the two are compared on the same
folds and the same films.

    python -m core.training.mammo_finetune cache      # the maps (resumable)
    python -m core.training.mammo_finetune cv [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from core.imaging.breast import breast_region
from core.models.backbones import build_backbone
from core.models.preprocessing import preprocess
from core.training.configs import BACKBONES, CACHE_ROOT, DATA_ROOT
from core.training.datasets import Sample, mini_mias
from core.training.mammo_cv import MASS_CLASSES, _mark_rates, _reached, image_aucs, image_scores
from core.training.mammo_detector import MIN_TISSUE, SPEC, TILE, film, tile_grid, tile_labels
from core.training.networks import predict_chunks

CUT = "block14_sepconv1"  # the first layer trained; the cache holds its input
POSITIVE_VIEWS = 16
NEGATIVE_RATIO = 3
CACHE = CACHE_ROOT / "breast-mg-abnormal-maps"


def split_backbone():
    """(frozen part up to CUT's input, trainable block 14 with its ImageNet weights) as two Keras models."""
    import keras

    backbone = build_backbone("xception", BACKBONES["xception"])
    cut = backbone.get_layer(CUT)
    frozen = keras.Model(backbone.input, cut.input, name="mammo_frozen")
    top_in = keras.Input(cut.input.shape[1:])
    x = top_in
    for name in ("block14_sepconv1", "block14_sepconv1_bn", "block14_sepconv1_act",
                 "block14_sepconv2", "block14_sepconv2_bn", "block14_sepconv2_act"):
        x = backbone.get_layer(name)(x)
    return frozen, keras.Model(top_in, x, name="mammo_block14")


def positive_views(grey: np.ndarray, circles, rng: np.random.Generator) -> np.ndarray:
    """``POSITIVE_VIEWS`` tiles per circle, the centre anywhere in the tile's central half, flipped and turned."""
    h, w = grey.shape
    out = []
    for c in circles:
        for _ in range(POSITIVE_VIEWS):
            dy, dx = rng.uniform(-TILE / 4, TILE / 4, 2)
            y0 = int(np.clip(round(c.y + dy - TILE / 2), 0, h - TILE))
            x0 = int(np.clip(round(c.x + dx - TILE / 2), 0, w - TILE))
            tile = grey[y0:y0 + TILE, x0:x0 + TILE]
            tile = np.rot90(tile[:, ::-1] if rng.random() < 0.5 else tile, int(rng.integers(4)))
            out.append(preprocess(np.ascontiguousarray(tile), SPEC))
    return np.stack(out) if out else np.zeros((0, TILE, TILE, 3), np.float32)


def cache(samples: list[Sample], batch: int = 16) -> None:
    """``<ref>.npz``: ``grid`` maps of the search-region tiles with ``corners`` and ``labels``; ``positives`` maps."""
    CACHE.mkdir(parents=True, exist_ok=True)
    frozen = None
    for i, sample in enumerate(samples):
        target = CACHE / f"{sample.path.stem}.npz"
        if target.exists():
            continue
        start = time.perf_counter()
        grey = film(sample)
        search = breast_region(grey, view="MLO").search
        corners = np.array(tile_grid(grey.shape, search, min_share=MIN_TISSUE), np.int32).reshape(-1, 2)
        grid = np.stack([preprocess(grey[y:y + TILE, x:x + TILE], SPEC) for y, x in corners])
        rng = np.random.default_rng(int(sample.path.stem[3:]))
        pos = positive_views(grey, sample.circles, rng)
        if frozen is None:
            frozen, _ = split_backbone()
        views = np.concatenate([grid, pos])
        maps = predict_chunks(frozen, views, batch)
        np.savez(target, grid=maps[:len(grid)].astype(np.float16), positives=maps[len(grid):].astype(np.float16),
                 corners=corners, labels=tile_labels(corners, sample.circles),
                 reached=_reached(corners, sample.circles) if len(corners) else np.zeros(0, bool))
        print(f"{i + 1}/{len(samples)} {sample.path.stem}: {len(grid)} tiles + {len(pos)} positive views "
              f"({time.perf_counter() - start:.1f} s)", flush=True)


def load(sample: Sample) -> dict:
    data = np.load(CACHE / f"{sample.path.stem}.npz")
    return {k: data[k] for k in data.files}


def training_views(samples: list[Sample], films: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Positive views of circled findings and the grid tiles they lie in; negatives: every tile of a normal film
    and the tiles of an abnormal film that no circle reaches (films with diffuse findings and no circle left out)."""
    pos, neg = [], []
    for sample, f in zip(samples, films):
        if sample.label == "normal":
            neg.append(f["grid"])
        elif sample.circles:
            pos += [f["positives"], f["grid"][f["labels"] == 1]]
            neg.append(f["grid"][~f["reached"]])
    return np.concatenate(pos), np.concatenate(neg)


def _augment(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The maps' own flip and quarter turn, one draw per batch (views of one batch turn together)."""
    maps = maps[:, :, ::-1] if rng.random() < 0.5 else maps
    return np.rot90(maps, int(rng.integers(4)), axes=(1, 2))


def fit_fold(pos: np.ndarray, neg: np.ndarray, epochs: int, seed: int, batch: int = 32, lr: float = 1e-4):
    """Block 14 (ImageNet start) + average pooling + dropout + one logit, trained with class-balanced batches."""
    import keras

    keras.utils.set_random_seed(seed)
    _, top = split_backbone()
    inputs = keras.Input(top.input.shape[1:])
    x = keras.layers.GlobalAveragePooling2D()(top(inputs))
    x = keras.layers.Dropout(0.3)(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    steps = epochs * int(np.ceil(len(pos) * (1 + NEGATIVE_RATIO) / batch))
    schedule = keras.optimizers.schedules.CosineDecay(lr, steps, warmup_target=None)
    model.compile(keras.optimizers.Adam(schedule), keras.losses.BinaryCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        take = rng.choice(len(neg), min(len(neg), NEGATIVE_RATIO * len(pos)), replace=False)
        x_all = np.concatenate([pos, neg[take]])
        y_all = np.concatenate([np.ones(len(pos)), np.zeros(len(take))]).astype(np.float32)
        order = rng.permutation(len(x_all))
        losses = []
        for j in range(0, len(order), batch):
            idx = np.sort(order[j:j + batch])
            losses.append(model.train_on_batch(_augment(x_all[idx].astype(np.float32), rng), y_all[idx]))
        print(f"  epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}", flush=True)
    return model


def _probs(model, maps: np.ndarray, batch: int = 64) -> np.ndarray:
    """Tile probabilities, the mean logit over the map and its mirror."""
    if not len(maps):
        return np.zeros(0)
    logits = (predict_chunks(model, maps, batch) + predict_chunks(model, maps[:, :, ::-1], batch))[:, 0] / 2
    return 1 / (1 + np.exp(-logits))


def cross_validate(samples: list[Sample], films: list[dict], epochs: int, lr: float, seed: int = 0,
                   folds: int = 5) -> dict:
    """Out-of-fold tile probabilities on every film's grid, then image ROC AUC (max, top-3 mean) and marks,
    on the frozen detector's folds (StratifiedGroupKFold by woman, seed 0)."""
    y_img = np.array([s.label == "abnormal" for s in samples], int)
    groups = [s.group for s in samples]
    probs: list[np.ndarray | None] = [None] * len(samples)
    tile_auc = []
    for k, (train, test) in enumerate(StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(y_img, y_img, groups)):
        start = time.perf_counter()
        pos, neg = training_views([samples[i] for i in train], [films[i] for i in train])
        print(f"fold {k + 1}: {len(pos)} positive views, {len(neg)} negative tiles", flush=True)
        model = fit_fold(pos, neg, epochs, seed=100 * seed + k, lr=lr)
        for i in test:
            probs[i] = _probs(model, films[i]["grid"])
        judged = [i for i in test if samples[i].label == "normal" or samples[i].circles]
        keep = {i: (films[i]["labels"] == 1) | ~films[i]["reached"] for i in judged}  # as training_views keeps them
        tile_auc.append(roc_auc_score(np.concatenate([films[i]["labels"][keep[i]] for i in judged]),
                                      np.concatenate([probs[i][keep[i]] for i in judged])))
        print(f"fold {k + 1}: tile ROC AUC {tile_auc[-1]:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    scores = image_scores(samples, probs)
    result = {"films": len(samples), "abnormal": int(y_img.sum()), "epochs": epochs, "lr": lr, "seed": seed,
              "tile_auc_per_fold": [round(a, 3) for a in tile_auc], **image_aucs(samples, scores)}
    masses = np.array([s.extra["class"] in MASS_CLASSES or s.label == "normal" for s in samples])
    result["image_auc_top3_masses_vs_normal"] = round(float(roc_auc_score(y_img[masses], scores["top3"][masses])), 3)
    result["marks"] = _mark_rates(samples, films, probs)
    np.save(CACHE / f"oof_top3_e{epochs}_lr{lr:g}_s{seed}.npy", scores["top3"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Fine-tuned mammography tile detector, cross-validated by woman.")
    parser.add_argument("step", choices=["cache", "cv"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0, help="training seed (the folds stay those of mammo_cv)")
    args = parser.parse_args()
    samples = mini_mias(DATA_ROOT / "mini_mias")
    if args.step == "cache":
        cache(samples)
    else:
        print(json.dumps(cross_validate(samples, [load(s) for s in samples], args.epochs, args.lr, args.seed), indent=1))


if __name__ == "__main__":
    main()
