"""The progress reporter and the end-of-run summary."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from typing import Any

import pytest

from shoal.engine.stats import Statistics
from shoal.progress import ProgressReporter, print_summary, progress_line, summary_text

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class TtyStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def make_stats(**over: Any) -> Statistics:
    fields: dict[str, Any] = {
        "elapsed": 10.0,
        "total": 1000,
        "done": 120,
        "done_this_run": 100,
        "in_flight": 7,
        "queued": 20,
        "hosts_active": 3,
        "pages_per_second": 50.0,
        "bytes": 2_500_000,
        "status_classes": {"2xx": 90, "4xx": 6},
        "errors": {"dns": 1, "timeout": 3},
        "loop_lag_p50": 0.0004,
        "loop_lag_p99": 0.0031,
        "loop_lag_max": 0.012,
    }
    fields.update(over)
    return Statistics(**fields)


def counting_stats(**over: Any) -> Callable[[], Statistics]:
    """A get_stats whose done count grows by 10 a call, like a run moving on."""
    calls = 0

    def get() -> Statistics:
        nonlocal calls
        calls += 1
        return make_stats(done=120 + 10 * calls, **over)

    return get


async def run_for(reporter: ProgressReporter, seconds: float) -> None:
    """Run the reporter for ``seconds``, then cancel it as the engine does."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(reporter.run())
        await asyncio.sleep(seconds)
        task.cancel()
    assert task.cancelled()


async def test_plain_lines_at_interval() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(get_stats=counting_stats(), stream=out, interval=0.05)
    assert not reporter.live  # a StringIO is not a terminal
    await run_for(reporter, 0.3)

    lines = out.getvalue().splitlines()
    assert 3 <= len(lines) <= 7
    for line in lines:
        assert line.startswith("shoal fetch: ")
        assert re.search(r"\b\d+/1000 done \(\d+%\)", line)
        assert "50 pages/s" in line
        assert "7 in flight" in line
        assert "3 hosts" in line
        assert "errors: timeout=3 dns=1" in line  # largest count first
        assert re.search(r"eta \d+s", line)
    # The numbers move on between lines.
    assert lines[0] != lines[-1]


async def test_plain_quiet_on_a_terminal_still_writes_lines() -> None:
    out = TtyStringIO()
    reporter = ProgressReporter(
        get_stats=counting_stats(), stream=out, quiet=True, interval=0.05, label="crawl"
    )
    assert not reporter.live
    await run_for(reporter, 0.12)
    assert out.getvalue().startswith("shoal crawl: ")
    assert "\x1b" not in out.getvalue()


def test_live_by_default_on_a_terminal() -> None:
    assert ProgressReporter(get_stats=make_stats, stream=TtyStringIO()).live
    assert not ProgressReporter(get_stats=make_stats, stream=io.StringIO()).live
    assert ProgressReporter(get_stats=make_stats, stream=io.StringIO(), live=True).live


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval must be > 0, got 0"):
        ProgressReporter(get_stats=make_stats, interval=0)


def test_plain_line_unknown_total_and_no_errors() -> None:
    line = progress_line(make_stats(total=None, errors={}, pages_per_second=0.0))
    assert line == "shoal fetch: done 120, 0.0 pages/s, 7 in flight, 3 hosts"


def test_plain_line_stopping() -> None:
    assert progress_line(make_stats(stopping=True)).endswith(", stopping")


@pytest.mark.parametrize("total", [1000, None])
async def test_live_mode_stops_cleanly_on_cancel(total: int | None) -> None:
    out = io.StringIO()
    reporter = ProgressReporter(
        get_stats=counting_stats(total=total), stream=out, live=True, label="fetch"
    )
    await run_for(reporter, 0.3)

    # Off a terminal rich prints only the final frame, at stop.
    text = out.getvalue()
    assert "shoal fetch" in text
    assert "pages/s" in text
    assert "in flight" in text
    assert "timeout 3 · dns 1" in text
    assert "2xx 90 · 4xx 6" in text
    assert "loop lag p99 3.1 ms" in text
    if total is None:
        assert "done 1" in text
    else:
        assert "/1000 done" in text


async def test_live_mode_on_a_terminal_draws_and_restores_cursor() -> None:
    out = TtyStringIO()
    reporter = ProgressReporter(get_stats=counting_stats(stopping=True), stream=out)
    assert reporter.live
    await run_for(reporter, 0.3)
    plain = ANSI.sub("", out.getvalue())
    assert "shoal fetch" in plain
    assert "stopping" in plain
    assert "\x1b[?25h" in out.getvalue()  # cursor shown again


async def test_get_stats_errors_propagate() -> None:
    def broken() -> Statistics:
        raise RuntimeError("boom")

    reporter = ProgressReporter(get_stats=broken, stream=io.StringIO(), interval=0.01)
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(reporter.run(), 1)


def test_summary_text_counts_and_paths() -> None:
    text = summary_text(make_stats(), output="out.jsonl", state="run.db")
    assert "100 records this run" in text
    assert "120/1000 URLs done (12%)" in text
    assert "2xx 90 · 4xx 6" in text
    assert "timeout 3 · dns 1" in text
    assert "10 pages/s over 10.0s" in text
    assert "2.5 MB" in text
    assert "p50 0.4 ms, p99 3.1 ms, max 12.0 ms" in text
    assert "output:     out.jsonl" in text
    assert "state:      run.db" in text
    assert "interrupted" not in text
    assert not text.endswith("\n")


def test_summary_text_temporary_state_unknown_total_interrupted() -> None:
    stats = make_stats(total=None, errors={}, status_classes={}, elapsed=0.0, bytes=12)
    text = summary_text(stats, output="-", state=None, interrupted=True)
    assert "120 URLs done" in text
    assert "errors:     none" in text
    assert "status:     none" in text
    assert "0.0 pages/s" in text
    assert "12 B" in text
    assert "state:      (temporary)" in text
    assert "re-run the same command to resume" in text


def test_print_summary_plain_off_a_terminal() -> None:
    out = io.StringIO()
    stats = make_stats()
    print_summary(stats, output="out.jsonl", state=None, stream=out)
    assert out.getvalue() == summary_text(stats, output="out.jsonl", state=None) + "\n"


def test_print_summary_styled_on_a_terminal() -> None:
    out = TtyStringIO()
    print_summary(make_stats(), output="[odd].jsonl", state="s.db", interrupted=True, stream=out)
    plain = ANSI.sub("", out.getvalue())
    assert "100 records this run" in plain
    assert "[odd].jsonl" in plain  # not eaten as markup
    assert "re-run the same command to resume" in plain
