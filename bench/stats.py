"""Timing statistics that survive a loaded machine: interleaved rounds and per-round ratios.

On a machine shared with other work (a training job, a test run) the time one call takes drifts by
tens of per cent from minute to minute. Timing side A for a minute and then side B for a minute
compares two different machines. Here every round runs each side once, in the same order
(A B A B ...), so the two calls of one round see nearly the same load; the ratio of the two within
a round cancels most of it. The summary is the median of the per-round ratios with a percentile
bootstrap 95 % interval over rounds.

Pure Python + numpy; no TensorFlow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


def interleaved_order(names: Sequence[str], rounds: int) -> list[str]:
    """The order the sides run in: every side once per round, always in the given order (A B A B ...)."""
    return [name for _ in range(rounds) for name in names]


def interleave(sides: dict[str, Callable[[], object]], rounds: int, warmup: int = 2,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Milliseconds per call of each side, round by round: ``out[name][i]`` is side ``name`` in round ``i``.

    ``warmup`` untimed rounds run first in the same order (first-call tracing, caches, lazy loading).
    """
    names = list(sides)
    for name in interleaved_order(names, warmup):
        sides[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for name in interleaved_order(names, rounds):
        start = clock()
        sides[name]()
        out[name].append((clock() - start) * 1000.0)
    return out


@dataclass(frozen=True)
class Ratio:
    """Median of per-round ratios ``numerator / denominator`` and its bootstrap interval."""

    median: float
    low: float
    high: float
    rounds: int

    def __str__(self) -> str:
        return f"{self.median:.2f}x [{self.low:.2f}, {self.high:.2f}]"


def ratio_interval(numerator: Sequence[float], denominator: Sequence[float], level: float = 0.95,
                   resamples: int = 4000, seed: int = 0) -> Ratio:
    """Median of ``numerator[i] / denominator[i]`` over rounds ``i``, with a percentile bootstrap interval
    (rounds resampled with replacement, the median taken of each resample)."""
    a = np.asarray(numerator, dtype=float)
    b = np.asarray(denominator, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("numerator and denominator need the same non-zero number of rounds")
    ratios = a / b
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, ratios.size, size=(resamples, ratios.size))
    medians = np.median(ratios[picks], axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return Ratio(float(np.median(ratios)), float(low), float(high), int(ratios.size))


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def table(times: dict[str, list[float]], baseline: str, label_width: int = 0) -> list[str]:
    """Printable lines: per side the median ms and the per-round ratio to ``baseline`` with its interval."""
    width = max([label_width, len("side")] + [len(n) for n in times])
    lines = [f"{'side':<{width}} {'median ms':>10}   ratio to '{baseline}' (median of per-round ratios, 95 % CI)"]
    for name, values in times.items():
        ratio = "(baseline)" if name == baseline else str(ratio_interval(values, times[baseline]))
        lines.append(f"{name:<{width}} {median(values):10.1f}   {ratio}")
    return lines
