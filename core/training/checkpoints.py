"""Epoch checkpoints of one training run: resume after the last finished epoch, keep the best by
validation loss. A run of another recipe (cut, rates, augmentation, training data...) never resumes from them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def data_digest(*arrays: np.ndarray, rows: int = 64) -> str:
    """A short fingerprint of training arrays for a recipe: their shapes and ``rows`` evenly spaced rows of each
    (cheap on memory-mapped feature caches), so that features of another view with the same shape (another stain
    or field option written to the same cache files) do not resume a run made on the old ones."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(repr((array.shape, str(array.dtype))).encode())
        picked = np.linspace(0, len(array) - 1, min(rows, len(array))).astype(int) if len(array) else []
        digest.update(np.ascontiguousarray(np.asarray(array)[picked]).tobytes())
    return digest.hexdigest()[:16]


def samples_digest(*parts) -> str:
    """A short fingerprint of the images a run trains and validates on (each part a list of samples, by path and
    label): a whole-network run on another split or other data does not resume one made on these."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr([(str(s.path), s.label) for s in part]).encode())
    return digest.hexdigest()[:16]


class EpochCheckpoints:
    def __init__(self, work_dir: Path, recipe: dict) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self.last, self.best_file = work_dir / "checkpoint.weights.h5", work_dir / "best.weights.h5"
        self.progress_file = work_dir / "progress.json"
        progress = json.loads(self.progress_file.read_text()) if self.progress_file.exists() else {}
        if progress.get("recipe") != recipe:
            progress = {"epoch": 0, "best": None, "recipe": recipe}
        self.progress = progress

    @property
    def epoch(self) -> int:
        """The last finished epoch (0: none)."""
        return self.progress["epoch"]

    def resume(self, model) -> None:
        """Load the last finished epoch's weights into ``model``, where there is one."""
        if self.epoch:
            model.load_weights(self.last)
            print(f"resuming after epoch {self.epoch}")

    def finish(self, model, epoch: int, val_loss: float | None = None) -> bool:
        """Record a finished epoch; whether its validation loss is the best so far (None: not measured,
        as for a segmenter, which keeps its last epoch)."""
        improved = val_loss is not None and (self.progress["best"] is None or val_loss < self.progress["best"])
        if improved:
            self.progress.update(best=val_loss, best_epoch=epoch)
            model.save_weights(self.best_file)
        model.save_weights(self.last)
        self.progress["epoch"] = epoch
        self.progress_file.write_text(json.dumps(self.progress))
        return improved

    def load_best(self, model) -> None:
        if self.progress["best"] is not None:
            model.load_weights(self.best_file)


def copy_model(model):
    """A copy of ``model`` with its current weights (a start kept apart from training in place)."""
    import keras

    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin
