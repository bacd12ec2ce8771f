"""A second series beside the main one: its own canvas and window/level, scrolled with the main one where the
two are parallel, and each slice drawn as a reference line on the other where they cross (core.series.linking).

The comparison shows pictures only: analyses stay in the main view. It has its own ``ViewerState``; the
``SeriesLink`` between the two states is the only place that knows of both.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QToolButton, QVBoxLayout, QWidget

from core.series.index import Series, SliceRef
from core.series.linking import linked, nearest_parallel, nearest_slice, parallel, reference_line
from core.series.stack import SeriesStack
from core.viewer_state import ViewerState
from gui.viewer import ImageViewer


class CompareView(QWidget):
    """A titled canvas for the series compared, with a button that closes it."""

    closeRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.state = ViewerState()
        self.viewer = ImageViewer(self)
        self.viewer.bind(self.state)
        self.title = QLabel("")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # a long name never widens
        self.title.setWordWrap(True)  # the link's note ('not linked: another frame of reference') is read whole
        close = QToolButton()
        close.setText("×")
        close.setToolTip("Close the comparison")
        close.clicked.connect(self.closeRequested)
        top = QHBoxLayout()
        top.setContentsMargins(4, 2, 4, 0)
        top.addWidget(self.title, 1)
        top.addWidget(close)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(top)
        layout.addWidget(self.viewer, 1)
        self.note = ""  # how the two views are linked, set by the SeriesLink
        self.state.events.slice.connect(lambda _: self.update_title())
        self.state.events.series.connect(lambda _: self.update_title())

    def show_series(self, series: Series, stack: SeriesStack, start: int = 0) -> None:
        self.state.open_series(series, stack=stack, start=start)

    def clear(self) -> None:
        self.state.open(None)
        self.viewer.set_reference_lines([])

    def update_title(self) -> None:
        series = self.state.series
        if series is None:
            self.title.setText("")
            return
        name = series.description or "series"
        text = f"Compare: {name} · {self.state.slice_text()}" + (f" · {self.note}" if self.note else "")
        self.title.setText(text)
        self.title.setToolTip(text)


class SeriesLink:
    """Keeps two views of one patient together: a slice chosen in either moves the other to the same position
    (parallel series of one frame of reference), and each view draws the other's slice where the planes cross."""

    def __init__(self, main: ViewerState, main_view: ImageViewer, compare: CompareView) -> None:
        self.main, self.main_view, self.compare = main, main_view, compare
        self._moving = False  # a slice set by the link itself does not move the view it came from again
        main.events.slice.connect(lambda _: self.follow(self.main, self.compare.state))
        compare.state.events.slice.connect(lambda _: self.follow(self.compare.state, self.main))
        for event in (main.events.series, main.events.record, compare.state.events.series):
            event.connect(lambda _: self.refresh())

    def is_linked(self) -> bool:
        a, b = self.main.series, self.compare.state.series
        return a is not None and b is not None and linked(a, b)

    def follow(self, source: ViewerState, target: ViewerState) -> None:
        """``target`` to the slice at ``source``'s position, where the series are parallel and linked; where it has
        none there (beyond its ends, or in a gap), to its nearest one, the title saying how far that lies."""
        if not self._moving and self.is_linked() and source.current_slice is not None:
            self._move(target, _slice_at(target.series, source.current_slice))
        self.compare.note = self._note()
        self.compare.update_title()
        self.draw()

    def _move(self, target: ViewerState, index: int | None) -> None:
        """``target`` to slice ``index`` (None: left where it is), without that step moving the other view back."""
        if index is None or index == target.slice_index:
            return
        self._moving = True
        try:
            target.set_slice(index)
        finally:
            self._moving = False

    def refresh(self) -> None:
        """After either view shows another series: bring the comparison to the main view's position (a crossing
        series to its slice through the middle of the main picture)."""
        here, other = self.main.current_slice, self.compare.state
        if self.is_linked() and here is not None and other.series is not None:
            self._move(other, nearest_slice(other.series, here, parallel_only=False))
        self.follow(self.main, self.compare.state)

    def _note(self) -> str:
        """What the link does, as the title says it: only what it will do; where one of the parallel series has no
        slice at the other's position, which one, and how far its nearest slice (shown) lies."""
        a, b = self.main.series, self.compare.state.series
        if b is None:
            return ""
        if a is None:
            return "not linked (the main view shows a file, not a series)"
        if not linked(a, b):
            return "not linked (another frame of reference: positions cannot be matched)"
        here, there = self.main.current_slice, self.compare.state.current_slice
        if any(s is None or s.position is None or s.orientation is None for s in (here, there)):
            return "not linked (slice positions or orientations missing)"
        if not parallel(here, there):
            return "reference lines"
        gap = _gap_mm(b, here)
        if gap is not None:
            return f"the main view's slice is outside this series: {gap:.1f} mm from its nearest slice"
        # the reader scrolled this view beyond the main series, which stays at its nearest slice
        gap = _gap_mm(a, there) if nearest_slice(b, here) != self.compare.state.slice_index else None
        if gap is not None:
            return f"this slice is outside the main series: {gap:.1f} mm from its nearest slice"
        return "scrolled with the main view"

    def draw(self) -> None:
        here, there = self.main.current_slice, self.compare.state.current_slice
        if not self.is_linked() or here is None or there is None:
            self.main_view.set_reference_lines([])
            self.compare.viewer.set_reference_lines([])
            return
        self.main_view.set_reference_lines(_on_picture(reference_line(here, there), self.main))
        self.compare.viewer.set_reference_lines(_on_picture(reference_line(there, here), self.compare.state))


def _slice_at(series: Series, ref: SliceRef) -> int | None:
    """The slice of ``series`` at ``ref``'s position, else its nearest parallel one (``ref`` lies beyond its ends or in
    a gap: the far slice left shown would look linked); None where none is parallel."""
    index = nearest_slice(series, ref)
    if index is not None:
        return index
    nearest = nearest_parallel(series, ref)
    return nearest[0] if nearest is not None else None


def _gap_mm(series: Series, ref: SliceRef) -> float | None:
    """How far ``ref`` lies from the nearest parallel slice of ``series`` where that series has no slice at its
    position; None where it has one (or none is parallel)."""
    if nearest_slice(series, ref) is not None:
        return None
    nearest = nearest_parallel(series, ref)
    return nearest[1] if nearest is not None else None


def _on_picture(line, state: ViewerState) -> list[tuple[float, float, float, float]]:
    """A line in the file's pixels as drawn on the picture shown: ``downsample`` times smaller where the file was
    read smaller to fit in memory (the program's one file-to-picture mapping, as its outputs use)."""
    if line is None:
        return []
    factor = state.record.downsample if state.record is not None else 1
    return [tuple(v / factor for v in line)]
