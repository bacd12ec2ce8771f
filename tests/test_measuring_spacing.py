"""Lesion sizes are given in millimetres only where the file's pixel spacing is believable for the modality."""

from __future__ import annotations

from types import SimpleNamespace

import pydicom
import pytest

from core.imaging import ImageRecord, Modality, load_image


def _spacing_of(rows: int, columns: int, spacing, modality: Modality):
    picture = SimpleNamespace(rows=rows, columns=columns, pixel_spacing_mm=spacing, modality=Modality.OTHER)
    return ImageRecord.measuring_spacing(picture, modality)


@pytest.mark.parametrize("rows, columns, spacing, modality, kept", [
    (256, 256, (0.9375, 0.9375), Modality.MR, True),  # a 240-mm brain field
    (512, 512, (0.25, 0.25), Modality.MR, True),  # a 128-mm sella field
    (64, 64, (0.5, 0.5), Modality.MR, True),  # a 32-mm crop of a slice
    (512, 512, (0.01, 0.01), Modality.MR, False),  # 5 mm: no MR picture
    (256, 256, (10.0, 10.0), Modality.MR, False),  # 2.56 m across
    (256, 256, (0.1, 3.0), Modality.MR, False),  # pixels 30 times wider than tall
    (256, 232, (0.9375, 1.034), Modality.MR, True),  # non-square but believable
    (600, 800, (0.07, 0.07), Modality.US, True),  # a 56-mm sonogram
    (600, 800, (1.0, 1.0), Modality.US, False),  # 80 cm of ultrasound
    (600, 800, (0.001, 0.001), Modality.US, False),  # under a millimetre
    (256, 256, None, Modality.MR, None),  # unknown: said elsewhere, not called implausible
])
def test_spacing_is_believed_only_within_the_modalitys_field(rows, columns, spacing, modality, kept):
    used, warning = _spacing_of(rows, columns, spacing, modality)
    if kept is None:
        assert used is None and warning is None
    elif kept:
        assert used == spacing and warning is None
    else:
        assert used is None and warning.startswith("Implausible pixel spacing")


def test_a_10_mm_pixel_brain_slice_gets_its_lesion_in_pixels(tmp_path, pydicom_file):
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry
    from tests.tiny_models import make_segmenter_bundle

    make_segmenter_bundle(tmp_path / "models", "tiny-mr-segmenter", modality="MR")
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.PixelSpacing = [10.0, 10.0]
    ds.save_as(tmp_path / "wide.dcm")
    (result,) = Analyzer(Registry([tmp_path / "models"])).analyze(load_image(tmp_path / "wide.dcm")).results
    assert result.spacing_known is False and result.lesion_area_mm2 is None
    assert all(lesion.area_mm2 is None for lesion in result.lesions)
    assert any(w.startswith("Implausible pixel spacing: the file states 10 x 10 mm") for w in result.warnings)

