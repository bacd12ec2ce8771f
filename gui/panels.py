"""Dock panels: probabilities, warnings, DICOM tags, model information, overlay controls."""

from __future__ import annotations

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

from core.inference.results import Analysis, ModelResult
from core.models.registry import metrics_text
from gui.qimage import to_pixmap


class ProbabilityPanel(QWidget):
    """Class probabilities as bars, the label with its calibrated confidence, Grad-CAM class choice."""

    gradcamClassChosen = Signal(str, str)  # model id, class name

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.placeholder = QLabel("No analysis yet. Analysis ▸ Analyse image (Ctrl+R).")
        self.placeholder.setWordWrap(True)
        self._layout.addWidget(self.placeholder)
        self.bars: dict[tuple[str, str], QProgressBar] = {}
        self._boxes: list[QWidget] = []

    def clear(self, text: str = "No analysis yet. Analysis ▸ Analyse image (Ctrl+R).") -> None:
        for box in self._boxes:
            box.deleteLater()
        self._boxes, self.bars = [], {}
        self.placeholder.setText(text)
        self.placeholder.show()

    def show_analysis(self, analysis: Analysis, titles: dict[str, str]) -> None:
        self.clear()
        self.placeholder.hide()
        for result in analysis.results:
            box = QGroupBox(titles.get(result.model_id, result.model_id).replace("&", "&&"))  # & is a mnemonic
            form = QVBoxLayout(box)
            if result.task == "classification":
                self._classification(result, form)
            else:
                area = sum(l.area_mm2 or 0 for l in result.lesions)
                unit = f"{area:.1f} mm²" if result.lesions and result.lesions[0].area_mm2 is not None else \
                    f"{sum(l.area_px for l in result.lesions)} px"
                form.addWidget(QLabel(f"{len(result.lesions)} lesion(s), total {unit}"))
            footer = QLabel(f"{result.model_id} v{result.version} · {result.device} · {result.seconds:.2f} s")
            footer.setStyleSheet("color: gray; font-size: 10px")
            form.addWidget(footer)
            self._layout.addWidget(box)
            self._boxes.append(box)

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
            chooser.currentTextChanged.connect(lambda c, m=result.model_id: self.gradcamClassChosen.emit(m, c))
            row = QHBoxLayout()
            row.addWidget(QLabel("Grad-CAM for"))
            row.addWidget(chooser, 1)
            form.addLayout(row)


class WarningsPanel(QListWidget):
    """Plain-language flags: wrong modality, low confidence, unknown spacing, load errors."""

    def show_warnings(self, messages: list[str]) -> None:
        """One line per distinct message (several models may raise the same one about an image)."""
        self.clear()
        for message in dict.fromkeys(messages):
            item = QListWidgetItem(f"⚠ {message}")
            item.setForeground(QColor(200, 120, 0))
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
    """Id, version, training data and validation metrics of the models that ran."""

    def show_models(self, summaries: list[dict]) -> None:
        parts = []
        for s in summaries:
            metrics = metrics_text(s)
            parts.append(f"<h4>{s['id']} v{s['version']}</h4><p>{s['title']}<br>{s['modality']} · {s['task']} · "
                         f"{s['architecture']}<br>Classes: {', '.join(s['classes']) or '-'}<br>"
                         f"Validation: {metrics} (n={s['metrics'].get('n', '?')})<br>Training data: {s.get('training', '')}</p>")
        self.setHtml("".join(parts) or "<p>No model has run on this image.</p>"
                     "<p><i>Decision support only — not a medical device.</i></p>")


class OverlayPanel(QWidget):
    """Independent toggles and opacities for the heatmap, the mask and lesion outlines."""

    changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        self.heatmap = QCheckBox("Grad-CAM heatmap")
        self.heatmap.setChecked(True)
        self.tile_cam = QCheckBox("Histology: Grad-CAM of the most suspicious tile")
        self.heatmap_opacity = self._slider(45)
        self.threshold = self._slider(20)
        self.colormap = QComboBox()
        self.colormap.addItems(["jet", "inferno", "viridis", "hot"])
        self.colorbar = QLabel()
        self.mask = QCheckBox("Segmentation mask")
        self.mask.setChecked(True)
        self.mask_opacity = self._slider(40)
        self.contour = QCheckBox("Outline only")
        self.lesions = QCheckBox("Lesion outlines and sizes")
        self.lesions.setChecked(True)
        form.addRow(self.heatmap)
        form.addRow(self.tile_cam)
        form.addRow("Opacity", self.heatmap_opacity)
        form.addRow("Threshold", self.threshold)
        form.addRow("Colour map", self.colormap)
        form.addRow("Scale", self.colorbar)
        form.addRow(self.mask)
        form.addRow("Opacity", self.mask_opacity)
        form.addRow(self.contour)
        form.addRow(self.lesions)
        for widget in (self.heatmap, self.tile_cam, self.mask, self.contour, self.lesions):
            widget.toggled.connect(self.changed)
        self.colormap.currentTextChanged.connect(self.changed)

    def _slider(self, value: int) -> QSlider:
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, 100)
        slider.setValue(value)
        slider.valueChanged.connect(lambda _: self.changed.emit())
        return slider

    def set_colorbar(self, rgb) -> None:
        self.colorbar.setPixmap(to_pixmap(rgb))
