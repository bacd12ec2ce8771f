"""Validation metrics and plots for model cards: classification and segmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.models.intervals import mean_interval


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-np.mean(np.log(probs[np.arange(len(y)), y] + 1e-12)))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T minimising validation negative log-likelihood."""
    from scipy.optimize import minimize_scalar

    return float(minimize_scalar(lambda t: log_loss(softmax(logits / t), y), bounds=(0.05, 20.0), method="bounded").x)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE over equal-width confidence bins of the predicted class."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def classification_metrics(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=range(len(classes)), zero_division=0)
    if len(classes) == 2:
        auc = float(roc_auc_score(y, probs[:, 1]))
    else:
        auc = float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=range(len(classes))))
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "roc_auc": auc,
        "ece": expected_calibration_error(probs, y),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y, pred, labels=range(len(classes))).tolist(),
    }


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks (nonzero = inside); an empty truth with an empty prediction counts as 1."""
    p, t = pred.astype(bool), truth.astype(bool)
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(p, t).sum() / total)


def segmentation_metrics(pred_masks: list[np.ndarray], true_masks: list[np.ndarray]) -> dict:
    """Mean per-image Dice and IoU; an empty truth with an empty prediction counts as 1."""
    dices, iou = [], []
    for p, t in zip(pred_masks, true_masks):
        dices.append(dice(p, t))
        p, t = p.astype(bool), t.astype(bool)
        inter, union = np.logical_and(p, t).sum(), np.logical_or(p, t).sum()
        iou.append(1.0 if union == 0 else inter / union)
    return {"n": len(dices), "dice": float(np.mean(dices)), "dice_ci95": list(mean_interval(dices)) if dices else None,
            "iou": float(np.mean(iou))}


def classification_plots(probs: np.ndarray, y: np.ndarray, classes: list[str], folder: Path) -> list[str]:
    """Confusion matrix, ROC curves and reliability diagram as PNG files; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    metrics = classification_metrics(probs, y, classes)
    folder.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    cm = np.array(metrics["confusion_matrix"])
    axes[0].imshow(cm, cmap="Blues")
    axes[0].set_xticks(range(len(classes)), classes, rotation=30)
    axes[0].set_yticks(range(len(classes)), classes)
    for (i, j), v in np.ndenumerate(cm):
        axes[0].text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    axes[0].set_xlabel("predicted")
    axes[0].set_ylabel("true")
    axes[0].set_title(f"Confusion matrix (accuracy {metrics['accuracy']:.3f})")
    for i, c in enumerate(classes if len(classes) > 2 else classes[1:]):
        k = classes.index(c)
        fpr, tpr, _ = roc_curve(y == k, probs[:, k])
        axes[1].plot(fpr, tpr, label=c)
    axes[1].plot([0, 1], [0, 1], "k:")
    axes[1].set_title(f"ROC (AUC {metrics['roc_auc']:.3f})")
    axes[1].set_xlabel("false positive rate")
    axes[1].set_ylabel("true positive rate")
    axes[1].legend()
    confidence, correct = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0, 1, 11)
    centers, accs = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            centers.append((lo + hi) / 2)
            accs.append(correct[inside].mean())
    axes[2].bar(centers, accs, width=0.09, alpha=0.7)
    axes[2].plot([0, 1], [0, 1], "k:")
    axes[2].set_title(f"Reliability (ECE {metrics['ece']:.3f})")
    axes[2].set_xlabel("confidence")
    axes[2].set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(folder / "validation.png", dpi=90)
    plt.close(fig)
    return ["validation.png"]
