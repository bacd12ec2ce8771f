"""Finding the images in a folder tree by content, not by extension."""

from __future__ import annotations

import os
from pathlib import Path

from core.imaging.loader import sniff_format

SKIP_NAMES = {"DICOMDIR"}
IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def is_candidate(path: Path) -> bool:
    """Hidden files and DICOMDIR indexes are skipped; everything else is sniffed by its first bytes."""
    if path.name.startswith(".") or path.name.upper() in SKIP_NAMES:
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return True  # unreadable: let the batch report it as an error row
    return sniff_format(head) is not None or path.suffix.lower() in IMAGE_SUFFIXES


def discover_images(root: Path) -> list[Path]:
    """All image files below ``root`` in a stable order (sorted relative paths), hidden folders skipped."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_file() and is_candidate(path):
                found.append(path)
    return found
