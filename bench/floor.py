"""The physical floor of a forward pass: the network's FLOPs over the best float32 matmul rate measured here.

No forward pass can beat ``FLOPs / peak`` on this CPU; a measured time's multiple of it says how much a
faster kernel, a different runtime or a smaller network could win at most.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def flops_per_image(bundle) -> float:
    """Floating-point operations of one image (one view) through the bundle's whole network, counted by
    TensorFlow's profiler on the frozen graph at the bundle's input size (a multiply-add counts 2)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model = bundle.load()
    size = bundle.spec.size
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def matmul_rate(size: int = 2048, runs: int = 12) -> float:
    """Float32 FLOP/s of a ``size`` x ``size`` matmul through TensorFlow (oneDNN/Eigen, all threads): the
    best of ``runs`` timed runs, so that a moment of load from other work does not lower the peak."""
    import tensorflow as tf

    a = tf.random.normal([size, size])
    tf.linalg.matmul(a, a).numpy()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        tf.linalg.matmul(a, a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def numpy_matmul_rate(size: int = 2048, runs: int = 12) -> float:
    """The same through numpy's BLAS (OpenBLAS in the wheels), best of ``runs``."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def single_core_rate(size: int = 2048, runs: int = 12) -> float:
    """``numpy_matmul_rate`` on one thread, in a child process (BLAS threads are fixed when numpy loads)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from bench.floor import numpy_matmul_rate; " \
           f"print(numpy_matmul_rate({size}, {runs}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def peak_rate() -> tuple[float, str]:
    """(FLOP/s, which library) of the fastest of the matmuls on all threads."""
    rates = {"TensorFlow": matmul_rate(), "numpy": numpy_matmul_rate()}
    best = max(rates, key=rates.get)
    return rates[best], best


def floor_lines(flops: float, measured_ms: dict[str, float]) -> list[str]:
    """The floor on all cores and on one core, each measured time's multiple of both.

    On a machine shared with other work the all-thread matmul may run no faster than one core (the other is
    busy): then the one-core figure is the floor that counts, and a one-thread forward pass can sit near it.
    """
    rate, library = peak_rate()
    one = single_core_rate()
    all_ms, one_ms = flops / rate * 1000, flops / one * 1000
    lines = [f"{flops / 1e9:.2f} GFLOP per classification; best 2048^2 float32 matmul: {rate / 1e9:.0f} GFLOP/s on all "
             f"{os.cpu_count()} threads ({library}), {one / 1e9:.0f} GFLOP/s on one (numpy/OpenBLAS); floor "
             f"{all_ms:.0f} ms (all threads) / {one_ms:.0f} ms (one thread)"]
    for name, ms in measured_ms.items():
        lines.append(f"{name}: {ms:.0f} ms = {ms / all_ms:.2f}x the all-thread floor, {ms / one_ms:.2f}x the one-thread floor")
    return lines
