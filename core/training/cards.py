"""Model cards: the ``model_card.md`` of a classifier and of a segmenter bundle, written from its manifest.

Every step that adds a measurement to a written bundle (mirror averaging, Grad-CAM layer, per-source
validation, cross-validation, the lab table) records it in the manifest and rewrites the card from it here.
"""

from __future__ import annotations

import json

from core.models.intervals import accuracy_interval, interval_text
from core.models.registry import cam_layer_of
from core.series.analysis import VERDICT_RULE

# The Grad-CAM methods measured per candidate layer (core.training.cam_layer) and reported on the card:
# name -> whether it is Grad-CAM++.
CAM_METHODS = {"gradcam": False, "gradcam++": True}


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


SERIES_MODALITIES = ("MR", "CT")  # read as series of slices: the card quotes how a series is called


def series_section(manifest: dict) -> str:
    """The rule by which a whole series is called from this model's per-slice outputs (the window, `analyze
    --series` and `series.csv` follow it), quoted from core.series.analysis where it is written once."""
    if manifest.get("modality") not in SERIES_MODALITIES:
        return ""
    return "\n## Series verdict\n```\n" + VERDICT_RULE + "\n```\n"


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
{segmentation_source_table(m.get('by_source'))}{_segmenter_cv_section(manifest.get('cross_validation'))}
![examples](validation.png)

## Limits
Masks in the training data are coarse{' (mini-MIAS gives circles, not outlines)' if manifest['modality'] == 'MG' else ''};
the model outlines what annotators drew, not histology-proven extent.
{manifest.get("notes", "")}{series_section(manifest)}"""


def _segmenter_cv_section(cv: dict | None) -> str:
    if not cv:
        return ""
    settings = "; ".join(f"fold {k}: threshold {f['decision_threshold']}, mirror {'on' if f['flip_average'] else 'off'}, "
                         f"gate {f['min_lesion_peak']}" for k, f in enumerate(cv["settings_per_fold"], 1))
    return f"""
## Grouped cross-validation ({cv['folds']} folds, every image judged once by a network that never saw its patient)
{cv['how']}
Images with a lesion (n = {cv['n_lesion']}): Dice **{cv['dice']:.4f}**{interval_text(cv.get('dice_ci95'))}. All images
(n = {cv['n']}): Dice {cv['dice_all']:.4f}. Lesion-free images with a false lesion: {_share(cv['false_positive_rate_normal'])}.
Settings chosen per fold ({settings}).
{segmentation_source_table(cv.get('by_source'))}"""


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
{_trunk_sentence(manifest)}{_refit_sentence(manifest)} Input {manifest['input_size'][0]} px, preprocessing
`{json.dumps(manifest['preprocessing'])}`. Probabilities are temperature-scaled (T = {manifest['calibration']['temperature']:.3f}).{_mirror_sentence(manifest)}

## Data and split
`{t['data']}` ({t['reader']}); {t['split']}. {_counts_text(manifest)}.
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
{source_table(manifest.get("validation_by_source"))}{_cross_validation_section(manifest.get("cross_validation"))}{_transfer_section(manifest)}{_cam_section(manifest)}{novelty_section(manifest)}
## Limits
Validation images come from the same public collection as the training images; hashing keeps near-duplicates on
one side but cannot recognise every same-patient pair. Expect lower accuracy on other scanners and protocols.
{manifest.get("notes", "")}{series_section(manifest)}"""


NOVELTY_TITLE = "## Input check: unusual pictures"


