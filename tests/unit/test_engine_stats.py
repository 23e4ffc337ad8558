"""The engine's progress figures: the recent rate holds whatever the reporting interval."""

from __future__ import annotations

from pathlib import Path

import shoal
from shoal.engine.engine import Engine
from shoal.store.sqlite import SqliteStore


def engine(tmp_path: Path) -> Engine:
    return Engine(shoal.Config(), SqliteStore(tmp_path / "s.db"), None)


def test_rate_over_a_window_whatever_the_interval(tmp_path: Path) -> None:
    e = engine(tmp_path)
    e._rate.append((100.0, 0))
    # asked every 5 s (the quiet progress line) at a steady 1,000 records/s
    for t in range(1, 7):
        e._done = t * 5_000
        rate = e._recent_rate(100.0 + t * 5)
        assert 990 <= rate <= 1010, (t, rate)


def test_rate_follows_a_slowdown_within_the_window(tmp_path: Path) -> None:
    e = engine(tmp_path)
    e._rate.append((0.0, 0))
    now = 0.0
    for _ in range(40):  # 20 s at 1,000/s, asked twice a second
        now += 0.5
        e._done += 500
        e._recent_rate(now)
    for _ in range(40):  # then 20 s at 100/s
        now += 0.5
        e._done += 50
        rate = e._recent_rate(now)
    assert 90 <= rate <= 120


def test_no_rate_before_any_time_has_passed(tmp_path: Path) -> None:
    e = engine(tmp_path)
    e._rate.append((10.0, 0))
    assert e._recent_rate(10.1) == 0.0
