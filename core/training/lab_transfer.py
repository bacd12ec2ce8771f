"""Histology across labs: tiles at one physical scale, leave-one-lab-out stain choice, the two-lab bundle.

``python -m core.training.lab_transfer cache``  tiles of every UCSB and BACH image at the bundle's tile scale (0.5 um
per pixel; at most ``TILES_PER_IMAGE`` per image), trunk features of each stain option, cached and resumable;
``python -m core.training.lab_transfer measure [--finetune-epochs N]``  for each stain option (none / Macenko
normalisation / strong HED augmentation) trains on one lab's images and measures image accuracy and ROC AUC on
the other's, both ways, written to ``<cache>/lab_transfer.json``;
``python -m core.training.lab_transfer train --stain OPTION``  the shipped ``breast-histology-2class``: both labs,
each split 75/25 by group, from the same cached features, then its manifest and card get the scales seen in
training and the leave-one-lab-out table;
``python -m core.training.lab_transfer fields``  the written bundle on its validation images cut to BreakHis
pictures at 40-400x, through the product's analysis (manifest and card; each call in ``<cache>/fields-<version>.json``);
``python -m core.training.lab_transfer compare-fields --versions OLD NEW``  two versions' calls paired.

Training on one lab and judging on the other is the nearest this data comes to a pathologist's own slides:
the measured lab's stain, scanner and scale were never seen. Runs like ``core.training.crossval``: the judged
lab never steers training (no early stopping, no best-epoch pick, no temperature fitted on it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.backbones import build_backbone, split_backbone
from core.models.intervals import accuracy_interval
from core.models.preprocessing import PreprocessSpec, scale_pixels, to_model_pixels
from core.models.registry import Bundle, Registry
from core.models.scale import MAGNIFICATIONS, um_at_magnification
from core.models.tiling import TilingSpec, tile_boxes, tile_pixels
from core.training import classifier
from core.training.augment import build_augmentation
from core.training.cards import model_card
from core.training.configs import CACHE_ROOT, CONFIGS, REPO, BundleConfig
from core.training.datasets import READERS, Sample, plan_entry, plan_sample
from core.training.evaluate import classification_metrics, softmax
from core.training.features import cache_features
from core.training.networks import predict_chunks
from core.training.plan import per_image
from core.training.splits import near_duplicate_groups, split

BUNDLE = "breast-histology-2class"
TILES_PER_IMAGE = {"ucsb": 12, "bach": 4}  # a fixed random draw of each image's tissue tiles (CPU budget)
RAW = PreprocessSpec(size=224, color="rgb", crop="none", stain="none")
MACENKO = PreprocessSpec(size=224, color="rgb", crop="none", stain="macenko")
HED_AUGMENTATION = "hed-strong"
# Each option: (spec of the plain view, cached feature files of its training views); judged on its plain view.
OPTIONS = {
    "none": (RAW, ["raw_v0"]),
    "macenko": (MACENKO, ["macenko_v0"]),
    "hed": (RAW, ["raw_v0", "hed_v1"]),
    # and a view of small fields: a picture smaller than one tile at the tile scale (under 112 um) is mirrored out
    "hed+field": (RAW, ["raw_v0", "hed_v1", "fieldhed_v2"]),
    # and a low-power view: a 40x-100x picture (4.9-2.0 um per pixel) has 2-10 times fewer pixels per tile than
    # the tile scale and is enlarged to it, so its tiles are blurred copies of what the model was trained on
    "hed+low": (RAW, ["raw_v0", "hed_v1", "lowhed_v2"]),
}
LABS = ("ucsb", "bach")
# Small-field sides in tile pixels at the tile scale (23-69 um). "field_v0": every tile cut to such a field (plain, for
# judging), "fieldhed_v2" the same with strong HED augmentation (for training).
FIELD_SIDES = (45, 137)
# Low-power views: a tile shrunk by a factor drawn log-uniformly in LOW_POWER and enlarged back, as the analysis
# enlarges a picture taken at 1.5-10 times the tile scale (BreakHis 200x: 2, 100x: 3.9, 40x: 9.8). "low_v0" plain (for
# judging), "lowhed_v2" with strong HED augmentation (for training).
LOW_POWER = (1.5, 10.0)


def work_dir(config: BundleConfig) -> Path:
    return CACHE_ROOT / f"{config.id}-labs"


def grouped(samples: list[Sample]) -> list[Sample]:
    """Groups that keep related images on one side: a declared group (UCSB TMA batch, BACH image-number block)
    merged with every near-duplicate cluster it touches (256-bit dHash, ``core.training.splits``)."""
    parent = {s.group: s.group for s in samples}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    clusters: dict[str, str] = {}
    for s, cluster in zip(samples, near_duplicate_groups(samples)):
        if cluster in clusters:
            parent[find(s.group)] = find(clusters[cluster])
        clusters.setdefault(cluster, s.group)
    for s in samples:
        s.group = find(s.group)
    return samples


def tile_entries(samples: list[Sample], tiling: TilingSpec, per_image: dict[str, int], seed: int = 0) -> list[dict]:
    """Plan entries (one per tile) of tissue tiles at the tiling's physical scale, at most ``per_image[lab]`` per
    image, drawn at random once; each carries its image's label, lab and scale."""
    rng = np.random.default_rng(seed)
    entries = []
    for s in samples:
        display = load_image(s.path).display(0)
        um = tuple(s.extra["um"])
        boxes = tile_boxes(display, tiling, um)
        cap = per_image.get(s.extra["lab"], len(boxes))
        if len(boxes) > cap:
            boxes = [boxes[i] for i in sorted(rng.choice(len(boxes), cap, replace=False))]
        for box in boxes:
            entries.append({**plan_entry(s), "image_label": s.label, "box": list(box), "shape": list(display.shape[:2]),
                            "lab": s.extra["lab"], "um": list(um)})
    return entries


