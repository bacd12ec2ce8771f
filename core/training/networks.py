"""Network helpers every trainer shares: freezing a backbone part, class weights, chunked prediction over
cached features, a segmenter's encoder cut, and the written network a run continues (``--from-written``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.models.backbones import SKIP_LAYERS
from core.models.registry import Bundle
from core.training.configs import REPO, BundleConfig
from core.training.plan import same_split


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


def predict_chunks(model, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``model`` over float16 cached features in float32 chunks: Keras ``predict`` on a whole multi-GB
    array converts it at once (it was OOM-killed at 20 GB on 11.6k brain feature maps)."""
    return np.concatenate([model.predict_on_batch(np.asarray(x[i : i + chunk], np.float32))
                           for i in range(0, len(x), chunk)])


def class_weights(y: np.ndarray, n: int) -> dict[int, float]:
    """Inverse class frequencies by class index (0 for a class without images)."""
    counts = np.bincount(y, minlength=n).astype(float)
    return {i: float(len(y) / (n * c)) if c else 0.0 for i, c in enumerate(counts)}


def class_weight_vector(y: np.ndarray, n: int) -> np.ndarray:
    """Inverse class frequencies as a vector: a batch's one-hot (or mixed) labels @ it = sample weights."""
    weights = class_weights(y, n)
    return np.array([weights[c] for c in range(n)], np.float32)


def encoder_layers(config: BundleConfig) -> list[str]:
    """The frozen encoder's outputs: the skips, the deepest one replaced by the fine-tuned part's input."""
    skips = SKIP_LAYERS[config.arch]
    return skips if config.top_from is None else skips[:-1] + [f"{config.top_from}:input"]


def written_network(config: BundleConfig, plan: dict | None, out_root: str | Path | None):
    """(trunk, head, what they are) of the written bundle ``models/<id>/`` - for a segmenter (encoder,
    decoder, ...) - where ``--from-written`` starts phase 3, instead of rerunning phases 1-2. Of a snapshot
    ensemble, its newer network: the snapshot it started from drops out. Refused unless it was cut as
    ``config`` and split as ``plan`` (no split check without a plan: ``init_from_written`` trains on new data)."""
    folder = Path(out_root or REPO / "models") / config.id
    if not (folder / "manifest.json").exists():
        raise ValueError(f"--from-written: {folder} holds no written bundle; train it first")
    bundle = Bundle.from_folder(folder)
    arch = bundle.manifest["architecture"]
    cut_key, cut = ("top_block_start", config.top_block_start)
    if config.task == "segmentation":
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
