"""Two series side by side (core.series.linking): the slice at the other's position, and reference lines."""

from __future__ import annotations

import pytest

from core.series.index import Series, SliceRef
from core.series.linking import linked, nearest_slice, reference_line
from tests.series_data import AXIAL, CORONAL, SAGITTAL

SIZE, PIXEL = 256, 0.9375  # a 240-mm field of view


def _slice(position, orientation, k=0) -> SliceRef:
    return SliceRef(path=f"/x/{k}.dcm", position=position, orientation=orientation, rows=SIZE, columns=SIZE,
                    pixel_spacing_mm=(PIXEL, PIXEL), thickness_mm=3.0)


def _axial_series(zs, frame="1.2.3", spacing=None) -> Series:
    slices = [_slice((-120.0, -120.0, z), AXIAL, k) for k, z in enumerate(zs)]
    return Series(key="ax", uid="ax", kind="dicom", frame_of_reference=frame, slices=slices, plane="axial",
                  spacing_mm=spacing or (zs[1] - zs[0]))


def test_parallel_series_link_to_the_slice_at_the_same_position_and_not_outside_the_stack():
    flair = _axial_series([0.0, 3.0, 6.0, 9.0, 12.0])
    t1 = _axial_series([-5.0, 0.0, 5.0, 10.0, 15.0])
    assert [nearest_slice(t1, s) for s in flair.slices] == [1, 2, 2, 3, 3]  # 3 mm: 5 is nearer than 0
    assert [nearest_slice(flair, s) for s in t1.slices] == [None, 0, 2, 3, None]  # -5 and 15 lie beyond 0-12
    sagittal = _slice((0.0, -120.0, 120.0), SAGITTAL)
    assert nearest_slice(flair, sagittal) is None  # not parallel: a reference line instead


def test_a_sagittal_slice_cuts_an_axial_picture_along_a_column_and_the_axial_cuts_the_sagittal_along_a_row():
    axial = _slice((-120.0, -120.0, 0.0), AXIAL)  # z = 0
    sagittal = _slice((0.0, -120.0, 120.0), SAGITTAL)  # x = 0: column 128 of the axial, row 128 of the sagittal
    x0, y0, x1, y1 = reference_line(axial, sagittal)
    assert x0 == pytest.approx(128.5) and x1 == pytest.approx(128.5) and sorted((y0, y1)) == pytest.approx([0, SIZE])
    x0, y0, x1, y1 = reference_line(sagittal, axial)
    assert y0 == pytest.approx(128.5) and y1 == pytest.approx(128.5) and sorted((x0, x1)) == pytest.approx([0, SIZE])
    coronal = _slice((-120.0, 30.0, 120.0), CORONAL)  # y = 30: row (30 + 120) / 0.9375 = 160 of the axial
    x0, y0, x1, y1 = reference_line(axial, coronal)
    assert y0 == pytest.approx(160.5) and y1 == pytest.approx(160.5)


def test_no_reference_line_between_parallel_slices_or_where_the_plane_misses_the_picture():
    axial = _slice((-120.0, -120.0, 0.0), AXIAL)
    assert reference_line(axial, _slice((-120.0, -120.0, 5.0), AXIAL)) is None
    assert reference_line(axial, _slice((200.0, -120.0, 120.0), SAGITTAL)) is None  # x = 200 mm: off the picture


def test_only_series_of_one_frame_of_reference_are_linked():
    a, b = _axial_series([0.0, 3.0]), _axial_series([0.0, 3.0])
    assert linked(a, b)
    b.frame_of_reference = "9.9.9"
    assert not linked(a, b)
    a.frame_of_reference = b.frame_of_reference = ""
    a.study_uid = b.study_uid = "1.2.840.5"
    assert linked(a, b)  # files without it: the same study
