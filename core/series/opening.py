"""What a file the reader opens is, decided from one read of its header off the GUI thread.

A DICOMDIR lists studies (as a folder does), a DICOM SEG shows the image it segments with its segments, anything
else is an image. The window hands the path to ``read_for_viewer`` on an I/O thread and shows what comes back,
so a slow share or a large file never holds the window, and the header is read once for all three questions.
"""

from __future__ import annotations

from pathlib import Path

from core.imaging import limits, load_image
from core.imaging.loader import read_header
from core.imaging.record import ImageRecord
from core.inference.results import Analysis
from core.series.index import StudyIndex, index_dicomdir, is_dicomdir
from core.series.segmentation_file import is_segmentation, open_segmentation


def read_for_viewer(path: str | Path) -> StudyIndex | tuple[ImageRecord, Analysis | None]:
    """A DICOMDIR's studies; a DICOM SEG's image with its segments; else the image (and None)."""
    path = Path(path)
    header = None if path.name.upper() == "DICOMDIR" else read_header(path, ["SOPClassUID"], limits.MAX_FILE_BYTES)
    if is_dicomdir(path, header if header is not None else {}):
        return index_dicomdir(path)
    if is_segmentation(header):
        return open_segmentation(path)
    return load_image(path), None
