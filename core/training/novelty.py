"""Fit a classifier bundle's novelty reference (core.models.novelty) and measure what it flags.

The features are the product's own: each image of the bundle's split read by the loader, cut and normalised by the
bundle's preprocessing and passed through its stem by its analysis path (``AnalysisPath.features``), on TensorFlow
(ONNX Runtime gives the same shares within 0.006). Class means and one shrunk covariance (Ledoit-Wolf) come from the
training images; the validation images (patients the model never saw) give the reference distances a picture is
ranked among. A tiled classifier reads a picture as its tissue tiles' features averaged (``TileRead.features``),
each training picture at the scale it was trained at (its data set's, ``Sample.extra["um"]``) and counted once
however many of its tiles the split names. A film detector (trained on every mini-MIAS film, no validation split)
reads a film as its breast tiles' features averaged (``FilmRead.features``); its reference distances are out of
fold: each film measured against a reference fitted on the other folds' women (the detector's own 5 folds,
StratifiedGroupKFold by woman, seed 0, while every film is read: all 258 were), the means and covariance shipped
from every film.
Pictures from elsewhere (``--check NAME=FOLDER``: another modality, a tumour-free template, other scanners) are
ranked too, and the share flagged is written to the manifest's ``novelty_checks``.

``python -m core.training.novelty models/<id> [--flag-above 0.99] [--leave-out SOURCE ...] [--check NAME=FOLDER ...]``
``python -m core.training.novelty models/<id> --same-as models/<other>`` (a bundle on ``other``'s stem)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
import zipfile
import random
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.batch.discover import discover_images
from core.errors import DiagnosticError
from core.imaging.loader import load_image
from core.inference.paths import FilmPath, StemRows, TiledClassifierPath, build_path, load_network
from core.models.novelty import NoveltyReference
from core.models.preprocessing import ModelInputs
from core.models.registry import Registry
from core.models.storage import sha256_file
from core.training.cards import with_novelty_section
from core.training.configs import CONFIGS, DATA_ROOT
from core.training.sources import subsets

FILE = "novelty.npz"
CACHE_FORMAT = 1  # raise when how a picture's features are read changes: cached features are then read again
SAVE_EVERY_S = 60.0  # a long read saves what it has read this often (a run killed part-way keeps it)
FILMS_FITTED = "every mini-MIAS film"  # a film detector's reference: its training films, ranked out of fold


class FeatureCache:
    """Features already read, by file (path, modification time, size, the scale it was read at), for one bundle's
    stem and reading: a film detector reads a film in seconds, a tiled classifier a microscopy image, and a refit or
    another check should not read them all again. Kept in ``MIDA_NOVELTY_CACHE`` (default ~/.cache/mida/novelty); a
    file read and found without features (a film with no breast tile, a file that cannot be read) is remembered as
    such. Keyed by the stem (the network's files and cut), the bundle, its preprocessing, film reading and tiling,
    and ``CACHE_FORMAT``; a cache file that cannot be read is started afresh."""

    def __init__(self, path, bundle) -> None:
        root = Path(os.environ.get("MIDA_NOVELTY_CACHE", Path.home() / ".cache" / "mida" / "novelty"))
        scoring, tiling = bundle.info.film_scoring, bundle.info.tiling
        key = json.dumps([CACHE_FORMAT, path.network.stages.key, bundle.id, bundle.version,
                          bundle.info.preprocessing.to_dict(), scoring.to_dict() if scoring else None]
                         + ([tiling.to_dict()] if tiling else []))  # the caches of untiled bundles keep their names
        self.file = root / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
        self.rows: dict[str, np.ndarray | None] = {}
        self.saved = time.monotonic()
        try:
            with np.load(self.file) as data:
                self.rows = {str(k): (None if np.isnan(row).all() else row)
                             for k, row in zip(data["keys"], data["rows"])}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # cut short, or another layout
            self.rows = {}

    @staticmethod
    def key(file: Path, um: tuple[float, float] | None = None) -> str:
        stat = Path(file).stat()
        return f"{Path(file).resolve()}|{stat.st_mtime_ns}|{stat.st_size}" + (f"|{um[0]:g}x{um[1]:g}" if um else "")

    def save(self) -> None:
        if not self.rows:
            return
        width = next((len(r) for r in self.rows.values() if r is not None), 1)
        rows = np.stack([np.full(width, np.nan) if r is None else r for r in self.rows.values()])
        self.file.parent.mkdir(parents=True, exist_ok=True)
        part = self.file.with_suffix(".part.npz")  # replaced whole: a run killed while saving leaves the last save
        np.savez(part, keys=np.array(list(self.rows)), rows=rows)
        os.replace(part, self.file)
        self.saved = time.monotonic()


def image_features(path, files: list[Path], desc: str, cache: FeatureCache | None = None,
                   scales: dict[str, tuple[float, float]] | None = None) -> tuple[np.ndarray, list[int]]:
    """(features, indices of ``files`` read) through the analysis ``path``: every frame 0 as the Analyzer reads it
    (a film detector: its film reading's; a tiled classifier: its tiles', at the file's micrometres per pixel (y, x)
    in ``scales`` where named there, as if the file stated it); a file that cannot be read, or a film with no breast
    tile, is left out (its index missing)."""
    rows, kept = [], []
    for i, file in enumerate(tqdm(files, desc=desc, unit="img", mininterval=30)):
        um = (scales or {}).get(str(file))
        try:
            key = FeatureCache.key(file, um) if cache is not None else None
        except OSError:
            continue
        if key is None or key not in cache.rows:
            found = _read_features(path, file, um)
            if cache is not None:
                cache.rows[key] = found
        else:
            found = cache.rows[key]
        if found is not None:
            rows.append(found)
            kept.append(i)
        if cache is not None and time.monotonic() - cache.saved > SAVE_EVERY_S:
            cache.save()
    if cache is not None:
        cache.save()
    return np.array(rows), kept


def _read_features(path, file: Path, um: tuple[float, float] | None = None) -> np.ndarray | None:
    """One picture's (D,) features through ``path``, None where it cannot be read or a film has no breast tile;
    ``um``: a tiled classifier's picture's scale (micrometres per file pixel, y and x)."""
    try:
        record = load_image(file)
        if isinstance(path, (FilmPath, TiledClassifierPath)):
            if um is not None:  # the loaded picture's spacing, as a file that states its scale gives it
                record.pixel_spacing_mm = (um[0] * record.downsample / 1000, um[1] * record.downsample / 1000)
            found = path.read(record.display(0), record).features
            return None if found is None else found[0]
        x, _, _ = ModelInputs(record.display(0), record.row_to_column()).made(path.spec)
        return path.features(x[None])[0]
    except (DiagnosticError, OSError, ValueError):
        return None


# With fewer pictures than half the features (a film detector: 258 films, 4,096 features), the leading directions of
# the shrunk covariance kept, the others as one variance. Chosen once on the film detector's features, ranked nested
# out of fold (new films of its own source among a reference fitted on the other folds' women, each of its distances
# out of fold too): flagged at 0.99 1.2 % of films with 32 directions, median share 0.48 (4-128 directions
# 0.8-1.6 %, 0.48-0.49; all 256 the films span 1.9 %, 0.57, their in-sample distances being the smallest). A reference
# ranked among a validation split that the fit never saw has no such bias and keeps every direction its pictures span
# (``directions=None``): the histology classifier's (334 pictures, 2,048 features) flags mini-MIAS films 100 % with
# them, 46 % with 32, its validation and leave-one-lab-out rows unchanged. (Every spanned direction is the full shrunk
# covariance, exactly: the ultrasound reference fitted without BUS-BRA, 492 pictures of 1,024 features, fitted again
# gives the row it shipped with before the low-rank form existed, to the last digit; with 32 it would have changed.)
FEW_PICTURES_DIRECTIONS = 32


def fit(train: np.ndarray, labels: np.ndarray, validation: np.ndarray, layer: str, stem: str,
        directions: int | None = FEW_PICTURES_DIRECTIONS) -> NoveltyReference:
    """Class means of ``train`` (by ``labels``), the within-class covariance shrunk by Ledoit-Wolf, whitened by its
    eigen-decomposition; the validation features' distances as the reference. With fewer training pictures than half
    the features, only the ``directions`` leading directions (None: every one the pictures span) are kept and the
    others' mean variance as the reference's ``residual`` (from the pictures' singular values: no D x D matrix is
    formed)."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(axis=0) for c in classes])
    centred = train - means[np.searchsorted(classes, labels)]
    n, d = centred.shape
    # Ledoit-Wolf: (1 - a) S + a mu I, S the scatter over n, mu its mean eigenvalue (sklearn's LedoitWolf covariance_)
    shrinkage, mu = ledoit_wolf_shrinkage(centred, assume_centered=True), float((centred ** 2).sum() / (n * d))
    variances, residual = None, None
    if n - len(classes) < d // 2:
        _, singular, rows = np.linalg.svd(centred / np.sqrt(n), full_matrices=False)
        scatter = singular ** 2
        k = len(scatter) if directions is None else min(directions, len(scatter))
        values = variances = (1 - shrinkage) * scatter[:k] + shrinkage * mu
        residual = float(((1 - shrinkage) * scatter[k:].sum() + shrinkage * mu * (d - k)) / (d - k))
        vectors = rows[:k].T
    else:
        covariance = (1 - shrinkage) * (centred.T @ centred / n) + shrinkage * mu * np.eye(d)
        values, vectors = np.linalg.eigh(covariance)
        values = np.maximum(values, values.max() * 1e-9)
    whiten = vectors / np.sqrt(values)
    partial = NoveltyReference(means, whiten, np.zeros(1), layer, stem, variances, residual)
    return dataclasses.replace(partial, reference=np.sort(partial.distances(validation)))


def fit_out_of_fold(features: np.ndarray, labels: np.ndarray, groups: list[str], layer: str, stem: str,
                    folds: int = 5) -> NoveltyReference:
    """A reference of every picture's class means and covariance whose reference distances are each picture's from
    a reference fitted without its group's fold: for a bundle trained on all its pictures, which has no validation
    images to rank new ones among."""
    from sklearn.model_selection import StratifiedGroupKFold

    distances = np.empty(len(features))
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(features, labels, groups):
        part = fit(features[train], labels[train], features[test][:1], layer, stem)
        distances[test] = part.distances(features[test])
    whole = fit(features, labels, features[:1], layer, stem)
    return dataclasses.replace(whole, reference=np.sort(distances))


def summary(share: np.ndarray, flag_above: float) -> dict:
    """What the manifest records of pictures' shares: how many, the share flagged, the median."""
    return {"images": len(share), "flagged": float((share > flag_above).mean()) if len(share) else None,
            "median_share_closer": float(np.median(share)) if len(share) else None}


def ranked(found: np.ndarray, reference: NoveltyReference, flag_above: float) -> dict:
    """``summary`` of the pictures ``found`` (N, D) ranked by ``reference``."""
    return summary(reference.share_closer(reference.distances(found)) if len(found) else np.zeros(0), flag_above)


def _record(folder: Path, flag_above: float, checks: dict) -> None:
    """The reference file's entry and its measurements in the bundle's manifest, and its card's section."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["novelty"] = {"file": FILE, "sha256": sha256_file(folder / FILE), "flag_above": flag_above}
    manifest["novelty_checks"] = checks
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    card = folder / "model_card.md"
    if card.exists():
        card.write_text(with_novelty_section(card.read_text(), manifest))


def folder_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` as a batch finds them, masks (by their name) left out."""
    return [p for p in discover_images(folder) if "mask" not in p.name.lower()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.training.novelty", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the bundle's folder (its split.json names the images; a film "
                        "detector reads every mini-MIAS film)")
    parser.add_argument("--flag-above", type=float, default=0.99, help="share of held-out pictures (validation "
                        "images; a film detector's films, out of fold) closer above which a picture is flagged "
                        "(default 0.99)")
    parser.add_argument("--check", action="append", default=[], metavar="NAME=FOLDER",
                        help="images from elsewhere to rank (recorded in the manifest)")
    parser.add_argument("--check-sample", type=int, default=200, help="at most this many images of each --check "
                        "folder, drawn at random with a fixed seed (default 200)")
    parser.add_argument("--leave-out", action="append", default=[], metavar="SOURCE",
                        help="also fit without this source's images (core.training.sources: lgg, busbra, ...) and "
                        "rank its validation images: how often a source the reference never saw is flagged")
    parser.add_argument("--same-as", type=Path, metavar="FOLDER", help="take the reference and its measurements "
                        "from this bundle, whose network's stem this bundle runs on (the yes/no model and the brain "
                        "segmenter on the 4-class network, the ultrasound classifier on the ultrasound segmenter's "
                        "encoder): the same features, so the same reference")
    args = parser.parse_args(argv)
    folder = args.bundle.resolve()
    registry = Registry([folder.parent])
    bundle = registry.get(folder.name)
    # On TensorFlow, as training runs (the stem key is then the network's and its cut; an export's adds its outputs),
    # and without the bundle's present reference, which a retrained network refuses.
    path = build_path(bundle.info, load_network(bundle, StemRows(), None))
    stages = path.network.stages
    if stages.stem is None:
        parser.error(f"{bundle.id}: a novelty reference reads a picture's (a film's, its tiles') features from a "
                     "network's stem")
    if bundle.task != "classification" and not args.same_as:
        parser.error(f"{bundle.id}: a segmenter takes the reference of the classifier it shares a stem with (--same-as)")
    if args.same_as:
        other = json.loads((args.same_as / "manifest.json").read_text())
        reference = NoveltyReference.from_file(args.same_as / other["novelty"]["file"])
        if reference.stem != stages.key:
            parser.error(f"{args.same_as.name}'s reference is of the stem {reference.stem}, {bundle.id} runs on "
                         f"{stages.key}")
        (folder / FILE).write_bytes((args.same_as / other["novelty"]["file"]).read_bytes())
        _record(folder, other["novelty"]["flag_above"], other["novelty_checks"])
        print(f"{bundle.id}: the novelty reference of {args.same_as.name} (same stem: {stages.key})")
        return 0
    if args.leave_out and bundle.info.film_scoring is not None:  # refused before anything is read or written
        parser.error("--leave-out: a film detector's reference has one source")
    cache = FeatureCache(path, bundle)
    reference, checks = (_film_reference(path, bundle, args.flag_above, cache) if bundle.info.film_scoring is not None
                         else _split_reference(path, bundle, folder, args, cache, parser))
    for item in args.check:
        name, _, where = item.partition("=")
        files = folder_files(Path(where))
        random.Random(0).shuffle(files)
        sample = sorted(files[:args.check_sample])
        found, _ = image_features(path, sample, name, cache)
        checks[name] = {**ranked(found, reference, args.flag_above),
                        **({"not read": len(sample) - len(found)} if len(found) < len(sample) else {})}
    (folder / FILE).write_bytes(reference.to_bytes())  # once every measurement is made: a refusal writes nothing
    _record(folder, args.flag_above, checks)
    print(f"{bundle.id}: novelty reference ({reference.dimensions} features of {reference.layer})")
    for name, numbers in checks.items():
        if isinstance(numbers, dict):
            print(f"{name}: {numbers['images']} images, flagged {numbers['flagged']}, median share closer "
                  f"{numbers['median_share_closer']}")
    return 0


def _split_reference(path, bundle, folder: Path, args: argparse.Namespace, cache: FeatureCache,
                     parser: argparse.ArgumentParser) -> tuple[NoveltyReference, dict]:
    """A bundle's reference fitted on its split.json's training images, ranked among its validation images, with
    the validation images per source and each ``--leave-out`` source ranked against a reference fitted without it."""
    stages = path.network.stages
    split = json.loads((folder / "split.json").read_text())
    scales = _scales(bundle.id) if bundle.info.tiling else {}
    unscaled = _unscaled(bundle, split, scales)
    if unscaled:
        print(f"{bundle.id}: {unscaled} pictures of the split have no scale in their data set: read at the "
              f"{bundle.info.tiling.assumed_microns_per_pixel or bundle.info.tiling.microns_per_pixel} um per pixel "
              "the analysis assumes")
    features, labels, entries = {}, {}, {}
    for part in ("train", "val"):
        rows = list({p: [p, label, group] for p, label, group in split[part]}.values())  # a tiled split names tiles
        features[part], kept = image_features(path, [DATA_ROOT / p for p, _, _ in rows], f"{bundle.id} {part}",
                                              cache, scales)
        entries[part] = [rows[i] for i in kept]
        labels[part] = np.array([bundle.classes.index(label) for _, label, _ in entries[part]])
    # ranked among validation pictures the fit never saw: every direction the training pictures span is kept
    reference = fit(features["train"], labels["train"], features["val"], stages.cam, stages.key, directions=None)
    checks = {"fitted on": f"{folder.name}/split.json", "layer": reference.layer, "features": reference.dimensions,
              "training": ranked(features["train"], reference, args.flag_above),
              "validation": ranked(features["val"], reference, args.flag_above)}
    by_source = {part: subsets(entries[part]) for part in ("train", "val")}
    checks.update({f"validation {name}": ranked(features["val"][idx], reference, args.flag_above)
                   for name, idx in by_source["val"].items()})
    for name in args.leave_out:
        if name not in by_source["val"]:
            parser.error(f"--leave-out {name}: no validation image of that source ({', '.join(by_source['val'])})")
        kept = {part: np.setdiff1d(np.arange(len(entries[part])), by_source[part].get(name, [])) for part in features}
        without = fit(features["train"][kept["train"]], labels["train"][kept["train"]], features["val"][kept["val"]],
                      stages.cam, stages.key, directions=None)
        checks[f"validation {name}, fitted without {name}"] = ranked(features["val"][by_source["val"][name]], without,
                                                                     args.flag_above)
    return reference, checks


def _scales(bundle_id: str) -> dict[str, tuple[float, float]]:
    """Micrometres per pixel (y, x) of each training picture whose data set states one, by path (a tiled bundle's
    data set reader puts it in ``Sample.extra["um"]``); none for a bundle without a training config."""
    from core.training.datasets import READERS

    config = CONFIGS.get(bundle_id)
    if config is None:
        return {}
    return {str(s.path): tuple(s.extra["um"]) for s in READERS[config.reader](config.data_path) if "um" in s.extra}


def _unscaled(bundle, split: dict, scales: dict[str, tuple[float, float]]) -> int:
    """How many of the split's pictures a tiled bundle with a physical scale would read at the scale it assumes, as
    their data set states none (or its files now lie elsewhere than the split says): said, since the reference then
    describes pictures at another scale than training saw."""
    if not (bundle.info.tiling and bundle.info.tiling.microns_per_pixel):
        return 0
    return len({p for rows in split.values() for p, _, _ in rows if str(DATA_ROOT / p) not in scales})


def _film_reference(path: FilmPath, bundle, flag_above: float, cache: FeatureCache) -> tuple[NoveltyReference, dict]:
    """A film detector's reference over every mini-MIAS film (its training films), ranked out of fold."""
    from core.training.datasets import mini_mias

    samples = mini_mias(DATA_ROOT / "mini_mias")
    features, kept = image_features(path, [s.path for s in samples], f"{bundle.id} films", cache)
    samples = [samples[i] for i in kept]
    labels = np.array([bundle.classes.index(s.label) for s in samples])
    stages = path.network.stages
    reference = fit_out_of_fold(features, labels, [s.group for s in samples], stages.cam, stages.key)

    return reference, {
        "fitted on": f"{FILMS_FITTED} (out of fold)", "layer": reference.layer, "features": reference.dimensions,
        "training": ranked(features, reference, flag_above),
        "validation (out of fold)": summary(reference.share_closer(reference.reference), flag_above)}


if __name__ == "__main__":
    raise SystemExit(main())
