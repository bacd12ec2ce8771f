"""Lazy pixel access to a series: files are opened when a slice is asked for, a few around the current one kept.

``SeriesStack(series).display(i)`` gives slice *i* (in the series' position order) as the 8-bit picture the
viewer and the models use. Opened files are kept in a small LRU (the neighbourhood of the current slice);
``set_current(i)`` can load the neighbours on a background thread so scrolling does not wait on disk.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core.imaging import ImageRecord, load_image
from core.series.index import Series

NEIGHBOURHOOD = 3  # slices on each side of the current one kept open


class SeriesStack:
    def __init__(self, series: Series, neighbourhood: int = NEIGHBOURHOOD, modality: str | None = None,
                 prefetch: bool = False) -> None:
        self.series = series
        self.neighbourhood = neighbourhood
        self.modality = modality  # the user's override, passed to load_image
        self.capacity = 2 * neighbourhood + 1
        self.current = 0
        self.loads = 0  # files opened so far (for tests and benchmarks)
        self._records: OrderedDict[Path, ImageRecord] = OrderedDict()
        # Files being read (by the prefetch thread or a reader): another reader of the same file waits for that read
        # instead of reading it twice. The lock guards the dicts only, never a read, so a slice already open is
        # returned at once while the prefetch thread reads another.
        self._loading: dict[Path, Future] = {}
        self._lock = threading.RLock()
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="series-prefetch") if prefetch else None
        self._generation = 0
        self._opened_as = 0  # bumped when the modality changes: a read begun before is not kept

    def __len__(self) -> int:
        return len(self.series.slices)

    def record(self, index: int) -> tuple[ImageRecord, int]:
        """The opened file holding slice ``index`` and the frame of it; raises ImageLoadError for a bad file."""
        return self._record(index)

    def _record(self, index: int, render: bool = False) -> tuple[ImageRecord, int]:
        """``record``; ``render``: a file read here has its default picture drawn before it is handed to readers
        waiting for it (the prefetch thread: the GUI thread stepping to it then draws nothing)."""
        if not 0 <= index < len(self):
            raise IndexError(f"slice {index} out of range 0..{len(self) - 1}")
        ref = self.series.slices[index]
        while True:
            with self._lock:
                record = self._records.get(ref.path)
                if record is not None:
                    self._records.move_to_end(ref.path)
                    return record, ref.frame
                pending = self._loading.get(ref.path)
                reads = pending is None
                if reads:
                    pending = self._loading[ref.path] = Future()
                    modality, opened_as = self.modality, self._opened_as
            if not reads:
                record, opened_as = pending.result()  # that read's ImageLoadError is raised here too
                with self._lock:
                    if opened_as == self._opened_as:
                        return record, ref.frame
                continue  # read as the modality before the reader changed it: read again
            try:
                record = load_image(ref.path, modality=modality)
            except BaseException as exc:
                with self._lock:
                    self._loading.pop(ref.path, None)
                pending.set_exception(exc)
                raise
            if render and self._renders_ahead(record):
                try:
                    record.display(ref.frame)  # kept by the record
                except Exception:  # noqa: BLE001 - drawn (and its problem said) when it is shown
                    pass
            with self._lock:
                self.loads += 1
                self._loading.pop(ref.path, None)
                current = opened_as == self._opened_as
                if current:
                    self._records[ref.path] = record
                    self._records.move_to_end(ref.path)
                    while len(self._records) > self.capacity:
                        self._records.popitem(last=False)
            pending.set_result((record, opened_as))
            if current:
                return record, ref.frame

    def display(self, index: int) -> np.ndarray:
        record, frame = self.record(index)
        return record.display(frame)

    def values(self, index: int) -> np.ndarray:
        record, frame = self.record(index)
        return record.values(frame)

    def set_current(self, index: int) -> None:
        """Move to ``index``; with ``prefetch`` its neighbours (nearest first) load in the background."""
        self.current = max(0, min(index, len(self) - 1))
        if self._prefetcher is None:
            return
        with self._lock:
            self._generation += 1
            generation = self._generation
        lo, hi = max(0, self.current - self.neighbourhood), min(len(self), self.current + self.neighbourhood + 1)
        order = sorted(range(lo, hi), key=lambda i: abs(i - self.current))
        self._prefetcher.submit(self._prefetch, order, generation)

    def _prefetch(self, order: list[int], generation: int) -> None:
        for i in order:
            if generation != self._generation:
                return  # the reader moved on
            try:
                self._record(i, render=True)  # with its default picture: the step to it only shows it
            except Exception:  # noqa: BLE001 - a bad slice is reported when it is shown, not here
                pass

    @staticmethod
    def _renders_ahead(record: ImageRecord) -> bool:
        """Whether the prefetch thread may draw the record's default picture ahead of the reader: greyscale files of
        one frame only. The record keeps one rendered frame and a small frame cache, neither locked: the frames of a
        multi-frame file drawn here and on the GUI thread at once would push each other out (or race in that
        cache); a single frame drawn twice at once is only drawn twice."""
        return record.frames == 1 and not record.is_color

    def set_modality(self, modality: str | None) -> None:
        """Load slices as ``modality`` from now on (the user's override); opened files are read again."""
        with self._lock:
            self.modality = modality
            self._generation += 1
            self._opened_as += 1
            self._records.clear()

    def cached(self) -> list[Path]:
        with self._lock:
            return list(self._records)

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._records.clear()


def open_stack(series: Series) -> tuple[SeriesStack, int, str]:
    """A prefetching stack of ``series``, the first slice that can be read (a damaged first file must not hide the
    rest) and why those before it cannot; DiagnosticError when none can."""
    from core.errors import DiagnosticError

    stack = SeriesStack(series, prefetch=True)
    problem = ""
    for at in range(len(series)):
        try:
            stack.record(at)
            return stack, at, problem
        except DiagnosticError as exc:
            problem = problem or str(exc)
    stack.close()
    raise DiagnosticError(f"No slice of {series.description or 'the series'} can be read: {problem}")
