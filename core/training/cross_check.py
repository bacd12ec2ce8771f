"""How often the 'models disagree' warning (core.inference.results.disagreements) meets a false outline.

A segmenter draws false lesions on some finding-free pictures (the ultrasound segmenter on 9 of BUSI's 22 normal
validation images); the product warns where a classifier of the same modality calls the picture finding-free.
On the segmenter's validation split, every bundle of its modality runs as the product runs them (no heatmaps),
and this counts, on finding-free pictures, the outlines drawn and those warned of; on pictures with a finding,
the outlines drawn and those warned of needlessly.

    python -m core.training.cross_check <segmenter-id>
"""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.inference.results import DISAGREE, NONE_CLASSES
from core.models.registry import Registry
from core.training.configs import DATA_ROOT


def cross_check(segmenter: str) -> dict:
    registry = Registry()
    analyzer = Analyzer(registry)
    bundle = registry.get(segmenter)
    models = [b.id for b in registry.for_modality(bundle.modality)]
    val = json.loads((bundle.folder / "split.json").read_text())["val"]
    counts = {kind: {"pictures": 0, "outlined": 0, "warned": 0} for kind in ("finding-free", "with a finding")}
    for path, label, _ in tqdm(val, desc="cross-check", unit="img"):
        record = load_image(DATA_ROOT / path, modality=bundle.modality.value)
        results = {r.model_id: r for r in analyzer.analyze(record, model_ids=models, gradcam=False).results}
        seg = results[segmenter]
        row = counts["finding-free" if label in NONE_CLASSES else "with a finding"]
        row["pictures"] += 1
        if seg.lesions:
            row["outlined"] += 1
            row["warned"] += any(w.startswith(DISAGREE) for r in results.values() for w in r.warnings)
    return {"segmenter": segmenter, "models": models, **counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("segmenter")
    print(json.dumps(cross_check(parser.parse_args(argv).segmenter), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
