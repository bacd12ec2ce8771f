"""bench/stats.py: interleaved timing order and the bootstrap interval of per-round ratios."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.stats import interleave, interleaved_order, ratio_interval, table


def test_order_is_abab():
    assert interleaved_order(["A", "B"], 3) == ["A", "B", "A", "B", "A", "B"]
    assert interleaved_order(["A", "B", "C"], 2) == ["A", "B", "C", "A", "B", "C"]


def test_interleave_runs_sides_alternately_after_warmup():
    calls: list[str] = []
    ticks = itertools.count()
    times = interleave({"A": lambda: calls.append("A"), "B": lambda: calls.append("B")}, rounds=4, warmup=1,
                       clock=lambda: float(next(ticks)))
    assert calls == ["A", "B"] * 5  # one warm-up round, then four timed rounds, never AA or BB
    assert list(times) == ["A", "B"]
    assert [len(v) for v in times.values()] == [4, 4]
    assert all(v == 1000.0 for v in times["A"] + times["B"])  # one fake clock tick per call


def _loaded_rounds(rng, rounds: int, true_ratio: float):
    """B takes 100 ms and A ``true_ratio`` times as long, both under a shared load that drifts round by
    round (up to 3x), each call with its own noise besides."""
    load = np.exp(rng.normal(0.0, 0.4, rounds))
    b = 100.0 * load * np.exp(rng.normal(0.0, 0.05, rounds))
    a = true_ratio * 100.0 * load * np.exp(rng.normal(0.0, 0.05, rounds))
    return a, b


def test_interval_covers_known_ratio():
    a, b = _loaded_rounds(np.random.default_rng(1), 30, 1.7)
    r = ratio_interval(a, b)
    assert r.low <= 1.7 <= r.high
    assert r.low <= r.median <= r.high
    assert r.high - r.low < 0.15  # the shared load cancels in the ratio
    assert r.rounds == 30
    # Each side's own times spread with the load (about 40 %), their per-round ratio only with the calls'
    # own noise (about 7 %): timed apart, the two sides' medians would carry the load's spread.
    assert np.std(a) / np.mean(a) > 3 * np.std(a / b) / np.mean(a / b)


def test_interval_coverage_near_nominal():
    rng = np.random.default_rng(2)
    hits = 0
    trials = 200
    for k in range(trials):
        a, b = _loaded_rounds(rng, 30, 0.6)
        r = ratio_interval(a, b, resamples=1000, seed=k)
        hits += r.low <= 0.6 <= r.high
    assert hits / trials >= 0.88  # a 95 % percentile-bootstrap interval of a median, 30 rounds


def test_ratio_interval_rejects_mismatched_rounds():
    with pytest.raises(ValueError):
        ratio_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        ratio_interval([], [])


def test_table_marks_baseline_and_prints_ratio():
    lines = table({"ours": [2.0, 2.0, 2.0], "peer": [1.0, 1.0, 1.0]}, baseline="peer")
    assert "(baseline)" in lines[2]
    assert "2.00x [2.00, 2.00]" in lines[1]