def novelty_section(manifest: dict) -> str:
    """The card's account of the novelty reference (core.models.novelty) and what it flagged; empty without one."""
    spec, checks = manifest.get("novelty"), manifest.get("novelty_checks")
    if not spec or not checks:
        return ""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def count(m: dict) -> str:  # pictures the bundle could not read (a film without breast tiles) are not ranked
        return f"{m['images']} ({m['not read']} not read)" if m.get("not read") else str(m["images"])

    rows = "\n".join(f"| {name} | {count(m)} | {number(m['flagged'])} | {number(m['median_share_closer'])} |"
                     for name, m in checks.items() if isinstance(m, dict))
    film = checks["fitted on"].endswith("(out of fold)")  # a film detector: no validation split (core.training.novelty)
    closing = ("""It flags pictures far from the training films (the other modalities and pictures in the table). The detector's
network was trained on every one of these films, so a new film of the same source may lie farther from them than
their out-of-fold distances say; and a film that passes is not thereby one the detector reads well.""" if film else
               """It flags pictures far from the training images (the other modalities and pictures in the table); pictures from a
new source of the same modality pass more often than they are flagged (the rows 'fitted without'), so a picture
that passes is not thereby one the model reads well.""")
    left_out = ("Rows 'fitted without': the reference fitted without that source's training images, its validation images\n"
                "then ranked as a new source's would be (the network itself was trained on that source too).\n\n"
                if any(", fitted without " in name for name in checks) else "")
    if film:
        how = f"""Each film's features (the activation at `{checks['layer']}` averaged over each breast tile the detector reads,
then over the film's tiles, {checks['features']} numbers) are compared with those of {checks['fitted on'].removesuffix(' (out of fold)')}:
the Mahalanobis distance to the nearest class mean (normal or abnormal films; one covariance, Ledoit-Wolf shrinkage),
ranked among the training films' own distances, each measured out of fold (against a reference fitted on the other
four folds' women, the detector's folds), as the detector has no validation films (so the row 'validation (out of
fold)' is about 1 % flagged by construction; the nested check in CHANGELOG.md measures it). A film farther than
{spec.get('flag_above', 0.99):.0%} of them is flagged: the result warns that it is"""
    else:
        over = ("each tissue tile the model reads,\nthen over the picture's tiles; each training and validation picture "
                "read at its data set's scale" if manifest.get("tiling") else "the picture")
        how = f"""Each picture's features (the activation at `{checks['layer']}` averaged over {over}, {checks['features']}
numbers) are compared with those of the training images of `{checks['fitted on']}`: the Mahalanobis distance to the
nearest class mean (one covariance for all classes, Ledoit-Wolf shrinkage), ranked among the validation images'
distances. A picture farther than {spec.get('flag_above', 0.99):.0%} of them is flagged: the result warns that it is"""
    return f"""
{NOVELTY_TITLE}
{how}
unusual for this model and that the answer is less reliable there (the answer is not changed). Fitted and measured by
`python -m core.training.novelty`.

| pictures | n | flagged | median share of {"films (out of fold)" if film else "validation images"} closer |
|---|---|---|---|
{rows}

{left_out}{closing}
"""


def with_novelty_section(card: str, manifest: dict) -> str:
    """``card`` with its input-check section replaced by the manifest's (placed before Limits where it had none), for
    cards that other steps added sections to and ``model_card`` alone would not give back."""
    start = card.find("\n" + NOVELTY_TITLE)
    if start >= 0:
        end = card.find("\n## ", start + 1)
        card = card[:start] + (card[end:] if end >= 0 else "\n")
    at = card.find("\n## Limits")
    at = len(card) if at < 0 else at
    return card[:at] + novelty_section(manifest) + card[at:]


SOURCE_NAMES = {"lgg": "LGG (TCGA) FLAIR, every axial slice", "figshare": "figshare (Cheng) contrast T1",
                "figshare-mirrored": "figshare slices, tumour-free half mirrored (stand-ins; tumour half mirrored)",
                "kaggle-other": "Kaggle brain set, non-figshare part (SARTAJ, Br35H)",
                "busi": "BUSI (Cairo, one scanner)", "busbra": "BUS-BRA (Rio de Janeiro, 4 scanners)"}


