"""A detector's findings (CAD marks): serialised, a viewer layer, drawn and listed, exported to batch and PDF."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from core.batch.runner import BatchRun
from core.export.report import overlay_picture, write_image_report
from core.history import History
from core.imaging import load_image
from core.inference.results import FINDING_RGB, Analysis, Finding, ModelResult
from core.viewer_state import ViewerState
from tests.conftest import open_window


def _findings() -> list[Finding]:
    """Two marks, the weaker first: whatever the detector's order, they are kept highest score first."""
    return [Finding(40.04, 50.0, 12.0, 0.41234), Finding(120.0, 80.0, 20.0, 0.8321, "mass")]


def _result(findings: list[Finding] | None, model: str = "mammo-cad") -> ModelResult:
    return ModelResult(model, "1.0", "classification", "cpu", ["normal", "abnormal"],
                       {"normal": 0.17, "abnormal": 0.83}, "abnormal", findings=findings)


def _analysis(path: Path | str = "m.png", findings: list[Finding] | None = None, modality: str = "MG") -> Analysis:
    return Analysis(str(path), modality, "user", 0, [_result(_findings() if findings is None else findings)])


@pytest.fixture
def png(tmp_path) -> Path:
    """A 200 x 160 grey picture with a brighter block where the second finding sits."""
    image = np.full((160, 200), 90, np.uint8)
    image[60:100, 100:140] = 170
    path = tmp_path / "m.png"
    Image.fromarray(image).save(path)
    return path


# ----- results

def test_finding_serialises_rounded_and_results_keep_them_highest_score_first():
    assert Finding(40.04, 50.0, 12.0, 0.41234).to_dict() == {"x": 40.0, "y": 50.0, "r": 12.0, "score": 0.4123,
                                                              "kind": None}
    result = _result(_findings())
    assert [f.score for f in result.findings] == [0.8321, 0.41234]
    assert result.to_dict()["findings"] == [{"x": 120.0, "y": 80.0, "r": 20.0, "score": 0.8321, "kind": "mass"},
                                            {"x": 40.0, "y": 50.0, "r": 12.0, "score": 0.4123, "kind": None}]
    assert result.to_dict()["probabilities"] == {"normal": 0.17, "abnormal": 0.83}
    assert _result([]).to_dict()["findings"] == []  # a detector that marked nothing here
    assert "findings" not in _result(None).to_dict()  # a bundle that does not mark findings


def test_finding_texts_in_mm_where_the_spacing_is_known():
    mark = Finding(120.4, 80.6, 20.0, 0.8321, "mass")
    assert mark.label == "0.83 mass" and Finding(1, 1, 1, 0.5).label == "0.50"
    assert mark.size_text() == "Ø 40 px"
    assert Finding(1, 1, 20.0, 0.5, spacing_mm=(0.1, 0.2)).size_text() == "Ø 8.0 mm"  # the longer pixel side
    assert mark.line() == "0.83 mass at x 120, y 81 px, Ø 40 px"


# ----- viewer state

def test_findings_layer_is_shown_by_default_and_toggles():
    state = ViewerState()
    assert [layer.name for layer in state.overlays][-1] == "findings" and state.overlays.findings.visible
    assert state.findings_result is None
    analysis = _analysis()
    analysis.results.insert(0, _result(None, "other"))  # a classifier without marks comes first
    state.set_analysis(analysis)
    assert state.findings_result is analysis.results[1] and len(state.findings_result.findings) == 2
    seen = []
    state.events.overlays.connect(lambda layer: seen.append((layer.name, layer.visible)))
    state.overlays.findings.toggle()
    assert not state.overlays.findings.visible and seen == [("findings", False)]


# ----- window

@pytest.fixture
def window(qtbot, tmp_path):
    """The main window offscreen with no models: the analysis is set by hand through its state."""
    return open_window(qtbot, tmp_path / "no-models", tmp_path)


