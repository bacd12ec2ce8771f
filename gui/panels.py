"""Dock panels: probabilities and findings, warnings, DICOM tags, model information, overlay controls."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.inference.overlays import colorbar_rgb
from core.inference.results import Analysis, ModelResult, in_file_pixels
from core.models.registry import metrics_text
from core.viewer_state import COLORMAPS, ViewerState
from gui.qimage import to_pixmap

WARNING_COLOUR = QColor(200, 120, 0)  # the Warnings list's text, and a warning shown beside a model's answer


class ProbabilityPanel(QWidget):
    """Class probabilities as bars, the label with its calibrated confidence, Grad-CAM class choice; lesion
    sizes; a detector's findings."""

    gradcamClassChosen = Signal(str, str)  # model id, class name
    findingChosen = Signal(float, float, float)  # x, y, radius in image pixels: the viewer zooms to it

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.placeholder = QLabel("No analysis yet. Analysis ▸ Analyse image (Ctrl+R).")
        self.placeholder.setWordWrap(True)
        self._layout.addWidget(self.placeholder)
        self.bars: dict[tuple[str, str], QProgressBar] = {}
        self.choosers: dict[str, QComboBox] = {}  # "Grad-CAM for", by model id
        self._boxes: list[QWidget] = []

    def clear(self, text: str = "No analysis yet. Analysis ▸ Analyse image (Ctrl+R).") -> None:
        for box in self._boxes:
            box.deleteLater()
        self._boxes, self.bars, self.choosers = [], {}, {}
        self.placeholder.setText(text)
        self.placeholder.show()

    def show_analysis(self, analysis: Analysis, titles: dict[str, str], scales: dict[str, str],
                      pixel_scale: int = 1) -> None:
        """``scales``: by model id, the image scale a bundle that tiles at a physical scale used, and whence;
        ``pixel_scale``: the file's pixels per pixel analysed (sizes and positions are said in the file's, as the
        JSON and the report say them)."""
        self.clear()
        self.placeholder.hide()
        for result in analysis.results:
            box = QGroupBox(titles.get(result.model_id, result.model_id).replace("&", "&&"))  # & is a mnemonic
            form = QVBoxLayout(box)
            if result.task == "classification":
                self._classification(result, form)
                self._caution(result, form)
            else:
                area = sum(l.area_mm2 or 0 for l in result.lesions)
                unit = f"{area:.1f} mm²" if result.lesions and result.lesions[0].area_mm2 is not None else \
                    f"{result.lesion_area_px(pixel_scale)} px"
                form.addWidget(QLabel(f"{len(result.lesions)} lesion(s), total {unit}"))
                for i, lesion in enumerate(result.lesions[:3], 1):  # largest first: the calipers a sonographer reads
                    text = in_file_pixels(lesion, pixel_scale).size_text().replace("mm2", "mm²")
                    line = QLabel(f"#{i}: " + text.replace("D/W", "D/\u2060W"))  # a joiner: wrapped, it read 'D/ W'
                    line.setWordWrap(True)
                    form.addWidget(line)
                self._caution(result, form)
            if result.model_id in scales:
                scale = QLabel(f"Scale: {scales[result.model_id]}")
                scale.setWordWrap(True)
                form.addWidget(scale)
            if result.findings is not None:
                self._findings(result, form, pixel_scale)
            footer = QLabel(f"{result.model_id} v{result.version} · {result.device} · {result.seconds:.2f} s")
            footer.setStyleSheet("color: gray; font-size: 10px")
            form.addWidget(footer)
            self._layout.addWidget(box)
            self._boxes.append(box)

    @staticmethod
    def _caution(result: ModelResult, form: QVBoxLayout) -> None:
        """The input check's flag under the answer's first line (the label, the lesion count), not only in Warnings."""
        if result.unusual:
            caution = QLabel("⚠ Unusual picture for this model: its answer is less reliable here (Warnings).")
            caution.setWordWrap(True)
            caution.setStyleSheet(f"color: {WARNING_COLOUR.name()}")
            form.insertWidget(1, caution)

    def _classification(self, result: ModelResult, form: QVBoxLayout) -> None:
        headline = QLabel(f"<b>{result.label}</b> — {result.confidence:.1%} (calibrated)")
        form.addWidget(headline)
        for name, p in sorted(result.probabilities.items(), key=lambda kv: -kv[1]):
            row = QHBoxLayout()
            label = QLabel(name)
            label.setMinimumWidth(90)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(int(round(p * 1000)))
            bar.setFormat(f"{p:.1%}")
            row.addWidget(label)
            row.addWidget(bar, 1)
            form.addLayout(row)
            self.bars[(result.model_id, name)] = bar
        if result.heatmap is not None:
            chooser = QComboBox()
            chooser.addItems(result.classes)
            chooser.setCurrentText(result.heatmap_class or result.label)
            # activated, not currentTextChanged: choosing the class shown again draws this model's heatmap
            chooser.activated.connect(lambda _, m=result.model_id, box=chooser: self.gradcamClassChosen.emit(
                m, box.currentText()))
            self.choosers[result.model_id] = chooser
            row = QHBoxLayout()
            row.addWidget(QLabel("Grad-CAM for"))
            row.addWidget(chooser, 1)
            form.addLayout(row)

    def show_gradcam_class(self, model_id: str, class_name: str | None) -> None:
        """Set ``model_id``'s "Grad-CAM for" to the class its heatmap shows (a request that failed leaves it)."""
        chooser = self.choosers.get(model_id)
        if chooser is not None and class_name:
            chooser.blockSignals(True)
            chooser.setCurrentText(class_name)
            chooser.blockSignals(False)

    def _findings(self, result: ModelResult, form: QVBoxLayout, pixel_scale: int) -> None:
        """One line per finding, highest score first (as the result keeps them): score, kind, where, how big; its
        number a link that zooms the viewer to it."""
        count = len(result.findings)
        form.addWidget(QLabel(f"{count} finding{'' if count == 1 else 's'} marked" if count else "No findings marked"))
        for i, finding in enumerate(result.findings, 1):
            line = QLabel(f'<a href="#{i}">#{i}</a>: {in_file_pixels(finding, pixel_scale).line()}')
            line.setWordWrap(True)
            line.setToolTip("Zoom to this finding")
            line.linkActivated.connect(lambda _, f=finding: self.findingChosen.emit(f.x, f.y, f.r))
            form.addWidget(line)


