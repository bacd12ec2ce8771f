"""U-Net segmenters on an ImageNet Xception encoder: cache skip features, train the decoder.

The encoder's multi-scale outputs (strides ~2/4/8/16) are the U-Net's contracting path. Its frozen
part runs once per image and view (cached); the expanding path (decoder) is trained on the cache.
With ``top_from`` set, the encoder's deeper blocks from that layer up to the deepest skip train
too: first the decoder alone (lr_head), then decoder and those blocks together (lr_finetune), as
in the classifier recipe. Phase 3 (``epochs_whole``, core.training.whole_network) then unfreezes the
whole encoder on freshly augmented images. Loss is one of core.training.losses (config). Dice and IoU are
measured at each validation image's original resolution, through the Analyzer the product runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.models.backbones import build_backbone, encoder_deep_part
from core.models.backbones import encoder as build_encoder
from core.training.bundle_writer import write_segmenter_bundle
from core.training.checkpoints import EpochCheckpoints, copy_model, data_digest
from core.training.configs import BundleConfig
from core.training.datasets import plan_sample
from core.training.features import cache_features
from core.training.losses import segmentation_loss
from core.training.networks import encoder_layers, set_trainable, written_network
from core.training.plan import stored_plan
from core.training.splits import describe
from core.training.whole_network import finetune_whole_segmenter


def prepare(config: BundleConfig) -> dict:
    """Split and cache encoder skip features (+ masks) for the training views; resumable."""
    plan = stored_plan(config)
    train = [plan_sample(d) for d in plan["train"]]
    print(f"{config.id}: train {describe(train)}, validation {describe([plan_sample(d) for d in plan['val']])}")
    enc = build_encoder(build_backbone(config.arch, config.backbone_path), config.arch, encoder_layers(config))
    for view in range(1 + config.augmented_views):
        cache_features(train, config.spec, enc, config.cache_dir / f"train_v{view}.npy", with_masks=True,
                       augmentation=config.augmentation if view else None, seed=config.seed + view, batch_size=8)
    return plan


def build_decoder(skip_shapes: list[tuple], size: int, filters=(128, 64, 32, 16), dropout: float = 0.1, deep=None):
    """U-Net expanding path: coarsest skip upwards, concatenating each finer skip; sigmoid mask at ``size``.

    ``deep`` (the encoder's trainable deeper blocks) turns the last input into the deepest skip.
    """
    import keras
    from keras import layers

    from core.models.lesion_pooling import DEEPEST_CONSUMER  # (imports TensorFlow) a segmenter-based classifier taps it

    def block(x, f, name):
        for i in range(2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
            x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        return x

    inputs = [keras.Input(shape=shape, name=f"skip{i}") for i, shape in enumerate(skip_shapes)]
    deepest = inputs[-1] if deep is None else deep(inputs[-1])
    x = layers.Conv2D(filters[0], 1, activation="relu", name=DEEPEST_CONSUMER)(deepest)
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


def _views(config: BundleConfig, views: int, n_skips: int) -> tuple[list[list[np.ndarray]], list[np.ndarray]]:
    """Memory-mapped skips and masks of each cached view (batches are gathered, never all loaded)."""
    folder = config.cache_dir
    skips = [[np.load(folder / f"train_v{v}_{i}.npy", mmap_mode="r") for i in range(n_skips)] for v in range(views)]
    masks = [np.load(folder / f"train_v{v}_mask.npy", mmap_mode="r") for v in range(views)]
    return skips, masks


def train(config: BundleConfig, out_root: str | Path | None = None) -> Path:
    """Train the decoder (resumable per epoch), then the whole U-Net where the config asks for it
    (``epochs_whole``; with ``whole_from_written`` from the bundle already written, with ``init_from_written``
    from it too but on the config's new data and split), evaluate on validation images and write
    ``models/<id>/``."""
    encoder = started_from = None
    if config.whole_from_written or config.init_from_written:
        plan = stored_plan(config)  # with init_from_written: the written split's images keep their sides
        encoder, decoder, started_from = written_network(config, None if config.init_from_written else plan, out_root)
    else:
        plan = prepare(config)
        decoder = fit_decoder(config)
    start = None
    if config.epochs_whole:
        if config.snapshot_ensemble:  # phase 3 trains in place: keep what it starts from
            own_trunk = bool(started_from and started_from["whole_epochs"])
            start = (copy_model(encoder) if own_trunk else None, copy_model(decoder))
        encoder, decoder = finetune_whole_segmenter(config, decoder, [plan_sample(d) for d in plan["train"]],
                                                    [plan_sample(d) for d in plan["val"]], encoder, started_from)
    return write_segmenter_bundle(config, decoder, plan, out_root, encoder if config.epochs_whole else None,
                                  started_from, start)


def fit_decoder(config: BundleConfig):
    """Phases 1-2 on the cached skip features: the decoder, then the decoder with the encoder's deeper
    blocks (``top_from``); checkpointed after every epoch, so a rerun of the same recipe resumes."""
    import keras

    views = 1 + config.augmented_views
    n_skips = len(encoder_layers(config))
    skips, masks = _views(config, views, n_skips)
    keras.utils.set_random_seed(config.seed)
    deep = None
    if config.top_from is not None:
        deep = encoder_deep_part(build_backbone(config.arch, config.backbone_path), config.arch, config.top_from)
    decoder = build_decoder([s.shape[1:] for s in skips[0]], config.spec.size, deep=deep)
    recipe = {"encoder_layers": encoder_layers(config), "size": config.spec.size, "loss": config.loss,
              "augmentation": config.augmentation, "augmented_views": config.augmented_views,
              "epochs": [config.epochs_head, config.epochs_finetune], "lr": [config.lr_head, config.lr_finetune],
              "batch_size": config.batch_size, "seed": config.seed, "data": data_digest(masks[0], *skips[0])}
    checkpoints = EpochCheckpoints(config.cache_dir, recipe)
    checkpoints.resume(decoder)
    rng = np.random.default_rng(config.seed)
    n = len(masks[0])
    phases = [("decoder", config.epochs_head, config.lr_head)]
    if deep is not None:
        phases.append(("decoder+encoder", config.epochs_finetune, config.lr_finetune))
    first = 0
    for phase, epochs, base_lr in phases:
        if deep is not None:
            set_trainable(deep, phase != "decoder")
        decoder.compile(optimizer=keras.optimizers.Adam(base_lr), loss=segmentation_loss(config.loss))
        for epoch in range(max(checkpoints.epoch, first), first + epochs):
            lr = base_lr * (0.5 ** ((epoch - first) // max(1, epochs // 3)))
            decoder.optimizer.learning_rate.assign(lr)
            order = rng.permutation(n * views)
            losses = []
            for i in range(0, len(order) - config.batch_size + 1, config.batch_size):
                picks = order[i : i + config.batch_size]
                batch = [np.stack([skips[k // n][level][k % n] for k in picks]).astype(np.float32)
                         for level in range(n_skips)]
                target = np.stack([masks[k // n][k % n] for k in picks])[..., None].astype(np.float32)
                losses.append(float(decoder.train_on_batch(batch, target)))
            print(f"epoch {epoch + 1}/{first + epochs} [{phase}] lr {lr:.1e} loss {np.mean(losses):.4f}", flush=True)
            checkpoints.finish(decoder, epoch + 1)
        first += epochs
    return decoder
