"""Which device TensorFlow runs on: the local GPU when visible (memory growth on), else the CPU; NumPy's BLAS kept
off the cores the networks use."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def configure_device() -> str:
    """Configure TensorFlow once and name the device results will report."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised: growth can no longer change, the GPU still works
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU:0 ({details.get('device_name', 'GPU')})"
    return "CPU"


@lru_cache(maxsize=1)
def single_thread_blas() -> None:
    """NumPy's BLAS to one thread, for this process. The networks run on TensorFlow's or ONNX Runtime's own thread
    pools; OpenBLAS threads left spinning after a NumPy product (Grad-CAM's weighting, the input check's distance)
    took the cores from the next network call: a brain slice's classify + Grad-CAM on ONNX Runtime, 2 cores, 163-178 ms
    with the input check and 129-142 ms without, against 124-128 and 121-126 ms with one BLAS thread
    (docs/bench/blas_threads.md). The products NumPy does here are small: one thread loses nothing on them."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def nvidia_gpu() -> bool:
    """An NVIDIA GPU with its driver loaded, seen without importing TensorFlow (which the ONNX runtime spares)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())
