"""Grouped cross-validation of the mammography detector (tile head, marks, image score) on cached tile features.

Folds are women (a woman's two films stay together). Every number is out of fold: the tile head is fitted on
four folds' tiles and scores the fifth's; the image score of a film comes from its own tiles only.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.training.configs import DATA_ROOT
from core.training.datasets import Sample, mini_mias
from core.models.mammography import film_score, marks as film_marks
from core.training.mammo_detector import SCORING, STRIDE, TILE, load_film

MASS_CLASSES = ("CIRC", "SPIC", "MISC")  # mini-MIAS mass types; CALC calcifications, ARCH distortion, ASYM asymmetry
SUPPRESS = STRIDE  # marks closer than this (px) are one finding


def tile_head(c: float = 0.01, components: int = 128):
    """Standardised features -> PCA -> balanced logistic regression: few positive tiles (about 150), 4.5k features."""
    return make_pipeline(StandardScaler(), PCA(components, random_state=0),
                         LogisticRegression(C=c, class_weight="balanced", max_iter=2000))


def training_tiles(samples: list[Sample], films: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Tiles a head may learn from: every tile of a normal film; of an abnormal film with circles, its labelled
    tiles and those no circle reaches; abnormal films without a circle (diffuse findings) are left out."""
    xs, ys = [], []
    for sample, film in zip(samples, films):
        if sample.label == "normal":
            xs.append(film["features"]), ys.append(np.zeros(len(film["features"]), np.int8))
        elif sample.circles:
            clear = ~_reached(film["corners"], sample.circles)
            keep = (film["labels"] == 1) | clear
            xs.append(film["features"][keep]), ys.append(film["labels"][keep])
    return np.concatenate(xs), np.concatenate(ys)


def _reached(corners: np.ndarray, circles) -> np.ndarray:
    """Tiles that any annotated circle overlaps."""
    hit = np.zeros(len(corners), bool)
    for c in circles:
        nearest_y = np.clip(c.y, corners[:, 0], corners[:, 0] + TILE)
        nearest_x = np.clip(c.x, corners[:, 1], corners[:, 1] + TILE)
        hit |= (nearest_y - c.y) ** 2 + (nearest_x - c.x) ** 2 <= c.r ** 2
    return hit


def minus_other_breast(samples: list[Sample], scores: np.ndarray) -> np.ndarray:
    """Each film's score less the mean of the woman's other films' (mdb001 + mdb002): a finding is what one breast
    has and the other has not; a film without a partner keeps its score."""
    films: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        films.setdefault(s.group, []).append(i)
    return np.array([scores[i] - np.mean([scores[j] for j in films[s.group] if j != i] or [0.0])
                     for i, s in enumerate(samples)])


def marks(corners: np.ndarray, probs: np.ndarray, threshold: float) -> list[tuple[float, float, float]]:
    """The detector's CAD marks (x, y, score) on a film, as the product places them."""
    return film_marks(corners, probs, threshold, TILE, SUPPRESS)


def marked(circle, marks: list[tuple[float, float, float]]) -> bool:
    """Whether an annotated finding is marked: a mark's centre lies inside its circle."""
    return any(np.hypot(x - circle.x, y - circle.y) <= circle.r for x, y, _ in marks)


def _bootstrap_auc(y: np.ndarray, s: np.ndarray, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    values = []
    for _ in range(n):
        pick = rng.integers(0, len(y), len(y))
        if len(set(y[pick])) == 2:
            values.append(roc_auc_score(y[pick], s[pick]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def cross_validate(samples: list[Sample], films: list[dict], folds: int = 5, c: float = 0.01) -> dict:
    """Out-of-fold tile probabilities for every film, then image AUC (max and top-3 mean of its tiles) and the
    marks: per finding type the share of annotated findings a mark lands on (centre within the circle) at
    the threshold giving at most one false mark per film on average."""
    y_img = np.array([s.label == "abnormal" for s in samples], int)
    groups = [s.group for s in samples]
    probs: list[np.ndarray | None] = [None] * len(samples)
    tile_auc = []
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(y_img, y_img, groups):
        x, y = training_tiles([samples[i] for i in train], [films[i] for i in train])
        head = tile_head(c).fit(x, y)
        for i in test:
            probs[i] = head.predict_proba(films[i]["features"])[:, 1] if len(films[i]["features"]) else np.zeros(0)
        xt, yt = training_tiles([samples[i] for i in test], [films[i] for i in test])
        tile_auc.append(roc_auc_score(yt, head.predict_proba(xt)[:, 1]))
    result = {"films": len(samples), "abnormal": int(y_img.sum()), "tile_auc_per_fold": [round(a, 3) for a in tile_auc],
              **image_aucs(samples, image_scores(samples, probs))}
    result["marks"] = _mark_rates(samples, films, probs)
    return result


def image_scores(samples: list[Sample], probs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A film's score from its tile probabilities: the highest, the mean of the three highest, and that mean less
    the woman's other film's."""
    scores = {"max": np.array([p.max() if len(p) else 0.0 for p in probs]),
              "top3": np.array([film_score(p, SCORING.top) for p in probs])}
    scores["top3_minus_other"] = minus_other_breast(samples, scores["top3"])
    return scores


def image_aucs(samples: list[Sample], scores: dict[str, np.ndarray]) -> dict:
    """Abnormal-vs-normal ROC AUC of each image score with its bootstrap 95 % interval."""
    y = np.array([s.label == "abnormal" for s in samples], int)
    out = {}
    for name, score in scores.items():
        out[f"image_auc_{name}"] = round(float(roc_auc_score(y, score)), 3)
        out[f"image_auc_{name}_ci"] = [round(v, 3) for v in _bootstrap_auc(y, score)]
    return out


def _mark_rates(samples: list[Sample], films: list[dict], probs: list[np.ndarray], place=None) -> dict:
    """Sensitivity per finding type against false marks per film, over thresholds; the operating point is the
    lowest threshold with at most one false mark per film. ``place(i, threshold)``: film i's marks (default:
    ``marks`` at the tile centres)."""
    table = []
    for t in np.round(np.arange(0.30, 0.96, 0.05), 2):
        false, found = 0, {}
        for i, (sample, film, p) in enumerate(zip(samples, films, probs)):
            ms = marks(film["corners"], p, t) if place is None else place(i, float(t))
            hits = [any(np.hypot(x - c.x, y - c.y) <= c.r for c in sample.circles) for x, y, _ in ms]
            false += len(ms) - sum(hits)
            for c in sample.circles:
                kind = sample.extra["class"]
                got = marked(c, ms)
                found.setdefault(kind, []).append(got)
        table.append({"threshold": float(t), "false_marks_per_film": round(false / len(samples), 2),
                      **{k: f"{sum(v)}/{len(v)}" for k, v in sorted(found.items())},
                      "masses": _share(found, MASS_CLASSES)})
    ok = [row for row in table if row["false_marks_per_film"] <= 1.0]
    return {"operating_point": ok[0] if ok else None, "table": table}


def _share(found: dict, kinds: tuple[str, ...]) -> str:
    hits = [g for k in kinds for g in found.get(k, [])]
    return f"{sum(hits)}/{len(hits)}"


def main() -> None:
    parser = argparse.ArgumentParser(description="Out-of-fold numbers of the mammography detector (cached features).")
    parser.add_argument("--c", type=float, default=0.01, help="inverse L2 strength of the tile head")
    args = parser.parse_args()
    samples = mini_mias(DATA_ROOT / "mini_mias")
    print(json.dumps(cross_validate(samples, [load_film(s) for s in samples], c=args.c), indent=1))


if __name__ == "__main__":
    main()
