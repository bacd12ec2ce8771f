"""Readers for the data layouts the bundles are trained on; each returns plain sample lists.

A sample carries the label, the grouping key that keeps related images on one side of a split
(patient, woman, TMA core group, or a near-duplicate cluster), and for segmentation the mask path
or the annotation circles.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm"}


@dataclass(frozen=True)
class Circle:
    """A mini-MIAS abnormality: centre and radius in pixels of the stored image, origin top-left."""

    x: float
    y: float
    r: float


@dataclass
class Sample:
    path: Path
    label: str
    group: str = ""
    mask_path: Path | None = None
    circles: tuple[Circle, ...] = field(default_factory=tuple)
    extra: dict = field(default_factory=dict)


def plan_entry(sample: Sample) -> dict:
    """A sample as a JSON-able split entry (what ``split.json`` files hold)."""
    return {"path": str(sample.path), "label": sample.label, "group": sample.group,
            "mask": str(sample.mask_path) if sample.mask_path else None,
            "circles": [[c.x, c.y, c.r] for c in sample.circles]}


def plan_sample(entry: dict) -> Sample:
    """The Sample of a split entry; tile entries carry their box and the image shape."""
    extra = {"box": entry["box"], "shape": entry["shape"]} if "box" in entry else {}
    return Sample(Path(entry["path"]), entry["label"], entry["group"],
                  Path(entry["mask"]) if entry.get("mask") else None,
                  tuple(Circle(*c) for c in entry.get("circles", [])), extra)


def class_folders(root: Path, classes: list[str] | None = None) -> list[Sample]:
    """``root/<class>/*`` with the class taken from the folder; mask files are skipped."""
    root = Path(root)
    classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    samples = []
    for label in classes:
        for path in sorted((root / label).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and "_mask" not in path.stem:
                samples.append(Sample(path=path, label=label))
    return samples


def image_mask_pairs(root: Path) -> list[Sample]:
    """BUSI layout: ``<class>/<name>.png`` with its lesion mask ``<class>/<name>_mask.png`` (a JPEG image's
    mask is a PNG, as in BUS-BRA)."""
    samples = []
    for sample in class_folders(root):
        masks = [sample.path.with_name(f"{sample.path.stem}_mask{suffix}") for suffix in (sample.path.suffix, ".png")]
        mask = next((m for m in masks if m.exists()), None)
        samples.append(Sample(path=sample.path, label=sample.label, mask_path=mask))
    return samples


@lru_cache(maxsize=4)
def busbra_table(root: Path) -> dict[str, dict[str, str]]:
    """BUS-BRA's ``bus_data.csv`` by image ID (``Case``, ``Device``, ``BIRADS``, ``kFold``, ...); empty where it is
    missing. Read once: the reader groups by ``Case``, per-scanner validation rows look up ``Device``."""
    listing = Path(root) / "bus_data.csv"
    if not listing.exists():
        return {}
    with listing.open(newline="") as handle:
        return {row["ID"]: row for row in csv.DictReader(handle)}


def busbra(root: Path) -> list[Sample]:
    """BUS-BRA (``<pathology>/bus_NNNN-{l,r}.jpg`` + ``..._mask.png``, ``bus_data.csv``): grouped by patient
    (``Case``); images the listing does not name are left out."""
    rows = busbra_table(Path(root))
    samples = []
    for s in image_mask_pairs(root):
        row = rows.get(s.path.stem)
        if row is not None:
            samples.append(Sample(s.path, s.label, f"busbra-{row['Case']}", s.mask_path, extra={"source": "busbra"}))
    return samples


def breast_ultrasound(root: Path) -> list[Sample]:
    """Every breast ultrasound source under the shared data folder ``root``: BUSI (``busi/``; benign, malignant
    and the only normal images; near-duplicate clusters as groups) and BUS-BRA (``busbra/``; by patient)."""
    busi = image_mask_pairs(Path(root) / "busi")
    for s in busi:
        s.extra["source"] = "busi"
    return busi + busbra(Path(root) / "busbra")


def mini_mias(root: Path) -> list[Sample]:
    """mini-MIAS: labels normal/abnormal (severity kept), circles flipped to a top-left origin.

    Coordinates in ``annotations.txt`` refer to the original 1024x1024 grid with the origin at the
    bottom-left; they are scaled to the stored image size. Consecutive references (mdb001+mdb002)
    are the two breasts of one woman and share a group.
    """
    root = Path(root)
    records: dict[str, dict] = {}
    for line in (root / "annotations.txt").read_text().splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        ref, _tissue, klass = parts[0], parts[1], parts[2]
        entry = records.setdefault(ref, {"class": klass, "severity": "", "circles": []})
        if klass != "NORM":
            entry["class"] = klass
        if len(parts) >= 4:
            entry["severity"] = parts[3]
        if len(parts) >= 7 and parts[4].isdigit():
            entry["circles"].append((float(parts[4]), float(parts[5]), float(parts[6])))
    samples = []
    for ref, entry in sorted(records.items()):
        path = root / "images" / f"{ref}.png"
        if not path.exists():
            continue
        height, width = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape
        sx, sy = width / 1024.0, height / 1024.0
        circles = tuple(Circle(x * sx, (1024.0 - y) * sy, r * sx) for x, y, r in entry["circles"])
        number = int(re.sub(r"\D", "", ref))
        samples.append(
            Sample(
                path=path,
                label="normal" if entry["class"] == "NORM" else "abnormal",
                group=f"woman{(number + 1) // 2:03d}",
                circles=circles,
                extra={"class": entry["class"], "severity": {"B": "benign", "M": "malignant"}.get(entry["severity"], "")},
            )
        )
    return samples


def circles_mask(shape: tuple[int, int], circles: tuple[Circle, ...]) -> np.ndarray:
    """Binary mask (uint8 0/1) of annotation circles: a rough lesion outline, as the data gives."""
    mask = np.zeros(shape, np.uint8)
    for c in circles:
        cv2.circle(mask, (int(round(c.x)), int(round(c.y))), max(1, int(round(c.r))), 1, thickness=-1)
    return mask


def ucsb_histology(root: Path) -> list[Sample]:
    """UCSB TMA cores: the group is the ``ytma<N>_<date>`` prefix (one array/date batch)."""
    samples = class_folders(root)
    for s in samples:
        s.group = "_".join(s.path.stem.split("_")[:2])
    return samples


def breakhis(root: Path) -> list[Sample]:
    """BreakHis: ``benign|malignant/SOB/<subtype>/<patient>/<mag>X/*.png``; group = patient id."""
    samples = []
    for path in sorted(Path(root).rglob("*.png")):
        # File names look like SOB_B_A-14-22549AB-40-001.png: <proc>_<class>_<type>-<year>-<slide>-<mag>-<seq>
        match = re.match(r"SOB_([BM])_(\w+)-(\d+)-([\w]+)-(\d+)-(\d+)", path.stem)
        if not match:
            continue
        label = "benign" if match.group(1) == "B" else "malignant"
        samples.append(Sample(path=path, label=label, group=f"patient-{match.group(4)}",
                              extra={"subtype": match.group(2), "magnification": int(match.group(5))}))
    return samples


def idc_patches(root: Path) -> list[Sample]:
    """IDC patches: ``<patient>/{0,1}/*.png`` with 1 = invasive ductal carcinoma (malignant)."""
    samples = []
    for path in sorted(Path(root).glob("*/[01]/*.png")):
        samples.append(Sample(path=path, label="malignant" if path.parent.name == "1" else "benign",
                              group=f"patient-{path.parent.parent.name}"))
    return samples


def brain_mri_all(root: Path) -> list[Sample]:
    """Every brain MRI source under the shared data folder ``root``, one 4-class label space.

    - ``brain_mri_4class/train/<class>/``: the Kaggle set; its figshare images (contrast T1, listed in
      ``figshare_patients.csv``) are grouped by figshare patient and carry their tumour mask, the rest
      (SARTAJ, Br35H) get near-duplicate clusters as groups.
    - ``brain_mri_lgg/<patient>/``: every axial FLAIR slice of 60 lower-grade glioma patients; a slice with a
      non-empty mask is ``glioma``, a tumour-free slice of the same scan (skull base to vertex) ``notumor``.
    ``extra["source"]`` names where each sample came from, for per-source validation numbers.
    """
    root = Path(root)
    kaggle = root / "brain_mri_4class"
    patients = {}
    listing = kaggle / "figshare_patients.csv"
    if listing.exists():
        for line in listing.read_text().splitlines()[1:]:
            file, _figshare_id, patient = line.split(",")
            patients[file] = patient
    samples = []
    for s in class_folders(kaggle / "train"):
        rel = f"{s.label}/{s.path.name}"
        if rel in patients:
            mask = kaggle / "masks" / s.label / f"{s.path.stem}_mask.png"
            samples.append(Sample(s.path, s.label, f"figshare-{patients[rel]}", mask if mask.exists() else None,
                                  extra={"source": "figshare"}))
        else:
            samples.append(Sample(s.path, s.label, extra={"source": "kaggle-other"}))
    return samples + brain_mri_lgg(root / "brain_mri_lgg")


def brain_mri_lgg(root: Path) -> list[Sample]:
    """Every axial FLAIR slice of the LGG patients (``<patient>/..._<n>_flair.jpg`` + ``_mask.png``), by patient: a
    slice with a non-empty mask is ``glioma``, a tumour-free slice of the same scan ``notumor``."""
    samples = []
    for folder in sorted(p for p in Path(root).glob("*") if p.is_dir()):
        patient = "_".join(folder.name.split("_")[:3])
        for path in sorted(folder.glob("*_flair.jpg"), key=lambda p: int(p.stem.split("_")[-2])):
            mask = path.with_name(path.name.replace("_flair.jpg", "_mask.png"))
            tumour = mask.exists() and cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE).max() > 127
            samples.append(Sample(path, "glioma" if tumour else "notumor", f"lgg-{patient}",
                                  mask if mask.exists() else None, extra={"source": "lgg"}))
    return samples


def brain_mri_masked(root: Path) -> list[Sample]:
    """The brain slices whose tumour is outlined: figshare's (with a mask each) and every LGG slice (an empty
    mask = tumour-free); the Kaggle slices without a mask are left out, as their tumour is not outlined."""
    return [s for s in brain_mri_all(root) if s.mask_path is not None]


def brain_mri_outlined(root: Path) -> list[Sample]:
    """Every brain slice whose outline is known: the masked ones (``brain_mri_masked``), the Kaggle set's other
    'notumor' slices (nothing to outline: an empty mask) and the tumour-free contrast-T1 stand-ins with their tumour
    twins where they have been made (``brain_stand_ins``). Why: a decoder fitted only on tumour patients' scans
    outlined 'lesions' on a quarter of the Kaggle tumour-free slices and on 10 of 34 stand-ins."""
    masked_or_free = [s for s in brain_mri_all(root) if s.mask_path is not None or s.label == "notumor"]
    return masked_or_free + brain_stand_ins()


def brain_stand_ins() -> list[Sample]:
    """The stand-ins listed in ``core.training.mirrored_halves.STAND_INS``/slices.csv: each healthy half 'notumor'
    (empty mask), each tumour twin its class with the twin's mask; none where they have not been made."""
    from core.training.mirrored_halves import STAND_INS, TWIN_MASK_SUFFIX

    listing = STAND_INS / "slices.csv"
    if not listing.exists():
        return []
    samples = []
    with open(listing, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["used"] != "1":
                continue
            stem = Path(row["file"]).stem
            mask = STAND_INS / "tumour" / f"{stem}{TWIN_MASK_SUFFIX}"
            if not mask.exists():
                raise FileNotFoundError(f"{mask} is missing: the stand-ins were made before their twins' masks; "
                                        f"make them again (python -m core.training.mirrored_halves {STAND_INS} "
                                        "--part all)")
            extra = {"source": "figshare-mirrored"}
            samples.append(Sample(STAND_INS / "healthy" / f"{stem}.png", "notumor", row["group"], extra=dict(extra)))
            samples.append(Sample(STAND_INS / "tumour" / f"{stem}.png", row["label"], row["group"], mask, extra=extra))
    return samples


# Micrometres per pixel (y, x) of the histology sets as stored. BACH (ICIAR 2018): 2048 x 1536 px at 0.42 um,
# stored 1536 x 1536 in the copy used here (its width squeezed by 3/4: the autocorrelation of its pixels is 0.73
# times as wide along x as along y, the UCSB cores' 0.94). UCSB: not stated by the source; estimated from nuclear
# diameters against BACH (median and 80th percentile of compact haematoxylin blobs, benign and malignant: 0.36-0.45).
BACH_UM = (0.42, 0.42 * 2048 / 1536)
UCSB_UM = (0.42, 0.42)
BACH_CLASSES = {"normal": "benign", "benign": "benign", "insitu": "malignant", "invasive": "malignant"}


def bach_histology(root: Path, block: int = 10) -> list[Sample]:
    """BACH microscopy images, ``<class>_jpg/<letter><nnn>.jpeg``: normal + benign = benign, in situ + invasive =
    malignant. No patient ids are published with this copy: the group is a block of ``block`` consecutive image
    numbers of one class (same-patient images are often numbered together); near-duplicate clusters are merged in
    by the split. ``extra``: lab, original class, micrometres per pixel (y, x)."""
    samples = []
    for cls, label in BACH_CLASSES.items():
        for path in sorted((Path(root) / f"{cls}_jpg").glob("*.jpeg")):
            number = int(re.sub(r"\D", "", path.stem) or 0)
            samples.append(Sample(path, label, f"bach-{cls}-{number // block:02d}",
                                  extra={"lab": "bach", "subtype": cls, "um": list(BACH_UM)}))
    return samples


def two_lab_histology(root: Path) -> list[Sample]:
    """UCSB cores (``<root>/histology_ucsb``) and BACH images (``$MIDA_BACH``, else ``~/.cache/mida/data/bach/dataset``),
    each sample carrying its lab and scale in ``extra``."""
    ucsb = ucsb_histology(Path(root) / "histology_ucsb")
    for s in ucsb:
        s.extra.update(lab="ucsb", um=list(UCSB_UM))
    return ucsb + bach_histology(bach_root())


def bach_root() -> Path:
    """Where the BACH images are: ``$MIDA_BACH``, else ``~/.cache/mida/data/bach/dataset`` (never in the repository)."""
    return Path(os.environ.get("MIDA_BACH", Path.home() / ".cache" / "mida" / "data" / "bach" / "dataset"))


READERS = {
    "brain_mri_all": brain_mri_all,
    "brain_mri_masked": brain_mri_masked,
    "brain_mri_outlined": brain_mri_outlined,
    "breast_ultrasound": breast_ultrasound,
    "busbra": busbra,
    "class_folders": class_folders,
    "image_mask_pairs": image_mask_pairs,
    "mini_mias": mini_mias,
    "ucsb_histology": ucsb_histology,
    "breakhis": breakhis,
    "idc_patches": idc_patches,
    "bach_histology": bach_histology,
    "two_lab_histology": two_lab_histology,
}
