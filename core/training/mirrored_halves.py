"""Tumour-free stand-ins for slices of a tumour patient's own scan: the hemisphere without the tumour mirrored
onto the other.

Why: the shared data has no tumour-free post-contrast T1 slice of a tumour patient (figshare's contrast-T1 slices
all show the tumour), yet the brain issue measured the old models calling such slices a tumour, and the brain
classifiers' own-source numbers cannot show it. An axial or coronal slice whose tumour lies wholly on one side of
the midline still holds a tumour-free hemisphere of the same scan, scanner and contrast; that half and its mirror
image make a tumour-free slice (symmetric, so sagittal slices, midline tumours and tumours that cross the midline
are left out). The tumour half mirrored the same way is written beside it as a control: the construction must not
by itself decide the call. A second control (``--control``) mirrors one random half of tumour-free validation
slices, whose calls should not move.

    python -m core.training.mirrored_halves OUT [--part val|train|all] [--control]

then ``python main.py batch OUT/healthy --out ...`` (and ``OUT/tumour --exclude '*_mask.*'``, ``OUT/original``);
``OUT/slices.csv`` lists each slice with its midline, symmetry score and tumour side. Each tumour twin's outline (for
the segmenter's training, ``core.training.datasets.brain_mri_outlined``) is ``OUT/tumour/<stem>_mask.png``. The data
stay outside the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.models.preprocessing import object_mask
from core.training.configs import CACHE_ROOT, DATA_ROOT, REPO

MIN_SYMMETRY = 0.4  # below it the slice is not left-right symmetric enough (sagittal slices scored 0.32-0.43)
MIDLINE_MARGIN = 0.03  # of the image width: a tumour must keep this far from the midline
ANGLES = np.arange(-12.0, 12.1, 1.5)  # degrees searched for the midline's tilt
SHIFT = 0.06  # of the image width searched either side of the head's centre for the midline
TUMOUR_CLASSES = ("glioma", "meningioma")  # pituitary tumours sit on the midline
STAND_INS = CACHE_ROOT / "data" / "mirrored-halves"  # derived from the shared data; never in the repository
TWIN_MASK_SUFFIX = "_mask.png"  # beside a tumour twin: its outline (core.training.datasets reads it)


@dataclass(frozen=True)
class Midline:
    """The head's left-right symmetry axis: the column ``x`` after turning the image by ``angle`` degrees about its
    centre, and the correlation of the head with its mirror image about it (-1..1)."""

    x: float
    angle: float
    score: float


def _turn(image: np.ndarray, angle: float, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h), flags=interpolation)


def _flip_about(image: np.ndarray, x: float, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``image`` mirrored about column ``x`` (column c goes to 2x - c)."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, np.float32([[-1, 0, 2 * x], [0, 1, 0]]), (w, h), flags=interpolation)


def midline(grey: np.ndarray, tumour: np.ndarray | None = None) -> Midline | None:
    """The tilt and column that best match the head (``object_mask``) with its mirror image, the ``tumour`` mask's
    pixels and their mirror images left out of the match (a bright tumour would pull the axis towards itself and
    lower the score of a symmetric head); None without a head."""
    head = object_mask(grey).astype(np.uint8)
    if head.sum() < 0.05 * head.size:
        return None
    w = grey.shape[1]
    image = grey.astype(np.float32)
    away = np.zeros(grey.shape, np.uint8) if tumour is None else (tumour > 0).astype(np.uint8)
    best = Midline(0.0, 0.0, -2.0)
    for angle in ANGLES:
        turned, turned_head = _turn(image, angle), _turn(head, angle, cv2.INTER_NEAREST) > 0
        turned_away = _turn(away, angle, cv2.INTER_NEAREST)
        centre = float(np.nonzero(turned_head)[1].mean())
        for x in np.arange(centre - SHIFT * w, centre + SHIFT * w + 0.5, 1.0):
            mirrored_head = _flip_about(turned_head.astype(np.uint8), x, cv2.INTER_NEAREST) > 0
            both = turned_head & mirrored_head & ((turned_away | _flip_about(turned_away, x, cv2.INTER_NEAREST)) == 0)
            if both.sum() < 0.5 * turned_head.sum():
                continue
            score = float(np.corrcoef(turned[both], _flip_about(turned, x)[both])[0, 1])
            if score > best.score:
                best = Midline(float(x), float(angle), score)
    return best if best.score > -2.0 else None


def tumour_side(mask: np.ndarray, line: Midline) -> str | None:
    """'left' or 'right' (image columns) where the whole mask lies at least MIDLINE_MARGIN of the width from the
    midline on that side; None where it crosses or nears it, or is empty."""
    turned = _turn((mask > 0).astype(np.uint8), line.angle, cv2.INTER_NEAREST) > 0
    columns = np.nonzero(turned)[1]
    if columns.size == 0:
        return None
    margin = MIDLINE_MARGIN * mask.shape[1]
    if columns.max() < line.x - margin:
        return "left"
    if columns.min() > line.x + margin:
        return "right"
    return None


def mirrored_half(grey: np.ndarray, line: Midline, keep: str) -> np.ndarray:
    """The slice made of its ``keep`` ('left' or 'right') half, pixels as they are, and that half's mirror image
    about the tilted midline (one reflection, resampled once) on the other side."""
    h, w = grey.shape[:2]
    turn = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), line.angle, 1.0), [0, 0, 1]])
    flip = np.array([[-1, 0, 2 * line.x], [0, 1, 0], [0, 0, 1]])
    reflection = (np.linalg.inv(turn) @ flip @ turn)[:2]  # turn to the midline, mirror, turn back
    reflected = cv2.warpAffine(grey, reflection, (w, h), flags=cv2.INTER_LINEAR)
    ys, xs = np.mgrid[0:h, 0:w]
    x_turned = turn[0, 0] * xs + turn[0, 1] * ys + turn[0, 2]  # each pixel's column once turned to the midline
    kept_side = (x_turned < line.x) if keep == "left" else (x_turned >= line.x)
    return np.where(kept_side, grey, reflected).astype(grey.dtype)


def _figshare_slices(part: str) -> list[tuple[Path, Path, str, str]]:
    """(image, mask, label, patient group) of the 4-class bundle's figshare tumour slices in ``part``."""
    split = json.loads((REPO / "models" / "brain-mri-tumor-4class" / "split.json").read_text())
    entries = [e for p in (("train", "val") if part == "all" else (part,)) for e in split[p]]
    out = []
    for rel, label, group in entries:
        # a refit's split also names its stand-ins (absolute paths, made outside the shared data): never their source
        if label not in TUMOUR_CLASSES or not group.startswith("figshare-") or Path(rel).is_absolute():
            continue
        image = DATA_ROOT / rel
        mask = DATA_ROOT / "brain_mri_4class" / "masks" / label / f"{image.stem}_mask.png"
        if mask.exists():
            out.append((image, mask, label, group))
    return out