def test_viewer_draws_a_circle_per_finding_and_the_panels_follow(qtbot, window, png):
    from PySide6.QtWidgets import QGraphicsEllipseItem, QLabel

    window.open_path(png)
    qtbot.waitUntil(lambda: window.state.record is not None and not window.is_busy, timeout=20000)
    window.state.set_analysis(_analysis(png, modality=window.state.record.modality.value))

    circles = [i for i in window.viewer.scene().items() if isinstance(i, QGraphicsEllipseItem)]
    assert len(circles) == 2 and all(c.isVisible() for c in circles)
    assert sorted((round(c.rect().center().x(), 2), c.rect().width()) for c in circles) == [(40.04, 24.0), (120.0, 40.0)]
    assert circles[0].pen().color().getRgb()[:3] == FINDING_RGB
    labels = [w for w in window.probabilities.findChildren(QLabel) if w.text().startswith('<a href="#')]
    assert [re.sub(r"<[^>]+>", "", w.text()) for w in labels] == ["#1: 0.83 mass at x 120, y 80 px, Ø 40 px",
                                                                  "#2: 0.41 at x 40, y 50 px, Ø 24 px"]
    labels[0].linkActivated.emit("#1")  # the finding's number zooms the viewer to it
    centre = window.viewer.mapToScene(window.viewer.viewport().rect().center())
    assert abs(centre.x() - 120) < 3 and abs(centre.y() - 80) < 3 and window.viewer.transform().m11() > 2

    assert window.overlays.findings.isChecked()
    window.overlays.findings.setChecked(False)  # the Overlays dock's toggle hides the layer and its circles
    assert not window.state.overlays.findings.visible
    assert not any(c.isVisible() for c in window.viewer.scene().items() if isinstance(c, QGraphicsEllipseItem))
    window.state.overlays.findings.visible = True  # and follows the layer set elsewhere
    assert window.overlays.findings.isChecked()

    window.state.set_analysis(None)
    assert not [i for i in window.viewer.scene().items() if isinstance(i, QGraphicsEllipseItem)]


# ----- exports

class _FakeAnalyzer:
    """Two mammography classifiers: one marks findings (two on a.png, none on b.png), one never does."""

    def __init__(self) -> None:
        self.registry = SimpleNamespace(bundles={m: SimpleNamespace(id=m, version="1.0", task="classification",
                                                                    classes=["normal", "abnormal"])
                                                 for m in ("mammo-cad", "mammo-plain")})

    def analyze(self, record, frame=0, **_options) -> Analysis:
        marks = _findings() if record.path.name == "a.png" else []
        return Analysis(str(record.path), "MG", "user", frame, [_result(marks), _result(None, "mammo-plain")])


def test_batch_writes_findings_to_jsonl_and_their_count_to_csv(tmp_path, png):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(png.read_bytes())
    summary = BatchRun(folder, tmp_path / "out", _FakeAnalyzer()).run()
    assert summary["complete"] and summary["errors"] == 0

    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        rows = {(r["file"], r["model"]): r for r in csv.DictReader(fh)}
    assert rows["a.png", "mammo-cad"]["findings"] == "2" and rows["b.png", "mammo-cad"]["findings"] == "0"
    assert rows["a.png", "mammo-plain"]["findings"] == ""  # does not mark findings
    assert rows["a.png", "mammo-cad"]["p_abnormal"] == "0.830000" and rows["a.png", "mammo-cad"]["p_normal"] == "0.170000"

    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    marked = {(r["file"], r["model"]): r["findings"] for r in lines}
    assert marked["a.png", "mammo-cad"] == [{"x": 120.0, "y": 80.0, "r": 20.0, "score": 0.8321, "kind": "mass"},
                                            {"x": 40.0, "y": 50.0, "r": 12.0, "score": 0.4123, "kind": None}]
    assert marked["b.png", "mammo-cad"] == [] and marked["a.png", "mammo-plain"] is None
    assert (tmp_path / "out" / "report.pdf").stat().st_size > 0


def _marked(pixel: np.ndarray) -> bool:
    """The findings colour, give or take anti-aliasing (the grey picture has no such pixel)."""
    return int(np.abs(pixel.astype(int) - FINDING_RGB).max()) < 60


def test_report_draws_and_lists_the_findings(tmp_path, png):
    import pypdfium2 as pdfium

    record = load_image(png)
    analysis = _analysis(png)
    picture = overlay_picture(record, analysis)
    assert _marked(picture[80, 140])  # on the circle of the 0.83 mark (x 120 + r 20, y 80), anti-aliased
    assert not _marked(picture[80, 120])  # its centre is left for the reader to see
    assert not _marked(overlay_picture(record, _analysis(png, []))[80, 140])

    pdf = write_image_report(tmp_path / "report.pdf", record, analysis)
    text = pdfium.PdfDocument(str(pdf))[0].get_textpage().get_text_range()
    assert "2 finding(s)" in text and "#1: 0.83 mass at x 120, y 80 px" in text and "#2: 0.41 at x 40" in text


def test_history_labels_count_findings_and_older_entries_still_read(tmp_path):
    history = History(tmp_path / "history.sqlite")
    history.add(_analysis(), file_sha256="ab")
    old = _analysis()
    old.results[0].findings = None  # an entry written before findings existed has no "findings" key
    history.add(old, file_sha256="ab")
    assert [e.labels for e in history.all()] == ["mammo-cad: abnormal", "mammo-cad: abnormal, 2 finding(s)"]