def all_entries(config: BundleConfig) -> list[dict]:
    """Every tile entry of both labs, made once and kept in the work folder."""
    folder = work_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "entries.json"
    if not path.exists():
        samples = READERS["two_lab_histology"](config.data_path)
        bach = grouped([s for s in samples if s.extra["lab"] == "bach"])
        samples = [s for s in samples if s.extra["lab"] != "bach"] + bach
        path.write_text(json.dumps(tile_entries(samples, config.tiling, TILES_PER_IMAGE, config.seed)))
    return json.loads(path.read_text())


def trunk_of(config: BundleConfig):
    return split_backbone(build_backbone(config.arch, config.backbone_path), config.arch, config.top_block_start)[0]


def cache(config: BundleConfig, names: list[str] | None = None) -> None:
    """Trunk features of every tile for each option's views (resumable)."""
    entries = all_entries(config)
    samples = [plan_sample(d) for d in entries]
    trunk = trunk_of(config)
    wanted = names or sorted({n for _, files in OPTIONS.values() for n in files} | {f"{k}_v0" for k in VIEW_MAKERS})
    for name in wanted:
        if name.startswith(tuple(VIEW_MAKERS)):
            cache_views(config, entries, trunk, name)
            continue
        spec = MACENKO if name.startswith("macenko") else RAW
        view = int(name.rsplit("_v", 1)[1])
        cache_features(samples, spec, trunk, work_dir(config) / f"{name}.npy",
                       augmentation=HED_AUGMENTATION if name.startswith("hed") else None, seed=config.seed + view)