def source_table(by_source: dict | None, title: str = "## Validation per source") -> str:
    """The card's per-source section (empty where none was measured); the ECE and malignant-vs-benign columns
    where they were measured."""
    if not by_source:
        return ""
    sources = by_source["sources"]
    optional = [(key, head) for key, head in (("ece", "ECE"), ("malignant_vs_benign_roc_auc", "malignant vs benign ROC AUC"))
                if any(m.get(key) is not None for m in sources.values())]
    rows = []
    for source, m in sources.items():
        lo, hi = m["accuracy_interval"] or (0, 0)
        auc, none, found = m.get("finding_vs_none_roc_auc"), m.get("none_called_none"), m.get("finding_called_finding")
        cells = ["-" if auc is None else f"{auc:.3f}",
                 "-" if none is None else f"{none:.3f} of {m['none_images']}",
                 "-" if found is None else f"{found:.3f} of {m['finding_images']}"]
        cells += ["-" if m.get(key) is None else f"{m[key]:.3f}" for key, _ in optional]
        rows.append(f"| {SOURCE_NAMES.get(source, source)} | {m['n']} | {m['accuracy']:.3f} [{lo:.3f}-{hi:.3f}] | "
                    + " | ".join(cells) + " |")
    keys = dict(optional)
    notes = (("; malignant vs benign: P(malignant) on the images with a lesion" if "malignant_vs_benign_roc_auc" in keys
              else "") + ". " + ("ECE: expected calibration error of the calibrated probabilities (15 bins)." if "ece" in keys
                                 else ""))
    return (f"\n{title}\n"
            f"On {by_source['data']}. Finding = any class but the finding-free one; ROC AUC of 1 - P(finding-free)"
            + notes.rstrip() + "\n\n| source | n | accuracy [95 % CI] | finding vs none ROC AUC | finding-free called "
            "finding-free | findings called a finding |" + "".join(f" {head} |" for _, head in optional)
            + "\n|---|---|---|---|---|---|" + "---|" * len(optional) + "\n" + "\n".join(rows) + "\n")


def segmentation_source_table(by_source: dict | None) -> str:
    """The segmenter card's per-source section: Dice per data source and scanner at the chosen settings."""
    if not by_source:
        return ""
    rows = "\n".join(f"| {SOURCE_NAMES.get(name, name)} | {m['n']} | {m['n_lesion']} | {m['dice']:.4f}"
                     f"{interval_text(m.get('dice_ci95'))} | {m['dice_all']:.4f} | {_share(m['false_positive_rate_normal'])} |"
                     for name, m in by_source.items())
    return ("\n### Per source and scanner\n| source | images | with a lesion | Dice, lesion images [95 % CI] | "
            "Dice, all images | lesion-free images with a false lesion |\n|---|---|---|---|---|---|\n" + rows + "\n")


def _counts_text(manifest: dict) -> str:
    """The split's counts; a tiled bundle's split lists an image once per tile, so its counts are tiles."""
    counts = f"`{json.dumps(manifest['training']['counts'])}`"
    if manifest.get("tiling"):
        return (f"Counts (tiles, not images; the validation below is per image, n = "
                f"{manifest['validation_metrics']['n']}): {counts}")
    return f"Counts: {counts}"


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
        return (f"Its trunk is {version_name(start)}'s (weights sha256 {start['weights_sha256'][:12]}…, trained "
                f"{start['date']}), kept frozen: this bundle stores it (`{arch['trunk_file']}`) and the layers above it "
                "with the head (`head.keras`), float16 on disk.")
    if "trunk_file" in arch:
        return (f"The whole network was fine-tuned{_continued(start)}: this bundle stores its own trunk "
                f"(`{arch['trunk_file']}`) and the layers above it with the head (`head.keras`), float16 on disk.")
    if "backbone_file" not in arch:
        return f"The whole network is one file (`{manifest['weights']['file']}`)."
    return (f"The frozen trunk is the shared file `{arch['backbone_file']}`; this bundle stores only the\n"
            "fine-tuned layers and head (`head.keras`, float16 on disk).")


