"""The image canvas: zoom, pan, window/level drag, slice scrolling, overlay layers, cursor readout, scale bar,
orientation markers, and the reader's rulers and ellipse regions.

``bind(state)`` makes it draw a ``core.viewer_state.ViewerState``: the slice in its window and the
overlay layers, redrawn whenever the state changes; a right-button drag adjusts the state's window and
the wheel steps the state's slices (Ctrl+wheel, or the wheel on a single picture, zooms).

The scene is in picture pixels (pixel (column i, row j) covers [i, i + 1) x [j, j + 1)), so every layer, ruler and
region is placed, and every mouse point read, in the picture's own pixels. Non-square pixels are drawn to scale by the
view's transform alone: its horizontal zoom (m11, the zoom shown) is per column, its vertical one ``pixel_aspect``
times that, kept by every fit, zoom and actual size.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPainterPath, QPen, QPixmap, QTransform
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsLineItem,
    QGraphicsPathItem,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
)

from core.inference.overlays import heatmap_rgba, mask_rgba
from core.inference.results import FINDING_RGB, Finding, in_file_pixels
from core.measurements import RULER_RGB, ruler_within
from core.viewer_state import ViewerState
from gui.qimage import to_pixmap

MASK_COLOR = (0, 220, 120)
REFERENCE_COLOR = (90, 200, 255)
# Scale bar lengths in micrometres: from 1 um (slide microscopy at a fraction of a micrometre per pixel, where even
# 1 mm is thousands of screen pixels) to 500 mm (a whole chest film).
SCALE_BAR_UM = tuple(m * 10**e for e in range(6) for m in (1, 2, 5))


def scale_bar(pixels_per_mm: float, target_px: float) -> tuple[float, str]:
    """The scale bar's length in mm nearest ``target_px`` screen pixels, and its label ('10 µm', '5 mm')."""
    um = min(SCALE_BAR_UM, key=lambda n: abs(n / 1000 * pixels_per_mm - target_px))
    return (um / 1000, f"{um} µm") if um < 1000 else (um // 1000, f"{um // 1000} mm")


def label_box(text: str, color: QColor, x: float, y: float, offset: tuple[float, float], bold: bool = True
              ) -> QGraphicsRectItem:
    """A label in ``color`` on a dark box, its corner at image point (x, y) and its text ``offset`` screen pixels
    from it, the same size at any zoom: coloured text alone is lost on bright tissue. The text is the box's child."""
    box = QGraphicsRectItem()
    box.setFlag(QGraphicsRectItem.GraphicsItemFlag.ItemIgnoresTransformations)
    box.setPos(x, y)
    box.setPen(QPen(Qt.PenStyle.NoPen))
    box.setBrush(QBrush(QColor(0, 0, 0, 160)))
    font = QFont()
    font.setPointSize(9)
    font.setBold(bold)
    label = QGraphicsSimpleTextItem(text, box)
    label.setBrush(QBrush(color))
    label.setFont(font)
    label.setPos(*offset)
    box.setRect(label.mapRectToParent(label.boundingRect()).adjusted(-3, -1, 3, 1))
    return box


class ImageViewer(QGraphicsView):
    """Layers: image, heatmap, mask, lesion outlines, findings; each can be replaced or hidden independently."""

    cursorMoved = Signal(int, int)  # image x, y (or -1, -1 outside)
    windowDragged = Signal(float, float)  # d(center), d(width) in display units (0..255 scale)
    zoomChanged = Signal(float)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QBrush(QColor(12, 12, 14)))
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setMouseTracking(True)
        self.setAcceptDrops(False)  # the main window takes drops
        self.image_item = QGraphicsPixmapItem()
        self.heatmap_item = QGraphicsPixmapItem()
        self.mask_item = QGraphicsPixmapItem()
        for z, item in enumerate((self.image_item, self.heatmap_item, self.mask_item)):
            item.setZValue(z)
            item.setTransformationMode(Qt.TransformationMode.SmoothTransformation if z else Qt.TransformationMode.FastTransformation)
            self.scene().addItem(item)
        self.lesion_items: list = []
        self.finding_items: list = []  # per finding its circle, then its label's box (the label inside)
        self.ruler_items: list = []  # per ruler its line, then its label's box (the label inside)
        self.region_items: list = []  # per region its ellipse, then its label's box
        self.reference_items: list = []  # where another view's slice cuts this one (gui.compare_view)
        self.measuring: str | None = None  # 'distance' or 'region': a left drag draws one instead of panning
        self._ruler_start: QPointF | None = None  # where the ruler or region being drawn started
        self._ruler_preview: list = []  # the items of the ruler or region being drawn
        self._wl_origin: QPointF | None = None
        self._wheel_rest = 0  # angle delta not yet turned into a slice step (touchpads send small deltas)
        self._cursor: QPoint | None = None  # where the mouse last was over the picture (viewport pixels)
        self._has_image = False
        self._fitted = False  # the whole picture fitted to the view (fit()), kept so on a resize until zoomed
        self.state: ViewerState | None = None

    def bind(self, state: ViewerState) -> None:
        """Show ``state`` from now on and send window/level drags to it."""
        self.state = state
        state.events.record.connect(self._record_changed)
        state.events.slice.connect(lambda _: self._show_slice())
        state.events.window.connect(lambda _: self._show_slice())
        state.events.inverted.connect(lambda _: self._show_slice())
        for event in (state.events.analysis, state.events.heatmap, state.events.overlays):
            event.connect(lambda _: self.draw_overlays())
        state.events.rulers.connect(lambda _: self.draw_rulers())
        state.events.regions.connect(lambda _: self.draw_regions())
        state.events.scale.connect(lambda _: self._scale_changed())
        self.windowDragged.connect(state.adjust)

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        return self.state.pixel_spacing_mm if self.state is not None else None

    def _record_changed(self, record) -> None:
        if record is None:
            return
        self._end_preview()  # a ruler being drawn belongs to the picture it was started on
        self.set_image(self.state.display(), reset_view=True)
        self.draw_rulers()
        self.draw_regions()
        self._emit_cursor()  # the readout is of this image now: not the last one's value

    def _scale_changed(self) -> None:
        """The reader set (or cleared) a microscopy image's scale: rulers, regions and the scale bar read with it, and
        the pixels are drawn square."""
        self._keep_aspect()
        self.draw_rulers()
        self.draw_regions()
        self.viewport().update()

    def _show_slice(self) -> None:
        if self.state.record is not None:
            self._end_preview()
            self.set_image(self.state.display())
            self.draw_rulers()
            self.draw_regions()
            self._emit_cursor()  # the readout is of this slice now (a CT's HU): not the last one's value

    def draw_overlays(self) -> None:
        """The heatmap, mask, lesion and findings layers as the bound state says: its results and layer settings."""
        state = self.state
        layers = state.overlays
        heat = state.heatmap_to_draw()
        self.set_heatmap(None if heat is None else heatmap_rgba(heat, layers.heatmap.opacity, layers.heatmap.threshold,
                                                                 layers.heatmap.colormap_id))
        seg = state.segmentation_result
        if seg is not None and layers.mask.visible:
            self.set_mask(mask_rgba(seg.mask, MASK_COLOR, layers.mask.opacity, layers.mask.outline_only))
        else:
            self.set_mask(None)
        self.set_lesions(seg.lesions if seg else [], QColor(*MASK_COLOR), layers.lesions.visible)
        marked = state.findings_result
        self.set_findings(marked.findings if marked else [], layers.findings.visible)

    # ----- layers
    def set_image(self, display: np.ndarray, reset_view: bool = False) -> None:
        self.image_item.setPixmap(to_pixmap(display))
        rect = QRectF(0, 0, display.shape[1], display.shape[0])
        resized = rect != self.scene().sceneRect()  # a slice of another size: fitted whole, not shown in part
        self.scene().setSceneRect(rect)
        if reset_view or resized or not self._has_image:
            self.fit()
        else:
            self._keep_aspect()  # a slice of other pixels in the same series
        self._has_image = True

    def set_heatmap(self, rgba: np.ndarray | None) -> None:
        self.heatmap_item.setPixmap(to_pixmap(rgba) if rgba is not None else QPixmap())

    def set_mask(self, rgba: np.ndarray | None) -> None:
        self.mask_item.setPixmap(to_pixmap(rgba) if rgba is not None else QPixmap())

    def set_lesions(self, lesions: list, color: QColor, visible: bool = True) -> None:
        for item in self.lesion_items:
            self.scene().removeItem(item)
        self.lesion_items = []
        for lesion in lesions:
            path = QPainterPath()
            # The outline's points are boundary pixels (column, row); pixel (c, r) covers [c, c+1] x [r, r+1] on the
            # scene, so the line runs through their centres, half a pixel inside the lesion's edges where the longest
            # diameter's ends lie (as the structured report exports it).
            points = np.asarray(lesion.contour, np.float64) + 0.5
            path.moveTo(float(points[0][0]), float(points[0][1]))
            for x, y in points[1:]:
                path.lineTo(float(x), float(y))
            path.closeSubpath()
            outline = QGraphicsPathItem(path)
            pen = QPen(color, 2)
            pen.setCosmetic(True)
            outline.setPen(pen)
            outline.setZValue(5)
            x, y, w, h = lesion.bbox
            scale = self.state.downsample if self.state is not None else 1
            label = label_box(in_file_pixels(lesion, scale).overlay_text(), color, x, y + h + 2, offset=(3, 1),
                              bold=False)
            label.setZValue(6)
            items = [outline, label]
            if lesion.diameter_ends is not None:  # the longest diameter, as a reader would draw it
                (x0, y0), (x1, y1) = lesion.diameter_ends
                diameter = QGraphicsLineItem(x0, y0, x1, y1)
                dashed = QPen(color, 1, Qt.PenStyle.DashLine)
                dashed.setCosmetic(True)
                diameter.setPen(dashed)
                diameter.setZValue(5)
                items.append(diameter)
            for item in items:
                item.setVisible(visible)
                self.scene().addItem(item)
                self.lesion_items.append(item)

    def set_reference_lines(self, lines: list[tuple[float, float, float, float]]) -> None:
        """Dashed lines (x0, y0, x1, y1 in picture coordinates) where another view's slice crosses this picture."""
        for item in self.reference_items:
            self.scene().removeItem(item)
        self.reference_items = []
        for x0, y0, x1, y1 in lines:
            line = QGraphicsLineItem(x0, y0, x1, y1)
            pen = QPen(QColor(*REFERENCE_COLOR), 1.5, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            line.setPen(pen)
            line.setZValue(8)
            self.scene().addItem(line)
            self.reference_items.append(line)

    def set_findings(self, findings: list[Finding], visible: bool = True) -> None:
        """Each finding as a circle of its own size with its label (score, kind) beside its upper right, on a
        dark box: magenta text alone is lost on bright breast tissue."""
        for item in self.finding_items:
            self.scene().removeItem(item)
        self.finding_items = []
        color = QColor(*FINDING_RGB)
        pen = QPen(color, 2)
        pen.setCosmetic(True)  # as thick at any zoom
        for finding in findings:
            x, y, r = finding.x, finding.y, finding.r
            circle = QGraphicsEllipseItem(x - r, y - r, 2 * r, 2 * r)
            circle.setPen(pen)
            circle.setZValue(7)
            box = label_box(finding.label, color, x + r, y - r, offset=(7, 1))  # 4 screen pixels from the circle
            box.setZValue(8)
            for item in (circle, box):
                item.setVisible(visible)
                self.scene().addItem(item)
                self.finding_items.append(item)

    def _redrawn(self, old: list, draw) -> list:
        """``old`` items taken off the scene and those ``draw(pixel spacing)`` puts on it (groups of items), flat."""
        for item in old:
            self.scene().removeItem(item)
        return [] if self.state is None else [item for group in draw(self.pixel_spacing_mm) for item in group]

    def draw_rulers(self) -> None:
        """The rulers of the slice shown: each a line with its length on a dark box at its end."""
        self.ruler_items = self._redrawn(self.ruler_items, lambda spacing: [
            self._ruler_items(r.x0, r.y0, r.x1, r.y1, r.text(spacing)) for r in self.state.rulers])

    def _ruler_items(self, x0: float, y0: float, x1: float, y1: float, text: str) -> list:
        color = QColor(*RULER_RGB)
        line = QGraphicsLineItem(x0, y0, x1, y1)
        pen = QPen(color, 2)
        pen.setCosmetic(True)
        line.setPen(pen)
        line.setZValue(9)
        box = label_box(text, color, x1, y1, offset=(8, 4))  # beside the ruler's end
        box.setZValue(10)
        for item in (line, box):
            self.scene().addItem(item)
        return [line, box]

    def draw_regions(self) -> None:
        """The ellipse regions of the slice shown, each with its area and values on a dark box below it."""
        self.region_items = self._redrawn(self.region_items, lambda spacing: [
            self._region_items(r.x0, r.y0, r.x1, r.y1, r.text(spacing)) for r in self.state.regions])

    def _region_items(self, x0: float, y0: float, x1: float, y1: float, text: str) -> list:
        color = QColor(*RULER_RGB)
        ellipse = QGraphicsEllipseItem(QRectF(QPointF(x0, y0), QPointF(x1, y1)).normalized())
        pen = QPen(color, 2)
        pen.setCosmetic(True)
        ellipse.setPen(pen)
        ellipse.setZValue(9)
        box = label_box(text, color, min(x0, x1), max(y0, y1), offset=(0, 4))  # below the ellipse
        box.setZValue(10)
        for item in (ellipse, box):
            self.scene().addItem(item)
        return [ellipse, box]

    def set_measuring(self, mode: str | bool | None) -> None:
        """Measure mode: a left drag draws a ruler ('distance', or True) or an ellipse region ('region'); None or
        False: it pans."""
        on = mode is not None and mode is not False
        self._end_preview()  # a ruler half drawn is not finished as a region
        self.measuring = ("distance" if mode is True else str(mode)) if on else None
        if on:
            self.setDragMode(QGraphicsView.DragMode.NoDrag)
            self.viewport().setCursor(Qt.CursorShape.CrossCursor)
        else:
            self._end_preview()
            self.viewport().unsetCursor()
            self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)  # sets the open hand

    def _end_preview(self) -> None:
        for item in self._ruler_preview:
            self.scene().removeItem(item)
        self._ruler_preview, self._ruler_start = [], None

    # ----- view
    @property
    def pixel_aspect(self) -> float:
        """A pixel's drawn height over its width (``ViewerState.pixel_aspect``; 1 unbound)."""
        return self.state.pixel_aspect if self.state is not None else 1.0

    def _set_zoom(self, zoom: float) -> None:
        """``zoom`` screen pixels per column, ``pixel_aspect`` times that per row (the view's whole transform)."""
        self.setTransform(QTransform.fromScale(zoom, zoom * self.pixel_aspect))

    def _keep_aspect(self) -> None:
        """Rows drawn at the aspect of the picture now shown, at the same zoom and around the same point."""
        zoom = self.transform().m11()
        if not math.isclose(self.transform().m22(), zoom * self.pixel_aspect):
            middle = self.mapToScene(self.viewport().rect().center())
            self._set_zoom(zoom)
            self.centerOn(middle)

    def _fit(self, rect: QRectF) -> None:
        """Zoom so that ``rect`` (picture pixels) fills the viewport, centred, its pixels at their aspect (which
        ``fitInView`` would make square)."""
        view = QRectF(self.viewport().rect()).adjusted(2, 2, -2, -2)  # fitInView's margin
        if rect.isEmpty() or view.isEmpty():
            return
        self._set_zoom(min(view.width() / rect.width(), view.height() / (rect.height() * self.pixel_aspect)))
        self.centerOn(rect.center())
        self._zoomed()

    def _zoomed(self) -> None:
        """After the view's zoom or place changed: its zoom said, the readout of the pixel now under the mouse; no
        longer fitted (``fit`` says so again after)."""
        self._fitted = False
        self.zoomChanged.emit(self.transform().m11())
        self._emit_cursor()

    def fit(self) -> None:
        self._fit(self.scene().sceneRect())
        self._fitted = True

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """A picture fitted to the view stays fitted as the window grows or shrinks (not once zoomed by hand)."""
        super().resizeEvent(event)
        if self._fitted and self._has_image:
            self.fit()

    def show_region(self, x: float, y: float, r: float) -> None:
        """Zoom to a finding: the circle of radius ``r`` around (x, y) (image pixels) and as much again around it."""
        self._fit(QRectF(x - 2 * r, y - 2 * r, 4 * r, 4 * r))

    def actual_size(self) -> None:
        """One screen pixel per column (rows at their aspect)."""
        self._set_zoom(1.0)
        self._zoomed()

    MIN_ZOOM, MAX_ZOOM = 0.02, 64.0  # what + and - stop at; fit() and show_region() may go beyond them

    def zoom(self, factor: float) -> None:
        """Zoom by ``factor`` within MIN_ZOOM-MAX_ZOOM; a zoom already beyond them (a 1-pixel picture fitted to
        the window) is never taken back the other way by a step: + never zooms out, - never in."""
        current = self.transform().m11()
        target = current * factor
        target = max(min(self.MIN_ZOOM, current), min(target, max(self.MAX_ZOOM, current)))
        if target != current:
            self.scale(target / current, target / current)
        self._zoomed()

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt API
        """The wheel moves through the slices (down: next, one slice per notch); Ctrl+wheel zooms, and so
        does the wheel on a picture with one slice: by 1.25 per notch (120), in proportion for a touchpad's or a
        fine wheel's smaller steps."""
        delta = event.angleDelta().y()
        zooming = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        if zooming or self.state is None or self.state.slice_count < 2:
            if delta:
                self.zoom(1.25 ** (delta / 120.0))
            event.accept()
            return
        self._wheel_rest += delta
        steps = int(self._wheel_rest / 120)
        if steps:
            self._wheel_rest -= steps * 120
            self.state.step(-steps)
        event.accept()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if self._ruler_start is not None or self._wl_origin is not None:
            event.accept()  # one drag at a time: a ruler or the window/level
            return
        if event.button() == Qt.MouseButton.RightButton:
            self._wl_origin = event.position()
            self.setCursor(Qt.CursorShape.SizeAllCursor)
            return
        if event.button() == Qt.MouseButton.LeftButton and self.measuring and self._has_image:
            self._ruler_start = self.mapToScene(event.position().toPoint())
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self._wl_origin is not None:
            delta = event.position() - self._wl_origin
            self._wl_origin = event.position()
            # Radiology convention: horizontal drag = width, vertical drag = level (centre).
            self.windowDragged.emit(float(delta.y()), float(delta.x()))
            return
        point = self.mapToScene(event.position().toPoint())
        if self._ruler_start is not None:
            self._preview_ruler(point)
        self._cursor = event.position().toPoint()
        self._emit_cursor()
        super().mouseMoveEvent(event)

    def _emit_cursor(self) -> None:
        """``cursorMoved`` for the picture point under the mouse's last place (-1, -1 off the picture): sent as it
        moves and again when the slice or the image under it changes, so the readout never keeps an old value."""
        if self._cursor is None:
            return
        point = self.mapToScene(self._cursor)
        inside = self.scene().sceneRect().contains(point) and self._has_image
        self.cursorMoved.emit(int(point.x()) if inside else -1, int(point.y()) if inside else -1)

    def leaveEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Off the picture: the readout is cleared, not left at the last pixel passed over."""
        if self._cursor is not None:
            self._cursor = None
            self.cursorMoved.emit(-1, -1)
        super().leaveEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.RightButton and self._wl_origin is not None:
            self._wl_origin = None
            self.unsetCursor()
            return
        if event.button() == Qt.MouseButton.LeftButton and self._ruler_start is not None:
            start, end = self._ruler_start, self.mapToScene(event.position().toPoint())
            self._end_preview()
            add = self.state.add_region if self.measuring == "region" else self.state.add_ruler
            add(start.x(), start.y(), end.x(), end.y())
            return
        super().mouseReleaseEvent(event)

    def _preview_ruler(self, point: QPointF) -> None:
        """The ruler being drawn, with its length so far (a region: its ellipse, area and values so far)."""
        for item in self._ruler_preview:
            self.scene().removeItem(item)
        rect = self.scene().sceneRect()
        start = self._ruler_start
        if self.measuring == "region":
            region = self.state.measure_region(start.x(), start.y(), point.x(), point.y())
            self._ruler_preview = [] if region is None else self._region_items(
                region.x0, region.y0, region.x1, region.y1, region.text(self.pixel_spacing_mm))
            return
        ruler = ruler_within(start.x(), start.y(), point.x(), point.y(), int(rect.width()), int(rect.height()),
                             self.state.downsample)
        self._ruler_preview = [] if ruler is None else self._ruler_items(
            ruler.x0, ruler.y0, ruler.x1, ruler.y1, ruler.text(self.pixel_spacing_mm))

    def contextMenuEvent(self, event) -> None:  # noqa: N802 - right button is window/level
        event.accept()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802
        """Orientation markers at the edges and the scale bar in the lower left, when known (right both ways: the
        rows are drawn at their aspect)."""
        if not self._has_image:
            return
        self._draw_markers(painter)
        if not self.pixel_spacing_mm:
            return
        pixels_per_mm = self.transform().m11() / self.pixel_spacing_mm[1]
        length_mm, label = scale_bar(pixels_per_mm, self.viewport().width() / 5)
        if self.state.spacing_source == "reader":  # not the file's: the scale the reader set for this image
            label += " (scale set by reader)"
        length_px = length_mm * pixels_per_mm
        painter.save()
        painter.resetTransform()
        x0, y0 = 16, self.viewport().height() - 20
        # on a dark box, as the labels of the layers: white alone was lost on bright tissue
        text = painter.fontMetrics().boundingRect(label).translated(int(x0), int(y0 - 6))
        painter.fillRect(QRectF(text).united(QRectF(x0, y0 - 3, length_px, 6)).adjusted(-4, -2, 4, 2),
                         QColor(0, 0, 0, 160))
        pen = QPen(QColor(240, 240, 240), 3)
        painter.setPen(pen)
        painter.drawLine(QPointF(x0, y0), QPointF(x0 + length_px, y0))
        painter.drawText(QPointF(x0, y0 - 6), label)
        painter.restore()

    def markers(self) -> dict[str, str] | None:
        return self.state.orientation_markers() if self.state is not None else None

    def _draw_markers(self, painter: QPainter) -> None:
        """R/L/A/P/H/F at the middle of each viewport edge: the patient direction that edge shows."""
        markers = self.markers()
        if not markers:
            return
        painter.save()
        painter.resetTransform()
        font = QFont()
        font.setPointSize(13)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QColor(255, 220, 90))
        w, h, pad = self.viewport().width(), self.viewport().height(), 8
        box = 60
        align = Qt.AlignmentFlag
        for edge, rect, flags in (
            ("left", QRectF(pad, h / 2 - box / 2, box, box), align.AlignLeft | align.AlignVCenter),
            ("right", QRectF(w - pad - box, h / 2 - box / 2, box, box), align.AlignRight | align.AlignVCenter),
            ("top", QRectF(w / 2 - box / 2, pad, box, box), align.AlignHCenter | align.AlignTop),
            ("bottom", QRectF(w / 2 - box / 2, h - pad - box, box, box), align.AlignHCenter | align.AlignBottom),
        ):
            painter.drawText(rect, flags, markers[edge])
        painter.restore()

    @staticmethod
    def nice_zoom_text(zoom: float) -> str:
        return f"{zoom * 100:.0f} %" if zoom >= 0.1 else f"{zoom * 100:.1f} %"
