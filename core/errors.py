"""The one exception family the product raises for problems a user can act on."""

from __future__ import annotations

from pathlib import Path


class DiagnosticError(Exception):
    """Base class: the message is written for a radiologist, not a programmer."""


class ImageLoadError(DiagnosticError):
    """A file could not be turned into an image (corrupt, unsupported, too large, ...)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot open '{Path(path).name}': {reason}")


class ModelError(DiagnosticError):
    """A model bundle is missing, invalid, tampered with or cannot run."""


def described(exc: BaseException) -> str:
    """A failure in words for the reader: a DiagnosticError's own, else the exception's type and message (an
    unexpected failure is named, never hidden)."""
    return str(exc) if isinstance(exc, DiagnosticError) else f"{type(exc).__name__}: {exc}"
