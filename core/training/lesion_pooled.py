"""A classifier fitted over a trained segmenter bundle's encoder (``core.models.lesion_pooling``).

Only the linear layer is fitted: a class-balanced, L2-regularised multinomial logistic regression
on the pooled vectors of every training image and its mirror image. Its strength is chosen by
grouped 5-fold cross-validation on the training split, so the validation split only measures;
the feature standardisation is folded into the layer's weights. The split is the segmenter's own,
so no validation image was seen by the encoder either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.models.registry import Bundle
from core.training.bundle_writer import write_lesion_pooled_bundle
from core.training.classifier import choose_on_validation
from core.training.configs import CONFIGS, REPO, BundleConfig
from core.training.evaluate import fit_temperature, softmax
from core.training.mirror import predict_with_mirror
from core.training.plan import same_split, stored_plan

STRENGTHS = (0.0003, 0.001, 0.003, 0.01, 0.03)  # inverse L2 strength C
FOLDS = 5


def pooled_vectors(model, entries: list[dict], spec, mirror: bool) -> np.ndarray:
    """The pooled vector of each entry's image (then of its mirror image, when ``mirror``)."""
    plain, mirrored = predict_with_mirror(model, [entry["path"] for entry in entries], spec, mirror,
                                          desc="segmenter features")
    return plain if mirrored is None else np.concatenate([plain, mirrored])


def fit_linear(x: np.ndarray, y: np.ndarray, strength: float, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (features, classes), bias) of the logistic regression, standardisation folded in."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise ValueError(f"no training images of class index {missing}")
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=strength, max_iter=5000, class_weight="balanced").fit(scaler.transform(x), y)
    coef, bias = model.coef_, model.intercept_
    if n_classes == 2:  # sklearn fits one score for class 1 against class 0; class 0's logit is then 0
        coef, bias = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
    kernel = (coef / scaler.scale_).T
    return kernel.astype(np.float32), (bias - kernel.T @ scaler.mean_).astype(np.float32)


def choose_strength(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int) -> tuple[float, dict]:
    """The strength with the best grouped cross-validated accuracy (the stronger one on a tie)."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = list(StratifiedGroupKFold(FOLDS, shuffle=True, random_state=0).split(x, y, groups))
    scores = {}
    for strength in STRENGTHS:
        hits = 0
        for train, test in folds:
            kernel, bias = fit_linear(x[train], y[train], strength, n_classes)
            hits += int(((x[test] @ kernel + bias).argmax(axis=1) == y[test]).sum())
        scores[strength] = hits / len(y)
    return max(STRENGTHS, key=lambda s: (scores[s], -s)), scores


def pooled_model(parent: Bundle, config: BundleConfig):
    """(the classifier head to fit, a model image -> pooled vector) over segmenter bundle ``parent``."""
    import keras

    from core.models.lesion_pooling import pooled_part, pooling_head, segmenter_features  # imports TensorFlow

    features = segmenter_features(parent.load())
    deep_shape, mask_shape = (t.shape for t in features.outputs)
    head = pooling_head(tuple(deep_shape[1:]), mask_shape[1], len(config.classes))
    image = keras.Input(shape=(config.spec.size, config.spec.size, 3))
    return head, keras.Model(image, pooled_part(head)(features(image)))


def fit_pooled(to_pooled, config: BundleConfig, train: list[dict]) -> tuple[np.ndarray, np.ndarray, dict]:
    """(kernel, bias, fit record) of the linear layer on ``train`` entries and their mirror images, its
    strength chosen by grouped cross-validation among them."""
    index = {c: i for i, c in enumerate(config.classes)}
    x = pooled_vectors(to_pooled, train, config.spec, mirror=True)
    y = np.tile([index[d["label"]] for d in train], 2)
    strength, scores = choose_strength(x, y, np.tile([d["group"] for d in train], 2), len(config.classes))
    kernel, bias = fit_linear(x, y, strength, len(config.classes))
    return kernel, bias, {"method": "class-balanced L2 logistic regression on standardised pooled vectors "
                                    "(image + mirror)", "C": strength,
                          "cross_validated_accuracy": {str(s): a for s, a in scores.items()}, "folds": FOLDS}


def train_on_segmenter(config: BundleConfig, out_root: str | Path | None = None) -> Path:
    """Fit the linear layer over the written segmenter bundle ``config.feature_bundle`` and write ``models/<id>/``."""
    models = Path(out_root or REPO / "models")
    parent_config = CONFIGS[config.feature_bundle]
    if parent_config.spec != config.spec:
        raise ValueError(f"{config.id} must preprocess exactly like {parent_config.id} ({parent_config.spec})")
    plan = stored_plan(parent_config)
    if not same_split(models / parent_config.id, plan):
        raise ValueError(f"{models / parent_config.id} was not trained on its config's split; retrain it first")
    unknown = {d["label"] for part in plan.values() for d in part} - set(config.classes)
    if unknown:
        raise ValueError(f"{parent_config.id}'s split has labels {sorted(unknown)} that {config.id} does not know")
    parent = Bundle.from_folder(models / parent_config.id)
    head, to_pooled = pooled_model(parent, config)
    kernel, bias, fit = fit_pooled(to_pooled, config, plan["train"])
    head.get_layer("logits").set_weights([kernel, bias])
    index = {c: i for i, c in enumerate(config.classes)}
    x_val = pooled_vectors(to_pooled, plan["val"], config.spec, mirror=False)
    y_val = np.array([index[d["label"]] for d in plan["val"]])
    logits_val = x_val @ kernel + bias
    temperature = fit_temperature(logits_val, y_val)
    folder = write_lesion_pooled_bundle(config, head, plan, softmax(logits_val / temperature), y_val, temperature,
                                        fit, parent.manifest, out_root)
    choose_on_validation(folder, plan)
    return folder
