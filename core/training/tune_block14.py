"""Fine-tune a written brain classifier's top block (Xception block 14) and its Dense on its own split; every layer
below block 14 is kept, and so are block 14's batch norms.

Why: refitting only the Dense (core.training.refit_dense) with the tumour-free contrast-T1 stand-ins left 7 of the 34
validation stand-ins called a tumour: the pooled block-14 features themselves read figshare's contrast-T1 look as
'tumour'. Block 14 works on 7 x 7 maps of block 13's output, so training it on cached block-13 outputs of every
training slice and its mirror image takes minutes on a CPU, and block 13 and below stay as they are: the
segmenter's encoder (its deepest skip is block 13) and the input check's layer (block13_sepconv2_act) do not change.
The recipe (epochs, learning rate) is fixed before the run; the validation split is measured once, afterwards.

    python -m core.training.tune_block14 --version 3.2.0 [--out OUT] [--epochs 3] [--lr 2e-5]

then retrain the yes/no bundle on it, refit the input check, and compare
(``python -m core.training.compare models/brain-mri-tumor-4class OUT/brain-mri-tumor-4class``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from core.training.configs import CACHE_ROOT, REPO
from core.training.refit_dense import (BUNDLE, SEGMENTER, entries_key, mirror_features, point_segmenter, shipped_copy,
                                       write_checked)

BLOCK14 = ("block14_sepconv1", "block14_sepconv1_bn", "block14_sepconv1_act",
           "block14_sepconv2", "block14_sepconv2_bn", "block14_sepconv2_act")
TUNED = ("block14_sepconv1", "block14_sepconv2", "logits")  # the batch norms keep their statistics and scales
TOP = "xception_top"  # the head's nested model: Xception from block 11 up


def split_head(head) -> tuple:
    """(below: the head's input -> block 14's input, top: block 14's input -> logits), sharing the head's layers, so
    that training ``top`` trains the head."""
    import keras

    inner = head.get_layer(TOP)
    below = keras.Model(inner.input, inner.get_layer(BLOCK14[0]).input, name="to_block14")
    x = inputs = keras.Input(shape=(None, None, inner.get_layer(BLOCK14[0]).input.shape[-1]), name="block14_input")
    for name in BLOCK14:
        x = inner.get_layer(name)(x)
    for name in ("gap", "dropout", "logits"):
        x = head.get_layer(name)(x)
    return below, keras.Model(inputs, x, name="from_block14")


def block14_model(folder: Path):
    """Image -> block 14's input, through the whole network of the bundle in ``folder``."""
    import keras

    from core.models.registry import Bundle

    trunk, head = Bundle.from_folder(folder).trunk_and_head()
    below, _ = split_head(head)
    image = keras.Input(shape=(None, None, 3), name="image")
    return keras.Model(image, below(trunk(image)))


def tune(head, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch_size: int = 32, seed: int = 0) -> dict:
    """Train block 14's two separable convolutions and the Dense of ``head`` (in place) on block-14 inputs ``x``
    (float16, converted a batch at a time) and class indices ``y``; returns their new weights by layer name."""
    import keras

    keras.utils.set_random_seed(seed)
    _, top = split_head(head)
    for layer in top.layers:
        layer.trainable = layer.name in TUNED
    top.compile(optimizer=keras.optimizers.Adam(lr),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        losses = [float(top.train_on_batch(x[picks].astype(np.float32), y[picks]))
                  for picks in (order[i:i + batch_size] for i in range(0, len(order), batch_size))]
        print(f"epoch {epoch + 1}/{epochs} loss {np.mean(losses):.4f}", flush=True)
    return {name: top.get_layer(name).get_weights() for name in TUNED}


def main() -> None:
    import keras

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the new version, e.g. 3.2.0")
    parser.add_argument("--out", type=Path, default=REPO / "models", help="models folder to write (default: the repo's)")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training slices and their mirrors")
    parser.add_argument("--lr", type=float, default=2e-5, help="Adam learning rate (default 2e-5)")
    args = parser.parse_args()
    with shipped_copy() as old:
        split = json.loads((old / "split.json").read_text())
        manifest = json.loads((old / "manifest.json").read_text())
        classes = manifest["classes"]
        cache = CACHE_ROOT / BUNDLE / f"block14_{manifest['weights']['sha256'][:12]}_{entries_key(split['train'])}"
        plain, mirrored = mirror_features(lambda: block14_model(old), old, split["train"], cache, np.float16)
        x = np.concatenate([plain, mirrored])
        y = np.tile([classes.index(label) for _, label, _ in split["train"]], 2)
        head = keras.saving.load_model(old / manifest["weights"]["file"], compile=False, safe_mode=True)
        weights = tune(head, x, y, args.epochs, args.lr)
        about = {"what": f"block 14's separable convolutions and the Dense trained {args.epochs} epochs (Adam, lr "
                         f"{args.lr:g}, batch 32, cross-entropy) on cached block-14 inputs of each training image and "
                         "its mirror image; block 14's batch norms and every layer below kept"}
        command = (f"python -m core.training.tune_block14 --version {args.version} --epochs {args.epochs} "
                   f"--lr {args.lr:g}")
        new_sha, changed = write_checked(old, args.out, args.version, weights, split, about, command, "tune_block14",
                                         TUNED)
    if (args.out / SEGMENTER).exists():
        point_segmenter(args.out, manifest["weights"]["sha256"], new_sha, args.version,
                        how="fine-tuned only block 14 and its last layer, so its network through block 13")
    print(f"{args.out / BUNDLE}: version {args.version}, layers changed: {', '.join(changed)}")


if __name__ == "__main__":
    main()
