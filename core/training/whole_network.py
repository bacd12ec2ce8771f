"""Phase 3: the whole network (classifier or U-Net) fine-tuned on images augmented afresh every epoch.

The cached route (``classifier.py``) trains only the top block, on the same few augmented views of
each image every epoch, and the trunk below it keeps its ImageNet features. Here the trunk is
unfrozen too (BatchNorm stays in inference mode), every batch is loaded, preprocessed as in the
product and augmented anew, at a rate well below the top block's - the published recipes' last
step. It costs about 195 ms per 224-px training image on 2 CPU cores (12.5 min per epoch of the
3.9k brain slices), which is why it is off (``epochs_whole = 0``) unless asked for; on a GPU the
same code runs as is. The fine-tuned trunk (a segmenter's encoder) is then the bundle's own
(``trunk.keras``), no longer the shared backbone file.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from core.models.backbones import build_backbone, split_backbone
from core.models.backbones import encoder as build_encoder
from core.training import augment  # by module: a test swaps its build_augmentation
from core.training.checkpoints import EpochCheckpoints, samples_digest
from core.training.configs import BundleConfig
from core.training.datasets import Sample
from core.training.evaluate import segmentation_metrics
from core.training.features import model_batch
from core.training.losses import segmentation_loss
from core.training.networks import class_weight_vector, encoder_layers, set_trainable

PREFETCH = 4  # batches prepared ahead by worker threads (decoding and albumentations release the GIL)


def _epochs(config: BundleConfig, checkpoints: EpochCheckpoints, started_from: dict | None
            ) -> Iterator[tuple[int, float, int]]:
    """(epoch, learning rate, augmentation draw) of each epoch still to run. The rate decays by cosine
    over ``epochs_whole``, so a resumed run continues the same schedule; the whole-network epochs behind
    a written start (``started_from``) number the draws on, so a continued run sees images augmented
    afresh rather than its start's epochs once more."""
    before = started_from["whole_epochs"] if started_from else 0
    for epoch in range(checkpoints.epoch + 1, config.epochs_whole + 1):
        rate = config.lr_whole * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / config.epochs_whole))
        yield epoch, rate, config.seed * 1000 + before + epoch


def _checkpoints(config: BundleConfig, started_from: dict | None, recipe: dict) -> EpochCheckpoints:
    """Phase 3's checkpoints in the bundle's cache: a continuation of a written version (``started_from``)
    keeps its own, apart from a run that started from phases 1-2."""
    name = f"whole_from_{started_from['weights_sha256'][:12]}" if started_from else "whole"
    return EpochCheckpoints(config.cache_dir / name, recipe)


def finetune_whole(config: BundleConfig, head, samples: list[Sample], y: np.ndarray, val: list[Sample],
                   y_val: np.ndarray, trunk=None, started_from: dict | None = None, teacher: np.ndarray | None = None):
    """``(trunk, head, validation logits)`` after ``config.epochs_whole`` epochs from the phase-2 ``head``
    on the ImageNet trunk (or from a written bundle's ``trunk`` and ``head``, described by ``started_from``),
    with the weights of the epoch with the lowest validation loss. Checkpoints after each epoch; a rerun
    resumes. ``teacher``: probabilities per training sample mixed into the targets at ``config.distil_mirror``."""
    import keras

    if trunk is None:
        trunk, _ = split_backbone(build_backbone(config.arch, config.backbone_path), config.arch,
                                  config.top_block_start)
    image = keras.Input(shape=(None, None, 3), name="image")
    model = keras.Model(image, head(trunk(image)), name=config.id)
    set_trainable(trunk, True)
    head.trainable = True
    for part in head.layers:
        if isinstance(part, keras.Model):  # the backbone's top block: its BatchNorm stays frozen too
            set_trainable(part, True)
    n = len(config.classes)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(config.lr_whole), loss=loss)
    weights = class_weight_vector(y, n)

    recipe = {"lr_whole": config.lr_whole, "epochs_whole": config.epochs_whole,
              "augmentation": config.whole_augmentation, "mix": config.mix, "batch_size": config.batch_size,
              "data": samples_digest(samples, val), "spec": config.spec.to_dict()}
    if teacher is not None:  # the teacher's probabilities themselves: another teacher or temperature starts afresh
        recipe["distil_mirror"] = [config.distil_mirror, hashlib.sha256(teacher.astype(np.float32).tobytes()).hexdigest()[:16]]
    checkpoints = _checkpoints(config, started_from, recipe)
    checkpoints.resume(model)
    best_logits = None  # the best epoch's validation logits, where this run trained it (else measured again)
    steps = max(1, len(samples) // config.batch_size)
    for epoch, rate, draw in _epochs(config, checkpoints, started_from):
        model.optimizer.learning_rate.assign(rate)
        batches = _augmented_batches(config, samples, y, weights, np.random.default_rng(draw), seed=draw * 100_000,
                                     teacher=teacher)
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=2)
        logits = image_logits(model, val, config)
        val_loss = float(loss(np.eye(n, dtype=np.float32)[y_val], logits))
        accuracy = float((logits.argmax(1) == y_val).mean())
        print(f"whole network epoch {epoch}/{config.epochs_whole}: val_loss={val_loss:.4f} val_acc={accuracy:.4f}",
              flush=True)
        if checkpoints.finish(model, epoch, val_loss):
            best_logits = logits
    checkpoints.load_best(model)
    model.trainable = False
    if best_logits is None:
        best_logits = image_logits(model, val, config)
    return keras.Model(trunk.input, trunk.output, name=f"{config.id}_trunk"), head, best_logits