def small_field(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random field of ``FIELD_SIDES`` tile pixels from a model-size tile, mirrored out to the tile's size: what
    the analysis makes of a picture smaller than one tile (``core.models.tiling.tile_pixels``)."""
    size = pixels.shape[0]
    fh, fw = (int(v) for v in rng.integers(FIELD_SIDES[0], FIELD_SIDES[1] + 1, 2))
    oy, ox = int(rng.integers(0, size - fh + 1)), int(rng.integers(0, size - fw + 1))
    return tile_pixels(pixels[oy : oy + fh, ox : ox + fw], (0, size, 0, size))


def low_power(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A model-size tile as a lower-magnification picture gives it: shrunk by a factor in ``LOW_POWER`` (area
    average, as a camera's coarser pixels see the tissue) and enlarged back as ``core.models.preprocessing`` enlarges
    a small tile (bilinear)."""
    size = pixels.shape[0]
    factor = float(np.exp(rng.uniform(np.log(LOW_POWER[0]), np.log(LOW_POWER[1]))))
    side = max(2, int(round(size / factor)))
    small = cv2.resize(pixels, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


VIEW_MAKERS = {"field": small_field, "low": low_power}


def cache_views(config: BundleConfig, entries: list[dict], trunk, name: str, batch: int = 16) -> None:
    """Trunk features of one made view per tile (``field*``: a small field, ``low*``: a low-power picture),
    HED-augmented when the name says ``hed``."""
    out = work_dir(config) / f"{name}.npy"
    if out.exists():
        return
    view = int(name.rsplit("_v", 1)[1])
    make = next(maker for prefix, maker in VIEW_MAKERS.items() if name.startswith(prefix))
    rng = np.random.default_rng(config.seed + 100 + view)
    augment = build_augmentation(HED_AUGMENTATION, seed=config.seed + 100 + view) if "hed" in name else None
    partial = out.with_name(f"{name}.partial.npy")
    array, loaded = None, (None, None)
    for start in range(0, len(entries), batch):
        pixels = []
        for d in entries[start : start + batch]:
            if loaded[0] != d["path"]:
                loaded = (d["path"], load_image(d["path"]).display(0))
            y0, y1, x0, x1 = d["box"]
            made = make(to_model_pixels(loaded[1][y0:y1, x0:x1], RAW), rng)
            pixels.append(augment(image=made)["image"] if augment else made)
        features = trunk.predict(np.stack([scale_pixels(p, RAW) for p in pixels]), verbose=0)
        if array is None:
            array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16,
                                              shape=(len(entries),) + features.shape[1:])
        array[start : start + len(pixels)] = features.astype(np.float16)
        if start % (batch * 20) == 0:
            print(f"{name}: {start + len(pixels)}/{len(entries)}", flush=True)
    array.flush()
    del array
    partial.rename(out)


def _features(config: BundleConfig, name: str) -> np.ndarray:
    return np.load(work_dir(config) / f"{name}.npy", mmap_mode="r")


def transfer(config: BundleConfig, option: str, train_lab: str, finetune_epochs: int) -> dict:
    """Train on ``train_lab``'s tiles with ``option``'s views, judge every image of the other lab."""
    entries = all_entries(config)
    labs = np.array([d["lab"] for d in entries])
    y = np.array([config.classes.index(d["label"]) for d in entries])
    _, files = OPTIONS[option]
    train, judged = labs == train_lab, labs != train_lab
    x_train = np.concatenate([np.asarray(_features(config, f)[train]) for f in files])
    y_train = np.tile(y[train], len(files))
    x_judged = np.asarray(_features(config, files[0])[judged])
    run = dataclasses.replace(config, epochs_finetune=finetune_epochs, augmented_views=len(files) - 1)
    head = classifier.fit_classifier(run, x_train, y_train, x_judged, y[judged],
                          work_dir(config) / f"{option}_{train_lab}_ft{finetune_epochs}", select_on_val=False)
    tile_probs = softmax(predict_chunks(head, x_judged))
    judged_entries = [d for d, j in zip(entries, judged) if j]
    probs, labels = per_image(judged_entries, tile_probs, config)
    metrics = classification_metrics(probs, labels, config.classes)
    made = {}
    for kind in VIEW_MAKERS:  # judged on small fields and low-power pictures too, where cached
        if (work_dir(config) / f"{kind}_v0.npy").exists() and OPTIONS[option][0] == RAW:
            kind_probs, kind_labels = per_image(judged_entries, softmax(predict_chunks(
                head, np.asarray(_features(config, f"{kind}_v0")[judged]))), config)
            made |= {f"{kind}_accuracy": float(np.mean(kind_probs.argmax(1) == kind_labels)),
                     f"{kind}_roc_auc": float(roc_auc_score(kind_labels, kind_probs[:, 1]))}
    return {**made, "option": option, "train_lab": train_lab, "judged_lab": next(l for l in LABS if l != train_lab),
            "finetune_epochs": finetune_epochs, "train_images": len({d["path"] for d, t in zip(entries, train) if t}),
            "train_tiles": int(train.sum()), "n": int(len(labels)), "accuracy": metrics["accuracy"],
            "roc_auc": metrics["roc_auc"], "tile_roc_auc": float(roc_auc_score(y[judged], tile_probs[:, 1])),
            "confusion_matrix": metrics["confusion_matrix"]}


def measure(config: BundleConfig, options: list[str], finetune_epochs: int) -> list[dict]:
    """Every option both ways; results appended to ``<work>/lab_transfer.json`` (one row per run)."""
    path = work_dir(config) / "lab_transfer.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    for option in options:
        for train_lab in LABS:
            row = transfer(config, option, train_lab, finetune_epochs)
            print(f"{option:8s} {row['train_lab']} -> {row['judged_lab']}: accuracy {row['accuracy']:.3f} (n = "
                  f"{row['n']}), ROC AUC {row['roc_auc']:.3f}, tiles {row['tile_roc_auc']:.3f}", flush=True)
            rows = [r for r in rows if (r["option"], r["train_lab"], r["finetune_epochs"]) !=
                    (option, train_lab, finetune_epochs)] + [row]
            path.write_text(json.dumps(rows, indent=1))
    return rows


def choose(rows: list[dict]) -> str:
    """The option with the best mean image ROC AUC over both directions (then accuracy), among the options measured
    both ways at one recipe depth: the depth with the most such options, the deeper on a tie."""
    labs_of: dict[int, dict[str, set]] = {}
    for r in rows:
        labs_of.setdefault(r["finetune_epochs"], {}).setdefault(r["option"], set()).add(r["train_lab"])
    complete = {d: [o for o, labs in options.items() if len(labs) == len(LABS)] for d, options in labs_of.items()}
    depth = max(complete, key=lambda d: (len(complete[d]), d))
    score = {}
    for option in complete[depth]:
        mine = [r for r in rows if r["option"] == option and r["finetune_epochs"] == depth]
        score[option] = (float(np.mean([r["roc_auc"] for r in mine])), float(np.mean([r["accuracy"] for r in mine])))
    return max(score, key=score.get)


def split_images(entries: list[dict], config: BundleConfig) -> tuple[set[str], set[str]]:
    """Each lab split 75/25 by group and label (``core.training.splits.split``, the bundle's seed): UCSB as the
    1.x bundles split it, BACH by its merged groups."""
    train, val = set(), set()
    for lab in LABS:
        images = {d["path"]: Sample(Path(d["path"]), d["image_label"], d["group"]) for d in entries if d["lab"] == lab}
        if not images:
            continue
        tr, va = split(list(images.values()), config.val_fraction, config.seed)
        train |= {str(s.path) for s in tr}
        val |= {str(s.path) for s in va}
    return train, val


def bundle_config(option: str) -> BundleConfig:
    config = CONFIGS[BUNDLE]
    spec, files = OPTIONS[option]
    return dataclasses.replace(config, spec=spec, augmentation=HED_AUGMENTATION if option.startswith("hed") else "none",
                               augmented_views=len(files) - 1)


def train_bundle(option: str, out_root: str | Path | None = None) -> Path:
    """The shipped bundle on both labs from the cached features of ``option``; its split and caches are written
    where ``core.training.classifier.train`` finds them, then it trains, calibrates and writes as for every bundle."""
    config = bundle_config(option)
    entries = all_entries(config)
    train_images, val_images = split_images(entries, config)
    keep = ("path", "label", "group", "mask", "circles", "box", "shape", "image_label")
    plan = {part: [{k: d[k] for k in keep} for d in entries if d["path"] in images]
            for part, images in (("train", train_images), ("val", val_images))}
    index = {part: np.array([i for i, d in enumerate(entries) if d["path"] in images])
             for part, images in (("train", train_images), ("val", val_images))}
    folder = config.cache_dir
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / "split.json"
    if stale.exists() and json.loads(stale.read_text()) != plan:
        raise ValueError(f"{folder} holds another split: move it away to retrain")
    stale.write_text(json.dumps(plan, indent=1))
    trunk_name = trunk_of(config).name
    _, files = OPTIONS[option]
    views = [("val_v0", files[0], index["val"])] + [(f"train_v{v}", f, index["train"]) for v, f in enumerate(files)]
    for name, source, rows in views:
        np.save(folder / f"{name}.npy", np.asarray(_features(config, source)[rows]))
        (folder / f"{name}.json").write_text(json.dumps({"done": len(rows), "trunk": trunk_name}))
    bundle = classifier.train(config, out_root)
    record(bundle, config, entries, train_images, val_images, option)
    return bundle


def record(folder: Path, config: BundleConfig, entries: list[dict], train_images: set[str], val_images: set[str],
           option: str) -> None:
    """Scales seen, leave-one-lab-out table, per-lab validation and the command: into manifest and card."""
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = json.loads((work_dir(config) / "lab_transfer.json").read_text())
    scales = Counter((d["lab"], tuple(d["um"])) for d in entries if d["path"] in train_images and d["lab"])
    images = {(d["lab"], tuple(d["um"]), d["path"]) for d in entries if d["path"] in train_images}
    seen = [{"lab": lab, "um_per_pixel_y_x": list(um), "images": sum(1 for l, u, _ in images if (l, u) == (lab, um)),
             "tiles": n} for (lab, um), n in sorted(scales.items())]
    # Per-lab validation: the bundle's own network on its validation tiles, split by lab.
    net = Bundle.from_folder(folder)
    head = net.trunk_and_head()[1]
    x_val = np.load(config.cache_dir / "val_v0.npy", mmap_mode="r")
    val_entries = [d for d in entries if d["path"] in val_images]
    probs = softmax(predict_chunks(head, x_val) / manifest["calibration"]["temperature"])
    per_lab = {}
    for lab in LABS:
        mask = np.array([d["lab"] == lab for d in val_entries])
        p, y = per_image([d for d, m in zip(val_entries, mask) if m], probs[mask], config)
        acc = float(np.mean(p.argmax(1) == y))
        per_lab[lab] = {"n": int(len(y)), "accuracy": acc, "interval": list(accuracy_interval(acc, len(y))),
                        "confusion_matrix": [[int(np.sum((y == i) & (p.argmax(1) == j))) for j in range(2)]
                                             for i in range(2)]}
    manifest["tiling"]["microns_per_pixel"] = config.tiling.microns_per_pixel
    manifest["scale"] = {
        "microns_per_pixel": config.tiling.microns_per_pixel,
        "seen_in_training": seen,
        "resolution": "the user's setting, else TIFF/OME-TIFF/DICOM metadata, else a BreakHis file name (SOB_<B|M>_"
                      "<type>-<year>-<slide>-<40|100|200|400>-<n>), else "
                      f"{config.tiling.assumed_microns_per_pixel} um per pixel is assumed (the training images' usual "
                      "scale) and the result warns (core.models.scale)",
        "tiles_per_image": TILES_PER_IMAGE,
    }
    manifest["lab_transfer"] = {"rows": rows, "chosen": option}
    manifest["validation_by_lab"] = per_lab
    manifest["notes"] = config.notes
    manifest["training"]["command"] = f"python -m core.training.lab_transfer train --stain {option}"
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "model_card.md").write_text(model_card(manifest) + "\n" + card_section(manifest))


FIELD_PX = (460, 700)  # a BreakHis picture, rows x columns


def breakhis_style_fields(folder: Path, entries: list[dict], val_images: set[str],
                          work: Path, per_lab: int | None = None) -> dict:
    """The written bundle, through the product's analysis, on each validation image cut to BreakHis pictures: the
    image resampled to a BreakHis camera's scale at 40/100/200/400x (``core.models.scale``), its central 700 x 460
    px kept and the file named for its magnification (``...-200-001.png``), so the scale comes from the name as it
    would for a BreakHis file. The nearest this data comes to the held-out BreakHis check (another lab's pictures at
    40-400x). Every BreakHis scale is coarser than the source images' (0.42-0.56 um), so no picture is enlarged;
    at 40x and 100x the whole source image (860 um wide at most) is smaller than a BreakHis picture (3.4 / 1.4 mm)."""
    analyzer = Analyzer(Registry([folder.parent]))
    images = {d["path"]: d for d in entries if d["path"] in val_images}
    if per_lab is not None:  # the first ``per_lab`` validation images of each lab, by path (CPU budget)
        kept = {lab: sorted(p for p, d in images.items() if d["lab"] == lab)[:per_lab] for lab in LABS}
        images = {p: images[p] for paths in kept.values() for p in paths}
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, list[int]]] = {}
    flagged: dict[str, dict[str, int]] = {}  # pictures the input check calls unusual (core.models.novelty)
    calls = []  # per picture, for paired comparisons between bundles
    for n, (path, d) in enumerate(sorted(images.items())):
        display = load_image(Path(path)).display(0)
        um_y, um_x = d["um"]
        for magnification in MAGNIFICATIONS:
            target = um_at_magnification(magnification)
            fy, fx = um_y / target, um_x / target  # output pixels per source pixel
            h, w = min(display.shape[0], round(FIELD_PX[0] / fy)), min(display.shape[1], round(FIELD_PX[1] / fx))
            y0, x0 = (display.shape[0] - h) // 2, (display.shape[1] - w) // 2
            field = cv2.resize(display[y0 : y0 + h, x0 : x0 + w], (round(w * fx), round(h * fy)),
                               interpolation=cv2.INTER_CUBIC if fx > 1 else cv2.INTER_AREA)
            name = work / f"SOB_B_X-00-{d['lab']}{n:03d}-{magnification}-001.png"  # BreakHis's own naming
            cv2.imwrite(str(name), cv2.cvtColor(field, cv2.COLOR_RGB2BGR))
            result = analyzer.analyze(load_image(name), model_ids=[BUNDLE], gradcam=False).results[0]
            cell = rows.setdefault(d["lab"], {}).setdefault(str(magnification), [0, 0])
            cell[0] += int(result.label == d["image_label"])
            cell[1] += 1
            if result.novelty is not None:
                counts = flagged.setdefault(d["lab"], {})
                counts[str(magnification)] = counts.get(str(magnification), 0) + int(result.unusual)
            calls.append({"image": path, "group": d["group"], "magnification": magnification, "label": d["image_label"],
                          "called": result.label, "probabilities": result.probabilities, "novelty": result.novelty})
            name.unlink()
        print(f"{n + 1}/{len(images)} images cut to BreakHis pictures", flush=True)
    return {"field_px": list(FIELD_PX), "correct_of_n": rows, "images_per_lab": per_lab, "calls": calls,
            **({"flagged_unusual": flagged} if flagged else {})}


def record_fields(folder: Path, config: BundleConfig, per_lab: int | None = None) -> dict:
    """Measure ``breakhis_style_fields`` on the bundle's validation images; into its manifest and card."""
    entries = all_entries(config)
    _, val_images = split_images(entries, config)
    with tempfile.TemporaryDirectory() as tmp:
        result = breakhis_style_fields(folder, entries, val_images, Path(tmp), per_lab)
    manifest = json.loads((folder / "manifest.json").read_text())
    calls = result.pop("calls")
    (work_dir(config) / f"fields-{manifest['version']}.json").write_text(json.dumps(calls))
    manifest["breakhis_style_check"] = result
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    card = folder / "model_card.md"
    card.write_text(with_fields_section(card.read_text(), manifest) if card.exists()
                    else model_card(manifest) + "\n" + card_section(manifest))
    return result


FIELDS_TITLE = "## Validation images as BreakHis pictures"
CHOSEN = "\nChosen: "  # the card section's last line, the stain choice


def with_fields_section(card: str, manifest: dict) -> str:
    """``card`` with its BreakHis-style section replaced by the manifest's (added before the stain choice where it had
    none): the rest of a card may hold paragraphs written after training, which a card made again from the manifest
    would drop."""
    new = card_section(manifest)
    section = new[new.index(FIELDS_TITLE):new.index(CHOSEN)]
    if FIELDS_TITLE in card:
        start = card.index(FIELDS_TITLE)
        return card[:start] + section + card[card.index(CHOSEN, start):]
    at = card.find(CHOSEN)
    return card + "\n" + section if at < 0 else card[:at] + "\n" + section + card[at:]


def compare_fields(config: BundleConfig, old: str, new: str, rounds: int = 2000) -> dict[str, dict]:
    """Two bundle versions' ``fields`` runs paired picture by picture (the same validation images cut the same way):
    accuracy and log-loss differences (new - old) with 95 % intervals over resampled image groups, over all
    pictures and per magnification (``core.training.compare.paired_differences``)."""
    from core.training.compare import metrics_for, paired_differences

    runs = [{(c["image"], c["magnification"]): c for c in json.loads((work_dir(config) / f"fields-{v}.json").read_text())}
            for v in (old, new)]
    if runs[0].keys() != runs[1].keys():
        raise ValueError(f"fields-{old} and fields-{new} hold other pictures: nothing to pair")
    keys = sorted(runs[0])
    probs = [np.array([[r[k]["probabilities"][c] for c in config.classes] for k in keys]) for r in runs]
    y = np.array([config.classes.index(runs[0][k]["label"]) for k in keys])
    groups = [runs[0][k]["group"] for k in keys]
    metrics = {k: v for k, v in metrics_for(config.classes).items() if k in ("accuracy", "log_loss")}
    subsets = {"all": np.arange(len(keys)),
               **{f"{m}x": np.flatnonzero([k[1] == m for k in keys]) for m in MAGNIFICATIONS}}
    return {name: paired_differences(probs[1][rows], probs[0][rows], y[rows], [groups[i] for i in rows], metrics, rounds)
            for name, rows in subsets.items() if len(rows)}


