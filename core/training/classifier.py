"""Classifier bundles: split, cache trunk features, train head then fine-tune the top block, evaluate.

Recipe (as published for ResNet50V2/Xception): frozen ImageNet base + GlobalAveragePooling +
Dropout + Dense; then the top block is unfrozen and trained at lr 1e-4. Because the base below
the top block stays frozen in both phases, its output is cached once (``features.py``) and only
the top block and head run during training - what makes this feasible on a 2-core CPU. On a GPU
the same code runs unchanged, only faster. An optional third phase (``whole_network.py``) then
fine-tunes the whole network on images augmented afresh every epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.training.by_source import record_by_source
from core.training.sources import data_key, source_of
from core.training.checkpoints import EpochCheckpoints
from core.training.configs import CONFIGS, REPO, BundleConfig
from core.training.datasets import READERS, Sample, plan_entry, plan_sample
from core.training.features import cache_features
from core.training.splits import describe, split, split_following


def load_samples(config: BundleConfig) -> list[Sample]:
    samples = READERS[config.reader](config.data_path)
    for s in samples:
        s.label = config.folder_to_class.get(s.label, s.label)
    if config.task != "classification":
        return samples  # segmenters learn from every image, lesion-free ones included
    return [s for s in samples if s.label in config.classes]


def prepare(config: BundleConfig, trunk=None, written_split: dict | None = None) -> dict:
    """Split deterministically and cache trunk features of every view (of ``trunk``, else the config's
    frozen backbone below its top block); resumable."""
    from core.models.backbones import build_backbone, split_backbone

    plan = stored_plan(config, written_split)
    parts = {k: [plan_sample(d) for d in v] for k, v in plan.items()}
    print(f"{config.id}: train {describe(parts['train'])}, validation {describe(parts['val'])}")
    if trunk is None:
        trunk, _ = split_backbone(build_backbone(config.arch, config.backbone_path), config.arch,
                                  config.top_block_start)
    cache_features(parts["val"], config.spec, trunk, config.cache_dir / "val_v0.npy")
    cache_views(config, parts["train"], trunk, config.cache_dir / "train")
    return plan


def cache_views(config: BundleConfig, samples: list[Sample], trunk, stem: Path) -> None:
    """Trunk features of the plain view (``<stem>_v0.npy``) and of each augmented view."""
    cache_features(samples, config.spec, trunk, stem.with_name(f"{stem.name}_v0.npy"))
    for view in range(1, config.augmented_views + 1):
        views = _zoomed(samples, config.zoom_out, np.random.default_rng(config.seed + view))
        cache_features(views, config.spec, trunk, stem.with_name(f"{stem.name}_v{view}.npy"),
                       augmentation=config.augmentation, seed=config.seed + view)


def stored_plan(config: BundleConfig, written_split: dict | None = None) -> dict:
    """The bundle's train/validation entries, split once and kept in its cache (tiles when tiled). With
    ``init_from_written``, the images of the written bundle's split (``written_split``, default the
    repository's ``models/<id>/split.json``) keep their sides."""
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    split_file = config.cache_dir / "split.json"
    if not split_file.exists():
        if config.init_from_written:  # images the written network was validated on stay validation images
            written = written_split or json.loads((REPO / "models" / config.id / "split.json").read_text())
            sides = {entry[0]: part for part in ("train", "val") for entry in written[part]}
            groups = {entry[0]: entry[2] for part in ("train", "val") for entry in written[part]}
            samples = load_samples(config)
            for s in samples:
                s.group = s.group or groups.get(data_key(s.path), "")
            train, val = split_following(samples, sides, lambda s: data_key(s.path), config.val_fraction,
                                         config.seed)
        elif config.split_like:  # the images it shares with that bundle stay on that bundle's side
            other = stored_plan(CONFIGS[config.split_like])
            sides = {d["path"]: part for part in ("train", "val") for d in other[part]}
            train, val = split_following(load_samples(config), sides, lambda s: str(s.path), config.val_fraction,
                                         config.seed)
        else:
            train, val = split(load_samples(config), config.val_fraction, config.seed)
        split_file.write_text(json.dumps({"train": plan_entries(train, config), "val": plan_entries(val, config)},
                                         indent=1))
    return json.loads(split_file.read_text())


def plan_entries(samples: list[Sample], config: BundleConfig) -> list[dict]:
    """Split entries of these samples: one per image, or one per tissue tile when the bundle tiles."""
    return _tiles(samples, config) if config.tiling is not None else [plan_entry(s) for s in samples]


