"""Ultrasound outside the breast, screen captures the pixel rule cannot read, and models that contradict each
other (found by a helper's hunt on deid-data's real captures; each test failed before its fix)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.errors import DiagnosticError
from core.export.anonymise import without_screen_text
from core.imaging.body_part import beam_warning, body_part_warnings
from core.imaging.record import ImageRecord, Modality, StudyInfo
from core.imaging.scan_area import capture_scan_area
from core.inference.results import Lesion, ModelResult, disagreements


def _record(frames: list[np.ndarray], **fields) -> ImageRecord:
    h, w = frames[0].shape[:2]
    return ImageRecord(path=__import__("pathlib").Path("us.dcm"), file_format="DICOM", modality=Modality.US,
                       modality_source="dicom", rows=h, columns=w, frames=len(frames), samples_per_pixel=1,
                       photometric="MONOCHROME2", bits_stored=8, pixel_spacing_mm=None, window_presets=[],
                       study=StudyInfo(), metadata=[], _read_frame=lambda k: frames[k].astype(np.float32),
                       _default_render=lambda values, frame: values.astype(np.uint8), **fields)


def _screen(fan_x0: int, bar_grey: int = 0) -> np.ndarray:
    """A 200 x 300 screen: a name bar on top (grey or black around white text), the scan below it."""
    screen = np.zeros((200, 300), np.uint8)
    screen[:30] = bar_grey
    screen[8:11, 20:200] = 255  # the patient's name (thin strokes, as text is)
    screen[40:190, fan_x0:fan_x0 + 160] = 90  # the scan
    return screen


def test_the_header_regions_say_where_the_scan_is_when_the_pixels_cannot():
    """A grey name bar touching the scan made the pixel rule take the whole screen: the name stayed."""
    frame = _screen(60, bar_grey=60)
    frame[30:40, 60:220] = 60  # the bar runs into the scan
    stated = _record([frame], us_regions=((40, 190, 60, 220),))
    out = without_screen_text(frame, stated)
    assert out[8:11, 20:200].max() == 0 and (out[40:190, 60:220] == 90).all()


def test_a_capture_whose_scan_area_cannot_be_found_is_not_exported_as_anonymised():
    dark = np.zeros((200, 300), np.uint8)
    dark[8:20, 20:200] = 255  # only the name: no scan area stands out
    with pytest.raises(DiagnosticError, match="could not be found"):
        without_screen_text(dark, _record([dark]))


def test_a_cines_scan_area_is_one_box_for_every_frame():
    frames = [_screen(x0) for x0 in (40, 60, 80)]  # the fan moves over the loop
    record = _record(frames)
    y0, y1, x0, x1 = capture_scan_area(record)
    assert x0 <= 40 + 4 and x1 >= 80 + 160 - 4  # every frame's fan inside one box
    outs = [without_screen_text(f, record, k) for k, f in enumerate(frames)]
    assert all(o[8:11].max() == 0 for o in outs)
    assert all((o[40:190, x:x + 160] == 90).all() for o, x in zip(outs, (40, 60, 80)))


@pytest.mark.parametrize("texts, modality, warned", [
    ({"StudyDescription": "ECHOCARDIOGRAPHY", "ProcessingFunction": "CARD_ADULT_GEN_CV"}, Modality.US, True),
    ({"StudyDescription": "US CHEST WALL/SOFT TISSUE"}, Modality.US, True),
    ({"StudyDescription": "US BREAST LEFT", "ProcessingFunction": "CARD"}, Modality.US, False),  # own part named
    ({"StudyDescription": "US GUIDANCE NEEDLE PLACEMENT"}, Modality.US, False),  # names no part: not flagged
    ({"SeriesDescription": "T2 TSE HIPPOCAMPUS"}, Modality.MR, False),  # HIP is a whole word only
    ({"SeriesDescription": "T2 GRADIENT ECHO"}, Modality.MR, False),  # echo names a sequence on MR
    ({"BodyPartExamined": "KNEE", "SeriesDescription": "PD FS"}, Modality.MR, True),
])
def test_a_header_naming_another_part_of_the_body_flags_the_result_untested(texts, modality, warned):
    record = dataclasses.replace(_record([np.zeros((8, 8), np.uint8)]), modality=modality, header_texts=texts)
    said = body_part_warnings(modality, "model", record)
    assert bool(said) == warned and all(w.startswith("Untested body part") for w in said)


def test_calipers_on_a_curved_probe_say_width_and_depth_are_the_pictures_axes():
    curved = dataclasses.replace(_record([np.zeros((8, 8), np.uint8)]), header_texts={"TransducerType": "CURVED LINEAR"})
    linear = dataclasses.replace(curved, header_texts={"TransducerType": "LINEAR"})
    assert "curved linear probe" in beam_warning(curved)[0] and beam_warning(linear) == []


def test_a_classifiers_finding_where_the_segmenter_outlines_nothing_is_a_disagreement():
    malignant = ModelResult("us-3class", "1", "classification", "CPU", classes=["benign", "malignant", "normal"],
                            probabilities={"benign": 0.05, "malignant": 0.89, "normal": 0.06}, label="malignant")
    empty = ModelResult("us-seg", "1", "segmentation", "CPU")
    (said,) = disagreements(empty, [malignant])
    assert "'malignant' (89%) where us-seg outlines no lesion" in said
    benign_only = ModelResult("histology", "1", "classification", "CPU", classes=["benign", "malignant"],
                              probabilities={"benign": 0.1, "malignant": 0.9}, label="malignant")
    assert disagreements(empty, [benign_only]) == []  # no finding-free class: 'malignant' is not 'a finding here'
    lesion = Lesion(1, 100, 25.0, (10, 10, 10, 10), 14.0, 7.0, np.array([[10, 10], [20, 20]]), (0.5, 0.5))
    outlined = ModelResult("us-seg", "1", "segmentation", "CPU", lesions=[lesion])
    assert disagreements(outlined, [malignant]) == []


def test_the_body_part_warning_quotes_the_word_not_the_description_which_may_hold_a_name():
    record = dataclasses.replace(_record([np.zeros((8, 8), np.uint8)]),
                                 header_texts={"StudyDescription": "ECHO for Jane Doe"})
    (said,) = body_part_warnings(Modality.US, "model", record)
    assert "ECHO" in said and "Jane" not in said and "Doe" not in said
