"""Lazy pixel access to a series: files are opened when a slice is asked for, a few around the current one kept.

``SeriesStack(series).display(i)`` gives slice *i* (in the series' position order) as the 8-bit picture the
viewer and the models use. Opened files are kept in a small LRU (the neighbourhood of the current slice);
``set_current(i)`` can load the neighbours on a background thread so scrolling does not wait on disk.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
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
        self._lock = threading.RLock()
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="series-prefetch") if prefetch else None
        self._generation = 0

    def __len__(self) -> int:
        return len(self.series.slices)

    def record(self, index: int) -> tuple[ImageRecord, int]:
        """The opened file holding slice ``index`` and the frame of it; raises ImageLoadError for a bad file."""
        if not 0 <= index < len(self):
            raise IndexError(f"slice {index} out of range 0..{len(self) - 1}")
        ref = self.series.slices[index]
        with self._lock:
            record = self._records.get(ref.path)
            if record is None:
                record = load_image(ref.path, modality=self.modality)
                self.loads += 1
                self._records[ref.path] = record
            self._records.move_to_end(ref.path)
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)
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
                self.record(i)
            except Exception:  # noqa: BLE001 - a bad slice is reported when it is shown, not here
                pass

    def set_modality(self, modality: str | None) -> None:
        """Load slices as ``modality`` from now on (the user's override); opened files are read again."""
        with self._lock:
            self.modality = modality
            self._generation += 1
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
