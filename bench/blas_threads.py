"""NumPy's BLAS threads and the analysis path: one thread (as the Analyzer sets it) vs OpenBLAS's default.

    python bench/blas_threads.py [--rounds 30] [--runtime onnx|tensorflow]

The brain 4-class bundle's classify + Grad-CAM (with its input check, as shipped) on the brain sample, four sides
interleaved round by round (bench/stats.py): BLAS at one thread or at its default, each with and without the input
check. OpenBLAS threads spin after a NumPy product and take the cores from the next network call; the table shows
what that costs. Nothing is cached between calls (the stem cache kept at 0). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from threadpoolctl import threadpool_limits  # noqa: E402

from bench.stats import interleave, table  # noqa: E402
from core.imaging import load_image  # noqa: E402
from core.inference.analyzer import Analyzer  # noqa: E402
from core.inference.paths import Request  # noqa: E402
from core.models.preprocessing import ModelInputs  # noqa: E402

SAMPLE = REPO / "resources" / "samples" / "brain_mri_sample.jpg"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runtime", default="onnx", choices=["onnx", "tensorflow"])
    args = parser.parse_args()
    analyzer = Analyzer(runtime=args.runtime)  # sets BLAS to one thread
    analyzer.stem_rows.kept = 0
    path = analyzer.path(analyzer.registry.get("brain-mri-tumor-4class"))
    record = load_image(SAMPLE)
    reference = path.novelty
    default_threads = os.cpu_count() or 1

    def side(threads: int, check: bool):
        def run() -> None:
            path.novelty = reference if check else None
            with threadpool_limits(threads, user_api="blas"):
                path.run(ModelInputs(record.display(0), record.row_to_column()), Request(gradcam=True))
        return run

    sides = {"BLAS 1 thread, input check": side(1, True), "BLAS 1 thread, no check": side(1, False),
             f"BLAS {default_threads} threads, input check": side(default_threads, True),
             f"BLAS {default_threads} threads, no check": side(default_threads, False)}
    times = interleave(sides, args.rounds)
    path.novelty = reference
    print(f"brain-mri-tumor-4class classify + Grad-CAM, {path.device}, {args.rounds} rounds, {os.cpu_count()} cores")
    print("\n".join(table(times, "BLAS 1 thread, input check")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
