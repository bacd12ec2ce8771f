"""The physical floor of a forward pass: the network's FLOPs over the best float32 matmul rate measured here
(the product runs float32); for comparison, the bf16 floor where OpenVINO is installed and the CPU has bf16.

No forward pass can beat ``FLOPs / peak`` on this CPU; a measured time's multiple of it says how much a
faster kernel, a different runtime or a smaller network could win at most. The bf16 floor is what a bf16
pass could reach, which the product does not take: bf16 moves the brain classifier's probabilities by up to
0.015 over its validation split (docs/bench/fast_forward.md).
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


def bf16_matmul_rate(size: int = 2048, runs: int = 12) -> float | None:
    """bf16 FLOP/s of a ``size`` x ``size`` matmul compiled by OpenVINO for the CPU at bf16 precision (AMX or AVX-512
    BF16), best of ``runs``; None without OpenVINO (``pip install openvino``) or native bf16."""
    import numpy as np

    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return None
    a = ov.opset13.parameter([size, size], np.float32)
    b = ov.opset13.parameter([size, size], np.float32)
    compiled = core.compile_model(ov.Model([ov.opset13.matmul(a, b, False, False)], [a, b]), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    request.infer([x, x])
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        request.infer([x, x])
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
    bf16 = bf16_matmul_rate()
    bf16_ms = flops / bf16 * 1000 if bf16 else None
    if bf16_ms:
        lines.append(f"best 2048^2 bf16 matmul (OpenVINO): {bf16 / 1e9:.0f} GFLOP/s on all threads; bf16 floor "
                     f"{bf16_ms:.0f} ms (not the product's dtype)")
    for name, ms in measured_ms.items():
        lines.append(f"{name}: {ms:.0f} ms = {ms / all_ms:.2f}x the all-thread float32 floor, {ms / one_ms:.2f}x the "
                     f"one-thread floor" + (f", {ms / bf16_ms:.2f}x the bf16 floor" if bf16_ms else ""))
    return lines
