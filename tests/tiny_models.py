"""Tiny real Keras bundles trained in seconds, so inference and GUI tests run the true code path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.models.storage import save_keras_fp16

SIZE = 64


def planted_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Grey noise images; label 1 carries a bright disc (the 'lesion') at a random place."""
    import cv2

    rng = np.random.default_rng(seed)
    images, labels, centres = [], [], []
    for i in range(n):
        img = rng.normal(60, 12, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
        label = i % 2
        centre = (int(rng.integers(14, SIZE - 14)), int(rng.integers(14, SIZE - 14)))
        if label:
            cv2.circle(img, centre, 7, 230, -1)
        images.append(img)
        labels.append(label)
        centres.append(centre)
    return np.array(images), np.array(labels), centres


def _nested_classifier():
    import keras

    inner_in = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inner_in)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(x)
    backbone = keras.Model(inner_in, x, name="tiny_backbone")
    image = keras.Input((None, None, 3))
    y = keras.layers.GlobalAveragePooling2D()(backbone(image))
    logits = keras.layers.Dense(2, name="logits")(y)
    return keras.Model(image, logits, name="tiny_classifier")


def make_classifier_bundle(root: Path, bundle_id: str = "tiny-mr-classifier", modality: str = "MR",
                           epochs: int = 12) -> Path:
    """Train the nested tiny classifier on planted lesions and write a bundle folder."""
    import keras

    from core.models.preprocessing import PreprocessSpec, preprocess

    keras.utils.set_random_seed(0)
    spec = PreprocessSpec(size=SIZE, color="grey3", crop="none", scale="xception")
    images, labels, _ = planted_images(160)
    x = np.stack([preprocess(img, spec) for img in images])
    model = _nested_classifier()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, labels, epochs=epochs, batch_size=16, verbose=0)
    return _write_bundle(root / bundle_id, model, spec, modality, "classification", title="Tiny test classifier",
                         classes=["clear", "lesion"], decision_threshold=None, calibration={"temperature": 1.0},
                         gradcam_layer="last_conv", validation_metrics={"accuracy": 1.0, "n": 0})


def make_segmenter_bundle(root: Path, bundle_id: str = "tiny-us-segmenter", modality: str = "US") -> Path:
    """A fixed 'segmenter' that marks bright pixels: real Keras layers, no training needed."""
    import keras

    from core.models.preprocessing import PreprocessSpec

    spec = PreprocessSpec(size=SIZE, color="grey3", crop="none", scale="unit")
    image = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid", name="prob")
    out = conv(image)
    model = keras.Model(image, out)
    conv.set_weights([np.full((1, 1, 3, 1), 40.0 / 3, np.float32), np.array([-20.0], np.float32)])
    return _write_bundle(root / bundle_id, model, spec, modality, "segmentation", title="Tiny test segmenter",
                         classes=["lesion"], decision_threshold=0.5, min_lesion_px=4,
                         validation_metrics={"dice": 1.0, "n": 0})


def _write_bundle(folder: Path, model, spec, modality: str, task: str, **fields) -> Path:
    """A bundle folder whose manifest has the registry's required fields plus ``fields``."""
    sha = save_keras_fp16(model, folder / "model.keras")
    manifest = {"id": folder.name, "version": "0.0.1", "modality": modality, "task": task,
                "architecture": {"backbone": "tiny"}, "weights": {"file": "model.keras", "sha256": sha},
                "input_size": [SIZE, SIZE, 3], "preprocessing": spec.to_dict(), **fields}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def make_film_bundle(root: Path, bundle_id: str = "tiny-mg-detector", mark_threshold: float = 0.5,
                     members: bool = False) -> Path:
    """A fixed mammography 'detector' whose tile probability rises with the share of very bright pixels in the
    tile (real Keras layers, no training): p = sigmoid(80 * mean(relu(local mean)) - 3) on xception-scaled input,
    so breast tissue at grey 120 scores 0.05 and a tile holding a white blob scores high. ``members``: its
    architecture names joined detectors, as the shipped one's does, so it is cut at its Grad-CAM layer (a stem)."""
    import keras

    from core.models.mammography import FilmScoring
    from core.models.preprocessing import PreprocessSpec

    spec = PreprocessSpec(size=SIZE, color="grey3", crop="none", scale="xception")
    image = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="last_conv")
    dense = keras.layers.Dense(2, name="logits")
    model = keras.Model(image, dense(keras.layers.GlobalAveragePooling2D()(conv(image))))
    conv.set_weights([np.full((3, 3, 3, 2), 1 / 27, np.float32), np.zeros(2, np.float32)])
    dense.set_weights([np.array([[0.0, 40.0], [0.0, 40.0]], np.float32), np.array([0.0, -3.0], np.float32)])
    scoring = FilmScoring(single_slope=4.0, single_intercept=-2.0, paired_slope=6.0, paired_intercept=-1.0,
                          mark_threshold=mark_threshold)
    folder = _write_bundle(root / bundle_id, model, spec, "MG", "classification", title="Tiny film detector",
                         classes=["normal", "abnormal"], calibration={"temperature": 1.0},
                         gradcam_layer="last_conv", film_scoring=scoring.to_dict(),
                         validation_metrics={"roc_auc": 1.0, "n": 0})
    if members:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["architecture"]["members"] = ["tiny"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder
