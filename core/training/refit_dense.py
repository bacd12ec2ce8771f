"""Refit a written brain classifier's last layer (the Dense over its pooled top block) on its split plus the
tumour-free contrast-T1 stand-ins of ``core.training.mirrored_halves``; every other weight is kept.

Why: the 4-class network calls 33 of 34 tumour-free stand-ins (a figshare slice's tumour-free hemisphere mirrored
onto the tumour's) a tumour: it reads figshare's contrast-T1 look as 'tumour', as its only contrast-T1 slices all
show one. A linear probe on its pooled features separated them (28 of 34) when trained with stand-ins of training
patients. Keeping every layer below the Dense keeps the stem that the segmenter and the input check read, so
neither changes; the segmenter's manifest is pointed at the new version once its encoder is checked to be the same.

Stand-ins: each healthy half 'notumor', each tumour half mirrored its own class (so that left-right symmetry alone
does not say 'notumor'), on the side of the split of the slice it was made from, in its patient's group.

    python -m core.training.refit_dense --version 3.1.0 [--out OUT] [--stand-in-weight 4] [--c 0.1]

then retrain the yes/no bundle on it (``python -m core.training train brain-mri-tumor-yesno``) and compare
(``python -m core.training.compare models/brain-mri-tumor-4class OUT/brain-mri-tumor-4class``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np

from core.training.configs import CACHE_ROOT, CONFIGS, DATA_ROOT, REPO, network_origin
from core.training.mirrored_halves import STAND_INS, write_stand_ins
from core.training.sources import source_of
from core.training.transfer import _parent_features

BUNDLE = "brain-mri-tumor-4class"
SEGMENTER = "brain-mri-tumor-seg"
RECORDS = ("refit_dense", "tune_block14")  # manifest ``training`` keys of a version made from the one before


def stand_in_entries(written: dict, folder: Path = STAND_INS) -> dict[str, list[list]]:
    """Split entries ([absolute path, label, group]) of the stand-ins of every figshare slice in ``written``
    (a split.json), each on its source slice's side."""
    sides = {Path(path).name: part for part in ("train", "val") for path, _, _ in written[part]}
    out: dict[str, list[list]] = {"train": [], "val": []}
    for row in write_stand_ins(folder, "all"):
        if not row["used"]:
            continue
        stem = Path(row["file"]).stem
        part = sides[row["file"]]
        out[part].append([str(folder / "healthy" / f"{stem}.png"), "notumor", row["group"]])
        out[part].append([str(folder / "tumour" / f"{stem}.png"), row["label"], row["group"]])
    return out


def mirror_features(build: Callable[[], object], folder: Path, entries: list[list], cache: Path,
                    dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(the model ``build()`` makes on each image of ``entries``, on its mirror image), images preprocessed as the
    product does for the bundle in ``folder``; cached as ``<cache>_plain.npy`` and ``<cache>_mirrored.npy`` (named by
    the bundle's weights and the entries), each saved whole or not at all. The model is built only when not cached."""
    files = [cache.with_name(f"{cache.name}_{view}.npy") for view in ("plain", "mirrored")]
    if not all(f.exists() for f in files):
        from core.models.registry import Bundle
        from core.training.mirror import predict_with_mirror

        views = predict_with_mirror(build(), [DATA_ROOT / p for p, _, _ in entries], Bundle.from_folder(folder).spec,
                                    desc=f"features {cache.name}")
        cache.parent.mkdir(parents=True, exist_ok=True)
        for file, values in zip(files, views):
            partial = file.with_name(f"{file.stem}.partial.npy")
            np.save(partial, values.astype(dtype))
            partial.rename(file)
    return np.load(files[0]), np.load(files[1])


def fit_dense(x: np.ndarray, y: np.ndarray, weights: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (features, classes), bias) of a multinomial logistic regression: the Dense layer's weights."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=5000).fit(x, y, sample_weight=weights)
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:  # two classes: one logit difference, split evenly so that softmax gives the same
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return coef.T.astype(np.float32), intercept.astype(np.float32)


def write_refit(old: Path, new: Path, version: str, weights: dict[str, list[np.ndarray]], split: dict, about: dict,
                command: str = "python -m core.training.refit_dense", record: str = "refit_dense") -> str:
    """``new``: a copy of the bundle ``old`` whose head layers named in ``weights`` (at any depth) hold those weights,
    with ``split`` as its split and ``version``; ``about`` goes to the manifest's ``training.<record>``. Returns the
    new head's sha256. Validation numbers are measured afterwards (``remeasure``)."""
    import keras

    from core.models.backbones import leaf_layers
    from core.models.storage import save_keras_fp16

    if new.resolve() != old.resolve():
        shutil.rmtree(new, ignore_errors=True)
        shutil.copytree(old, new)
    manifest = json.loads((old / "manifest.json").read_text())
    head = keras.saving.load_model(old / manifest["weights"]["file"], compile=False, safe_mode=True)
    layers = {layer.name: layer for layer in leaf_layers(head)}
    for name, values in weights.items():
        held = [tuple(w.shape) for w in layers[name].get_weights()]
        if held != [tuple(np.shape(v)) for v in values]:
            raise ValueError(f"layer {name} holds {held}, the fit gives {[tuple(np.shape(v)) for v in values]}")
        layers[name].set_weights(values)
    sha = save_keras_fp16(head, new / manifest["weights"]["file"])
    started = {"version": manifest["version"], "weights_sha256": manifest["weights"]["sha256"]}
    version_of_network, sha_of_network = network_origin(old)
    manifest["version"] = version
    manifest["weights"]["sha256"] = sha
    training = manifest.setdefault("training", {})
    for earlier in (*RECORDS, "network_of"):  # how the version started from was made: that version's CHANGELOG
        training.pop(earlier, None)
    training[record] = {**about, "started_from": started}
    if set(weights) == {"logits"}:  # below the Dense: unchanged, so its backbone file too
        training["network_of"] = {"version": version_of_network, "weights_sha256": sha_of_network}
    training["counts"] = {part: {c: sum(label == c for _, label, _ in split[part])
                                 for c in sorted({label for _, label, _ in split[part]})} for part in split}
    training["command"] = command
    training["date"] = date.today().isoformat()
    (new / "split.json").write_text(json.dumps(split))
    (new / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return sha


def changed_layers(old: Path, new: Path) -> list[str] | None:
    """Names of the head layers whose weights differ between the two bundles, or None where the heads are not the
    same network (other layers, other weight shapes) or their trunks differ."""
    import keras

    from core.models.backbones import leaf_layers

    files = [json.loads((f / "manifest.json").read_text())["weights"]["file"] for f in (old, new)]
    heads = [leaf_layers(keras.saving.load_model(f / name, compile=False, safe_mode=True))
             for f, name in zip((old, new), files)]
    if [layer.name for layer in heads[0]] != [layer.name for layer in heads[1]]:
        return None
    trunks = [(f / "trunk.keras").read_bytes() if (f / "trunk.keras").exists() else b"" for f in (old, new)]
    if trunks[0] != trunks[1]:
        return None
    changed = []
    for a, b in zip(*heads):
        u, v = [np.asarray(w) for w in a.get_weights()], [np.asarray(w) for w in b.get_weights()]
        if [w.shape for w in u] != [w.shape for w in v]:
            return None
        if any(not np.array_equal(x, y) for x, y in zip(u, v)):
            changed.append(a.name)
    return changed


def point_segmenter(models: Path, old_sha: str, new_sha: str, version: str,
                    how: str = "refitted only its last layer, so its network through block 14") -> None:
    """The segmenter on the old version's encoder named the new version, whose encoder is the same (``how``)."""
    path = models / SEGMENTER / "manifest.json"
    manifest = json.loads(path.read_text())
    arch = manifest["architecture"]
    if arch.get("encoder_bundle_sha256") != old_sha:
        return
    arch["encoder_bundle_sha256"] = new_sha
    arch["weights_origin"] += f"; {BUNDLE} {version} {how} is this encoder still"
    path.write_text(json.dumps(manifest, indent=2))


def remeasure(folder: Path, notes: str) -> None:
    """Temperature, mirror choice, validation metrics and per-source rows of the written bundle, through the
    product's loading and preprocessing."""
    from core.training.by_source import record_by_source
    from core.training.mirror import choose_mirror_average

    choose_mirror_average(folder, notes)
    record_by_source(folder)


def extend_cached_plan(extra: dict[str, list[list]]) -> None:
    """The bundle's cached split (``core.training.plan.stored_plan``, which bundles trained on it check against its
    written split.json) extended by the same stand-in entries, so that the yes/no bundle retrains on the new split."""
    path = CONFIGS[BUNDLE].cache_dir / "split.json"
    plan = json.loads(path.read_text())
    for part in ("train", "val"):
        plan[part] += [{"path": p, "label": label, "group": group, "mask": None, "circles": []}
                       for p, label, group in extra[part]]
    path.write_text(json.dumps(plan, indent=1))


@contextmanager
def shipped_copy(models: Path = REPO / "models") -> Iterator[Path]:
    """A copy of the shipped bundle, the version a refit starts from, kept while the new one is written."""
    with tempfile.TemporaryDirectory(prefix="refit-") as folder:
        shutil.copytree(models / BUNDLE, Path(folder) / BUNDLE)
        yield Path(folder) / BUNDLE


def entries_key(entries: list[list]) -> str:
    """A short name for a list of split entries: cached features of other entries (new stand-ins) are not reused."""
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:12]


def write_checked(old: Path, out: Path, version: str, weights: dict[str, list[np.ndarray]], split: dict, about: dict,
                  command: str, record: str, allowed: tuple[str, ...]) -> tuple[str, list[str]]:
    """(new head sha256, layers changed): the new version written and measured beside the models folder ``out`` (never
    in it, where the registry would load it), refused unless only ``allowed`` layers changed, then swapped in."""
    staging = out.parent / f".{BUNDLE}-{record}"
    new_sha = write_refit(old, staging, version, weights, split, about, command, record)
    changed = changed_layers(old, staging)
    if changed is None or not set(changed) <= set(allowed):
        shutil.rmtree(staging)
        raise RuntimeError(f"layers other than {', '.join(allowed)} changed ({changed}): the segmenter and the input "
                           "check would not fit")
    remeasure(staging, CONFIGS[BUNDLE].notes)
    swap_in(staging, out / BUNDLE)
    return new_sha, changed


def swap_in(staging: Path, final: Path) -> None:
    """``staging`` renamed to ``final``, the folder there first set aside beside ``staging`` and removed last, so
    that a failure leaves one of the two whole."""
    aside = staging.with_name(f"{staging.name}-replaced")
    shutil.rmtree(aside, ignore_errors=True)
    if final.exists():
        final.rename(aside)
    staging.rename(final)
    shutil.rmtree(aside, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the new version, e.g. 3.1.0")
    parser.add_argument("--out", type=Path, default=REPO / "models", help="models folder to write (default: the repo's)")
    parser.add_argument("--stand-in-weight", type=float, default=4.0,
                        help="weight of each stand-in view in the fit (default 4: about 15 %% of the total weight)")
    parser.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the fit (default 0.1)")
    args = parser.parse_args()
    with shipped_copy() as old:
        written = json.loads((old / "split.json").read_text())
        written = {part: [e for e in written[part] if source_of(e[0], e[2]) != "figshare-mirrored"]  # an earlier refit's
                   for part in ("train", "val")}
        extra = stand_in_entries(written)
        split = {part: written[part] + extra[part] for part in ("train", "val")}
        classes = CONFIGS[BUNDLE].classes
        old_sha = json.loads((old / "manifest.json").read_text())["weights"]["sha256"]
        cache = CACHE_ROOT / BUNDLE / f"refit_{old_sha[:12]}" / f"train_{entries_key(split['train'])}"
        plain, mirrored = mirror_features(lambda: _parent_features(old), old, split["train"], cache)
        x = np.concatenate([plain, mirrored])
        y = np.tile([classes.index(label) for _, label, _ in split["train"]], 2)
        is_stand_in = np.tile([False] * len(written["train"]) + [True] * len(extra["train"]), 2)
        kernel, bias = fit_dense(x, y, np.where(is_stand_in, args.stand_in_weight, 1.0), args.c)
        about = {"what": f"a multinomial logistic regression (L2, C = {args.c:g}) on the pooled block-14 features of "
                         "each training image and its mirror image",
                 "stand_ins": {"made_by": "core.training.mirrored_halves", "train": len(extra["train"]),
                               "val": len(extra["val"]), "weight": args.stand_in_weight}}
        command = (f"python -m core.training.refit_dense --version {args.version} --stand-in-weight "
                   f"{args.stand_in_weight:g} --c {args.c:g}")
        new_sha, _ = write_checked(old, args.out, args.version, {"logits": [kernel, bias]}, split, about, command,
                                   "refit_dense", ("logits",))
    extend_cached_plan(extra)
    if (args.out / SEGMENTER).exists():
        point_segmenter(args.out, old_sha, new_sha, args.version)
    print(f"{args.out / BUNDLE}: version {args.version}, {len(extra['train'])} + {len(extra['val'])} stand-in entries")


if __name__ == "__main__":
    main()
