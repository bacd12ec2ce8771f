"""Series analysis (core.series.analysis): the verdict rule on its own, then the real code path with the tiny
Keras bundles on DICOM series of planted lesions, the ``analyze --series`` command and the batch's series.csv."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.series.analysis import (MIN_RUN, VERDICT_RULE, SliceCache, SliceOutcome, analyse_series, classifier_verdict,
                                  segmenter_verdict, series_disagreements, submit_series, verdict)
from core.series.index import Series, SliceRef, index_folder
from tests.series_data import PLANTED_LESION_SLICES, PLANTED_PIXEL_MM, PLANTED_SPACING, write_series
from tests.tiny_models import SIZE, planted_images

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def _probs(p_glioma: float, p_meningioma: float = 0.0) -> SliceOutcome:
    p = {"glioma": p_glioma, "meningioma": p_meningioma, "pituitary": 0.0}
    p["notumor"] = 1.0 - p_glioma - p_meningioma
    return SliceOutcome(max(p, key=p.get), p)


# ----------------------------------------------------------------------------------------------- the rule
def test_two_adjacent_abnormal_slices_make_an_abnormal_series():
    outcomes = [_probs(0.1), _probs(0.3, 0.3), _probs(0.5), _probs(0.2), _probs(0.1, 0.6), _probs(0.05, 0.7),
                _probs(0.0, 0.9), _probs(0.1)]
    label, p, first, last = classifier_verdict(CLASSES, outcomes, [])
    # runs of P(not notumor) >= 0.5: slices 2-3 (0.6, 0.5) and 5-7; the longest is 5-7
    assert (first, last) == (5, 7)
    means = {"glioma": np.mean([0.3, 0.5, 0.1, 0.05, 0.0]), "meningioma": np.mean([0.3, 0.0, 0.6, 0.7, 0.9])}
    assert label == "meningioma" and p == pytest.approx(means["meningioma"])
    assert MIN_RUN == 2 and "at least 2 adjacent slices" in VERDICT_RULE
    series = Series("k", "1.2.3", "dicom", slices=[SliceRef(f"s{i}.dcm") for i in range(len(outcomes))])
    v = verdict("m", "1", "classification", CLASSES, outcomes, series)
    assert (v.label, v.first_slice, v.last_slice, v.runs) == ("meningioma", 5, 7, [(2, 3), (5, 7)])


def test_isolated_abnormal_slices_leave_the_series_normal():
    outcomes = [_probs(0.9), _probs(0.1), _probs(0.2), _probs(0.7), _probs(0.3)]
    label, p, first, last = classifier_verdict(CLASSES, outcomes, [])
    assert (label, first, last) == ("notumor", None, None)
    assert p == pytest.approx(1 - 0.9)


def test_a_gap_or_a_failed_slice_breaks_adjacency():
    outcomes = [_probs(0.1), _probs(0.8), _probs(0.9), _probs(0.1)]
    assert classifier_verdict(CLASSES, outcomes, [])[0] == "glioma"
    assert classifier_verdict(CLASSES, outcomes, [1])[0] == "notumor"  # a gap lies between slices 2 and 3
    failed = [_probs(0.8), SliceOutcome(error="damaged"), _probs(0.9), _probs(0.95)]
    label, _, first, last = classifier_verdict(CLASSES, failed, [])
    assert (label, first, last) == ("glioma", 3, 4)
    assert classifier_verdict(CLASSES, [_probs(0.8), None, _probs(0.9)], [])[0] == "notumor"


def test_one_slice_series_and_classifiers_without_a_normal_class():
    assert classifier_verdict(CLASSES, [_probs(0.7)], [])[:3] == ("glioma", pytest.approx(0.7), 1)
    outcomes = [SliceOutcome("benign", {"benign": 0.8, "malignant": 0.2}),
                SliceOutcome("malignant", {"benign": 0.3, "malignant": 0.7}),
                SliceOutcome("malignant", {"benign": 0.2, "malignant": 0.8})]
    assert classifier_verdict(["benign", "malignant"], outcomes, []) == ("malignant", pytest.approx(1.7 / 3), None, None)


def _series(n: int, spacing: float | None = 3.0) -> Series:
    return Series("k", "1.2.3", "dicom", slices=[SliceRef(f"s{i}.dcm") for i in range(n)], spacing_mm=spacing,
                  spacing_source=None if spacing is None else "positions")


def test_lesion_volume_is_area_times_spacing_over_adjacent_lesion_slices():
    areas = [0, 40.0, 60.0, 0, 25.0, 0]  # slice 5 has a lesion alone: not part of the call
    outcomes = [SliceOutcome("lesion" if a else "no lesion", lesions=int(a > 0), lesion_area_mm2=a) for a in areas]
    label, first, last, volume, warnings = segmenter_verdict(outcomes, _series(6, 2.5))
    assert (label, first, last) == ("lesion", 2, 3) and not warnings
    assert volume == pytest.approx((40 + 60) * 2.5 / 1000)
    assert segmenter_verdict(outcomes, _series(6, None))[3:] == (None, ["Slice spacing unknown: no lesion volume."])
    unknown = [SliceOutcome("lesion", lesions=1, lesion_area_mm2=None)] * 3
    assert segmenter_verdict(unknown, _series(3))[3] is None
    none = [SliceOutcome("no lesion", lesions=0, lesion_area_mm2=0.0)] * 3
    assert segmenter_verdict(none, _series(3)) == ("no lesion", None, None, 0.0, [])


def test_series_verdicts_say_where_the_segmenter_and_a_classifier_disagree():
    """A segmenter outlining a normal structure on slices 2-4 (the brain segmenter outlines the pons of a
    tumour-free template brain) while the classifier calls them 'notumor': the segmenter's verdict says so; a
    classifier run on slices 5-6 without any outline: the classifier's verdict says so."""
    areas = [0, 40.0, 60.0, 50.0, 0, 0]
    seg = [SliceOutcome("lesion" if a else "no lesion", lesions=int(a > 0), lesion_area_mm2=a) for a in areas]
    calm = [_probs(0.0)] * 4 + [_probs(0.9), _probs(0.8)]
    series = _series(6)
    results = [verdict("cls", "1", "classification", CLASSES, calm, series),
               verdict("seg", "1", "segmentation", ["lesion"], seg, series)]
    series_disagreements(results)
    cls_v, seg_v = results
    assert seg_v.warnings == ["Models disagree: cls calls 'notumor' 3 of the 3 slices on which seg outlines a lesion "
                              "(slices 2-4)."]
    assert cls_v.warnings == ["Models disagree: seg outlines no lesion on slices 5-6, which cls calls abnormal."]
    agreeing = [_probs(0.0), _probs(0.9), _probs(0.7), _probs(0.2), _probs(0.0), _probs(0.0)]
    results = [verdict("cls", "1", "classification", CLASSES, agreeing, series),
               verdict("seg", "1", "segmentation", ["lesion"], seg, series)]
    series_disagreements(results)
    assert results[1].warnings == ["Models disagree: cls calls 'notumor' 1 of the 3 slices on which seg outlines a "
                                   "lesion (slice 4)."]
    assert results[0].runs == [(2, 3)] and results[0].warnings == []  # its run holds outlines
    # A slice whose argmax is 'notumor' but P(not notumor) >= 0.5 counts as abnormal, as the verdict rule reads it;
    # a segmenter that did not read the run's slices (cancelled, failed) says nothing about them.
    split = [_probs(0.0), _probs(0.3, 0.3), _probs(0.3, 0.3), _probs(0.3, 0.3), _probs(0.9), _probs(0.8)]
    unread = seg[:4] + [None, SliceOutcome(error="damaged")]
    results = [verdict("cls", "1", "classification", CLASSES, split, series),
               verdict("seg", "1", "segmentation", ["lesion"], unread, series)]
    series_disagreements(results)
    assert not [w for v in results for w in v.warnings if w.startswith("Models disagree")]


