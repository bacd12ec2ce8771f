"""Frozen-trunk feature caching: the CPU route to fine-tuning a backbone's top block.

The trunk (everything below the top block) is frozen in the recipe, so its output is computed
once per image and view and stored; training then runs only the top block and the head. Writing
is incremental, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.imaging import load_image
from core.models.preprocessing import PreprocessSpec, scale_pixels, to_model_pixels
from core.training.augment import build_augmentation
from core.training.datasets import Sample


def model_pixels(sample: Sample, spec: PreprocessSpec) -> np.ndarray:
    """The uint8 model pixels of a sample, through the same loader and preprocessing as inference."""
    return to_model_pixels(load_image(sample.path).display(0), spec)


def cache_features(
    samples: list[Sample],
    spec: PreprocessSpec,
    trunk,
    out: Path,
    augmentation: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> np.ndarray:
    """Trunk features (N, h, w, C) as a float16 memmap at ``out`` (.npy), resumable."""
    out = Path(out)
    state_file = out.with_suffix(".json")
    state = json.loads(state_file.read_text()) if state_file.exists() else {"done": 0}
    probe = trunk.predict(np.zeros((1, spec.size, spec.size, 3), np.float32), verbose=0)
    shape = (len(samples),) + probe.shape[1:]
    if state["done"] and out.exists():
        features = np.load(out, mmap_mode="r+")
        if features.shape != shape:
            raise ValueError(f"{out} holds {features.shape}, expected {shape}: delete it to rebuild")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        features = np.lib.format.open_memmap(out, mode="w+", dtype=np.float16, shape=shape)
        state = {"done": 0}
    augment = build_augmentation(augmentation, seed=seed)
    start = state["done"]
    with tqdm(total=len(samples), initial=start, desc=f"features {out.stem}", unit="img") as bar:
        for begin in range(start, len(samples), batch_size):
            chunk = samples[begin : begin + batch_size]
            pixels = [model_pixels(s, spec) for s in chunk]
            if augment is not None:
                pixels = [augment(image=p)["image"] for p in pixels]
            batch = np.stack([scale_pixels(p, spec) for p in pixels])
            features[begin : begin + len(chunk)] = trunk.predict(batch, verbose=0).astype(np.float16)
            features.flush()
            state["done"] = begin + len(chunk)
            state_file.write_text(json.dumps(state))
            bar.update(len(chunk))
    return np.load(out, mmap_mode="r")