def _refit_sentence(manifest: dict) -> str:
    """Where only the last layer was refitted (core.training.refit_dense): from which version, and on what."""
    refit = manifest.get("training", {}).get("refit_dense")
    if not refit:
        return ""
    start, stand_ins = refit["started_from"], refit.get("stand_ins") or {}
    weight = f", weight {stand_ins['weight']:g}" if stand_ins and stand_ins["weight"] != 1 else ""
    extra = (f" plus {stand_ins['train'] // 2} tumour-free stand-ins of `{stand_ins['made_by']}` and their tumour twins"
             f"{weight}" if stand_ins else "")
    return (f"\nThen only its last Dense layer was refitted from {version_name(start)} (weights sha256 "
            f"{start['weights_sha256'][:12]}…), {refit['what']}, on its split{extra}; every other weight is that "
            "version's.")


def _encoder_sentence(manifest: dict) -> str:
    """A segmenter card's account of its encoder: the shared ImageNet file, or its own whole-tuned one."""
    arch = manifest["architecture"]
    if "average_with" in arch:
        start = manifest["training"].get("started_from")
        what = version_name(start) if start else "phases 1-2's network"
        ensemble = (f"Its probability map is the mean of two networks' (a snapshot ensemble): the one described here "
                    f"and {what}, which phase 3 started from (`start/`; two networks' time per image). ")
    else:
        ensemble = ""
    if "trunk_file" in arch:
        return (f"{ensemble}Encoder = ImageNet Xception fine-tuned whole"
                f"{_continued(manifest['training'].get('started_from'))} (its own `{arch['trunk_file']}`, float16 on disk")
    origin = ("ImageNet Xception" if "backbones/xception-imagenet" in arch["backbone_file"]
              else arch["weights_origin"].split(";")[0])
    return f"{ensemble}Frozen encoder = {origin} (`{arch['backbone_file']}`"


def _continued(start: dict | None) -> str:
    """Where phase 3 continued a written version: which one, and the whole-network epochs behind it."""
    if not start:
        return ""
    n = start.get("whole_epochs", 0)
    before = f", itself fine-tuned whole for {n} epoch{'s' * (n != 1)}" if n else ""
    return (f" (continued from {version_name(start)}{before}, weights sha256 {start['weights_sha256'][:12]}…, "
            f"trained {start['date']})")


