"""Checked writes: a file is reported only after it was written completely (temp file, then rename).

PNG bytes are encoded in memory and written through Python, so any file name the OS accepts
(non-UTF-8 bytes included) works, and every failure is a ``WriteError`` naming the file and the reason.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from core.errors import DiagnosticError


class WriteError(DiagnosticError):
    """An output file could not be written."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        super().__init__(f"cannot write '{os.fsdecode(path)}': {reason}")


def os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _file_mode() -> int:
    """The mode a new file gets from open(): 0o666 less the process's umask (read once, at import, while one thread
    runs: os.umask can only be read by setting it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _file_mode()


def write_dataset(ds, path: Path, enforce_file_format: bool = True) -> Path:
    """A DICOM data set (SEG, SC, SR) written as ``write_bytes_atomic`` writes: encoded in memory first, so a full
    disk leaves the file that was there before, not a truncated one that still opens."""
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=enforce_file_format)
    return write_bytes_atomic(path, buffer.getvalue())


def _blocking_file(folder: Path) -> Path | None:
    """The first part of ``folder``'s path that exists and is not a folder (a file where a folder should be)."""
    for part in [*reversed(folder.parents), folder]:
        if part.exists() and not part.is_dir():
            return part
    return None


def make_folder_for(path: Path) -> None:
    """The folder ``path`` is to be written in, made where missing; a WriteError naming ``path`` where it cannot be
    (a file stands where a folder of its path should be, no permission)."""
    path = Path(path)
    blocking = _blocking_file(path.parent)
    if blocking is not None:
        raise WriteError(path, f"'{os.fsdecode(blocking)}' is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(path, os_reason(exc)) from exc


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it into place; the file
    gets the mode any new file gets (mkstemp's own is 0600: a report shared in a folder would be unreadable to the
    colleagues it is for)."""
    path = Path(path)
    make_folder_for(path)
    try:
        if path.exists() and not path.is_file():
            raise WriteError(path, "a folder or special file is already there")
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(path, os_reason(exc)) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _NEW_FILE_MODE)  # os.chmod, not fchmod: Windows has it before Python 3.13
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise WriteError(path, os_reason(exc)) from exc
    if not path.is_file() or path.stat().st_size != len(data):
        raise WriteError(path, "the file is not there after writing")
    return path


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise DiagnosticError("the picture could not be encoded as PNG")
    return buffer.tobytes()


def require_suffix(path: Path, option: str, suffix: str) -> None:
    """Refuse, before any work, an output name whose extension would not say what is written (``.png``, ``.pdf``):
    a PDF named ``report.png`` is opened by no viewer that trusts the name."""
    if Path(path).suffix.lower() != suffix:
        raise DiagnosticError(f"{option} must name a {suffix} file (got '{os.fsdecode(path)}')")


def file_key(path: str | Path) -> tuple[int, int] | str:
    """What makes two names one file: its (device, inode) where it exists, as a hard link has a path of its own,
    else its resolved path (a file to be created)."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return os.path.realpath(path)
    return stat.st_dev, stat.st_ino


def write_heatmap_png(display: np.ndarray, heatmap: np.ndarray, path: Path) -> Path:
    """The heatmap blended over the picture, as an RGB PNG."""
    from core.inference.overlays import blend_heatmap

    return write_bytes_atomic(path, encode_png(blend_heatmap(display, heatmap)[..., ::-1]))


def write_mask_png(mask: np.ndarray, path: Path) -> Path:
    """Binary mask as 0/255 PNG at the image's resolution."""
    return write_bytes_atomic(path, encode_png((np.asarray(mask) > 0).astype(np.uint8) * 255))
