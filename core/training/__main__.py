"""``python -m core.training cache|train|cv|mirror|cam|evaluate ID [--reader R --root DIR]``: build a bundle from its config.

``cv`` runs grouped k-fold cross-validation of a classifier and records it in the bundle's card.
``mirror`` decides, on the validation split, whether a written classifier averages each image with
its mirror image (``train`` does this itself; the action serves bundles trained before it existed).
``cam`` picks the layer a classifier's Grad-CAM explains by how much of its heat falls on the lesions
its validation data marks (``train`` does this itself where the data has masks or circles).
``evaluate`` re-measures a written segmenter on its validation split and re-picks its inference
settings (threshold, mirror averaging, false-lesion gate) without touching its weights.

A site with BreakHis or IDC data retrains the histology bundle with one command, e.g.
``python -m core.training train breast-histology-2class --reader breakhis --root /data/BreaKHis_v1``;
``--arch resnet50v2 --weights imagenet`` trains on another backbone (Keras downloads its ImageNet
weights or finds them in ~/.keras/models; a local file or ``none`` works too). ``--whole-epochs N``
then fine-tunes the whole network on freshly augmented images (``core.training.whole_network``;
meant for a GPU); with ``--from-written`` it starts from the bundle already written instead of
rerunning the cached phases, and ``--whole-augmentation`` picks that phase's augmentation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from core.training import classifier, lesion_pooled, segmenter, transfer
from core.training.augment import AUGMENTATIONS
from core.training.bundle_writer import settle_segmenter_bundle
from core.training.cam_layer import choose_cam_layer, validation_lesions
from core.training.configs import CONFIGS, REPO, BundleConfig
from core.training.crossval import cross_validate
from core.training.datasets import READERS
from core.training.losses import LOSS_NAMES
from core.training.mirror import choose_mirror_average
from core.training.plan import same_split, stored_plan


def train(config: BundleConfig, out_root: str | Path | None = None) -> Path:
    """Train and write the bundle ``config`` describes, by its kind: a U-Net segmenter, a classifier fitted on
    a segmenter bundle's encoder (``lesion_pooled``), a Dense layer on a classifier bundle's features
    (``transfer``), or a fine-tuned classifier."""
    if config.task == "segmentation":
        return segmenter.train(config, out_root)
    if config.feature_bundle and CONFIGS[config.feature_bundle].task == "segmentation":
        return lesion_pooled.train_on_segmenter(config, out_root)
    if config.feature_bundle:
        return transfer.train_transfer(config, out_root)
    return classifier.train(config, out_root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.training")
    parser.add_argument("action", choices=["cache", "train", "cv", "mirror", "cam", "evaluate"])
    parser.add_argument("bundle", choices=sorted(CONFIGS))
    parser.add_argument("--out", default=None, help="models folder (default: the repo's models/)")
    parser.add_argument("--reader", choices=sorted(READERS), help="data layout (overrides the config)")
    parser.add_argument("--root", help="data folder (overrides the config)")
    parser.add_argument("--arch", choices=["xception", "resnet50v2"], help="backbone (overrides the config)")
    parser.add_argument("--weights", help='backbone weights: "imagenet", a local file, or "none" (random)')
    parser.add_argument("--loss", choices=LOSS_NAMES, help="segmenters: training loss (overrides the config)")
    parser.add_argument("--whole-epochs", type=int, help="train: then fine-tune the whole network for this many "
                        "epochs on freshly augmented images (slow without a GPU)")
    parser.add_argument("--whole-augmentation", choices=AUGMENTATIONS, help="train: the whole-network phase's "
                        "augmentation (default: the config's)")
    parser.add_argument("--from-written", action="store_true", help="train: start the whole-network phase from "
                        "the bundle already in the models folder (needs --whole-epochs N or the config's own) instead of "
                        "rerunning phases 1-2")
    parser.add_argument("--whole-lr", type=float, help="train: the whole-network phase's learning rate")
    parser.add_argument("--distil-mirror", type=float, help="train --from-written: weight (0-1) of the written "
                        "network's mirror-averaged probabilities in the whole-network phase's targets")
    parser.add_argument("--size", type=int, help="train, cache: the network's input side in pixels (overrides the "
                        "config's preprocessing; a smaller side costs fewer FLOPs per image)")
    parser.add_argument("--folds", type=int, default=0, help="cv: number of folds (default: one per group)")
    args = parser.parse_args(argv)
    config = CONFIGS[args.bundle]
    overrides = {k: v for k, v in (("reader", args.reader), ("root", args.root), ("arch", args.arch),
                                   ("weights", args.weights), ("epochs_whole", args.whole_epochs),
                                   ("loss", args.loss), ("augmentation_whole", args.whole_augmentation),
                                   ("lr_whole", args.whole_lr), ("distil_mirror", args.distil_mirror)) if v}
    if args.loss and config.task != "segmentation":
        parser.error("--loss chooses a segmenter's training loss")
    if args.arch and args.arch != config.arch:
        overrides["top_from"] = None  # the config's cut names a layer of its own backbone
    if args.from_written:
        if args.action != "train" or not (args.whole_epochs or config.epochs_whole) or config.feature_bundle:
            parser.error("--from-written continues a written network's whole-network phase: 'train' with "
                         "--whole-epochs N (or a config that has whole-network epochs)")
        overrides["whole_from_written"] = True
    elif args.distil_mirror:
        parser.error("--distil-mirror learns from the written network: it needs --from-written")
    if args.distil_mirror is not None and (not 0 < args.distil_mirror <= 1 or config.task != "classification"
                                           or config.tiling is not None):
        parser.error("--distil-mirror W: a weight in (0, 1], for a whole-image classifier")
    if overrides:
        config = dataclasses.replace(config, **overrides)
    if args.size:
        if args.size < 32:
            parser.error("--size N: the input side in pixels, at least 32")
        config = dataclasses.replace(config, spec=dataclasses.replace(config.spec, size=args.size))
    if config.reader == "two_lab_histology" and args.action in ("cache", "train", "cv"):
        parser.error(f"{config.id} tiles each lab's images at its own scale: use python -m core.training.lab_transfer "
                     "cache | measure | train (or --reader with a one-lab layout)")
    if args.action in ("cache", "cv") and config.feature_bundle:
        parser.error(f"{config.id} fits one layer on the written {config.feature_bundle} bundle's network: nothing "
                     "to cache or cross-validate on its own; 'train' computes its features from that bundle")
    if args.action == "cv":
        result = cross_validate(config, args.folds, out_root=args.out)
        print(f"{config.id}: {result['folds']}-fold grouped cross-validation accuracy {result['accuracy']:.4f} "
              f"(n = {result['n']}), ROC AUC {result['roc_auc']:.4f}, ECE {result['ece']:.4f}"
              + (f", single tiles ROC AUC {result['tile_roc_auc']:.4f}" if "tile_roc_auc" in result else ""))
    elif args.action == "mirror":
        chosen = choose_mirror_average(Path(args.out or REPO / "models") / config.id, config.notes)
        print(f"{config.id}: {'averages' if chosen else 'does not average'} each image with its mirror image")
    elif args.action == "cam":
        folder = Path(args.out or REPO / "models") / config.id
        plan = stored_plan(config)
        if not same_split(folder, plan):
            parser.error(f"{folder} was not trained on this config's split; retrain it with 'train'")
        try:
            chosen = choose_cam_layer(folder, validation_lesions(plan), notes=config.notes)
        except ValueError as exc:  # not a fine-tuned whole-image classifier, or nothing marked (the brain sets)
            parser.error(str(exc))
        m = json.loads((folder / "manifest.json").read_text())["gradcam_localisation"][chosen]["gradcam"]
        print(f"{config.id}: Grad-CAM from {chosen}: {m['lesion_share']:.0%} of its heat on annotated lesions, "
              f"hottest pixel on the lesion in {m['peak_on_lesion']:.0%} of validation images with one")
    elif args.action == "evaluate":
        if config.task != "segmentation":
            parser.error(f"{config.id} is a classifier: 'mirror' re-picks its one inference setting")
        folder = Path(args.out or REPO / "models") / config.id
        plan = stored_plan(config)
        if not same_split(folder, plan):
            parser.error(f"{folder} was not trained on this config's split; retrain it with 'train'")
        manifest = json.loads((settle_segmenter_bundle(folder, plan, config.version) / "manifest.json").read_text())
        m = manifest["validation_metrics"]
        false_lesions = m["false_positive_rate_normal"]
        print(f"{config.id}: threshold {manifest['decision_threshold']}, mirror average {manifest['flip_average']}, "
              f"min lesion peak {manifest['min_lesion_peak']}: lesion Dice {m['dice']:.4f}, all-image Dice "
              f"{m['dice_all']:.4f}" + ("" if false_lesions is None else
                                        f", false lesions on {false_lesions:.0%} of lesion-free images"))
    elif args.action == "cache":
        (segmenter if config.task == "segmentation" else classifier).prepare(config)
    else:
        train(config, out_root=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
