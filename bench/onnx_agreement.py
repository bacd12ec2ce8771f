"""Each shipped bundle on ONNX Runtime (its export) against TensorFlow, through the product's Analyzer.

    python main.py models export            # once: the exports (needs tf2onnx)
    python bench/onnx_agreement.py [--images 40] [--rounds 30]

For every bundle: its validation images (evenly spaced through split.json "val", from ../shared/data or
MIDA_DATA) analysed by both runtimes with heatmaps; prints the largest probability difference, labels that
change, the largest heatmap difference (maps scaled to a peak of 1) and, for segmenters, the mask pixels that
differ and the lesion counts (for a film detector, its mark counts). Then the time per image of each bundle, the
two runtimes interleaved (A B A B on the same image) with the median per-round ratio and its bootstrap 95 %
interval (bench/stats.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.stats import interleave, ratio_interval  # noqa: E402
from core.imaging import load_image  # noqa: E402
from core.inference import paths  # noqa: E402
from core.inference.analyzer import Analyzer  # noqa: E402
from core.models.registry import Registry  # noqa: E402

DATA = Path(os.environ.get("MIDA_DATA", REPO.parent / "shared" / "data"))


def validation_images(bundle, n: int) -> list[Path]:
    """Up to ``n`` of the bundle's validation images; a bundle chosen by cross-validation and trained on all its
    images (breast-mg-abnormal) has no validation split: its films then (an agreement check, not an accuracy)."""
    split = json.loads((bundle.folder / "split.json").read_text())
    if "val" in split:
        val = list(dict.fromkeys(DATA / entry[0] for entry in split["val"]))
    else:
        val = [DATA / "mini_mias" / "images" / entry[0] for entry in split["cross_validation_folds"]]
    return [p for p in val[:: max(1, len(val) // n)][:n] if p.is_file()]


def agreement(bundle_id: str, images: list[Path], onnx: Analyzer, tf: Analyzer) -> dict:
    dp, heat, mask_px, labels, lesions = 0.0, 0.0, 0, 0, 0
    for path in images:
        record = load_image(path)
        a, b = (rt.analyze(record, model_ids=[bundle_id], gradcam=True).results[0] for rt in (tf, onnx))
        if a.probabilities:
            dp = max(dp, max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities))
            labels += a.label != b.label
        for x, y in ((a.heatmap, b.heatmap), (a.tile_gradcam, b.tile_gradcam), (a.probability_map, b.probability_map)):
            if x is not None:
                heat = max(heat, float(np.abs(x - y).max()))
        if a.mask is not None:
            mask_px += int((a.mask != b.mask).sum())
            lesions += len(a.lesions) != len(b.lesions)
        if a.findings is not None:  # CAD marks
            lesions += len(a.findings) != len(b.findings)
    return {"images": len(images), "max_dp": dp, "labels_changed": labels, "max_map_diff": heat,
            "mask_px_differ": mask_px, "lesion_counts_differ": lesions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--model", action="append", help="only these bundles")
    args = parser.parse_args()
    registry = Registry()
    onnx, tf = Analyzer(registry, runtime="onnx"), Analyzer(registry, runtime="tensorflow")
    print("| bundle | images | max \\|Δp\\| | labels changed | max map diff | mask px differ | lesion counts differ | "
          "time ONNX / TF [95 % CI] |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for bundle_id in args.model or list(registry.bundles):
        bundle = registry.get(bundle_id)
        if onnx.export(bundle) is None:
            print(f"| `{bundle_id}` | not exported (python main.py models export) |")
            continue
        images = validation_images(bundle, args.images)
        row = agreement(bundle_id, images, onnx, tf)
        record = load_image(images[0])
        sides = {rt: (lambda a=a: a.analyze(record, model_ids=[bundle_id], gradcam=True))
                 for rt, a in (("onnx", onnx), ("tensorflow", tf))}
        for a in (onnx, tf):
            a.stem_rows.kept = 0  # every call runs its whole network
        paths.FILMS_KEPT = 0  # and a film detector reads the film again (no tiles kept from the last call)
        times = interleave(sides, args.rounds)
        ratio = ratio_interval(times["onnx"], times["tensorflow"])
        print(f"| `{bundle_id}` | {row['images']} | {row['max_dp']:.1e} | {row['labels_changed']} | {row['max_map_diff']:.1e} | "
              f"{row['mask_px_differ']} | {row['lesion_counts_differ']} | {ratio} ({np.median(times['onnx']):.0f} / "
              f"{np.median(times['tensorflow']):.0f} ms) |", flush=True)


if __name__ == "__main__":
    main()
