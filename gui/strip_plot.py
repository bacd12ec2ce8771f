"""Strip plot of a series analysis: each model's value along the slices, the slice shown, click to jump.

Draws ``core.series.analysis.strip_curves`` with QPainter: one line per model (0 at the bottom, 1 at the
top), the verdict threshold dashed, the verdict's slice runs shaded, and the slice shown as a white line.
``bind(state)`` follows the state's series analysis and slice; a click or drag sets the state's slice.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

from core.series.analysis import StripCurve, strip_curves
from core.viewer_state import ViewerState

COLORS = [QColor(255, 170, 40), QColor(80, 190, 255), QColor(120, 230, 120), QColor(240, 110, 200)]
UNUSUAL_RING = QColor(255, 60, 60)  # around a slice the model's input check flagged, whatever the model's colour
MARGIN = 6


class StripPlot(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.curves: list[StripCurve] = []
        self.count = 0
        self.current = 0
        self.state: ViewerState | None = None
        self.classes: dict[str, list[str]] = {}
        self._drawn: QPixmap | None = None  # all but the slice marker: drawn again for a new analysis or size
        self.setMinimumHeight(70)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setMouseTracking(False)
        self.setToolTip("Each model's value per slice; a red ring: a slice unusual for that model, whose answer is "
                        "less reliable (click to go to a slice)")

    def bind(self, state: ViewerState, classes: dict[str, list[str]] | None = None) -> None:
        self.state, self.classes = state, dict(classes or {})
        state.events.series_analysis.connect(self._follow_analysis)
        state.events.series.connect(lambda _: self._follow_analysis(state.series_analysis))
        state.events.slice.connect(self._follow_slice)

    def _follow_analysis(self, analysis) -> None:
        self.curves = strip_curves(analysis, self.classes) if analysis is not None else []
        self.setToolTip("\n".join(["Each model's value per slice (click to go to a slice)"]
                                  + [f"{k + 1}. {c.model}: {c.title}" for k, c in enumerate(self.curves)]))
        self.count = self.state.slice_count if self.state is not None else 0
        self.current = self.state.slice_index if self.state is not None else 0
        self._drawn = None
        self.update()

    def _follow_slice(self, index: int) -> None:
        self.current = index
        self.update()  # the marker only: the curves are kept drawn (every point of every model, per scroll step)


    # ----- geometry
    def _plot_rect(self) -> QRectF:
        return QRectF(MARGIN, MARGIN, max(1, self.width() - 2 * MARGIN), max(1, self.height() - 2 * MARGIN - 14))

    def x_of(self, index: float) -> float:
        rect = self._plot_rect()
        return rect.left() + (index + 0.5) * rect.width() / max(self.count, 1)

    def slice_at(self, x: float) -> int:
        rect = self._plot_rect()
        index = int((x - rect.left()) / rect.width() * max(self.count, 1))
        return max(0, min(max(self.count, 1) - 1, index))

    # ----- mouse
    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt API
        if event.button() == Qt.MouseButton.LeftButton and self.state is not None and self.count:
            self.state.set_slice(self.slice_at(event.position().x()))

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if event.buttons() & Qt.MouseButton.LeftButton and self.state is not None and self.count:
            self.state.set_slice(self.slice_at(event.position().x()))

    # ----- drawing
    def legend(self, metrics, room: float) -> list[str]:
        """Each curve's label, 'model: what it plots'; where they do not fit side by side, the model ids alone, each
        elided in its middle (the end tells 'brain-mri-tumor-4class' from '-yesno'): the third had read 'brain'."""
        labels = [f"{c.model}: {c.title}" for c in self.curves]
        if sum(metrics.horizontalAdvance(label) + 16 for label in labels) <= room:
            return labels
        each = max(20, int(room / max(1, len(labels))) - 16)
        return [metrics.elidedText(c.model, Qt.TextElideMode.ElideMiddle, each) for c in self.curves]

    def paintEvent(self, _event) -> None:  # noqa: N802
        ratio = self.devicePixelRatioF()  # drawn at the screen's own resolution, as the widget would be
        if self._drawn is None or self._drawn.deviceIndependentSize().toSize() != self.size():
            self._drawn = QPixmap(self.size() * ratio)
            self._drawn.setDevicePixelRatio(ratio)
            self._draw_curves(QPainter(self._drawn))
        painter = QPainter(self)
        painter.drawPixmap(0, 0, self._drawn)
        if self.curves and self.count:
            rect = self._plot_rect()
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.setPen(QPen(QColor(255, 255, 255), 1.5))
            x = self.x_of(self.current)
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
        painter.end()

    def _draw_curves(self, painter: QPainter) -> None:
        """The frame, each model's runs, threshold, values and label (all but the slice marker); ends ``painter``."""
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.fillRect(self.rect(), QColor(20, 20, 24))
        rect = self._plot_rect()
        painter.setPen(QPen(QColor(70, 70, 80), 1))
        painter.drawRect(rect)
        if not self.curves or not self.count:
            painter.setPen(QColor(150, 150, 150))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "No series analysis yet (Analysis ▸ Analyse series)")
            painter.end()
            return
        step = rect.width() / self.count
        y_of = lambda v: rect.bottom() - v * rect.height()  # noqa: E731
        for k, curve in enumerate(self.curves):
            color = COLORS[k % len(COLORS)]
            shade = QColor(color)
            shade.setAlpha(40)
            for first, last in curve.runs:
                painter.fillRect(QRectF(rect.left() + (first - 1) * step, rect.top(), (last - first + 1) * step,
                                        rect.height()), shade)
            if curve.threshold is not None:
                pen = QPen(color, 1, Qt.PenStyle.DashLine)
                painter.setPen(pen)
                painter.drawLine(QPointF(rect.left(), y_of(curve.threshold)), QPointF(rect.right(), y_of(curve.threshold)))
            path, drawing = QPainterPath(), False
            for i, value in enumerate(curve.values):
                if value is None:
                    drawing = False
                    continue
                point = QPointF(self.x_of(i), y_of(max(0.0, min(1.0, value))))
                path.lineTo(point) if drawing else path.moveTo(point)
                drawing = True
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(color)
                painter.drawEllipse(point, 2.0, 2.0)
                if i < len(curve.unusual) and curve.unusual[i]:
                    painter.setBrush(Qt.BrushStyle.NoBrush)
                    painter.setPen(QPen(UNUSUAL_RING, 1.5))
                    painter.drawEllipse(point, 4.5, 4.5)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(color, 1.6))
            painter.drawPath(path)
        x_text = rect.left()
        for k, label in enumerate(self.legend(painter.fontMetrics(), rect.width())):
            painter.setPen(COLORS[k % len(COLORS)])
            painter.drawText(QPointF(x_text, self.height() - 4), label)
            x_text += painter.fontMetrics().horizontalAdvance(label) + 16
        painter.end()
