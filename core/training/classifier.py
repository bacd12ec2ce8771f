"""Classifier bundles: split, cache trunk features, train head then fine-tune the top block, evaluate.

Recipe (as published for ResNet50V2/Xception): frozen ImageNet base + GlobalAveragePooling +
Dropout + Dense; then the top block is unfrozen and trained at lr 1e-4. Because the base below
the top block stays frozen in both phases, its output is cached once (``features.py``) and only
the top block and head run during training - what makes this feasible on a 2-core CPU. On a GPU
the same code runs unchanged, only faster. An optional third phase (``whole_network.py``) then
fine-tunes the whole network on images augmented afresh every epoch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from core.models.backbones import build_backbone, split_backbone
from core.models.preprocessing import PreprocessSpec
from core.training.augment import mix_batch
from core.training.bundle_writer import write_classifier_bundle
from core.training.by_source import record_by_source
from core.training.cam_layer import choose_cam_layer, validation_lesions
from core.training.checkpoints import EpochCheckpoints, data_digest, samples_digest
from core.training.configs import REPO, BundleConfig
from core.training.datasets import plan_sample
from core.training.evaluate import fit_temperature, softmax
from core.training.features import cache_features
from core.training.mirror import choose_mirror_average, predict_with_mirror
from core.training.networks import class_weight_vector, predict_chunks, set_trainable, written_network
from core.training.plan import cache_views, load_views, per_image, stored_plan
from core.training.sources import several_sources
from core.training.splits import describe
from core.training.whole_network import finetune_whole


def prepare(config: BundleConfig, trunk=None, written_split: dict | None = None) -> dict:
    """Split deterministically and cache trunk features of every view (of ``trunk``, else the config's
    frozen backbone below its top block); resumable."""
    plan = stored_plan(config, written_split)
    parts = {k: [plan_sample(d) for d in v] for k, v in plan.items()}
    print(f"{config.id}: train {describe(parts['train'])}, validation {describe(parts['val'])}")
    if trunk is None:
        trunk, _ = split_backbone(build_backbone(config.arch, config.backbone_path), config.arch,
                                  config.top_block_start)
    cache_features(parts["val"], config.spec, trunk, config.cache_dir / "val_v0.npy")
    cache_views(config, parts["train"], trunk, config.cache_dir / "train")
    return plan


def build_head(top, n_classes: int, dropout: float):
    """Features at the top block's input -> class logits: top block, GAP, Dropout, Dense."""
    import keras

    features = keras.Input(shape=(None, None, top.input.shape[-1]), name="trunk_features")
    x = top(features)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    return keras.Model(features, logits, name="head")


def _weighted(batches, class_weight: np.ndarray):
    """Attach per-sample weights (inverse class frequency, from the soft labels) to each batch."""
    for xb, yb in batches:
        yield xb, yb, yb @ class_weight


def _batches(x: np.ndarray, y: np.ndarray, batch: int, rng: np.random.Generator, mix: str | None, n: int):
    """Endless shuffled batches with optional MixUp/CutMix on the cached feature maps."""
    onehot = np.eye(n, dtype=np.float32)[y]
    while True:
        order = rng.permutation(len(x))
        for i in range(0, len(order) - batch + 1, batch):
            idx = np.sort(order[i : i + batch])
            xb, yb = x[idx].astype(np.float32), onehot[idx]
            if mix:
                xb, yb = mix_batch(xb, yb, mix, rng)
            yield xb, yb


