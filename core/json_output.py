"""Strict JSON for what the commands print: a checker parsing the output must never meet NaN or a lone surrogate."""

from __future__ import annotations

import json


def strict_json(obj):
    """``obj`` as strict JSON can hold it: NaN and infinities (never valid JSON) become null; file names with bytes
    that are not UTF-8 (lone surrogates in Python) become \\xNN escapes."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, str):
        try:
            return obj.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, dict):
        return {strict_json(k) if isinstance(k, str) else k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def print_json(obj: dict) -> None:
    print(json.dumps(strict_json(obj), indent=2, default=str, allow_nan=False))
