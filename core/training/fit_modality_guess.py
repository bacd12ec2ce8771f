"""Fit the NumPy modality guesser on the shared training sets: ``python -m core.training.fit_modality_guess``.

Writes ``resources/modality_guess.npz`` and prints grouped validation accuracy and the one-vs-rest
ROC AUC of each modality (the number behind the wrong-modality warning).
"""

from __future__ import annotations

import json

import numpy as np

from core.imaging import load_image
from core.imaging.modality_guess import WEIGHTS, modality_features
from core.training.configs import DATA_ROOT
from core.training.datasets import class_folders, image_mask_pairs, mini_mias, ucsb_histology
from core.training.splits import split

PER_SOURCE = 400  # images drawn from each data set: a small set (the varied yes/no MRIs) is not drowned


def _collect():
    rng = np.random.default_rng(0)
    sources = [
        ("MR", "brain_mri_4class", class_folders(DATA_ROOT / "brain_mri_4class" / "train")),
        ("MR", "brain_mri_yes_no", class_folders(DATA_ROOT / "brain_mri_yes_no")),
        ("US", "busi", image_mask_pairs(DATA_ROOT / "busi")),
        ("MG", "mini_mias", mini_mias(DATA_ROOT / "mini_mias")),
        ("SM", "histology_ucsb", ucsb_histology(DATA_ROOT / "histology_ucsb")),
    ]
    samples = []
    for modality, name, items in sources:
        for i in rng.permutation(len(items))[:PER_SOURCE]:
            s = items[int(i)]
            s.extra["source"] = name
            s.label = modality
            samples.append(s)
    return samples


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    samples = _collect()
    train, val = split(samples, 0.25, seed=0)

    def features(items, mirrored: bool):
        rows, labels = [], []
        for s in items:
            display = load_image(s.path).display(0)
            views = [display, display[:, ::-1]] if mirrored else [display]  # left and right breasts
            rows.extend(modality_features(v) for v in views)
            labels.extend(s.label for _ in views)
        return np.array(rows), np.array(labels)

    x_train, y_train = features(train, mirrored=True)
    x_val, y_val = features(val, mirrored=False)
    mean, scale = x_train.mean(0), x_train.std(0) + 1e-6
    model = LogisticRegression(max_iter=3000, C=0.5, class_weight="balanced")
    model.fit((x_train - mean) / scale, y_train)
    probs = model.predict_proba((x_val - mean) / scale)
    accuracy = float((model.classes_[probs.argmax(1)] == y_val).mean())
    aucs = {c: float(roc_auc_score(y_val == c, probs[:, i])) for i, c in enumerate(model.classes_)}
    np.savez_compressed(WEIGHTS, mean=mean.astype(np.float32), scale=scale.astype(np.float32),
                        coef=model.coef_.astype(np.float32), intercept=model.intercept_.astype(np.float32),
                        classes=np.array(model.classes_))
    best, best_p = model.classes_[probs.argmax(1)], probs.max(1)
    flags = {}
    for modality in model.classes_:
        # The guard for a model of `modality`: an image is flagged when another modality wins with p >= 0.90.
        flagged = (best != modality) & (best_p >= 0.90)
        flags[modality] = {"other_modalities_flagged": float(flagged[y_val != modality].mean()),
                           "own_modality_falsely_flagged": float(flagged[y_val == modality].mean())}
    sources = np.array([s.extra["source"] for s in val])
    own_flagged = (best != y_val) & (best_p >= 0.90)
    by_source = {name: {"n": int((sources == name).sum()), "falsely_flagged": float(own_flagged[sources == name].mean())}
                 for name in sorted(set(sources))}
    report = {"train_images": len(train), "validation_images": len(val), "validation_accuracy": accuracy,
              "own_modality_falsely_flagged_by_data_set": by_source,
              "validation_roc_auc_one_vs_rest": aucs,
              "wrong_modality_guard_at_0.90": flags,
              "meaning": "ROC AUC of telling each modality from the other three on held-out real images; the "
                         "analyzer warns of a wrong modality when another modality gets p >= 0.90"}
    WEIGHTS.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
