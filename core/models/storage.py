"""Compact Keras files: weights stored as float16 on disk, loaded back into float32 variables."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FLOAT16_MAX = float(np.finfo(np.float16).max)
SHA256 = re.compile(r"[0-9a-f]{64}")  # a file's sha256 as manifests and export indexes write it


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def save_keras_fp16(model, path: str | Path) -> str:
    """Save ``model`` as a .keras archive whose float32 weights are stored as float16.

    Keras casts on assignment when loading, so the model computes in float32 as before; the file
    is half the size. Optimizer state (twice the weights for Adam) is dropped: bundles are loaded
    with ``compile=False`` for inference. Returns the file's sha256.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.keras"
        model.save(full)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(full) as archive:
            names = archive.namelist()
            archive.extractall(unpacked)
        weights = unpacked / "model.weights.h5"
        halved = Path(tmp) / "halved.h5"
        # HDF5 never reclaims deleted space, so the float16 copy is written to a fresh file.
        with h5py.File(weights, "r") as src, h5py.File(halved, "w") as dst:
            _copy_halved(src, dst)
        shutil.move(halved, weights)
        partial = path.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as out:
            for name in names:
                out.write(unpacked / name, name)
        shutil.move(partial, path)
    return sha256_file(path)


def _copy_halved(src, dst) -> None:
    import h5py

    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, obj in src.items():
        if name == "optimizer" and src.name == "/":
            continue
        if isinstance(obj, h5py.Group):
            _copy_halved(obj, dst.create_group(name))
        else:
            data = obj[()]
            if getattr(data, "dtype", None) == np.float32 and np.all(np.abs(data) <= FLOAT16_MAX):
                data = data.astype(np.float16)  # an array with values beyond float16's range stays float32
            dst.create_dataset(name, data=data)
            for key, value in obj.attrs.items():
                dst[name].attrs[key] = value