def version_name(start: dict) -> str:
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
    first = next(iter(measured.values()))
    drawn = {method: cam_layer_of(manifest, plus) for method, plus in CAM_METHODS.items()}
    rows = "\n".join(
        f"| {layer} | " + " | ".join(f"{m[method]['lesion_share']:.0%}{' (drawn)' if drawn[method] == layer else ''} | "
                                     f"{m[method]['peak_on_lesion']:.0%}" for method in CAM_METHODS) + " |"
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
    def held_out(f: dict) -> str:  # the groups by name where few, else (or where only counted) their number
        groups = f.get("groups")
        return ", ".join(groups) if groups and len(groups) <= 12 else f"{len(groups) if groups else f['n_groups']} groups"

    folds = "\n".join(f"| {held_out(f)} | {f['n']} | {f['accuracy']:.3f} |" for f in cv["per_fold"])
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
confusion matrix `{cv['confusion_matrix']}`. {cv.get('how') or 'Folds train like the bundle but without early stopping or best-epoch pick.' + begun}

| validation groups | images | accuracy |
|---|---|---|
{folds}
{per_source}"""


def _film_rule(m: dict) -> str:
    """How the out-of-fold AUCs stand against the 0.75 a mammography bundle needs to ship."""
    low, high = m["roc_auc_ci95"]
    if m["roc_auc"] < 0.75:
        paired = f"scored against the other breast it does not meet it ({m['roc_auc']:.3f})"
    elif low >= 0.75:
        paired = f"scored against the other breast it meets it, its whole interval above it ({low:.2f}-{high:.2f})"
    else:
        paired = f"scored against the other breast it meets it, but the interval's lower end ({low:.2f}) is below it"
    alone = "scored alone it meets it too" if m["roc_auc_single"] >= 0.75 else "scored alone it does not meet it"
    return f"{paired}; {alone}"


def film_card(manifest: dict) -> str:
    """The card of a mammography film detector (core.training.mammo_finetune): every number out of fold by woman."""
    m, t, f = manifest["validation_metrics"], manifest["training"], manifest["film_scoring"]
    point = m["mark_operating_point"]
    kinds = "\n".join(f"| {kind} | {hit} of {n} |" + (f" {hit / n:.0%} |" if n else " - |")
                       for kind, (hit, n) in m["marks_found"].items())
    table = "\n".join(f"| {r['threshold']:.2f} | {r['false_marks_per_film']:.2f} | {r['masses']} |"
                       for r in m["mark_table"])
    return f"""# {manifest['id']} v{manifest['version']}: {manifest['title']}

Decision support only, not a medical device. Modality {manifest['modality']}; classes {', '.join(manifest['classes'])};
CAD marks (circles with a score) where the detector finds a suspicious region.

## Model
A tile detector: {manifest['architecture']['backbone']} ({manifest['architecture']['weights_origin']});
{manifest['architecture']['head']}. The film is brought to {f['mm_per_pixel']} mm per pixel (DICOM PixelSpacing or
ImagerPixelSpacing; without one, a {204.8:g}-mm tall film is assumed and the result says so), the breast is found
and the pectoral muscle cut away (core.imaging.breast), and {f['tile']}-px tiles ({f['tile'] * f['mm_per_pixel']:.0f} mm)
every {f['stride']} px where at least {f['min_breast']:.0%} of the tile is breast are scored. The film score is the
mean of the {f['top']} highest tile probabilities; **against the other breast** (the same view of the other side,
found beside the file) it is this film's score less the other's. Each score has its own logistic calibration,
fitted on all the out-of-fold scores below (the figures at p = 0.5 use calibrations fitted without the film's fold).

## Data and split
`{t['data']}` ({t['reader']}): {m['n']} films, {m['abnormal']} abnormal; {t['split']}.
Augmentation: {t['augmentation']}. Epochs {t['epochs']}, learning rate {t['learning_rate']}.
Command: `{t['command']}` ({t['date']}).

## Out-of-fold results (5 folds grouped by woman)
| film score | ROC AUC (abnormal vs normal) | n |
|---|---|---|
| against the other breast (what the product uses where it finds the partner) | **{m['roc_auc']:.3f}**{interval_text(m['roc_auc_ci95'])} | {m['n_paired']} |
| alone (no partner found) | {m['roc_auc_single']:.3f}{interval_text(m['roc_auc_single_ci95'])} | {m['n']} |

Against the other breast at p = 0.5, each film's probability from a calibration fitted on the other folds' films:
accuracy {m['accuracy_paired_at_0.5']:.3f}, sensitivity {m['sensitivity_paired_at_0.5']:.3f}, specificity
{m['specificity_paired_at_0.5']:.3f}, expected calibration error {m['ece_paired']:.3f} (15 bins). Read the paired AUC with its
make-up: {m['partners_of_abnormal_films_among_normals']} of the normal films are the other breast of an abnormal
film, and the comparison helps most there; a woman with two normal breasts gains little from it.

Shipped under the rule that a mammography bundle needs a grouped cross-validated ROC AUC of at least 0.75: {_film_rule(m)}.

## CAD marks
Operating point: tile probability **{f['mark_threshold']:.2f}**, the lowest threshold on a 0.05 grid with at most
one false mark per film on average out of fold ({point['false_marks_per_film']:.2f}). A mark counts as found when its
centre lies inside the annotated circle. Sensitivity per finding type at that point:

| finding type | marked | share |
|---|---|---|
{kinds}

| threshold | false marks per film | masses marked |
|---|---|---|
{table}

## Limits
{manifest['notes']}
Calcification clusters of ~1 mm specks are at the edge of what a 200-um film shows and of what 45-mm tiles
trained on ~90 circled findings learn; the tables above say how many were marked. Masses are marked less often
than a screening CAD would need: use the marks to look again, never to clear a film. A single-centre film set of
this size supports a screening aid's first measurements, not a claim about digital mammograms, other scanners,
dense-breast populations or CC views (the detector was trained on MLO films only).
"""
