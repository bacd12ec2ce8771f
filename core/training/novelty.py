"""Fit a classifier bundle's novelty reference (core.models.novelty) and measure what it flags.

The features are the product's own: each image of the bundle's split read by the loader, cut and normalised by the
bundle's preprocessing and passed through its stem by its analysis path (``AnalysisPath.features``), on TensorFlow
(ONNX Runtime gives the same shares within 0.006). Class means and one shrunk covariance (Ledoit-Wolf) come from the training images;
the validation images (patients the model never saw) give the reference distances a picture is ranked among.
Pictures from elsewhere (``--check NAME=FOLDER``: another modality, a tumour-free template, other scanners) are
ranked too, and the share flagged is written to the manifest's ``novelty_checks``.

``python -m core.training.novelty models/<id> [--flag-above 0.99] [--leave-out SOURCE ...] [--check NAME=FOLDER ...]``
``python -m core.training.novelty models/<id> --same-as models/<other>`` (a bundle on ``other``'s stem)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.batch.discover import discover_images
from core.errors import DiagnosticError
from core.imaging.loader import load_image
from core.inference.paths import StemRows, build_path, load_network
from core.models.novelty import NoveltyReference
from core.models.preprocessing import ModelInputs
from core.models.registry import Registry
from core.models.storage import sha256_file
from core.training.cards import with_novelty_section
from core.training.configs import DATA_ROOT
from core.training.sources import subsets

FILE = "novelty.npz"


def image_features(path, files: list[Path], desc: str) -> tuple[np.ndarray, list[int]]:
    """(features, indices of ``files`` read) through the analysis ``path``: every frame 0 as the Analyzer reads it;
    a file that cannot be read is left out (its index missing)."""
    rows, kept = [], []
    for i, file in enumerate(tqdm(files, desc=desc, unit="img", mininterval=30)):
        try:
            record = load_image(file)
            x, _, _ = ModelInputs(record.display(0), record.row_to_column()).made(path.spec)
        except (DiagnosticError, OSError, ValueError):
            continue
        rows.append(path.features(x[None])[0])
        kept.append(i)
    return np.array(rows), kept


def fit(train: np.ndarray, labels: np.ndarray, validation: np.ndarray, layer: str, stem: str) -> NoveltyReference:
    """Class means of ``train`` (by ``labels``), the within-class covariance shrunk by Ledoit-Wolf, whitened by its
    eigen-decomposition; the validation features' distances as the reference."""
    from sklearn.covariance import LedoitWolf

    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(axis=0) for c in classes])
    centred = train - means[np.searchsorted(classes, labels)]
    covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
    values, vectors = np.linalg.eigh(covariance)
    whiten = vectors / np.sqrt(np.maximum(values, values.max() * 1e-9))
    partial = NoveltyReference(means, whiten, np.zeros(1), layer, stem)
    return NoveltyReference(means, whiten, np.sort(partial.distances(validation)), layer, stem)


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
    parser.add_argument("bundle", type=Path, help="the bundle's folder (its split.json names the images)")
    parser.add_argument("--flag-above", type=float, default=0.99, help="share of validation images closer above "
                        "which a picture is flagged (default 0.99)")
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
    if bundle.info.tiling or bundle.info.film_scoring or stages.stem is None:
        parser.error(f"{bundle.id}: a novelty reference reads a whole picture's features from a network's stem")
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
    split = json.loads((folder / "split.json").read_text())
    features, labels, entries = {}, {}, {}
    for part in ("train", "val"):
        features[part], kept = image_features(path, [DATA_ROOT / p for p, _, _ in split[part]], f"{bundle.id} {part}")
        entries[part] = [split[part][i] for i in kept]
        labels[part] = np.array([bundle.classes.index(label) for _, label, _ in entries[part]])
    reference = fit(features["train"], labels["train"], features["val"], stages.cam, stages.key)
    (folder / FILE).write_bytes(reference.to_bytes())

    def flagged(found: np.ndarray, against: NoveltyReference = reference) -> dict:
        share = against.share_closer(against.distances(found)) if len(found) else np.zeros(0)
        return {"images": len(share), "flagged": float((share > args.flag_above).mean()) if len(share) else None,
                "median_share_closer": float(np.median(share)) if len(share) else None}

    checks = {"fitted on": f"{folder.name}/split.json", "layer": reference.layer, "features": reference.dimensions,
              "training": flagged(features["train"]), "validation": flagged(features["val"])}
    by_source = {part: subsets(entries[part]) for part in ("train", "val")}
    checks.update({f"validation {name}": flagged(features["val"][idx]) for name, idx in by_source["val"].items()})
    for name in args.leave_out:
        if name not in by_source["val"]:
            parser.error(f"--leave-out {name}: no validation image of that source ({', '.join(by_source['val'])})")
        kept = {part: np.setdiff1d(np.arange(len(entries[part])), by_source[part].get(name, [])) for part in features}
        without = fit(features["train"][kept["train"]], labels["train"][kept["train"]], features["val"][kept["val"]],
                      stages.cam, stages.key)
        checks[f"validation {name}, fitted without {name}"] = flagged(features["val"][by_source["val"][name]], without)
    for item in args.check:
        name, _, where = item.partition("=")
        files = folder_files(Path(where))
        random.Random(0).shuffle(files)
        found, _ = image_features(path, sorted(files[:args.check_sample]), name)
        checks[name] = flagged(found)
    _record(folder, args.flag_above, checks)
    print(f"{bundle.id}: novelty reference on {len(labels['train'])} training and {len(labels['val'])} validation "
          f"images ({reference.dimensions} features of {reference.layer})")
    for name, numbers in checks.items():
        if isinstance(numbers, dict):
            print(f"{name}: {numbers['images']} images, flagged {numbers['flagged']}, median share closer "
                  f"{numbers['median_share_closer']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
