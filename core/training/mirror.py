"""Whether a classifier averages each image with its mirror image, decided on its validation split.

An axial brain slice is close to left-right symmetric, so its mirror image is a second look at the
same anatomy; whether other images gain from it is an empirical question. The choice is measured,
not assumed: the written bundle (float16 weights, the product's own preprocessing) runs on every
validation image and its mirror, and the mean logits are kept only where they lower the
temperature-scaled validation log-loss without lowering accuracy. The Analyzer reads the result
from the manifest's ``flip_average``, as it does for segmenters.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.imaging import load_image
from core.models.preprocessing import prepare_display, preprocess
from core.models.registry import Bundle
from core.training.cards import model_card
from core.training.configs import DATA_ROOT
from core.training.evaluate import classification_metrics, classification_plots, fit_temperature, log_loss, softmax


def predict_with_mirror(model, paths: list[Path], spec, mirror: bool = True, batch: int = 16, desc: str = "predict"
                        ) -> tuple[np.ndarray, np.ndarray | None]:
    """(``model`` on each image, on its mirror image or None): images loaded and preprocessed as in the
    product, each batch's images and mirrors in one call."""
    plain, mirrored, pending = [], [], []

    def flush() -> None:
        x = np.stack(pending)
        out = np.asarray(model.predict_on_batch(np.concatenate([x, x[:, :, ::-1]]) if mirror else x))
        plain.append(out[: len(x)])
        mirrored.append(out[len(x):])
        pending.clear()

    for path in tqdm(paths, desc=desc, unit="img"):
        pending.append(preprocess(prepare_display(load_image(path).display(0), spec), spec))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return np.concatenate(plain), np.concatenate(mirrored) if mirror else None


def validation_logits(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits of each validation image, logits of its mirror image, class indices) of a written bundle."""
    bundle = Bundle.from_folder(folder)
    entries = json.loads((folder / "split.json").read_text())["val"]
    plain, mirrored = predict_with_mirror(bundle.load(), [DATA_ROOT / path for path, _, _ in entries], bundle.spec,
                                          desc="mirror check")
    y = np.array([bundle.classes.index(label) for _, label, _ in entries])
    return plain, mirrored, y


def choose_mirror_average(folder: Path, notes: str | None = None) -> bool:
    """Measure both options on validation, record them, and switch the bundle to the better one
    (``notes``: the config's current caveats, for a bundle written before they changed)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest["task"] != "classification":
        raise ValueError(f"{manifest['id']} is a {manifest['task']} bundle; segmenters choose mirroring in their evaluation")
    if manifest.get("tiling"):
        raise ValueError(f"{manifest['id']} classifies tiles; mirror averaging is chosen for whole-image classifiers")
    plain, mirror, y = validation_logits(folder)
    measured = {}
    for option, logits in (("image", plain), ("mean_with_mirror", (plain + mirror) / 2)):
        temperature = fit_temperature(logits, y)
        probs = softmax(logits / temperature)
        measured[option] = {"temperature": temperature, "probs": probs,
                            "log_loss": log_loss(probs, y),
                            "accuracy": float((probs.argmax(axis=1) == y).mean())}
    single, mean = measured["image"], measured["mean_with_mirror"]
    chosen = mean["log_loss"] < single["log_loss"] and mean["accuracy"] >= single["accuracy"]
    manifest["flip_average"] = chosen
    manifest["mirror_selection"] = {k: {m: v[m] for m in ("log_loss", "accuracy", "temperature")}
                                    for k, v in measured.items()}
    if chosen:
        manifest["calibration"]["temperature"] = mean["temperature"]
        manifest["validation_metrics"] = classification_metrics(mean["probs"], y, manifest["classes"])
        manifest["plots"] = classification_plots(mean["probs"], y, manifest["classes"], folder)
    if notes is not None:
        manifest["notes"] = notes
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "model_card.md").write_text(model_card(manifest))
    return chosen
