"""Two series of one patient side by side: the slice of one at the other's position, and reference lines.

Both rest on the patient coordinates that ImagePositionPatient and ImageOrientationPatient state (LPS, mm), so
they apply only between series in one frame of reference (FrameOfReferenceUID; the same study where the files
omit it): a FLAIR and a T1 of one examination, not a scan and last year's.

- ``nearest_slice``: where two series are parallel (an axial FLAIR and an axial T1), the slice of one that lies
  where the other's shown slice lies, so that scrolling one scrolls the other to the same anatomy.
- ``reference_line``: where they are not (an axial beside a sagittal), the line along which the slice shown in
  one cuts the picture of the other, as viewers draw it to say "you are here".

Picture coordinates are the viewer's: pixel (column i, row j) covers [i, i + 1) x [j, j + 1).
"""

from __future__ import annotations

import math

import numpy as np

from core.measurements import patient_point
from core.series.index import Series, SliceRef

PARALLEL_DEGREES = 10.0  # planes closer than this to parallel are linked by position, and draw no line
_PARALLEL_COS = math.cos(math.radians(PARALLEL_DEGREES))


def same_patient(a: Series, b: Series) -> bool:
    """Whether two series are of one patient, as the study index tells patients apart (ID, else name)."""
    if a.patient_id or b.patient_id:
        return a.patient_id == b.patient_id
    return a.patient_name == b.patient_name


def linked(a: Series, b: Series) -> bool:
    """Whether the two series share patient coordinates (the same FrameOfReferenceUID, or, where a file omits
    it, the same study)."""
    if a.frame_of_reference and b.frame_of_reference:
        return a.frame_of_reference == b.frame_of_reference
    return bool(a.study_uid) and a.study_uid == b.study_uid and not (a.frame_of_reference or b.frame_of_reference)


def _normal(ref: SliceRef) -> np.ndarray | None:
    if ref.orientation is None or len(ref.orientation) != 6:
        return None
    n = np.cross(np.asarray(ref.orientation[:3], float), np.asarray(ref.orientation[3:], float))
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 0 else None


def slice_centre(ref: SliceRef) -> np.ndarray | None:
    """The patient position of the middle of a slice's picture (its top-left pixel's where size is unknown)."""
    if ref.position is None:
        return None
    point = np.asarray(ref.position, float)
    if ref.orientation is None or not ref.pixel_spacing_mm or not ref.rows or not ref.columns:
        return point
    return patient_point(point, ref.orientation, ref.pixel_spacing_mm, (ref.columns - 1) / 2, (ref.rows - 1) / 2)


def parallel(a: SliceRef, b: SliceRef) -> bool:
    na, nb = _normal(a), _normal(b)
    return na is not None and nb is not None and abs(float(na @ nb)) >= _PARALLEL_COS


_PLANES: list[tuple[Series, np.ndarray, np.ndarray, np.ndarray]] = []  # the last few series' slice planes


def _planes(series: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each slice's unit normal and position (NaN where unknown) and the slice indices that have both, computed
    once per series: scrolling asks for them at every step, and a CT series has hundreds of slices."""
    for kept, normals, positions, known in _PLANES:
        if kept is series:
            return normals, positions, known
    normals = np.full((len(series.slices), 3), np.nan)
    positions = np.full((len(series.slices), 3), np.nan)
    for k, s in enumerate(series.slices):
        normal = _normal(s)
        if normal is not None and s.position is not None:
            normals[k], positions[k] = normal, s.position
    known = np.flatnonzero(~np.isnan(normals[:, 0]))
    _PLANES.insert(0, (series, normals, positions, known))
    del _PLANES[4:]
    return normals, positions, known


def nearest_slice(series: Series, ref: SliceRef, parallel_only: bool = True) -> int | None:
    """The index in ``series`` of the slice parallel to ``ref`` that lies where ``ref`` does: the nearest along
    the normal, within half its slice spacing (or thickness); None where the planes are not parallel, positions
    are unknown, or ``ref`` lies outside the stack or in a gap. ``parallel_only=False``: the slice through the
    middle of ``ref``'s picture whatever its plane (where a crossing series opens)."""
    found = _nearest(series, ref, parallel_only)
    if found is None:
        return None
    best, distance = found
    reach = max(series.spacing_mm or 0.0, series.slices[best].thickness_mm or 0.0) / 2 + 0.5
    return best if distance <= reach else None


def nearest_parallel(series: Series, ref: SliceRef) -> tuple[int, float] | None:
    """The slice of ``series`` parallel to ``ref`` nearest to the middle of its picture and how far that is (mm along
    the normal), at any distance (``nearest_slice`` takes one within half a slice spacing only): where a compared
    series has no slice at the main one's position, its nearest is shown and the distance said."""
    return _nearest(series, ref, parallel_only=True)


def _nearest(series: Series, ref: SliceRef, parallel_only: bool) -> tuple[int, float] | None:
    """(The slice of ``series`` nearest along its normal to the middle of ``ref``'s picture, that distance in mm);
    None where positions are unknown or, with ``parallel_only``, no slice is parallel to ``ref``."""
    centre, normal = slice_centre(ref), _normal(ref)
    if centre is None or (parallel_only and normal is None):
        return None
    normals, positions, known = _planes(series)
    if parallel_only:
        known = known[np.abs(normals[known] @ normal) >= _PARALLEL_COS]
    if not len(known):
        return None
    distances = np.abs(np.einsum("ij,ij->i", normals[known], centre - positions[known]))
    at = int(np.argmin(distances))
    return int(known[at]), float(distances[at])


def reference_line(on: SliceRef, cut: SliceRef) -> tuple[float, float, float, float] | None:
    """Where the plane of ``cut`` crosses the picture of ``on``: the line's two ends (x0, y0, x1, y1) in ``on``'s
    picture coordinates, clipped to the picture; None where the planes are (near) parallel, geometry is missing
    or the line misses the picture."""
    normal = _normal(cut)
    if (normal is None or cut.position is None or on.position is None or on.orientation is None
            or not on.pixel_spacing_mm or not on.rows or not on.columns or parallel(on, cut)):
        return None
    row_step, column_step = on.pixel_spacing_mm
    # the pixel centre (i, j) lies at P + i * column_step * r + j * row_step * c; on the plane where a i + b j + d = 0
    a = column_step * float(normal @ np.asarray(on.orientation[:3], float))
    b = row_step * float(normal @ np.asarray(on.orientation[3:], float))
    d = float(normal @ (np.asarray(on.position, float) - np.asarray(cut.position, float)))
    lo_i, hi_i, lo_j, hi_j = -0.5, on.columns - 0.5, -0.5, on.rows - 0.5  # the picture's outer edges
    ends: list[tuple[float, float]] = []
    if abs(b) > 1e-12:
        ends += [(i, -(a * i + d) / b) for i in (lo_i, hi_i)]
    if abs(a) > 1e-12:
        ends += [(-(b * j + d) / a, j) for j in (lo_j, hi_j)]
    inside = [(i, j) for i, j in ends if lo_i - 1e-9 <= i <= hi_i + 1e-9 and lo_j - 1e-9 <= j <= hi_j + 1e-9]
    if len(inside) < 2:
        return None
    (i0, j0), (i1, j1) = max(((p, q) for p in inside for q in inside),
                             key=lambda pq: (pq[0][0] - pq[1][0]) ** 2 + (pq[0][1] - pq[1][1]) ** 2)
    if (i0, j0) == (i1, j1):
        return None  # touches a corner only
    return i0 + 0.5, j0 + 0.5, i1 + 0.5, j1 + 0.5
