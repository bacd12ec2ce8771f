"""The ultrasound bundles on scanner screen captures: what cutting to the scan area changes.

A department's ultrasound DICOM is usually the scanner's whole screen (patient bar, preset panel, grey-scale
bar, depth ticks, logo, black around the picture), while BUSI and BUS-BRA hold pictures already cut to the
scan area. Each validation image is set into such a screen (drawn here, seeded per image) and both bundles
run through the product's analysis: the image as it is and the screen, each without and with the scan-area
crop (``PreprocessSpec.crop = "scan"``): the first pair shows the crop leaves training-like input alone, the
second what it wins back on a screen capture. Two more runs give the image through another gain curve
(gamma 1.5 and 0.67), to see whether the models need their input's grey levels normalised.

    python -m core.training.us_screens [--limit N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from core.imaging import load_image
from core.imaging.scan_area import scan_area
from core.inference.analyzer import Analyzer
from core.inference.paths import Request
from core.models.intervals import accuracy_interval
from core.models.preprocessing import as_grey
from core.models.registry import Registry
from core.training.configs import DATA_ROOT
from core.training.evaluate import dice

SEGMENTER, CLASSIFIER = "breast-us-lesion-seg", "breast-us-3class"
CONDITIONS = (("image", "none"), ("image", "scan"), ("screen", "none"), ("screen", "scan"),
              ("darker", "scan"), ("brighter", "scan"))
GAMMA = {"darker": 1.5, "brighter": 0.67}  # another scanner's gain curve: mid-grey 128 goes to 90 or 161
PANEL = ("L12-5", "Breast", "2D", "Gn 58", "DR 60", "FR 24Hz", "TIS 0.4", "MI 1.1", "Res", "P Med")


def scanner_screen(picture: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(a grey screen capture holding ``picture``, the picture's (y0, y1, x0, x1) in it).

    A 768 x 1024 or 600 x 800 black screen; the picture, aspect kept, 60-80 % of the screen's height, set
    right of a text panel, under a grey patient bar, with depth ticks, a depth label, a grey-scale bar and a
    maker's name beside it, as scanners draw them.
    """
    sh, sw = (768, 1024) if rng.random() < 0.5 else (600, 800)
    ph, pw = picture.shape[:2]
    scale = min(rng.uniform(0.6, 0.8) * sh / ph, 0.62 * sw / pw)
    h, w = max(8, round(ph * scale)), max(8, round(pw * scale))
    y0 = int(rng.integers(round(0.06 * sh), sh - h - round(0.03 * sh)))
    x0 = int(rng.integers(round(0.14 * sw), sw - w - round(0.1 * sw)))
    screen = np.zeros((sh, sw), np.uint8)
    screen[y0:y0 + h, x0:x0 + w] = cv2.resize(picture, (w, h), interpolation=cv2.INTER_AREA)
    bar = round(0.035 * sh)
    screen[:bar] = int(rng.integers(30, 90))
    font, size = cv2.FONT_HERSHEY_SIMPLEX, sh / 1500
    cv2.putText(screen, "DOE^JANE  0001234567  03/02/2017 05:24PM", (8, bar - 6), font, size, 235, 1, cv2.LINE_AA)
    for i, text in enumerate(PANEL[:int(rng.integers(5, len(PANEL) + 1))]):
        cv2.putText(screen, text, (8, bar + 30 + i * round(0.035 * sh)), font, size * 1.1, 220, 1, cv2.LINE_AA)
    right = min(sw - 30, x0 + w + 12)
    for y in range(y0, y0 + h, max(10, h // 8)):  # depth ticks
        cv2.line(screen, (right, y), (right + 8, y), 200, 2)
    cv2.putText(screen, f"{rng.uniform(3, 6):.1f}cm", (right - 40, min(sh - 6, y0 + h + 22)), font, size, 220, 1,
                cv2.LINE_AA)
    gx = min(sw - 14, right + 24)
    screen[y0:y0 + h // 3, gx:gx + 10] = np.linspace(255, 0, h // 3).astype(np.uint8)[:, None]
    cv2.putText(screen, "ACME", (sw - 90, bar + 30), font, size * 1.3, 250, 2, cv2.LINE_AA)
    return screen, (y0, y0 + h, x0, x0 + w)


def _gamma(picture: np.ndarray, gamma: float) -> np.ndarray:
    return (255.0 * (picture / 255.0) ** gamma).round().astype(np.uint8)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[2], b[2]))
    area = (a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - inter
    return inter / area if area else 0.0


def _placed(mask: np.ndarray, shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    y0, y1, x0, x1 = box
    out[y0:y1, x0:x1] = cv2.resize(mask, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return out


def measure(limit: int | None = None) -> dict:
    """Per condition: the segmenter's lesion Dice and false lesions on normal images, the classifier's
    accuracy, malignant recall and malignant-vs-benign ROC AUC; and how well the crop finds the picture."""
    registry = Registry()
    analyzer = Analyzer(registry)
    seg, cls = registry.get(SEGMENTER), registry.get(CLASSIFIER)
    val = json.loads((seg.folder / "split.json").read_text())["val"][:limit]
    rows = {c: {"dice": [], "false_lesion": [], "p": [], "y": []} for c in CONDITIONS}
    ious, kept = [], []
    for path, label, _ in tqdm(val, desc="screens", unit="img"):
        path = DATA_ROOT / path
        picture = as_grey(load_image(path).display(0))
        mask_file = path.with_name(f"{path.stem}_mask.png")
        truth = (cv2.imread(str(mask_file), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8) if mask_file.exists() \
            else np.zeros(picture.shape, np.uint8)
        screen, box = scanner_screen(picture, np.random.default_rng(zlib.crc32(path.name.encode())))
        found = scan_area(screen)
        ious.append(box_iou(found, box))
        y0, y1, x0, x1 = scan_area(picture)
        kept.append((y1 - y0) * (x1 - x0) / picture.size)
        inputs = {"image": (picture, truth), "screen": (screen, _placed(truth, screen.shape, box)),
                  **{name: (_gamma(picture, g), truth) for name, g in GAMMA.items()}}
        for where, crop in CONDITIONS:
            display, target = inputs[where]
            for bundle in (seg, cls):
                bundle.manifest["preprocessing"]["crop"] = crop
            out = rows[(where, crop)]
            mask = analyzer.path(seg).run(display, Request(gradcam=False)).mask
            if truth.any():
                out["dice"].append(dice(mask, target))
            else:
                out["false_lesion"].append(bool(mask.sum() >= 16))
            result = analyzer.path(cls).run(display, Request(gradcam=False))
            out["p"].append([result.probabilities[c] for c in cls.classes])
            out["y"].append(cls.classes.index(label))
    report = {"images": len(val), "scan_area_iou_on_screens": _spread(ious),
              "scan_area_kept_of_plain_images": _spread(kept), "conditions": {}}
    for (where, crop), out in rows.items():
        p, y = np.array(out["p"]), np.array(out["y"])
        right = int((p.argmax(1) == y).sum())
        malignant, benign = cls.classes.index("malignant"), cls.classes.index("benign")
        lesion = np.isin(y, [malignant, benign])
        report["conditions"][f"{where}, crop {crop}"] = {
            "lesion_dice": float(np.mean(out["dice"])), "lesion_images": len(out["dice"]),
            "false_lesions": int(sum(out["false_lesion"])), "normal_images": len(out["false_lesion"]),
            "accuracy": right / len(y), "accuracy_ci95": list(accuracy_interval(right / len(y), len(y))),
            "malignant_recall": float((p.argmax(1)[y == malignant] == malignant).mean()),
            "malignant_vs_benign_roc_auc": float(roc_auc_score(y[lesion] == malignant, p[lesion, malignant])),
        }
    return report


def _spread(values: list[float]) -> dict:
    v = np.array(values)
    return {"min": float(v.min()), "p5": float(np.percentile(v, 5)), "median": float(np.median(v)),
            "mean": float(v.mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N validation images")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args(argv)
    report = measure(args.limit)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
