"""Defects a hunt found where interfaces disagreed on one film: a mammogram analysed as a series was scored alone
(analyze and batch score it against the other breast), and a film's reading kept from an earlier file (the same
pixels as DICOM and as PNG) gave the later one the earlier one's scale source and warning; a lesion's area in
lesion_details was not rounded as the summary's is."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.inference.results import Lesion
from core.models.registry import Registry
from core.series.analysis import analyse_series
from core.series.contralateral import other_breast
from core.series.index import index_folder
from tests.series_data import write_mammo
from tests.test_film_detector import _film, _save

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tests.tiny_models import make_film_bundle

    root = tmp_path_factory.mktemp("film-models")
    make_film_bundle(root)
    return root


def _dicom_film(path, picture: np.ndarray, laterality: str, study: str, spacing=(0.2, 0.2)):
    write_mammo(path, picture.astype(np.uint16), study_uid=study, laterality=laterality, view="MLO", patient_id="IF")
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = list(spacing)
    ds.WindowCenter, ds.WindowWidth = 127.5, 256  # displayed as the PNG is
    ds.save_as(path)
    return path


def test_a_mammogram_analysed_as_a_series_is_scored_against_the_other_breast(models, tmp_path):
    study = generate_uid()
    left = _dicom_film(tmp_path / "L_MLO.dcm", _film(), "L", study)
    _dicom_film(tmp_path / "R_MLO.dcm", _film(blob=False)[:, ::-1], "R", study)
    analyzer = Analyzer(Registry([models]), runtime="tensorflow")
    single = analyzer.analyze(load_image(left), find_other_breast=other_breast, gradcam=False).results[0]
    assert any("Scored against the other breast's film" in w for w in single.warnings)
    series = next(s for s in index_folder(tmp_path).series if any(r.path == left for r in s.slices))
    result = analyse_series(series, analyzer)
    outcome = result.results[0].slices[0]
    assert outcome.probabilities["abnormal"] == pytest.approx(single.probabilities["abnormal"], abs=1e-6)
    assert not any("scored alone" in w for w in outcome.warnings)


def test_a_film_scored_alone_in_a_series_says_so_in_the_verdict(models, tmp_path):
    left = _dicom_film(tmp_path / "L_MLO.dcm", _film(), "L", generate_uid())
    analyzer = Analyzer(Registry([models]), runtime="tensorflow")
    series = next(iter(index_folder(tmp_path).series))
    assert series.slices[0].path == left
    verdict = analyse_series(series, analyzer).results[0]
    assert any("scored alone" in w and "1 of 1 slices" in w for w in verdict.warnings)


def test_a_film_as_png_after_its_dicom_is_read_at_its_own_scale_source(models, tmp_path):
    """The same pixels, a 1,024-row DICOM at 0.2 mm and its PNG (no scale: 204.8 mm assumed, 0.2 mm per pixel too):
    each keeps its own scale source and the PNG its warning, in either order in one process."""
    dicom = _dicom_film(tmp_path / "film.dcm", _film(), "L", generate_uid())
    png = _save(tmp_path, "film.png", _film())
    assert np.array_equal(load_image(dicom).display(), load_image(png, modality="MG").display())
    for order in ((dicom, png), (png, dicom)):
        analyzer = Analyzer(Registry([models]), runtime="tensorflow")
        for path in order:
            record = load_image(path, modality="MG")
            result = analyzer.analyze(record, gradcam=False).results[0]
            own = "file" if path == dicom else "assumed"
            assert result.scale["source"] == own, (order, path)
            assert any(w.startswith("Film scale not in the file") for w in result.warnings) == (own == "assumed")


def test_each_lesion_s_area_in_mm2_is_rounded_as_the_summary_s():
    lesion = Lesion(label=1, area_px=311, area_mm2=27.990000000000006, bbox=(0, 0, 20, 20), max_diameter_px=20.0,
                    max_diameter_mm=6.0, contour=np.zeros((0, 2)), spacing_mm=(0.3, 0.3))
    assert lesion.to_dict()["area_mm2"] == 27.99


def test_the_history_keeps_a_picture_read_smaller_in_the_file_s_pixels_with_its_warning(models, tmp_path, monkeypatch):
    """A film read at 1/3 to fit in memory: the history had kept its marks in the reduced picture's pixels (a third
    of analyze --json's at 1/3) and without the 'read smaller' warning; it keeps what analyze prints."""
    from core.history import History

    path = _save(tmp_path, "big.png", _film(scale=2))
    monkeypatch.setenv("MIDA_MEMORY_BUDGET_MB", "6")  # read at 1/3
    record = load_image(path, modality="MG")
    assert record.downsample >= 2 and record.warnings
    analysis = Analyzer(Registry([models]), runtime="tensorflow").analyze(record, gradcam=False)
    assert analysis.results[0].findings
    history = History(tmp_path / "history.sqlite")
    history.add(analysis)
    kept = history.for_file(path)[0].results
    printed = analysis.file_dict()
    assert kept["results"][0]["findings"] == printed["results"][0]["findings"]
    x_file = printed["results"][0]["findings"][0]["x"]
    assert x_file == pytest.approx(analysis.results[0].findings[0].x * record.downsample, abs=0.1)
    assert kept["warnings"][:len(record.warnings)] == record.warnings


def test_a_series_verdict_names_the_images_by_instance_number_where_they_differ_from_the_slices():
    """Slices are counted in position order; a series whose files are numbered the other way (InstanceNumber 42 at
    the feet) had said 'slices 5-10' only, which a reader looks up in a PACS as images 5-10."""
    from core.series.analysis import SliceOutcome, verdict, verdict_text
    from core.series.index import Series, SliceRef

    probs = [0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1]
    outcomes = [SliceOutcome("yes" if p > 0.5 else "no", {"no": 1 - p, "yes": p}) for p in probs]
    reversed_numbers = Series("k", "1.2.3", "dicom", slices=[SliceRef(f"s{i}.dcm", instance=10 - i) for i in range(10)])
    v = verdict("m", "1", "classification", ["no", "yes"], outcomes, reversed_numbers)
    assert (v.first_slice, v.last_slice) == (5, 7)
    assert (v.instance(v.first_slice), v.instance(v.last_slice)) == (6, 4)
    assert "slices 5-7 of 10 (images 4-6 by instance number)" in verdict_text(v)
    interleaved = Series("k", "1.2.3", "dicom",  # acquired odd then even: 1, 6, 2, 7, 3, 8, ...
                         slices=[SliceRef(f"s{i}.dcm", instance=i // 2 + 1 + 5 * (i % 2)) for i in range(10)])
    assert "(images 3, 8, 4 by instance number)" in verdict_text(
        verdict("m", "1", "classification", ["no", "yes"], outcomes, interleaved))
    same = Series("k", "1.2.3", "dicom", slices=[SliceRef(f"s{i}.dcm", instance=i + 1) for i in range(10)])
    assert "by instance number" not in verdict_text(verdict("m", "1", "classification", ["no", "yes"], outcomes, same))
