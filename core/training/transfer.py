"""Transfer from a trained bundle: its fine-tuned top block + pooling as a frozen feature extractor,
a new Dense layer trained on our data plus the parent's training data with mapped classes.

The brain tumour yes/no bundle is made this way from the 4-class bundle: the 4-class training set
(4.8k slices) teaches "tumour or not" far better than the 121 yes/no training images alone. The
bundle stores only the Dense layer and names its parent; the registry composes them. Its features
come from the written parent bundle itself (image -> pooled vector, cached per parent version), so
they are right whether the parent kept the shared trunk or fine-tuned its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.models.registry import Bundle
from core.training.bundle_writer import write_transfer_bundle
from core.training.by_source import record_by_source
from core.training.configs import CONFIGS, REPO, BundleConfig
from core.training.datasets import plan_sample
from core.training.evaluate import classification_metrics, fit_temperature, softmax
from core.training.features import cache_features
from core.training.mirror import choose_mirror_average
from core.training.networks import class_weights
from core.training.plan import cache_views, load_views, same_split, stored_plan
from core.training.sources import source_of

FEATURE_LAYER = "gap"


def _parent_features(parent_folder: Path):
    """Image -> the written parent's pooled top-block output, through its whole loaded network (its own
    fine-tuned trunk where it has one). The name pins cached vectors to the parent's weights."""
    import keras

    parent = Bundle.from_folder(parent_folder)
    trunk, pooled = parent.pooled_at(FEATURE_LAYER)
    image = keras.Input(shape=(None, None, 3), name="image")
    version = parent.manifest["weights"]["sha256"][:12]
    return keras.Model(image, pooled(trunk(image)), name=f"{parent.id}_pooled_{version}")


def train_transfer(config: BundleConfig, out_root: str | Path | None = None) -> Path:
    import keras

    models = Path(out_root or REPO / "models")
    parent = CONFIGS[config.feature_bundle]
    plan, parent_plan = stored_plan(config), stored_plan(parent)
    if not same_split(models / parent.id, parent_plan):
        raise ValueError(f"{models / parent.id} was not trained on its config's split; retrain it first")
    features = _parent_features(models / config.feature_bundle)
    work = config.cache_dir / features.name
    samples = lambda entries: [plan_sample(d) for d in entries]  # noqa: E731
    cache_views(config, samples(plan["train"]), features, work / "train")
    for part, entries in (("val", plan["val"]), ("parent_train", parent_plan["train"]), ("parent_val", parent_plan["val"])):
        cache_features(samples(entries), config.spec, features, work / f"{part}_v0.npy")
    pooled = lambda part, views=1: np.asarray(load_views(config, part, views, work), np.float32)  # noqa: E731
    index = {c: i for i, c in enumerate(config.classes)}
    views = 1 + config.augmented_views
    x_own = pooled("train", views)
    y_own = np.tile([index[d["label"]] for d in plan["train"]], views)
    x_parent = pooled("parent_train")
    y_parent = np.array([index[config.feature_class_map[d["label"]]] for d in parent_plan["train"]])
    x_val = pooled("val")
    y_val = np.array([index[d["label"]] for d in plan["val"]])
    x_parent_val = pooled("parent_val")
    y_parent_val = np.array([index[config.feature_class_map[d["label"]]] for d in parent_plan["val"]])
    x_train, y_train = np.concatenate([x_own, x_parent]), np.concatenate([y_own, y_parent])

    keras.utils.set_random_seed(config.seed)
    inputs = keras.Input(shape=(x_train.shape[1],), name="pooled_features")
    logits = keras.layers.Dense(len(config.classes), name="logits")(keras.layers.Dropout(config.dropout)(inputs))
    dense = keras.Model(inputs, logits, name="transfer_head")
    dense.compile(optimizer=keras.optimizers.Adam(config.lr_head),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    stop = keras.callbacks.EarlyStopping(patience=6, restore_best_weights=True)
    dense.fit(x_train, y_train, epochs=config.epochs_head, batch_size=config.batch_size, verbose=2,
              validation_data=(x_val, y_val), class_weight=class_weights(y_train, len(config.classes)), callbacks=[stop])
    logits_val = dense.predict(x_val, verbose=0)
    temperature = fit_temperature(logits_val, y_val)
    probs = softmax(logits_val / temperature)
    parent_probs = softmax(dense.predict(x_parent_val, verbose=0) / temperature)
    extra = {"data": f"{parent.id} validation split, classes mapped {json.dumps(config.feature_class_map)}",
             **classification_metrics(parent_probs, y_parent_val, config.classes)}
    folder = write_transfer_bundle(config, dense, plan, probs, y_val, temperature, extra, FEATURE_LAYER, out_root)
    choose_mirror_average(folder)
    parent_entries = json.loads((models / parent.id / "split.json").read_text())["val"]
    if len({source_of(path, group) for path, _, group in parent_entries}) > 1:
        record_by_source(folder, parent_entries, config.feature_class_map,
                         data=f"{parent.id}'s validation split, classes mapped {json.dumps(config.feature_class_map)}")
    return folder
