"""How unlike a model's training images a picture is: a check on the input, beside the model's answer.

A model answers every picture (a classifier with probabilities that sum to one), however far the picture lies from
what it was fitted on (another scanner, sequence, plane or body part), and it can be sure and wrong there. So a
bundle may carry a reference of its network's features: the activation its stem hands the rest, averaged over the
image, for every training image (bundles on one stem, a classifier and the segmenter on its network, share it). A
picture's distance is the Mahalanobis distance of its features to the nearest class mean (one covariance shared by
the classes, shrunk: Lee et al., NeurIPS 2018), and it is said as the share of the bundle's held-out pictures of its
own sources that lie closer: its validation images (patients the model never saw), or, for a film detector trained
on every film it had, its films each measured against a reference fitted without their woman's fold. Above the
manifest's ``flag_above`` the result warns that the picture is unlike the model's training images. It does not
change the model's answer, and a picture that passes is not thereby one the model reads well: it is a guard against
the far-off input, not a measure of correctness.

The reference is fitted by core.training.novelty; this module only reads and applies it (NumPy, no TensorFlow).
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from core.errors import ModelError

FORMAT = 2  # 2: a reference may keep only its leading directions and one variance for the rest (``residual``)
FORMATS = (1, 2)  # formats read


@dataclass(frozen=True)
class NoveltySpec:
    """The manifest's ``novelty`` entry: the reference file, its sha256, and the share of held-out pictures closer
    than a picture above which the picture is flagged."""

    file: str
    sha256: str
    flag_above: float = 0.99


@dataclass(frozen=True)
class NoveltyReference:
    """``means``: (classes, D) feature means; ``whiten``: (D, K), so that a distance is ||(f - mean) @ whiten||^2;
    ``reference``: the held-out pictures' distances (validation images, or films out of fold), sorted; ``layer``: the
    activation the features pool; ``stem``: the key of the stem that hands it out (core.models.stages.Stages.key: it
    names the network's files and the cut), so bundles on one stem (the brain pair) can carry the same reference and
    a retrained network cannot use it.

    ``residual``: where ``whiten`` keeps only the K < D leading directions of the covariance (its columns the
    eigenvectors divided by the roots of their ``variances``), the one variance of every other direction; the part
    of f - mean outside the K directions then adds its squared length over ``residual``: the covariance with every
    other eigenvalue replaced by their mean (exact where they are equal, as Ledoit-Wolf makes those beyond the
    pictures' own directions when there are fewer pictures than features). For a film reference (4,096 features of
    258 films: a (D, D) matrix would be 64 MB)."""

    means: np.ndarray
    whiten: np.ndarray
    reference: np.ndarray
    layer: str
    stem: str
    variances: np.ndarray | None = None
    residual: float | None = None

    @cached_property
    def whitened_means(self) -> np.ndarray:
        """(classes, K): the class means whitened once, as (f - m) W = f W - m W (one product per picture)."""
        return self.means @ self.whiten

    @property
    def dimensions(self) -> int:
        return int(self.means.shape[1])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N,) squared Mahalanobis distance of each row of ``features`` (N, D) to its nearest class mean."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.dimensions:
            raise ModelError(f"novelty reference of {self.dimensions} features cannot read features of shape "
                             f"{features.shape}")
        whitened = (features @ self.whiten)[:, None, :] - self.whitened_means[None]
        inside = (whitened ** 2).sum(axis=-1)
        if self.residual is not None:  # ||f - m||^2 less its length within the K directions, over their one variance
            length = ((features ** 2).sum(axis=1)[:, None] - 2 * features @ self.means.T
                      + (self.means ** 2).sum(axis=1)[None])
            within = (whitened ** 2 * self.variances).sum(axis=-1)
            inside = inside + np.maximum(length - within, 0.0) / self.residual
        return inside.min(axis=1)

    def share_closer(self, distances: np.ndarray) -> np.ndarray:
        """For each distance, the share of held-out pictures that lie at least as close (0..1)."""
        return np.searchsorted(self.reference, np.asarray(distances, np.float64), side="right") / len(self.reference)

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        low_rank = {} if self.residual is None else {"variances": self.variances.astype(np.float64),
                                                      "residual": np.array(self.residual, np.float64)}
        # a full reference as format 1, which versions before the low-rank form read too
        np.savez_compressed(out, format=np.array(FORMAT if low_rank else 1), means=self.means.astype(np.float32),
                            whiten=self.whiten.astype(np.float32), reference=self.reference.astype(np.float64),
                            layer=np.array(self.layer), stem=np.array(self.stem), **low_rank)
        return out.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> "NoveltyReference":
        """The reference written by ``to_bytes``; ModelError where the file is not one."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) not in FORMATS:
                    raise ModelError(f"{path.name}: novelty reference format {int(data['format'])}, this program "
                                     f"reads {' and '.join(map(str, FORMATS))}")
                # float64 once here, not per picture (the whitening matrix is 2-4 MB in float32)
                means, whiten = data["means"].astype(np.float64), data["whiten"].astype(np.float64)
                reference = np.sort(data["reference"])
                layer, stem = str(data["layer"]), str(data["stem"])
                variances = data["variances"].astype(np.float64) if "residual" in data else None
                residual = float(data["residual"]) if "residual" in data else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{path.name} is not a novelty reference ({exc})") from exc
        if (means.ndim != 2 or whiten.ndim != 2 or whiten.shape[0] != means.shape[1] or reference.ndim != 1
                or not len(reference) or not all(np.isfinite(a).all() for a in (means, whiten, reference))
                or (residual is not None and (variances.shape != whiten.shape[1:]
                                              or not (np.isfinite(variances) & (variances > 0)).all()
                                              or not (np.isfinite(residual) and residual > 0)))):
            raise ModelError(f"{path.name} is not a novelty reference (shapes {means.shape}, {whiten.shape}, "
                             f"{reference.shape})")
        return cls(means, whiten, reference, layer, stem, variances, residual)


def pooled(activation: np.ndarray) -> np.ndarray:
    """(N, C) features of an (N, H, W, C) activation: its average over the picture."""
    return np.asarray(activation, np.float64).mean(axis=(1, 2))


UNUSUAL = "Unusual picture"  # how a novelty warning begins (series verdicts count the slices that have one)


def flagged_in(warnings: list[str]) -> bool:
    """Whether a result's ``warnings`` hold the input check's flag (a model result, a series slice's outcome)."""
    return any(w.startswith(UNUSUAL) for w in warnings)


def beyond_chance(flagged: int, pictures: int, rate: float = 1 - NoveltySpec.flag_above, level: float = 0.01) -> bool:
    """Whether ``flagged`` of ``pictures`` is more than pictures like the held-out ones would give (each flagged
    at ``rate``: by default the default threshold's): a binomial tail below ``level``. A series of 24 ordinary slices
    has one flagged one time in five; said for every such series, the warning would mean nothing. The terms are taken
    in logarithms: C(n, k) as a float overflows from about a thousand pictures."""
    if flagged <= 0:
        return False
    log_rate, log_rest = math.log(rate), math.log1p(-rate)
    below = sum(math.exp(math.lgamma(pictures + 1) - math.lgamma(k + 1) - math.lgamma(pictures - k + 1)
                         + k * log_rate + (pictures - k) * log_rest) for k in range(min(flagged, pictures + 1)))
    return 1.0 - below < level


# What may make a picture unusual for a model of each modality (DICOM's codes), said in the warning.
CAUSES = {"MR": "another scanner, sequence, plane, body part, or a damaged picture?",
          "US": "another scanner or preset, another body part, or a damaged picture?",
          "MG": "another film digitiser or detector, a view it was not trained on, or a damaged picture?",
          "SM": "another lab, stain or magnification, a picture of something other than H&E tissue, or a damaged "
                "picture?"}
OTHER_CAUSES = "another scanner or source, another body part, or a damaged picture?"  # a bundle of another modality


def novelty_warning(model_id: str, share: float, modality: str | None = None) -> str:
    """The warning for a picture farther from the model's training images than ``share`` of its held-out pictures,
    with what may cause it for a model of ``modality``."""
    than = "any" if share >= 1.0 else f"{min(share, 0.999):.1%}"
    return (f"{UNUSUAL} for {model_id}: farther from the images its network learnt from than {than} of the held-out "
            f"pictures of its own sources it is ranked among ({CAUSES.get(modality, OTHER_CAUSES)}); its answer is "
            "less reliable here.")
