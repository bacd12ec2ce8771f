"""U-Net segmenters on a frozen ImageNet Xception encoder: cache skip features, train the decoder.

The encoder's multi-scale outputs (strides ~2/4/8/16) are the U-Net's contracting path; only the
expanding path (decoder) is trained, on cached features of plain and augmented views. Loss is
BCE, Dice, Tversky or BCE + Dice (config). Dice and IoU are measured at each validation image's
original resolution, through the same Analyzer code the product runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.training.classifier import stored_plan
from core.training.configs import BACKBONES, BundleConfig
from core.training.datasets import plan_sample
from core.training.features import cache_features
from core.training.splits import describe


def prepare(config: BundleConfig) -> dict:
    """Split and cache encoder skip features (+ masks) for the training views; resumable."""
    from core.models.backbones import build_backbone, encoder

    plan = stored_plan(config)
    train = [plan_sample(d) for d in plan["train"]]
    print(f"{config.id}: train {describe(train)}, validation {describe([plan_sample(d) for d in plan['val']])}")
    enc = encoder(build_backbone(config.arch, BACKBONES[config.arch]), config.arch)
    for view in range(1 + config.augmented_views):
        cache_features(train, config.spec, enc, config.cache_dir / f"train_v{view}.npy", with_masks=True,
                       augmentation=config.augmentation if view else None, seed=config.seed + view, batch_size=8)
    return plan


def build_decoder(skip_shapes: list[tuple], size: int, filters=(128, 64, 32, 16), dropout: float = 0.1):
    """U-Net expanding path: coarsest skip upwards, concatenating each finer skip; sigmoid mask at ``size``."""
    import keras
    from keras import layers

    def block(x, f, name):
        for i in range(2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
            x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        return x

    inputs = [keras.Input(shape=shape, name=f"skip{i}") for i, shape in enumerate(skip_shapes)]
    x = layers.Conv2D(filters[0], 1, activation="relu", name="bottleneck_reduce")(inputs[-1])
    x = block(x, filters[0], "bottleneck")
    x = layers.SpatialDropout2D(dropout, name="dropout")(x)
    for level, (skip, f) in enumerate(zip(reversed(inputs[:-1]), filters[1:])):
        x = layers.Resizing(skip.shape[1], skip.shape[2], interpolation="bilinear", name=f"up{level}")(x)
        s = layers.Conv2D(f, 1, activation="relu", name=f"skip{level}_reduce")(skip)
        x = layers.Concatenate(name=f"merge{level}")([x, s])
        x = block(x, f, f"decoder{level}")
    logits = layers.Conv2D(1, 1, name="mask_logits")(x)
    logits = layers.Resizing(size, size, interpolation="bilinear", name="to_input_size")(logits)
    return keras.Model(inputs, layers.Activation("sigmoid", name="mask")(logits), name="unet_decoder")


def _load(config: BundleConfig, views: int, n_skips: int):
    skips = [np.concatenate([np.load(config.cache_dir / f"train_v{v}_{i}.npy", mmap_mode="r") for v in range(views)])
             for i in range(n_skips)]
    masks = np.concatenate([np.load(config.cache_dir / f"train_v{v}_mask.npy", mmap_mode="r") for v in range(views)])
    return skips, masks


def train(config: BundleConfig, out_root: str | Path | None = None) -> Path:
    """Train the decoder (resumable per epoch), evaluate on validation images, write ``models/<id>/``."""
    import keras

    from core.models.backbones import SKIP_LAYERS
    from core.training.losses import segmentation_loss

    plan = prepare(config)
    views = 1 + config.augmented_views
    n_skips = len(SKIP_LAYERS[config.arch])
    skips, masks = _load(config, views, n_skips)
    keras.utils.set_random_seed(config.seed)
    decoder = build_decoder([s.shape[1:] for s in skips], config.spec.size)
    decoder.compile(optimizer=keras.optimizers.Adam(config.lr_head), loss=segmentation_loss(config.loss))
    ckpt = config.cache_dir / "checkpoint.weights.h5"
    progress_file = config.cache_dir / "progress.json"
    progress = json.loads(progress_file.read_text()) if progress_file.exists() else {"epoch": 0}
    if progress["epoch"]:
        decoder.load_weights(ckpt)
        print(f"resuming after epoch {progress['epoch']}")
    rng = np.random.default_rng(config.seed)
    n = len(masks)
    for epoch in range(progress["epoch"], config.epochs_head):
        lr = config.lr_head * (0.5 ** (epoch // max(1, config.epochs_head // 3)))
        decoder.optimizer.learning_rate.assign(lr)
        order = rng.permutation(n)
        losses = []
        for i in range(0, n - config.batch_size + 1, config.batch_size):
            idx = np.sort(order[i : i + config.batch_size])
            batch = [np.asarray(s[idx], np.float32) for s in skips]
            losses.append(float(decoder.train_on_batch(batch, masks[idx][..., None].astype(np.float32))))
        print(f"epoch {epoch + 1}/{config.epochs_head} lr {lr:.1e} loss {np.mean(losses):.4f}", flush=True)
        decoder.save_weights(ckpt)
        progress["epoch"] = epoch + 1
        progress_file.write_text(json.dumps(progress))
    from core.training.bundle_writer import write_segmenter_bundle

    return write_segmenter_bundle(config, decoder, plan, out_root)