def write_stand_ins(out: Path, part: str) -> list[dict]:
    """Per figshare tumour slice of ``part``: its midline and tumour side; where one side is tumour-free and the slice
    symmetric enough, OUT/healthy/<stem>.png (that side mirrored), OUT/tumour/<stem>.png (the other side mirrored)
    with its mask OUT/tumour/<stem>_mask.png, and OUT/original/<name> (a copy). Rows also go to OUT/slices.csv."""
    rows = []
    for image_path, mask_path, label, group in _figshare_slices(part):
        grey = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if grey is None or mask is None or mask.shape != grey.shape:
            continue
        line = midline(grey, mask)
        side = tumour_side(mask, line) if line is not None else None
        used = side is not None and line.score >= MIN_SYMMETRY
        rows.append({"file": image_path.name, "label": label, "group": group, "used": int(used),
                     "symmetry": None if line is None else round(line.score, 3),
                     "midline_x": None if line is None else round(line.x, 1),
                     "angle": None if line is None else line.angle, "tumour_side": side or ""})
        if used:
            healthy = "right" if side == "left" else "left"
            for kind, keep in (("healthy", healthy), ("tumour", side)):
                (out / kind).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out / kind / f"{image_path.stem}.png"), mirrored_half(grey, line, keep))
            # the twin's outline: its tumour and that tumour's mirror image (the healthy stand-in has none)
            twin_mask = (mirrored_half(mask, line, side) > 127).astype(np.uint8) * 255
            cv2.imwrite(str(out / "tumour" / f"{image_path.stem}{TWIN_MASK_SUFFIX}"), twin_mask)
            (out / "original").mkdir(parents=True, exist_ok=True)
            shutil.copy(image_path, out / "original" / image_path.name)
    _write_rows(out / "slices.csv", rows)
    return rows


def write_controls(out: Path, per_source: int = 40, seed: int = 0) -> list[dict]:
    """Tumour-free validation slices of the 4-class bundle (up to ``per_source`` each of LGG and the other Kaggle
    slices, symmetric enough), one random half mirrored: OUT/mirrored/<source>_<stem>.png beside OUT/original/."""
    split = json.loads((REPO / "models" / "brain-mri-tumor-4class" / "split.json").read_text())["val"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(split))
    counts = {"lgg": 0, "kaggle": 0}
    rows = []
    for i in order:
        rel, label, group = split[i]
        source = "lgg" if group.startswith("lgg-") else "kaggle"
        if label != "notumor" or counts[source] >= per_source:
            continue
        grey = cv2.imread(str(DATA_ROOT / rel), cv2.IMREAD_GRAYSCALE)
        line = midline(grey) if grey is not None else None
        if line is None or line.score < MIN_SYMMETRY:
            continue
        keep = "left" if rng.integers(2) else "right"
        name = f"{source}_{Path(rel).stem}.png"
        for kind, picture in (("mirrored", mirrored_half(grey, line, keep)), ("original", grey)):
            (out / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / kind / name), picture)
        counts[source] += 1
        rows.append({"file": name, "label": label, "group": group, "symmetry": round(line.score, 3), "kept": keep})
    _write_rows(out / "controls.csv", rows)
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (outside the repository)")
    parser.add_argument("--part", choices=("val", "train", "all"), default="val",
                        help="which side of the 4-class bundle's split to take figshare slices from (default val)")
    parser.add_argument("--control", action="store_true",
                        help="instead: mirror one random half of tumour-free validation slices (LGG and Kaggle)")
    args = parser.parse_args()
    if args.control:
        rows = write_controls(args.out)
        print(f"{len(rows)} tumour-free validation slices, one half mirrored, in {args.out}")
        return
    rows = write_stand_ins(args.out, args.part)
    used = [r for r in rows if r["used"]]
    print(f"{len(rows)} figshare glioma/meningioma slices ({args.part}); {len(used)} with the tumour wholly on one side "
          f"of a symmetric head (score >= {MIN_SYMMETRY}), from {len({r['group'] for r in used})} patients: "
          f"{args.out}/healthy, {args.out}/tumour, {args.out}/original")


if __name__ == "__main__":
    main()
