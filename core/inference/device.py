"""Which device TensorFlow runs on: the local GPU when visible (memory growth on), else the CPU."""

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


def nvidia_gpu() -> bool:
    """An NVIDIA GPU with its driver loaded, seen without importing TensorFlow (which the ONNX runtime spares)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())
