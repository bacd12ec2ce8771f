"""Series indexing speed: ``python bench/series_index.py [--slices 200] [--size 512] [--analyse]``.

Builds a series of ``--slices`` single-frame MR files (shuffled names and InstanceNumbers) in a temporary folder,
drops the files from the page cache (``posix_fadvise(DONTNEED)``: best effort, no root needed), then in a fresh
Python process times: importing core.series, indexing the folder (headers only) and loading the first slice.
``--analyse`` also times the series analysis of 24 real LGG FLAIR slices (written as DICOM) with both brain
bundles: model loading (TensorFlow start, first slice) apart from the 24 slices. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LGG_PATIENT = Path(os.environ.get("MIDA_DATA", REPO.parent / "shared" / "data")) / "brain_mri_lgg" / "TCGA_CS_6188_20010812"
BRAIN_MODELS = ["brain-mri-tumor-4class", "brain-mri-tumor-yesno"]

COLD = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {repo!r})
from core.series import index_folder
from core.series.stack import SeriesStack
t1 = time.perf_counter()
index = index_folder({folder!r})
t2 = time.perf_counter()
series = index.series[0]
SeriesStack(series).display(0)
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "index_s": t2 - t1, "first_slice_s": t3 - t2, "slices": len(series),
                  "plane": series.plane, "ordered_by": series.ordered_by, "warnings": series.warnings}}))
"""


def build(folder: Path, slices: int, size: int) -> None:
    import numpy as np

    from tests.series_data import write_series

    rng = np.random.default_rng(0)
    base = rng.normal(400, 80, (size, size)).clip(0, 4095).astype(np.uint16)
    images = [np.roll(base, k, axis=1) for k in range(slices)]
    instances = list(range(1, slices + 1))
    random.Random(0).shuffle(instances)
    names = [f"IM{k:05d}" for k in random.Random(1).sample(range(slices), slices)]  # no extension, like a scanner
    write_series(folder, images, spacing=1.0, instances=instances, names=names)


def evict(folder: Path) -> int:
    """Ask the kernel to drop the files' cached pages; returns how many files were asked for."""
    count = 0
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            count += 1
        finally:
            os.close(fd)
    return count


def cold_index(folder: Path) -> dict:
    code = COLD.format(repo=str(REPO), folder=str(folder))
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - started
    return result


def analyse(tmp: Path) -> dict:
    from core.inference.analyzer import Engine
    from core.series import index_folder
    from core.series.analysis import analyse_series
    from tests.series_data import write_lgg_series

    write_lgg_series(tmp / "lgg", LGG_PATIENT, spacing=3.0)
    series = index_folder(tmp / "lgg").series[0]
    engine = Engine()
    ticks: list[float] = []
    try:
        started = time.perf_counter()
        first = series.slices[0]
        from core.imaging import load_image

        warm = load_image(first.path)
        engine.submit(warm, model_ids=BRAIN_MODELS, gradcam=False).result()  # TensorFlow start and model loading
        loaded = time.perf_counter()
        result = analyse_series(series, engine, BRAIN_MODELS, progress=lambda p: ticks.append(p.elapsed))
        done = time.perf_counter()
    finally:
        engine.shutdown()
    return {"slices": len(series), "models_load_s": loaded - started, "series_s": done - loaded,
            "progress_reports": len(ticks), "total_s": done - started,
            "verdicts": [(v.model, v.label, v.first_slice, v.last_slice) for v in result.results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="rows = columns of each slice")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs (each after evicting the files)")
    parser.add_argument("--analyse", action="store_true", help="also time a 24-slice LGG series with both brain models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="series-bench-") as tmp:
        folder = Path(tmp) / "series"
        started = time.perf_counter()
        build(folder, args.slices, args.size)
        mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        print(f"built {args.slices} slices of {args.size}x{args.size} ({mb:.0f} MB) "
              f"in {time.perf_counter() - started:.1f} s")
        print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        for run in range(args.repeat):
            evicted = evict(folder)
            r = cold_index(folder)
            print(f"cold run {run + 1} ({evicted} files evicted): import {r['import_s']:.2f} s, "
                  f"index {r['index_s']:.3f} s ({r['slices']} slices, {r['plane']}, by {r['ordered_by']}), "
                  f"first slice {r['first_slice_s']:.3f} s; index + first slice {r['index_s'] + r['first_slice_s']:.3f} s;"
                  f" whole process {r['process_wall_s']:.2f} s")
        if args.analyse:
            if not LGG_PATIENT.is_dir():
                print(f"--analyse: {LGG_PATIENT} missing")
                return
            a = analyse(Path(tmp))
            print(f"series analysis, {a['slices']} LGG slices, {' + '.join(BRAIN_MODELS)}: models loaded in "
                  f"{a['models_load_s']:.1f} s, then {a['series_s']:.1f} s for the series ({a['progress_reports']} "
                  f"progress reports); {a['total_s']:.1f} s in all")
            for model, label, first, last in a["verdicts"]:
                print(f"  {model}: {label}" + (f" (slices {first}-{last})" if first else ""))


if __name__ == "__main__":
    main()