def _augmented_batches(config: BundleConfig, samples: list[Sample], y: np.ndarray, class_weight: np.ndarray,
                       rng: np.random.Generator, seed: int, teacher: np.ndarray | None = None
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One epoch of shuffled, freshly augmented batches (image, target, class weight of its label);
    MixUp/CutMix on the images where the config asks for it. The target is the one-hot label, or with a
    ``teacher`` its mix with the teacher's probabilities. A mirror-averaged teacher says the same of an image
    and of its mirror, so a flipped training view keeps a right target."""
    onehot = np.eye(len(config.classes), dtype=np.float32)[y]
    target = onehot if teacher is None else (1 - config.distil_mirror) * onehot + config.distil_mirror * teacher
    for ids, (x, _) in _prefetched(config, samples, rng, seed, with_masks=False):
        xb, yb, wb = x.astype(np.float32), target[ids].astype(np.float32), onehot[ids] @ class_weight
        if config.mix:
            xb, yb = augment.mix_batch(xb, yb, config.mix, rng)
            wb = yb @ class_weight
        yield xb, yb, wb


def _prefetched(config: BundleConfig, samples: list[Sample], rng: np.random.Generator, seed: int,
                with_masks: bool) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, np.ndarray | None]]]:
    """(sample indices, ``model_batch`` output) of one shuffled epoch, each batch augmented afresh and
    prepared ``PREFETCH`` ahead by worker threads."""

    def prepared(k: int):  # each batch its own seeded augmentation: the same draws whichever thread runs it
        return model_batch([samples[i] for i in chunks[k]], config.spec,
                           augment.build_augmentation(config.whole_augmentation, seed + k), with_masks)

    order = rng.permutation(len(samples))
    chunks = [np.sort(order[i : i + config.batch_size]) for i in range(0, len(order) - config.batch_size + 1,
                                                                        config.batch_size)]
    with ThreadPoolExecutor(PREFETCH) as pool:
        futures = [pool.submit(prepared, k) for k in range(min(PREFETCH, len(chunks)))]
        for k, ids in enumerate(chunks):
            batch = futures[k].result()
            futures[k] = None
            if k + PREFETCH < len(chunks):
                futures.append(pool.submit(prepared, k + PREFETCH))
            yield ids, batch


def finetune_whole_segmenter(config: BundleConfig, decoder, samples: list[Sample], val: list[Sample], encoder=None,
                             started_from: dict | None = None):
    """``(encoder, decoder)`` after ``config.epochs_whole`` epochs of the whole U-Net - the encoder's frozen
    ImageNet blocks (or a written bundle's ``encoder``, described by ``started_from``) unfrozen too,
    BatchNorm kept in inference mode - with the weights of the epoch with the lowest validation loss
    (images at the model's input size; Dice at original resolution is measured afterwards, by the bundle
    writer)."""
    import keras

    if encoder is None:
        encoder = build_encoder(build_backbone(config.arch, config.backbone_path), config.arch, encoder_layers(config))
    image = keras.Input(shape=(config.spec.size, config.spec.size, 3), name="image")
    model = keras.Model(image, decoder(encoder(image)), name=config.id)
    for part in (encoder, decoder, *(p for p in decoder.layers if isinstance(p, keras.Model))):
        set_trainable(part, True)
    loss = segmentation_loss(config.loss)
    model.compile(optimizer=keras.optimizers.Adam(config.lr_whole), loss=loss)
    recipe = {"lr_whole": config.lr_whole, "epochs_whole": config.epochs_whole,
              "augmentation": config.whole_augmentation, "loss": config.loss, "batch_size": config.batch_size,
              "data": samples_digest(samples, val), "spec": config.spec.to_dict()}
    checkpoints = _checkpoints(config, started_from, recipe)
    checkpoints.resume(model)
    x_val, m_val = model_batch(val, config.spec, with_masks=True)
    m_val = m_val[..., None].astype(np.float32)
    has_lesion = m_val.any(axis=(1, 2, 3))
    steps = max(1, len(samples) // config.batch_size)
    for epoch, rate, draw in _epochs(config, checkpoints, started_from):
        model.optimizer.learning_rate.assign(rate)
        batches = ((x.astype(np.float32), m[..., None].astype(np.float32)) for _, (x, m) in
                   _prefetched(config, samples, np.random.default_rng(draw), draw * 100_000, with_masks=True))
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=2)
        pred = model.predict(x_val, batch_size=config.batch_size, verbose=0)
        val_loss = float(np.mean(keras.ops.convert_to_numpy(loss(m_val, pred))))
        dice = segmentation_metrics(list((pred >= 0.5)[has_lesion]), list(m_val[has_lesion]))["dice"]
        print(f"whole network epoch {epoch}/{config.epochs_whole}: val_loss={val_loss:.4f} "
              f"val_dice={dice:.4f} (model grid, images with a lesion)", flush=True)
        checkpoints.finish(model, epoch, val_loss)
    checkpoints.load_best(model)
    model.trainable = False
    return keras.Model(encoder.input, encoder.outputs, name=f"{config.id}_encoder"), decoder


def image_logits(model, samples: list[Sample], config: BundleConfig, batch: int = 32) -> np.ndarray:
    """``model`` (image -> logits) over samples loaded and preprocessed as in the product."""
    out = []
    for i in tqdm(range(0, len(samples), batch), desc="validation images", unit="batch"):
        out.append(np.asarray(model.predict_on_batch(model_batch(samples[i : i + batch], config.spec)[0])))
    return np.concatenate(out)
