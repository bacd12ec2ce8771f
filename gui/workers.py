"""Futures from worker threads delivered back on the GUI thread as Qt signals."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal
from shiboken6 import isValid


class FutureBridge(QObject):
    """Calls ``on_done(value)`` or ``on_error(exception)`` on the GUI thread when a future ends."""

    finished = Signal(object, object, object)  # future, on_done, on_error

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.finished.connect(self._deliver)
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="io")
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")  # never ahead of _io
        self.pending = 0
        self.closed = False

    def watch(self, future: Future, on_done: Callable[[Any], None], on_error: Callable[[BaseException], None]) -> Future:
        self.pending += 1
        future.add_done_callback(lambda f: self._ended(f, on_done, on_error))
        return future

    def _ended(self, future: Future, on_done, on_error) -> None:
        """(the worker's thread) Hand the future to the GUI thread, unless its window was closed or deleted
        meanwhile: nobody is there to show it, and a deleted bridge cannot send a signal."""
        if self.closed or not isValid(self):
            return
        try:
            self.finished.emit(future, on_done, on_error)
        except RuntimeError:  # deleted between the check and the call ("Signal source has been deleted")
            pass

    def run(self, fn: Callable, *args, on_done: Callable, on_error: Callable) -> Future | None:
        """Run a non-TensorFlow job (file loading) on the I/O threads; nothing once the window closed."""
        if self.closed:
            return None
        return self.watch(self._io.submit(fn, *args), on_done, on_error)

    def run_background(self, fn: Callable, *args, on_done: Callable, on_error: Callable) -> Future | None:
        """Run a job nobody waits for (thumbnails) on its own thread, so that loads the reader asked for are never
        queued behind it."""
        if self.closed:
            return None
        return self.watch(self._background.submit(fn, *args), on_done, on_error)

    def _deliver(self, future: Future, on_done, on_error) -> None:
        self.pending -= 1
        if future.cancelled() or self.closed:
            return
        error = future.exception()
        if error is not None:
            on_error(error)
        else:
            on_done(future.result())

    def shutdown(self) -> None:
        self.closed = True
        self._io.shutdown(wait=False, cancel_futures=True)
        self._background.shutdown(wait=False, cancel_futures=True)