# ----------------------------------------------------------------------------------------------- real models
# mr_models and planted_series (slices 3-6 carry the disc) are fixtures in tests/conftest.py, shared with the window
# tests.
LESION_SLICES, PIXEL_MM, SPACING = PLANTED_LESION_SLICES, PLANTED_PIXEL_MM, PLANTED_SPACING


def _disc_area_mm2() -> float:
    disc = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(disc, (32, 30), 7, 1, -1)
    return float(disc.sum()) * PIXEL_MM * PIXEL_MM


MODELS = ["tiny-mr-yesno", "tiny-mr-segmenter"]


def test_series_analysis_through_the_engine_with_progress_and_cache(planted_series, mr_models):
    from core.inference.analyzer import Analyzer, Engine
    from core.models.registry import Registry

    series = index_folder(planted_series).series[0]
    assert series.spacing_mm == pytest.approx(SPACING) and len(series) == 10
    engine = Engine(Analyzer(Registry([mr_models])))
    seen, cache = [], SliceCache()
    try:
        first = analyse_series(series, engine, MODELS, progress=lambda p: seen.append((p.done, p.total)), cache=cache)
        again = analyse_series(series, engine, MODELS, cache=cache)
    finally:
        engine.shutdown()
    assert seen == [(k, 10) for k in range(1, 11)]
    assert not first.cancelled and first.slices_analysed == 10 and len(cache) == 20
    yesno, seg = first.results
    assert [o.label for o in yesno.slices] == ["yes" if k in LESION_SLICES else "no" for k in range(10)]
    assert (yesno.label, yesno.first_slice, yesno.last_slice) == ("yes", 4, 7)
    assert yesno.probability == pytest.approx(np.mean([yesno.slices[k].probabilities["yes"] for k in LESION_SLICES]))
    assert (seg.label, seg.first_slice, seg.last_slice, seg.runs) == ("lesion", 4, 7, [(4, 7)])
    assert seg.lesion_volume_ml == pytest.approx(len(LESION_SLICES) * _disc_area_mm2() * SPACING / 1000, rel=0.1)
    assert seg.slices[4].mask is not None and seg.slices[4].mask.shape == (SIZE, SIZE)
    # the second run took every slice from the cache and called the series the same way
    assert again.slices_analysed == 0
    assert [(v.label, v.first_slice, v.last_slice, v.lesion_volume_ml) for v in again.results] == \
        [(v.label, v.first_slice, v.last_slice, v.lesion_volume_ml) for v in first.results]

    out = first.to_dict()
    assert set(out) >= {"series_uid", "description", "modality", "plane", "slices", "results", "warnings"}
    assert (out["series_uid"], out["modality"], out["plane"], out["slices"]) == (series.uid, "MR", "axial", 10)
    detail = out["results"][0]["slices_detail"]
    assert set(detail[0]) >= {"file", "instance", "position_mm", "label", "probability"}
    assert [d["position_mm"] for d in detail] == sorted(d["position_mm"] for d in detail)
    assert [d["file"] for d in detail] == [str(s.path) for s in series.slices]
    assert out["results"][1]["lesion_volume_ml"] == pytest.approx(seg.lesion_volume_ml, abs=1e-4)


