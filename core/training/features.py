"""Frozen-trunk feature caching: the CPU route to fine-tuning a backbone's top block.

The trunk (everything below the top block) is frozen in the recipe, so its output is computed
once per image and view and stored; training then runs only the top block and the head. Writing
is incremental, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.imaging import load_image
from core.models.preprocessing import PreprocessSpec, prepare_display, scale_pixels, to_model_mask, to_model_pixels
from core.training.augment import build_augmentation
from core.training.datasets import Sample, circles_mask


def sample_mask(sample: Sample, shape: tuple[int, int]) -> np.ndarray:
    """The sample's lesion mask (0/1) at display resolution: a mask file, annotation circles, or empty."""
    if sample.mask_path is not None:
        mask = load_image(sample.mask_path).display(0)
        mask = mask if mask.ndim == 2 else mask.max(axis=2)
        return (mask > 127).astype(np.uint8)
    return circles_mask(shape, sample.circles)


def model_inputs(sample: Sample, spec: PreprocessSpec, with_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 model pixels (and mask) of a sample, through the same loader and preprocessing as inference.

    A tile sample carries its box (y0, y1, x0, x1) in ``extra["box"]``.
    """
    display = _prepared_display(str(sample.path), spec)
    mask = sample_mask(sample, display.shape[:2]) if with_mask else None  # whole-image coordinates
    if "box" in sample.extra:
        y0, y1, x0, x1 = sample.extra["box"]
        display = display[y0:y1, x0:x1]
        mask = None if mask is None else mask[y0:y1, x0:x1]
    pixels = to_model_pixels(display, spec)
    return pixels, None if mask is None else to_model_mask(mask, display, spec)


@lru_cache(maxsize=4)
def _prepared_display(path: str, spec: PreprocessSpec) -> np.ndarray:
    """Loaded and stain-normalised once per image, not once per tile (tiles of an image come together)."""
    return prepare_display(load_image(path).display(0), spec)


def _open_outputs(out: Path, shapes: list[tuple], resume: bool, dtype=np.float16) -> list[np.ndarray]:
    paths = [out] if len(shapes) == 1 else [out.with_name(f"{out.stem}_{i}.npy") for i in range(len(shapes))]
    arrays = []
    for path, shape in zip(paths, shapes):
        if resume and path.exists():
            array = np.load(path, mmap_mode="r+")
            if array.shape != shape:
                raise ValueError(f"{path} holds {array.shape}, expected {shape}: delete it to rebuild")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        arrays.append(array)
    return arrays


def cache_features(
    samples: list[Sample],
    spec: PreprocessSpec,
    trunk,
    out: Path,
    augmentation: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
    with_masks: bool = False,
) -> None:
    """Frozen-model outputs for every sample as float16 memmaps, resumable.

    One output goes to ``out``; several go to ``<stem>_<i>.npy``; masks (uint8, model grid) to
    ``<stem>_mask.npy``. Augmentation is applied to image and mask together.
    """
    out = Path(out)
    state_file = out.with_suffix(".json")
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    look = spec.to_dict()
    # Features of another trunk cut or input (or none yet): start over. A cache from before the input was recorded
    # is taken as the config's.
    if state.get("trunk") != trunk.name or state.get("spec", look) != look:
        state = {"done": 0, "trunk": trunk.name, "spec": look}
    probe = trunk.predict(np.zeros((1, spec.size, spec.size, 3), np.float32), verbose=0)
    probe = probe if isinstance(probe, list) else [probe]
    shapes = [(len(samples),) + p.shape[1:] for p in probe]
    arrays = _open_outputs(out, shapes, resume=state["done"] > 0)
    masks = _open_outputs(out.with_name(f"{out.stem}_mask.npy"), [(len(samples), spec.size, spec.size)],
                          resume=state["done"] > 0, dtype=np.uint8)[0] if with_masks else None
    augment = build_augmentation(augmentation, seed=seed)
    start = state["done"]
    with tqdm(total=len(samples), initial=start, desc=f"features {out.stem}", unit="img") as bar:
        for begin in range(start, len(samples), batch_size):
            chunk = samples[begin : begin + batch_size]
            batch, chunk_masks = model_batch(chunk, spec, augment, with_masks)
            outputs = trunk.predict(batch, verbose=0)
            for array, values in zip(arrays, outputs if isinstance(outputs, list) else [outputs]):
                array[begin : begin + len(chunk)] = values.astype(np.float16)
                array.flush()
            if masks is not None:
                masks[begin : begin + len(chunk)] = chunk_masks
                masks.flush()
            state["done"] = begin + len(chunk)
            state_file.write_text(json.dumps(state))
            bar.update(len(chunk))


def model_batch(samples: list[Sample], spec: PreprocessSpec, augment=None, with_masks: bool = False
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Scaled model inputs of samples (and their uint8 masks), augmented where ``augment`` is given:
    what cached features and whole-network training both feed the network."""
    pairs = [model_inputs(s, spec, with_masks) for s in samples]
    if augment is not None:
        pairs = [_augmented(augment, p, m) for p, m in pairs]
    batch = np.stack([scale_pixels(p, spec) for p, _ in pairs])
    return batch, np.stack([m for _, m in pairs]) if with_masks else None


def _augmented(augment, pixels: np.ndarray, mask: np.ndarray | None):
    if mask is None:
        return augment(image=pixels)["image"], None
    out = augment(image=pixels, mask=mask)
    return out["image"], out["mask"]