def train(config: BundleConfig, out_root: str | Path | None = None) -> Path:
    """Train, calibrate, evaluate and write ``models/<id>/`` (a fine-tuned classifier; one on another bundle's
    network is trained by ``core.training.transfer`` or ``core.training.lesion_pooled``, chosen by
    ``core.training.__main__.train``); resumes from the last epoch checkpoint."""
    if config.feature_bundle:
        raise ValueError(f"{config.id} builds on the {config.feature_bundle} bundle: train it with "
                         "core.training.__main__.train (python -m core.training train)")
    trunk = started_from = head = None
    written_split = None
    if config.init_from_written:  # its frozen trunk gives the cached features; its top block and head start
        trunk, head, started_from = written_network(config, None, out_root)
        started_from["mode"] = "init"
        written_split = json.loads((Path(out_root or REPO / "models") / config.id / "split.json").read_text())
    plan = stored_plan(config) if config.whole_from_written else prepare(config, trunk, written_split)
    index = {c: i for i, c in enumerate(config.classes)}
    y_images = np.array([index[d["label"]] for d in plan["train"]])
    y_val = np.array([index[d["label"]] for d in plan["val"]])
    if config.whole_from_written:
        trunk, head, started_from = written_network(config, plan, out_root)
    else:
        views = 1 + config.augmented_views
        x_val = load_views(config, "val", 1)
        head = fit_classifier(config, load_views(config, "train", views), np.tile(y_images, views), x_val, y_val,
                              config.cache_dir, head=head)
    if config.epochs_whole:
        teacher = mirror_teacher(config, trunk, head, plan, started_from, out_root) if config.distil_mirror else None
        trunk, head, logits_val = finetune_whole(config, head, [plan_sample(d) for d in plan["train"]], y_images,
                                                 [plan_sample(d) for d in plan["val"]], y_val, trunk, started_from,
                                                 teacher)
    else:
        logits_val = predict_chunks(head, x_val)
    temperature = fit_temperature(logits_val, y_val)
    probs = softmax(logits_val / temperature)
    if config.tiling is not None:
        probs, y_val = per_image(plan["val"], probs, config)
    folder = write_classifier_bundle(config, head, plan, probs, y_val, temperature, out_root, trunk, started_from)
    if config.tiling is None:  # tiles are not mirrored; whole images are, where validation says so
        choose_on_validation(folder, plan)
    return folder


def mirror_teacher(config: BundleConfig, trunk, head, plan: dict, started_from: dict | None,
                   out_root: str | Path | None) -> np.ndarray:
    """The written network's calibrated probabilities on each training image: its logits averaged with its mirror
    image's, at its own calibration temperature (sharp raw logits would teach little beyond the label), loaded as
    in the product. The mean logits are cached beside the bundle's checkpoints, keyed by the network and images."""
    import keras

    if started_from is None or trunk is None:
        raise ValueError("--distil-mirror learns from a written network: use it with --from-written")
    written = json.loads((Path(out_root or REPO / "models") / config.id / "manifest.json").read_text())
    temperature = written["calibration"]["temperature"]
    spec = PreprocessSpec.from_dict(written["preprocessing"])  # the teacher sees images as it was trained to
    samples = [plan_sample(d) for d in plan["train"]]
    look = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    key = f"{started_from['weights_sha256'][:12]}_{samples_digest(samples, [])}_{look}"
    target = config.cache_dir / f"teacher_logits_{key}.npy"
    if target.exists():
        logits = np.load(target)
    else:
        image = keras.Input(shape=(None, None, 3))
        plain, mirrored = predict_with_mirror(keras.Model(image, head(trunk(image))), [s.path for s in samples],
                                              spec, desc="teacher (image + mirror)")
        logits = (plain + mirrored) / 2
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, logits)
    return softmax(logits / temperature)


def choose_on_validation(folder: Path, plan: dict) -> None:
    """What a written whole-image classifier settles on its validation split: mirror averaging, the Grad-CAM layer
    where the data marks lesions (by where the heat falls), and the per-source table where the split mixes sources."""
    choose_mirror_average(folder)
    lesions = validation_lesions(plan)
    if lesions:
        choose_cam_layer(folder, lesions)
    if several_sources([[d["path"], d["label"], d["group"]] for d in plan["val"]]):
        record_by_source(folder)


