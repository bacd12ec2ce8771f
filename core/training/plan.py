"""A bundle's split and its cached views: the train/validation entries (split once, kept in the cache and
in the written bundle's ``split.json``), the trunk features of each view, and tile results per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.imaging import load_image
from core.models.preprocessing import prepare_display
from core.models.tiling import aggregate, tile_boxes
from core.training.configs import CONFIGS, REPO, BundleConfig
from core.training.datasets import READERS, Sample, plan_entry
from core.training.features import cache_features
from core.training.sources import data_key
from core.training.splits import split, split_following


def load_samples(config: BundleConfig) -> list[Sample]:
    samples = READERS[config.reader](config.data_path)
    for s in samples:
        s.label = config.folder_to_class.get(s.label, s.label)
    if config.task != "classification":
        return samples  # segmenters learn from every image, lesion-free ones included
    return [s for s in samples if s.label in config.classes]


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
    entries = []
    for s in samples:
        display = prepare_display(load_image(s.path).display(0), config.spec)
        for box in tile_boxes(display, config.tiling):
            entries.append({**plan_entry(s), "label": s.label, "image_label": s.label, "box": list(box),
                            "shape": list(display.shape[:2])})
    return entries


def split_entries(plan: dict) -> dict:
    """What ``split.json`` holds: per part, [data path relative to the shared data, label, group]."""
    return {part: [[data_key(d["path"]), d["label"], d["group"]] for d in plan[part]] for part in plan}


def same_split(folder: Path, plan: dict) -> bool:
    """Whether the bundle written in ``folder`` was trained and validated on ``plan``'s split."""
    stored = folder / "split.json"
    return stored.exists() and json.loads(stored.read_text()) == split_entries(plan)


def cache_views(config: BundleConfig, samples: list[Sample], trunk, stem: Path) -> None:
    """Trunk features of the plain view (``<stem>_v0.npy``) and of each augmented view."""
    cache_features(samples, config.spec, trunk, stem.with_name(f"{stem.name}_v0.npy"))
    for view in range(1, config.augmented_views + 1):
        views = _zoomed(samples, config.zoom_out, np.random.default_rng(config.seed + view))
        cache_features(views, config.spec, trunk, stem.with_name(f"{stem.name}_v{view}.npy"),
                       augmentation=config.augmentation, seed=config.seed + view)


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


def load_views(config: BundleConfig, part: str, views: int, folder: Path | None = None) -> np.ndarray:
    """Cached views stacked, kept float16 (batches are cast when drawn): half the memory."""
    folder = folder or config.cache_dir
    return np.concatenate([np.load(folder / f"{part}_v{v}.npy", mmap_mode="r") for v in range(views)])


def per_image(entries: list[dict], probs: np.ndarray, config: BundleConfig) -> tuple[np.ndarray, np.ndarray]:
    """Image-level probabilities by the bundle's documented aggregation, with each image's own label."""
    tiles: dict[str, list[int]] = {}
    for i, d in enumerate(entries):
        tiles.setdefault(d["path"], []).append(i)
    order = sorted(tiles)
    image_probs = np.stack([aggregate(probs[tiles[p]], config.tiling) for p in order])
    labels = np.array([config.classes.index(entries[tiles[p][0]].get("image_label", entries[tiles[p][0]]["label"]))
                       for p in order])
    return image_probs, labels
