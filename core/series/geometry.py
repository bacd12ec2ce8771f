"""Screen geometry of a slice from its direction cosines (Qt-free): which patient direction each edge shows.

DICOM's patient coordinate system (LPS) has +x towards the patient's Left, +y Posterior, +z Head.
ImageOrientationPatient gives the row cosines (the direction of increasing column index: towards the right
edge of the screen) then the column cosines (increasing row index: towards the bottom edge). The right edge
of the screen therefore shows the direction of the row vector, the left edge its opposite; the bottom edge the
column vector, the top its opposite. A standard axial slice (1, 0, 0, 0, 1, 0) shows the patient's Right on
the left of the screen and Anterior at the top, as radiologists read it.

An oblique direction is named by up to three letters, the largest component first (``"LA"``: mostly left,
somewhat anterior), leaving out components below ``MARKER_MIN_COMPONENT`` (about 14 degrees off an axis).
"""

from __future__ import annotations

import math

MARKER_MIN_COMPONENT = 0.25  # a direction component smaller than this adds no letter to a marker
_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))  # (negative, positive) direction of x, y, z


def direction_letters(vector: tuple[float, float, float] | list[float]) -> str:
    """The patient direction a unit vector in LPS points to: 'L', 'RA', 'HPL', ... ('' for a null vector)."""
    v = [float(c) for c in vector]
    norm = math.sqrt(sum(c * c for c in v))
    if len(v) != 3 or not math.isfinite(norm) or norm == 0.0:
        return ""
    v = [c / norm for c in v]
    order = sorted(range(3), key=lambda axis: -abs(v[axis]))
    return "".join(_LETTERS[axis][v[axis] > 0] for axis in order if abs(v[axis]) >= MARKER_MIN_COMPONENT)


def orientation_markers(orientation: tuple[float, ...] | None, flip_horizontal: bool = False
                        ) -> dict[str, str] | None:
    """The patient direction at each screen edge (``left``, ``right``, ``top``, ``bottom``) of a slice.

    ``orientation`` is ImageOrientationPatient (row then column cosines); None without it.
    ``flip_horizontal``: the picture is shown mirrored left to right (a hanging protocol did it).
    """
    if orientation is None or len(orientation) != 6:
        return None
    row, column = orientation[:3], orientation[3:]
    right, bottom = direction_letters(row), direction_letters(column)
    left, top = direction_letters([-c for c in row]), direction_letters([-c for c in column])
    if not (right and bottom):
        return None
    if flip_horizontal:
        left, right = right, left
    return {"left": left, "right": right, "top": top, "bottom": bottom}