def test_cancel_stops_between_slices_and_a_rerun_finishes_from_the_cache(planted_series, mr_models):
    from core.inference.analyzer import Analyzer, Engine
    from core.models.registry import Registry

    series = index_folder(planted_series).series[0]
    engine = Engine(Analyzer(Registry([mr_models])))
    cancel, cache = threading.Event(), SliceCache()

    def progress(p):
        if p.done == 3:
            cancel.set()

    try:
        stopped = submit_series(series, engine, model_ids=MODELS[:1], progress=progress, cancel=cancel,
                                cache=cache).result(timeout=300)
        rest = analyse_series(series, engine.analyzer, MODELS[:1], cache=cache)  # an Analyzer: runs right here
    finally:
        engine.shutdown()
    assert stopped.cancelled and stopped.slices_analysed == 3
    assert [o is not None for o in stopped.results[0].slices] == [True] * 3 + [False] * 7
    assert any("Cancelled" in w for w in stopped.warnings)
    assert rest.slices_analysed == 7 and not rest.cancelled
    assert (rest.results[0].label, rest.results[0].first_slice, rest.results[0].last_slice) == ("yes", 4, 7)


def test_analyze_series_command_prints_the_documented_json(planted_series, mr_models, monkeypatch, capsys, tmp_path):
    from core.cli import main

    monkeypatch.setenv("MIDA_USER_MODELS", str(mr_models))
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))  # a history of this test's own
    rc = main(["analyze", str(planted_series), "--series", "--json", "--model", MODELS[0], "--model", MODELS[1],
               "--dicom-sr-out", str(tmp_path / "series.sr.dcm")])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    (series,) = out["series"]
    assert series["dicom_sr_file"] == str(tmp_path / "series.sr.dcm") and (tmp_path / "series.sr.dcm").stat().st_size
    assert (series["modality"], series["plane"], series["slices"]) == ("MR", "axial", 10)
    yesno, seg = series["results"]
    assert set(yesno) >= {"model", "label", "probability", "first_slice", "last_slice", "lesion_volume_ml",
                          "slices_detail"}
    assert (yesno["model"], yesno["label"], yesno["first_slice"], yesno["last_slice"]) == (MODELS[0], "yes", 4, 7)
    assert (seg["label"], seg["lesion_volume_ml"] > 0) == ("lesion", True)
    assert [d["instance"] for d in yesno["slices_detail"]] == list(range(1, 11))
    # one history entry for the series: its verdict lines, slice range and lesion volume
    from core.history import History

    (entry,) = History().all()
    assert (entry.kind, entry.series_uid, entry.slices, entry.path) == ("series", series["series_uid"], 10,
                                                                        str(planted_series))
    assert f"{MODELS[0]}: yes" in entry.labels and f"{MODELS[1]}: lesion on slices 4-7 of 10" in entry.labels
    recorded = {r["model"]: r for r in entry.results["results"]}
    assert (recorded[MODELS[0]]["first_slice"], recorded[MODELS[0]]["last_slice"]) == (4, 7)
    assert recorded[MODELS[1]]["lesion_volume_ml"] == pytest.approx(seg["lesion_volume_ml"], abs=1e-4)
    assert main(["history"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["entries"]
    assert (listed["kind"], listed["series_uid"], listed["slices"]) == ("series", series["series_uid"], 10)

    assert main(["analyze", str(tmp_path / "nowhere"), "--series", "--json"]) == 2
    assert "does not exist" in json.loads(capsys.readouterr().out)["error"]
    assert len(History().all()) == 1


def test_batch_writes_series_csv_beside_results_csv(planted_series, mr_models, tmp_path, lgg_png_folder):
    from core.batch.runner import BatchRun
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry
    from core.series.report import SERIES_COLUMNS, write_series_csv

    summary = BatchRun(planted_series, tmp_path / "out", Analyzer(Registry([mr_models])), model_ids=MODELS,
                       heatmaps=False).run()
    assert summary["complete"]
    with (tmp_path / "out" / "series.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == SERIES_COLUMNS
    assert [(r["patient"], r["study"], r["model"], r["label"], r["first_slice"], r["last_slice"], r["slices"])
            for r in rows] == [("P001", "P001-S1", MODELS[0], "yes", "4", "7", "10"),
                               ("P001", "P001-S1", MODELS[1], "lesion", "4", "7", "10")]
    assert [(r["first_instance"], r["last_instance"]) for r in rows] == [("4", "7")] * 2  # numbered in position order
    assert float(rows[1]["lesion_volume_ml"]) == pytest.approx(
        len(LESION_SLICES) * _disc_area_mm2() * SPACING / 1000, rel=0.1)
    assert "LGG-1" not in (tmp_path / "out" / "series.csv").read_text()  # no patient ID written
    # a folder of plain images holds no DICOM series: no series.csv
    assert write_series_csv(index_folder(lgg_png_folder), [], tmp_path / "png-out") is None
    assert not (tmp_path / "png-out").exists()


@pytest.fixture
def lgg_png_folder(tmp_path):
    from PIL import Image

    noise, _, _ = planted_images(2, seed=3)
    folder = tmp_path / "png"
    folder.mkdir()
    for k, img in enumerate(noise):
        Image.fromarray(img).save(folder / f"{k}.png")
    return folder


def test_a_damaged_slice_is_reported_and_breaks_the_run(planted_series, mr_models, tmp_path):
    import shutil

    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    shutil.copytree(planted_series, tmp_path / "series")
    series = index_folder(tmp_path / "series").series[0]
    damaged = series.slices[5].path  # the third of the four lesion slices
    damaged.write_bytes(damaged.read_bytes()[:-3000])  # pixel data cut short: the header still indexes
    result = analyse_series(series, Analyzer(Registry([mr_models])), MODELS[:1])
    (yesno,) = result.results
    assert yesno.slices[5].error and "pixel data" in yesno.slices[5].error
    assert (yesno.label, yesno.first_slice, yesno.last_slice, yesno.runs) == ("yes", 4, 5, [(4, 5)])
    assert "1 of 10 slices have no result for this model." in yesno.warnings
    assert result.to_dict()["results"][0]["slices_detail"][5]["error"] == yesno.slices[5].error


def test_series_csv_rows_for_series_without_model_results(tmp_path):
    from core.series.report import write_series_csv

    noise, _, _ = planted_images(4, seed=9)
    broken = write_series(tmp_path / "in" / "a", [n.astype(np.uint16) for n in noise[:2]], description="BROKEN")
    write_series(tmp_path / "in" / "b", [n.astype(np.uint16) for n in noise[2:]], description="UNSEEN")
    (tmp_path / "out").mkdir()
    results = [{"file": p.relative_to(tmp_path / "in").as_posix(), "frame": "0", "model": "", "task": "", "label": "",
                "probability": "", "error": "the pixel data is damaged"} for p in broken]
    with write_series_csv(index_folder(tmp_path / "in"), results, tmp_path / "out").open(newline="") as fh:
        rows = {r["description"]: r for r in csv.DictReader(fh)}
    assert rows["BROKEN"]["model"] == "" and rows["BROKEN"]["warnings"] == "the pixel data is damaged"
    assert rows["UNSEEN"]["warnings"] == "no model results for this series" and rows["UNSEEN"]["slices"] == "2"


def test_model_cards_quote_the_series_verdict_rule():
    """The rule a series is called by is written once and quoted in the cards of the models read as series."""
    from core.series.analysis import VERDICT_RULE
    from core.training.cards import model_card

    models = Path(__file__).resolve().parents[1] / "models"
    brain = json.loads((models / "brain-mri-tumor-4class" / "manifest.json").read_text())
    assert VERDICT_RULE in model_card(brain) and VERDICT_RULE in (models / "brain-mri-tumor-4class" / "model_card.md").read_text()
    histology = json.loads((models / "breast-histology-2class" / "manifest.json").read_text())
    assert "Series verdict" not in model_card(histology)  # one picture, not a series of slices


def test_a_series_structured_report_gives_each_verdict_and_every_slice_outline_on_its_own_instance(
        planted_series, mr_models, tmp_path):
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from core.inference.analyzer import Analyzer, Engine
    from core.models.registry import Registry
    from core.series.structured_report import export_series_sr

    series = index_folder(planted_series).series[0]
    engine = Engine(Analyzer(Registry([mr_models])))
    try:
        analysis = analyse_series(series, engine, MODELS)
    finally:
        engine.shutdown()
    yesno, seg = analysis.results
    sr = hd.sr.srread(export_series_sr(analysis, tmp_path / "series.sr.dcm"))
    assert sr.StudyInstanceUID == pydicom.dcmread(series.slices[0].path).StudyInstanceUID
    assert str(sr.PatientName) == "ANONYMOUS"
    classifier, segmenter = sr.content.get_image_measurement_groups()
    assert classifier.finding_type.meaning == "yes" and segmenter.finding_type.meaning == "lesion"
    where = {"First slice of the finding (position order)": 4, "Last slice of the finding (position order)": 7}
    assert {m.name.meaning: m.value for m in classifier.get_measurements()} == pytest.approx(
        {"Probability of yes": yesno.probability, **where})
    assert {m.name.meaning: m.value for m in segmenter.get_measurements()} == pytest.approx(
        {"Volume": seg.lesion_volume_ml, **where}, abs=1e-6)
    outlines = sr.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in outlines] == [f"tiny-mr-segmenter slice {k + 1} lesion 1"
                                                         for k in LESION_SLICES]
    for group, k in zip(outlines, LESION_SLICES):
        referenced = group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        assert referenced == series.slices[k].sop_uid  # the outline sits on its own slice
        (area,) = [m.value for m in group.get_measurements() if m.name == codes.SCT.Area]
        assert area == pytest.approx(seg.slices[k].outlines[0].area_mm2)


def _outlined(series, lesion_slices=(1,)):
    """A segmenter's series analysis with one square lesion on ``lesion_slices`` (no network needed)."""
    from core.inference.results import Lesion
    from core.series.analysis import SeriesAnalysis, SeriesVerdict

    lesion = Lesion(1, 100, 25.0, (10, 10, 10, 10), 14.0, 7.0, np.array([[10, 10], [20, 10], [20, 20], [10, 20]]),
                    (0.5, 0.5))
    outcomes = [SliceOutcome("lesion" if k in lesion_slices else "no lesion", lesions=int(k in lesion_slices),
                             lesion_area_mm2=0.0, mask=np.zeros((32, 32), np.uint8),
                             outlines=[lesion] if k in lesion_slices else []) for k in range(len(series.slices))]
    return SeriesAnalysis(series, [SeriesVerdict("seg", "1.0", "segmentation", "lesion", None, 2, 2, 0.1, outcomes)],
                          [], False, 0.0, len(outcomes))


@pytest.mark.parametrize("kind", ["enhanced", "no thickness", "identified, no birth date"])
def test_a_series_structured_report_of_the_series_a_scanner_or_converter_writes(tmp_path, kind):
    """highdicom's Image Library reads top-level geometry an enhanced MR file keeps in functional groups and many
    converted files lack, and an identified report copies type 2 attributes a file may lack: both raised."""
    import highdicom as hd
    import pydicom

    from core.series.structured_report import export_series_sr
    from tests.series_data import ramp_images, slice_positions, write_enhanced_mr

    folder = tmp_path / "s"
    if kind == "enhanced":
        write_enhanced_mr(folder / "enh.dcm", ramp_images(5), slice_positions(5, 3.0))
    else:
        write_series(folder, ramp_images(4), thickness=None)
        if kind.startswith("identified"):
            for path in folder.iterdir():
                ds = pydicom.dcmread(path)
                del ds.PatientBirthDate
                ds.save_as(path)
    series = index_folder(folder).series[0]
    sr = hd.sr.srread(export_series_sr(_outlined(series), tmp_path / "s.sr.dcm",
                                       anonymise=not kind.startswith("identified")))
    (group,) = sr.content.get_planar_roi_measurement_groups()
    reference = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert reference.ReferencedSOPInstanceUID == series.slices[1].sop_uid
    if kind == "enhanced":
        assert reference.ReferencedFrameNumber == series.slices[1].frame + 1