def card_section(manifest: dict) -> str:
    """The card's account of scale, labs and the leave-one-lab-out stain choice."""
    scale = manifest["scale"]
    seen = "; ".join(f"{s['lab'].upper()} {s['um_per_pixel_y_x'][0]:.2f} x {s['um_per_pixel_y_x'][1]:.2f} um/px "
                     f"({s['images']} images, {s['tiles']} tiles)" for s in scale["seen_in_training"])
    lines = [
        "## Scale",
        f"Tiles are {manifest['tiling']['tile']} px at {scale['microns_per_pixel']} um per pixel "
        f"({manifest['tiling']['tile'] * scale['microns_per_pixel']:.0f} um of tissue). Scales seen in training "
        f"(y x x): {seen}. The image's scale comes from {scale['resolution']}.",
        "",
        "## Validation by lab",
        "| lab | images | accuracy [95 % CI] | confusion matrix |",
        "|---|---|---|---|",
    ]
    for lab, v in manifest["validation_by_lab"].items():
        lo, hi = v["interval"]
        lines.append(f"| {lab.upper()} | {v['n']} | {v['accuracy']:.3f} [{lo:.3f}-{hi:.3f}] | `{v['confusion_matrix']}` |")
    lines += ["", "## Leave-one-lab-out (stain handling chosen here)",
              "Trained on one lab's images, judged on every image of the other (never seen, never steering training; "
              "T = 1). Fine-tune epochs 0 = the top block frozen, only the Dense layer trained.", "",
              ]
    kinds = [k for k in VIEW_MAKERS if any(f"{k}_accuracy" in r for r in manifest["lab_transfer"]["rows"])]
    about = {"field": "Small fields: the judged lab's tiles cut to 45-137 tile pixels (23-69 um) and mirrored out, as the "
                      "analysis treats a picture smaller than a tile.",
             "low": f"Low power: the judged lab's tiles shrunk {LOW_POWER[0]:g}-{LOW_POWER[1]:g} times and enlarged back, "
                    "as the analysis enlarges a 40x-200x picture to the tile scale."}
    lines += [" ".join(about[k] for k in kinds), ""] if kinds else []
    title = {"field": "small fields", "low": "low power"}
    lines += ["| stain handling | fine-tune epochs | trained on | judged on | images | accuracy | ROC AUC | tile ROC AUC |"
              + "".join(f" {title[k]}: accuracy | ROC AUC |" for k in kinds),
              "|---|---|---|---|---|---|---|---|" + "---|---|" * len(kinds)]
    for r in sorted(manifest["lab_transfer"]["rows"], key=lambda r: (r["finetune_epochs"], r["option"], r["train_lab"])):
        lines.append(f"| {r['option']} | {r['finetune_epochs']} | {r['train_lab'].upper()} ({r['train_images']}) | "
                     f"{r['judged_lab'].upper()} | {r['n']} | {r['accuracy']:.3f} | {r['roc_auc']:.3f} | "
                     f"{r['tile_roc_auc']:.3f} |" + "".join(
                         f" {r[k + '_accuracy']:.3f} | {r[k + '_roc_auc']:.3f} |" if k + "_accuracy" in r else " - | - |"
                         for k in kinds))
    check = manifest.get("breakhis_style_check")
    if check:
        mags = sorted({m for lab in check["correct_of_n"].values() for m in lab}, key=int)
        lines += ["", FIELDS_TITLE,
                  ("Each validation image" if not check.get("images_per_lab") else
                   f"The first {check['images_per_lab']} validation images of each lab (by path), each")
                  + " resampled to a BreakHis camera's scale at each magnification, its central "
                  f"{check['field_px'][1]} x {check['field_px'][0]} px kept and named for the magnification "
                  "(`...-200-001.png`), then analysed as a user's file is (the scale read from the name). At 40x and "
                  "100x the whole source image is smaller than a BreakHis picture and is kept whole.", "",
                  "| lab | " + " | ".join(f"{m}x right" for m in mags) + " |", "|---|" + "---|" * len(mags)]
        flagged = check.get("flagged_unusual", {})
        for lab, cells in check["correct_of_n"].items():
            lines.append(f"| {lab.upper()} | " + " | ".join(
                f"{cells[m][0]} of {cells[m][1]}"
                + (f" ({flagged[lab][m]} unusual)" if m in flagged.get(lab, {}) else "") for m in mags) + " |")
        if flagged:
            above = (manifest.get("novelty") or {}).get("flag_above", 0.99)
            lines += ["", f"(n unusual): pictures the input check flags (farther from the training pictures than "
                      f"{above:.0%} of the validation images); the right answers include them."]
    chosen, best = manifest["lab_transfer"]["chosen"], choose(manifest["lab_transfer"]["rows"])
    why = ("best mean ROC AUC over both directions" if chosen == best else f"the table favours {best}; {chosen} was given "
           "to `train --stain` by hand, or was the best when the bundle was trained: the CHANGELOG says why")
    measured = {r["option"] for r in manifest["lab_transfer"]["rows"]}
    missing = [o for o in OPTIONS if o not in measured]
    lines.append(f"{CHOSEN}**{chosen}** ({why})." + (f" Not measured: {', '.join(missing)}." if missing else "") + "\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.training.lab_transfer")
    parser.add_argument("action", choices=["cache", "measure", "train", "card", "fields", "compare-fields"])
    parser.add_argument("--views", nargs="*", help="cache: feature files to make (default: every option's)")
    parser.add_argument("--options", nargs="*", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--finetune-epochs", type=int, default=0, help="measure: top-block epochs after the head")
    parser.add_argument("--stain", choices=list(OPTIONS), help="train: the option (default: chosen by 'measure')")
    parser.add_argument("--out", default=None, help="models folder (default: the repo's models/)")
    parser.add_argument("--per-lab", type=int, help="fields: only the first N validation images of each lab")
    parser.add_argument("--versions", nargs=2, metavar=("OLD", "NEW"), help="compare-fields: the two versions' runs")
    args = parser.parse_args(argv)
    config = CONFIGS[BUNDLE]
    if args.action == "cache":
        cache(config, args.views)
    elif args.action == "measure":
        measure(config, args.options, args.finetune_epochs)
    elif args.action == "fields":  # the written bundle on its validation images cut to BreakHis pictures
        folder = Path(args.out or REPO / "models") / BUNDLE
        option = json.loads((folder / "manifest.json").read_text())["lab_transfer"]["chosen"]
        for lab, cells in record_fields(folder, bundle_config(option), args.per_lab)["correct_of_n"].items():
            print(lab, ", ".join(f"{m}x {c} of {n}" for m, (c, n) in cells.items()))
    elif args.action == "compare-fields":
        from core.training.compare import difference_lines

        print("\n".join(difference_lines(compare_fields(config, *args.versions))))
    elif args.action == "card":  # the written bundle's manifest and card again, with every measured row
        folder = Path(args.out or REPO / "models") / BUNDLE
        option = json.loads((folder / "manifest.json").read_text())["lab_transfer"]["chosen"]
        config = bundle_config(option)
        entries = all_entries(config)
        record(folder, config, entries, *split_images(entries, config), option)
    else:
        rows = json.loads((work_dir(config) / "lab_transfer.json").read_text())
        print(train_bundle(args.stain or choose(rows), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
