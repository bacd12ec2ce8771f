"""Where the assistant keeps per-user data (history, user models); overridable for tests and sites."""

from __future__ import annotations

import os
from pathlib import Path


def app_home() -> Path:
    return Path(os.environ.get("MIDA_HOME", Path.home() / ".local" / "share" / "mida"))


def user_models() -> Path:
    return Path(os.environ.get("MIDA_USER_MODELS", app_home() / "models"))


def onnx_cache() -> Path:
    """Where ``python main.py models export`` writes bundles as ONNX files (core.inference.onnx_export)."""
    return Path(os.environ.get("MIDA_ONNX_CACHE", Path.home() / ".cache" / "mida" / "onnx"))