def _tiles(samples: list[Sample], config: BundleConfig) -> list[dict]:
    """One plan entry per tissue tile of each image (tiles inherit the image's label and group)."""
    from core.imaging import load_image
    from core.models.preprocessing import prepare_display
    from core.models.tiling import tile_boxes

    entries = []
    for s in samples:
        display = prepare_display(load_image(s.path).display(0), config.spec)
        for box in tile_boxes(display, config.tiling):
            label = s.label
            if config.tile_labels_from_circles:
                label = config.classes[1] if _touches_circle(box, s.circles) else config.classes[0]
            entries.append({**plan_entry(s), "label": label, "image_label": s.label, "box": list(box),
                            "shape": list(display.shape[:2])})
    return entries


def _touches_circle(box, circles) -> bool:
    """Whether an annotation circle reaches into the tile (closest box point within the radius)."""
    y0, y1, x0, x1 = box
    return any((min(max(c.x, x0), x1) - c.x) ** 2 + (min(max(c.y, y0), y1) - c.y) ** 2 <= c.r**2 for c in circles)


def _zoomed(samples: list[Sample], zoom: tuple[float, float], rng: np.random.Generator) -> list[Sample]:
    """Tiles widened about their centre by a random factor: the same tissue at lower magnification."""
    if zoom == (1.0, 1.0):
        return samples
    out = []
    for s in samples:
        if "box" not in s.extra:
            out.append(s)
            continue
        (y0, y1, x0, x1), (h, w) = s.extra["box"], s.extra["shape"]
        side = min(h, w, int((y1 - y0) * rng.uniform(*zoom)))
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        ny0, nx0 = min(max(0, cy - side // 2), h - side), min(max(0, cx - side // 2), w - side)
        out.append(Sample(s.path, s.label, s.group, extra={"box": [ny0, ny0 + side, nx0, nx0 + side], "shape": [h, w]}))
    return out


def build_head(top, n_classes: int, dropout: float):
    """Features at the top block's input -> class logits: top block, GAP, Dropout, Dense."""
    import keras

    features = keras.Input(shape=(None, None, top.input.shape[-1]), name="trunk_features")
    x = top(features)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    return keras.Model(features, logits, name="head")


def set_trainable(part, trainable: bool) -> None:
    """Unfreeze (or freeze) the convolutions of a backbone part; BatchNorm stays in inference mode.

    Every layer is set explicitly: the backbone file stores its layers frozen, and setting only
    ``part.trainable`` does not reach them in a fresh process (a resumed fine-tune then trained
    nothing but the Dense layer).
    """
    import keras

    part.trainable = trainable
    for layer in part.layers:
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)


def _load_views(config: BundleConfig, part: str, views: int, folder: Path | None = None) -> np.ndarray:
    """Cached views stacked, kept float16 (batches are cast when drawn): half the memory."""
    folder = folder or config.cache_dir
    return np.concatenate([np.load(folder / f"{part}_v{v}.npy", mmap_mode="r") for v in range(views)])


def predict_chunks(model, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``model`` over float16 cached features in float32 chunks: Keras ``predict`` on a whole multi-GB
    array converts it at once (it was OOM-killed at 20 GB on 11.6k brain feature maps)."""
    return np.concatenate([model.predict_on_batch(np.asarray(x[i : i + chunk], np.float32))
                           for i in range(0, len(x), chunk)])


def _class_weights(y: np.ndarray, n: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=n).astype(float)
    return {i: float(len(y) / (n * c)) if c else 0.0 for i, c in enumerate(counts)}


def class_weight_vector(y: np.ndarray, n: int) -> np.ndarray:
    """Inverse class frequencies as a vector: a batch's one-hot (or mixed) labels @ it = sample weights."""
    weights = _class_weights(y, n)
    return np.array([weights[c] for c in range(n)], np.float32)


def _weighted(batches, class_weight: np.ndarray):
    """Attach per-sample weights (inverse class frequency, from the soft labels) to each batch."""
    for xb, yb in batches:
        yield xb, yb, yb @ class_weight


def _batches(x: np.ndarray, y: np.ndarray, batch: int, rng: np.random.Generator, mix: str | None, n: int):
    """Endless shuffled batches with optional MixUp/CutMix on the cached feature maps."""
    from core.training.augment import mix_batch

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
    """Train, calibrate, evaluate and write ``models/<id>/``; resumes from the last epoch checkpoint."""
    if config.feature_bundle and CONFIGS[config.feature_bundle].task == "segmentation":
        from core.training.lesion_pooled import train_on_segmenter

        return train_on_segmenter(config, out_root)
    if config.feature_bundle:
        from core.training.transfer import train_transfer

        return train_transfer(config, out_root)
    from core.training.bundle_writer import write_classifier_bundle
    from core.training.evaluate import fit_temperature, softmax

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
        x_val = _load_views(config, "val", 1)
        head = fit_classifier(config, _load_views(config, "train", views), np.tile(y_images, views), x_val, y_val,
                              config.cache_dir, head=head)
    if config.epochs_whole:
        from core.training.whole_network import finetune_whole

        trunk, head, logits_val = finetune_whole(config, head, [plan_sample(d) for d in plan["train"]], y_images,
                                                 [plan_sample(d) for d in plan["val"]], y_val, trunk, started_from)
    else:
        logits_val = predict_chunks(head, x_val)
    temperature = fit_temperature(logits_val, y_val)
    probs = softmax(logits_val / temperature)
    if config.tiling is not None:
        probs, y_val = _per_image(plan["val"], probs, config)
    folder = write_classifier_bundle(config, head, plan, probs, y_val, temperature, out_root, trunk, started_from)
    if config.tiling is None:  # tiles are not mirrored; whole images are, where validation says so
        from core.training.cam_layer import choose_cam_layer, validation_lesions
        from core.training.mirror import choose_mirror_average

        choose_mirror_average(folder)
        lesions = validation_lesions(plan)
        if lesions:  # the data marks its lesions: the heatmap's layer is chosen by where it points
            choose_cam_layer(folder, lesions)
        if len({source_of(d["path"], d["group"]) for d in plan["val"]}) > 1:
            record_by_source(folder)
    return folder


def written_network(config: BundleConfig, plan: dict | None, out_root: str | Path | None):
    """(trunk, head, what they are) of the written bundle ``models/<id>/`` - for a segmenter (encoder,
    decoder, ...) - where ``--from-written`` starts phase 3, instead of rerunning phases 1-2. Of a snapshot
    ensemble, its newer network: the snapshot it started from drops out. Refused unless it was cut as
    ``config`` and split as ``plan`` (no split check without a plan: ``init_from_written`` trains on new data)."""
    from core.models.registry import Bundle
    from core.training.bundle_writer import same_split

    folder = Path(out_root or REPO / "models") / config.id
    if not (folder / "manifest.json").exists():
        raise ValueError(f"--from-written: {folder} holds no written bundle; train it first")
    bundle = Bundle.from_folder(folder)
    arch = bundle.manifest["architecture"]
    cut_key, cut = ("top_block_start", config.top_block_start)
    if config.task == "segmentation":
        from core.training.segmenter import encoder_layers

        cut_key, cut = "encoder_layers", encoder_layers(config)
    if (arch.get("backbone"), arch.get(cut_key)) != (config.arch, cut):
        raise ValueError(f"--from-written: {folder} is {arch.get('backbone')} cut at {arch.get(cut_key)}, "
                         f"not {config.arch} cut at {cut}")
    if plan is not None and not same_split(folder, plan):
        raise ValueError(f"--from-written: {folder} was not trained on this config's split")
    training = bundle.manifest["training"]
    # Whole-network epochs behind the written weights, its own and those of the bundle it continued.
    whole = training.get("epochs", {}).get("whole", 0) + training.get("started_from", {}).get("whole_epochs", 0)
    started_from = {"version": bundle.manifest["version"], "weights_sha256": bundle.manifest["weights"]["sha256"],
                    "date": training["date"], "whole_epochs": whole}
    if "average_with" in arch:
        started_from["newer_of_ensemble"] = True
    return *bundle.trunk_and_head(), started_from


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

    from core.models.backbones import build_backbone, split_backbone

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
              **({"init_from_written": True} if config.init_from_written else {})}
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


def _per_image(entries: list[dict], probs: np.ndarray, config: BundleConfig) -> tuple[np.ndarray, np.ndarray]:
    """Image-level probabilities by the bundle's documented aggregation, with each image's own label."""
    from core.models.tiling import aggregate

    tiles: dict[str, list[int]] = {}
    for i, d in enumerate(entries):
        tiles.setdefault(d["path"], []).append(i)
    order = sorted(tiles)
    image_probs = np.stack([aggregate(probs[tiles[p]], config.tiling) for p in order])
    labels = np.array([config.classes.index(entries[tiles[p][0]].get("image_label", entries[tiles[p][0]]["label"]))
                       for p in order])
    return image_probs, labels
