"""Finding the images in a folder tree by content, not by extension.

Nothing is skipped silently: entries that cannot be images but are not plainly something else
(FIFOs, devices, sockets, dangling or looping links, links to folders, unreadable folders) are
returned too, with the reason in ``problems``, so a batch lists them as error rows. Files the user
excludes (``--exclude GLOB``: data sets keep lesion masks beside their images) are left out and
listed in ``excluded``, so a run can count them.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path, PurePath
from typing import Sequence

from core.imaging.loader import sniff_format

SKIP_NAMES = {"DICOMDIR"}
IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def is_candidate(path: Path) -> bool:
    """Hidden files and DICOMDIR indexes are skipped; everything else is sniffed by its first bytes.

    Only regular files are opened (a FIFO would block); the caller deals with the rest.
    """
    if path.name.startswith(".") or path.name.upper() in SKIP_NAMES:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return True  # unreadable: let the batch report it as an error row
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return True
        head = os.read(fd, 132)
    except OSError:
        return True
    finally:
        os.close(fd)
    return sniff_format(head) is not None or path.suffix.lower() in IMAGE_SUFFIXES


def is_excluded(relative: str, patterns: Sequence[str]) -> bool:
    """Whether a file's name or its path relative to the folder matches one of ``patterns`` (fnmatch-style, case
    ignored: '*_mask.*' is meant for 'Case1_MASK.PNG' too, whatever the file system)."""
    texts = (PurePath(relative).name.lower(), relative.lower())
    return any(fnmatch.fnmatchcase(text, pattern.lower()) for pattern in patterns for text in texts)


def mask_glob(name: str) -> str | None:
    """The ``--exclude`` pattern that leaves out a file named as data sets name lesion masks ('case1_mask.png':
    '*_mask.*', BUS-BRA's 'mask_0001.png': 'mask_*'), else None. A hint only: an image may have 'mask' in its name."""
    name = name.lower()
    if PurePath(name).stem.endswith("_mask"):
        return "*_mask.*"
    return "mask_*" if name.startswith("mask_") else None


def _problem(path: Path) -> str | None:
    """Why a non-hidden entry cannot be analysed, or None for a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "a link to something that does not exist"
    except OSError as exc:
        import errno

        if exc.errno == errno.ELOOP:
            return "a link that loops back on itself"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "a link to a folder: not followed (links to folders are not entered, to avoid loops)"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO (named pipe), not a regular file: refused"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device, not a regular file: refused"
    return "a special file (socket), not a regular file: refused"


def discover_images(root: Path, problems: dict[Path, str] | None = None, exclude: Sequence[str] = (),
                    excluded: list[Path] | None = None) -> list[Path]:
    """All image files below ``root`` in a stable order (sorted relative paths), hidden folders skipped.

    With ``problems``, entries that cannot be analysed are included as well and their reason stored
    there: non-regular files, links to folders and folders that cannot be listed. Entries matching
    ``exclude`` (``is_excluded``) are left out, and those that would have been found go to ``excluded``.
    """
    found = []
    unreadable: dict[str, str] = {}

    def onerror(exc: OSError) -> None:
        unreadable[exc.filename] = f"a folder that cannot be read ({exc.strerror or exc}): its files were not analysed"

    for folder, dirs, files in os.walk(root, onerror=onerror):
        listed = sorted(d for d in dirs if not d.startswith("."))
        dirs[:] = [d for d in listed if not os.path.islink(os.path.join(folder, d))]
        entries = sorted(files + [d for d in listed if d not in dirs])
        for name in entries:
            path = Path(folder) / name
            if name.startswith(".") or name.upper() in SKIP_NAMES:
                continue
            reason = _problem(path) if problems is not None else (None if path.is_file() else "skip")
            if reason == "skip":
                continue
            if reason is None and not is_candidate(path):
                continue
            if exclude and is_excluded(path.relative_to(root).as_posix(), exclude):
                if excluded is not None:
                    excluded.append(path)
                continue
            if reason is not None:
                problems[path] = reason
            found.append(path)
    if problems is not None:
        for name, reason in unreadable.items():
            path = Path(name)
            if path != Path(root):
                problems[path] = reason
                found.append(path)
            else:
                problems[path] = reason
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