def fit_classifier(config: BundleConfig, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                   y_val: np.ndarray, work_dir: Path, select_on_val: bool = True, head=None):
    """Top block + head on cached trunk features: head first, then the top block at a low rate; from
    ``head`` (a written bundle's top block and head) where given, else from the backbone's ImageNet top block.

    Checkpoints go to ``work_dir`` after every epoch (an interrupted run resumes there). With
    ``select_on_val`` the weights of the epoch with the lowest validation loss are returned and
    training stops early; without it (cross-validation) the full schedule runs and the last
    weights are returned, so the validation part never steers training.
    """
    import keras

    classes = config.classes
    x_val = np.asarray(x_val, np.float32)
    keras.utils.set_random_seed(config.seed)
    if head is None:
        _, top = split_backbone(build_backbone(config.arch, config.backbone_path), config.arch, config.top_block_start)
        head = build_head(top, len(classes), config.dropout)
    else:  # a written head is stored frozen: every layer trains again (phase 1 re-freezes the top block)
        top = next(part for part in head.layers if isinstance(part, keras.Model))
        head.trainable = True
        for layer in head.layers:
            layer.trainable = True
    sample_weight = class_weight_vector(y_train, len(classes))
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    metrics = [keras.metrics.CategoricalAccuracy(name="acc")]
    rng = np.random.default_rng(config.seed)
    y_val_onehot = np.eye(len(classes), dtype=np.float32)[y_val]
    recipe = {"top_block_start": config.top_block_start, "mix": config.mix, "dropout": config.dropout,
              "augmented_views": config.augmented_views, "lr_head": config.lr_head, "lr_finetune": config.lr_finetune,
              "data": data_digest(x_train, y_train), **({"init_from_written": True} if config.init_from_written else {})}
    checkpoints = EpochCheckpoints(work_dir, recipe)
    total = config.epochs_head + config.epochs_finetune

    def finish_epoch(epoch: int, phase: str, val_loss: float, val_acc: float) -> bool:
        print(f"epoch {epoch}/{total} [{phase}] val_loss={val_loss:.4f} val_acc={val_acc:.4f}", flush=True)
        return checkpoints.finish(head, epoch, val_loss)

    checkpoints.resume(head)
    if checkpoints.epoch < config.epochs_head:
        # Phase 1, frozen top block: its pooled output is computed once, only Dropout + Dense train.
        set_trainable(top, False)
        pool = keras.Model(top.input, keras.layers.GlobalAveragePooling2D()(top.output))
        pooled_train, pooled_val = predict_chunks(pool, x_train), predict_chunks(pool, x_val)
        features = keras.Input(shape=(pooled_train.shape[1],))
        dense = keras.Model(features, head.get_layer("logits")(head.get_layer("dropout")(features)))
        dense.compile(optimizer=keras.optimizers.Adam(config.lr_head), loss=loss, metrics=metrics)
        for epoch in range(checkpoints.epoch + 1, config.epochs_head + 1):
            batches = _weighted(_batches(pooled_train, y_train, config.batch_size, rng, config.mix, len(classes)),
                                sample_weight)
            history = dense.fit(batches, steps_per_epoch=max(1, len(pooled_train) // config.batch_size), epochs=1,
                                verbose=0, validation_data=(pooled_val, y_val_onehot))
            finish_epoch(epoch, "head", history.history["val_loss"][-1], history.history["val_acc"][-1])
    # Phase 2: the top block unfrozen (BatchNorm kept frozen) at a low learning rate, cosine-decayed.
    set_trainable(top, True)
    steps = max(1, len(x_train) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(config.lr_finetune, decay_steps=steps * max(1, config.epochs_finetune))
    head.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=metrics)
    stale = 0
    for epoch in range(max(checkpoints.epoch, config.epochs_head) + 1, total + 1):
        batches = _weighted(_batches(x_train, y_train, config.batch_size, rng, config.mix, len(classes)), sample_weight)
        history = head.fit(batches, steps_per_epoch=steps, epochs=1, verbose=2, validation_data=(x_val, y_val_onehot))
        improved = finish_epoch(epoch, "finetune", history.history["val_loss"][-1], history.history["val_acc"][-1])
        stale = 0 if improved else stale + 1
        if select_on_val and stale >= 3:
            print("validation loss has not improved for 3 epochs: stopping early")
            break
    if select_on_val:
        checkpoints.load_best(head)
    return head
