"""The loop-lag histogram: percentiles within 2 %, constant memory and cost."""

from __future__ import annotations

import random

import pytest

from shoal.engine.lag import LagMonitor


def exact(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_match_the_sorted_samples(seed: int) -> None:
    rng = random.Random(seed)
    samples = [rng.lognormvariate(-6, 1.5) for _ in range(20_000)] + [0.0] * 100
    lag = LagMonitor()
    for s in samples:
        lag.add(s)
    p50, p99, pmax = lag.percentiles()
    assert pmax == max(samples)
    assert p50 == pytest.approx(exact(samples, 0.5), rel=0.021)
    assert p99 == pytest.approx(exact(samples, 0.99), rel=0.021)


def test_empty_zero_and_huge() -> None:
    lag = LagMonitor()
    assert lag.percentiles() == (0.0, 0.0, 0.0)
    lag.add(-1.0)  # a timer early by clock jitter counts as no lag
    assert lag.percentiles() == (0.0, 0.0, 0.0)
    lag.add(5_000.0)  # beyond the last bucket: kept in it, max exact
    assert lag.percentiles()[2] == 5_000.0


def test_memory_does_not_grow_with_samples() -> None:
    lag = LagMonitor()
    size = len(lag._counts)
    for i in range(100_000):
        lag.add((i % 1000) / 1e4)
    assert len(lag._counts) == size < 1_000