class WarningsPanel(QListWidget):
    """Plain-language flags: wrong modality, low confidence, unknown spacing, load errors."""

    def show_warnings(self, messages: list[str]) -> None:
        """One line per distinct message (several models may raise the same one about an image)."""
        self.clear()
        for message in dict.fromkeys(messages):
            item = QListWidgetItem(f"⚠ {message}")
            item.setForeground(WARNING_COLOUR)
            self.addItem(item)
        if not messages:
            self.addItem(QListWidgetItem("No warnings."))
        self.setWordWrap(True)


class MetadataPanel(QWidget):
    """Searchable list of DICOM tags (or file facts for other formats)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter tags…")
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Tag", "Name", "Value"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        layout.addWidget(self.search)
        layout.addWidget(self.table)
        self.search.textChanged.connect(self._filter)

    def show_rows(self, rows: list[tuple[str, str, str]]) -> None:
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self._filter(self.search.text())

    def _filter(self, text: str) -> None:
        needle = text.lower()
        for i in range(self.table.rowCount()):
            hay = " ".join(self.table.item(i, j).text().lower() for j in range(3) if self.table.item(i, j))
            self.table.setRowHidden(i, bool(needle) and needle not in hay)


class ModelInfoPanel(QTextBrowser):
    """Id, version, training data and validation metrics of the models that ran; below them, the bundles that were
    skipped and why (``problems``: the registry's, a damaged or invalid bundle), as ``main.py models`` says."""

    def __init__(self, problems: list[str] | None = None, parent=None) -> None:
        super().__init__(parent)
        self.problems = problems or []

    def show_models(self, summaries: list[dict]) -> None:
        parts = []
        for s in summaries:
            metrics = metrics_text(s)
            parts.append(f"<h4>{s['id']} v{s['version']}</h4><p>{s['title']}<br>{s['modality']} · {s['task']} · "
                         f"{s['architecture']}<br>Classes: {', '.join(s['classes']) or '-'}<br>"
                         f"Validation: {metrics} (n={s['metrics'].get('n', '?')})<br>Training data: {s.get('training', '')}"
                         + ("" if s.get("input_check") is None else
                            f"<br>Input check: a picture farther from its training images than {s['input_check']:.0%} "
                            "of held-out ones is called unusual")
                         + "</p>")
        skipped = "".join(f"<li>{html.escape(p)}</li>" for p in self.problems)
        self.setHtml(("".join(parts) or "<p>No model has run on this image.</p>"
                      "<p><i>Decision support only — not a medical device.</i></p>")
                     + (f"<p>Bundles skipped:</p><ul>{skipped}</ul>" if skipped else ""))


class OverlayPanel(QWidget):
    """Toggles and sliders for the heatmap, the mask, lesion outlines and findings, bound to a viewer state's layers.

    Moving a control sets the layer; a layer changed elsewhere (a shortcut, saved settings) moves the control.
    """

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        self.heatmap = QCheckBox("Grad-CAM heatmap")
        self.tile_cam = QCheckBox("Grad-CAM of the most suspicious tile (histology, mammography)")
        self.tile_cam.setVisible(False)
        self.heatmap_opacity = self._slider()
        self.threshold = self._slider()
        self.colormap = QComboBox()
        self.colormap.addItems(list(COLORMAPS))
        self.colorbar = QLabel()
        self.mask = QCheckBox("Segmentation mask")
        self.mask_opacity = self._slider()
        self.contour = QCheckBox("Outline only")
        self.lesions = QCheckBox("Lesion outlines and sizes")
        self.findings = QCheckBox("Findings (circles and scores)")
        form.addRow(self.heatmap)
        form.addRow(self.tile_cam)
        form.addRow("Opacity", self.heatmap_opacity)
        form.addRow("Threshold", self.threshold)
        form.addRow("Colour map", self.colormap)
        self.scale_note = QLabel()
        self.scale_note.setWordWrap(True)
        self.scale_note.setStyleSheet("color: gray; font-size: 10px")
        form.addRow("Scale", self.colorbar)
        form.addRow(self.scale_note)
        form.addRow(self.mask)
        form.addRow("Opacity", self.mask_opacity)
        form.addRow(self.contour)
        form.addRow(self.lesions)
        form.addRow(self.findings)
        self.state: ViewerState | None = None

    @staticmethod
    def _slider() -> QSlider:
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, 100)
        return slider

    def bind(self, state: ViewerState) -> None:
        self.state = state
        layers = state.overlays
        heatmap, mask, lesions, findings = layers.heatmap, layers.mask, layers.lesions, layers.findings
        self.heatmap.toggled.connect(lambda on: setattr(heatmap, "visible", on))
        self.tile_cam.toggled.connect(lambda on: setattr(heatmap, "tile", on))
        self.heatmap_opacity.valueChanged.connect(lambda v: setattr(heatmap, "opacity", v / 100))
        self.threshold.valueChanged.connect(lambda v: setattr(heatmap, "threshold", v / 100))
        self.colormap.currentTextChanged.connect(lambda name: setattr(heatmap, "colormap", name))
        self.mask.toggled.connect(lambda on: setattr(mask, "visible", on))
        self.mask_opacity.valueChanged.connect(lambda v: setattr(mask, "opacity", v / 100))
        self.contour.toggled.connect(lambda on: setattr(mask, "outline_only", on))
        self.lesions.toggled.connect(lambda on: setattr(lesions, "visible", on))
        self.findings.toggled.connect(lambda on: setattr(findings, "visible", on))
        state.events.overlays.connect(lambda _: self.follow())
        for event in (state.events.analysis, state.events.record, state.events.heatmap):
            event.connect(lambda _: self.follow())
        self.follow()

    def follow(self) -> None:
        """Set every control from the state, without the controls writing back to it."""
        controls = (self.heatmap, self.tile_cam, self.heatmap_opacity, self.threshold, self.colormap, self.mask,
                    self.mask_opacity, self.contour, self.lesions, self.findings)
        for control in controls:
            control.blockSignals(True)
        try:
            self._follow()
        finally:
            for control in controls:
                control.blockSignals(False)

    def _follow(self) -> None:
        layers = self.state.overlays
        self.heatmap.setChecked(layers.heatmap.visible)
        self.tile_cam.setChecked(layers.heatmap.tile)
        self.heatmap_opacity.setValue(round(layers.heatmap.opacity * 100))
        self.threshold.setValue(round(layers.heatmap.threshold * 100))
        self.colormap.setCurrentText(layers.heatmap.colormap)
        self.colorbar.setPixmap(to_pixmap(colorbar_rgb(120, 14, layers.heatmap.colormap_id)))
        self.mask.setChecked(layers.mask.visible)
        self.mask_opacity.setValue(round(layers.mask.opacity * 100))
        self.contour.setChecked(layers.mask.outline_only)
        self.lesions.setChecked(layers.lesions.visible)
        self.findings.setChecked(layers.findings.visible)
        heat = self.state.heatmap_result
        self.tile_cam.setVisible(heat is not None and heat.tile_gradcam is not None)
        # what the colours mean: a tile map is each tile's probability (0-1 as it is); a Grad-CAM map is scaled to
        # its own peak, so a class the model gives 1 % can look as hot as the one it decided
        tile_map = heat is not None and heat.tiles and not (layers.heatmap.tile and heat.tile_gradcam is not None)
        if heat is None:
            self.scale_note.setText("")
        elif tile_map:
            self.scale_note.setText(f"Blue 0 to red 1: each tile's P({heat.heatmap_class or heat.label})")
        else:
            self.scale_note.setText("Blue to red: where the evidence lies, relative to this map's own peak (not a "
                                    "probability)")
        several = self.state.analysis is not None and sum(r.heatmap is not None for r in self.state.analysis.results) > 1
        # whose heatmap is drawn, where more than one model made one (choosing a class in a model's "Grad-CAM for"
        # draws that model's)
        self.heatmap.setText("Grad-CAM heatmap" if heat is None or not several else
                             f"Grad-CAM heatmap: {heat.model_id}, {heat.heatmap_class or heat.label}")


class SeriesPanel(QWidget):
    """The series analysis: its progress with Cancel, and the strip plot of every model along the slices.

    ``progressed(done, total)`` may be emitted from any thread (Qt queues it to this panel's thread).
    """

    progressed = Signal(int, int)
    cancelRequested = Signal()

    def __init__(self, parent=None) -> None:
        from PySide6.QtWidgets import QPushButton

        from gui.strip_plot import StripPlot

        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        row = QHBoxLayout()
        self.status = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setFormat("%v / %m slices")
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(self.cancelRequested)
        row.addWidget(self.status, 1)
        row.addWidget(self.progress)
        row.addWidget(self.cancel)
        layout.addLayout(row)
        self.strip = StripPlot()
        layout.addWidget(self.strip, 1)
        self.progressed.connect(self.set_progress)
        self.finished("")

    def started(self, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(0)
        self.status.setText("Analysing the series…")
        for widget in (self.progress, self.cancel):
            widget.show()
        self.cancel.setEnabled(True)

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def finished(self, text: str) -> None:
        self.status.setText(text)
        self.progress.hide()
        self.cancel.hide()
