"""What a person sees while a run goes on and when it ends: live display, progress lines, summary.

On a terminal the reporter draws a rich ``Live`` panel; off a terminal (or with ``--quiet``)
it writes one short line every few seconds. Both go to stderr by default, never to stdout,
which may carry the records.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from shoal.engine.stats import Statistics

__all__ = ["ProgressReporter", "print_summary", "summary_text"]

_LIVE_REFRESH_PER_SECOND = 4.0
_BAR_WIDTH = 40
_STATUS_STYLES = {"1xx": "blue", "2xx": "green", "3xx": "cyan", "4xx": "yellow", "5xx": "red"}


class ProgressReporter:
    """Shows a run's progress on ``stream`` until cancelled.

    ``live=None`` picks the live display when ``stream`` is a terminal and ``quiet`` is off;
    otherwise a plain line is written every ``interval`` seconds.
    """

    def __init__(
        self,
        *,
        get_stats: Callable[[], Statistics],
        stream: TextIO | None = None,
        live: bool | None = None,
        quiet: bool = False,
        interval: float = 5.0,
        label: str = "fetch",
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self._get_stats = get_stats
        # Resolved at call time, not import time, so a replaced sys.stderr is honoured.
        self._stream: TextIO = sys.stderr if stream is None else stream
        self._live = (_isatty(self._stream) and not quiet) if live is None else live
        self._interval = interval
        self._label = label

    @property
    def live(self) -> bool:
        """True when this reporter draws the live display rather than plain lines."""
        return self._live

    def __repr__(self) -> str:
        mode = "live" if self._live else f"plain every {self._interval:g}s"
        return f"<ProgressReporter {self._label!r} {mode}>"

    async def run(self) -> None:
        """Report until cancelled; the live display is stopped before the cancellation re-raises."""
        if self._live:
            await self._run_live()
        else:
            await self._run_plain()

    async def _run_plain(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self._interval
        while True:
            # Sleep to a fixed schedule so the lines don't drift with the time spent writing.
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += self._interval
            self._stream.write(progress_line(self._get_stats(), label=self._label) + "\n")
            self._stream.flush()

    async def _run_live(self) -> None:
        console = Console(file=self._stream, highlight=False)
        live = Live(
            self._render(self._get_stats()),
            console=console,
            auto_refresh=False,  # refreshed from this task: no thread calls get_stats
            transient=False,  # leave the last frame above the summary
            redirect_stdout=False,  # stdout may carry records; never intercept it
        )
        live.start(refresh=True)
        try:
            while True:
                await asyncio.sleep(1.0 / _LIVE_REFRESH_PER_SECOND)
                live.update(self._render(self._get_stats()), refresh=True)
        except asyncio.CancelledError:
            # The last frame should show the final numbers, not those of up to 1/4 s ago.
            live.update(self._render(self._get_stats()))
            raise
        finally:
            live.stop()

    def _render(self, stats: Statistics) -> RenderableType:
        head = Table.grid(padding=(0, 1))
        head.add_row(
            Text(f"shoal {self._label}", style="bold"),
            ProgressBar(total=stats.total, completed=stats.done, width=_BAR_WIDTH),
            Text(_done_text(stats)),
            Text(f"eta {_fmt_eta(stats.eta_seconds)}", style="dim"),
        )
        figures = Text.assemble(
            (_fmt_rate(stats.pages_per_second), "bold"), " pages/s   ",
            (str(stats.in_flight), "bold"), " in flight   ",
            (str(stats.queued), "bold"), " queued   ",
            (str(stats.hosts_active), "bold"), " hosts   ",
            f"loop lag p99 {_fmt_ms(stats.loop_lag_p99)}",
        )
        status = Text("status  ", style="dim")
        status.append_text(_styled_counts(stats.status_classes, _STATUS_STYLES, "none yet"))
        errors = Text("errors  ", style="dim")
        errors.append_text(_styled_counts(_by_count(stats.errors), {}, "none", default="red"))
        parts: list[RenderableType] = [head, figures, status, errors]
        if stats.stopping:
            parts.append(Text("stopping: finishing requests in flight…", style="bold yellow"))
        return Group(*parts)


def progress_line(stats: Statistics, *, label: str = "fetch") -> str:
    """One short plain progress line, e.g. ``shoal fetch: 12/100 done (12%), 85 pages/s, ...``."""
    parts = [
        f"shoal {label}: {_done_text(stats)}",
        f"{_fmt_rate(stats.pages_per_second)} pages/s",
        f"{stats.in_flight} in flight",
        f"{stats.hosts_active} hosts",
    ]
    if stats.errors:
        parts.append("errors: " + " ".join(f"{k}={v}" for k, v in _by_count(stats.errors).items()))
    eta = stats.eta_seconds
    if eta is not None:
        parts.append(f"eta {_fmt_eta(eta)}")
    if stats.stopping:
        parts.append("stopping")
    return ", ".join(parts)


def _summary_lines(
    stats: Statistics, *, output: str, state: str | None, interrupted: bool
) -> list[tuple[str, str]]:
    """The summary as (text, rich style) pairs, shared by the plain and styled forms."""
    if stats.total is None:
        progress = f"{stats.done} URLs done"
    else:
        progress = f"{stats.done}/{stats.total} URLs done ({_percent(stats.done, stats.total)}%)"
    rate = stats.done_this_run / stats.elapsed if stats.elapsed > 0 else 0.0
    status = _fmt_counts(stats.status_classes) or "none"
    errors = _fmt_counts(_by_count(stats.errors)) or "none"
    lines = [
        (f"shoal: {stats.done_this_run} records this run; {progress}", "bold"),
        (f"status:     {status}", ""),
        (f"errors:     {errors}", "red" if stats.errors else ""),
        (
            f"throughput: {_fmt_rate(rate)} pages/s over {_fmt_elapsed(stats.elapsed)}, "
            f"{_fmt_bytes(stats.bytes)}",
            "",
        ),
        (
            f"loop lag:   p50 {_fmt_ms(stats.loop_lag_p50)}, p99 {_fmt_ms(stats.loop_lag_p99)}, "
            f"max {_fmt_ms(stats.loop_lag_max)}",
            "",
        ),
        (f"output:     {output}", ""),
        (f"state:      {state if state is not None else '(temporary)'}", ""),
    ]
    if stats.out_of_scope:
        lines.insert(3, (f"links:      {stats.out_of_scope} out of scope, not followed", ""))
    if interrupted:
        lines.append((
            "interrupted: the run stopped early; re-run the same command to resume.",
            "bold yellow",
        ))
    return lines


def summary_text(
    stats: Statistics, *, output: str, state: str | None, interrupted: bool = False
) -> str:
    """The end-of-run summary as plain text, a few lines without a trailing newline."""
    lines = _summary_lines(stats, output=output, state=state, interrupted=interrupted)
    return "\n".join(text for text, _ in lines)


def print_summary(
    stats: Statistics,
    *,
    output: str,
    state: str | None,
    interrupted: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Write the end-of-run summary to ``stream`` (stderr): rich on a terminal, else plain."""
    out: TextIO = sys.stderr if stream is None else stream
    lines = _summary_lines(stats, output=output, state=state, interrupted=interrupted)
    if not _isatty(out):
        out.write("\n".join(text for text, _ in lines) + "\n")
        out.flush()
        return
    console = Console(file=out, highlight=False)
    for text, style in lines:
        # Text objects, not markup: paths may contain brackets.
        console.print(Text(text, style=style), soft_wrap=True)


# --- formatting -------------------------------------------------------------------------------


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if isatty is not None else False


def _percent(done: int, total: int) -> int:
    # Floor, so an unfinished run never shows 100%.
    return 100 if total <= 0 else min(100, done * 100 // total)


def _done_text(stats: Statistics) -> str:
    if stats.total is None:
        return f"done {stats.done}"
    return f"{stats.done}/{stats.total} done ({_percent(stats.done, stats.total)}%)"


def _by_count(counts: Mapping[str, int]) -> dict[str, int]:
    """Largest count first, then by name, so the worst errors lead."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _fmt_counts(counts: Mapping[str, int]) -> str:
    return " · ".join(f"{k} {v}" for k, v in counts.items())


def _styled_counts(
    counts: Mapping[str, int], styles: Mapping[str, str], empty: str, *, default: str = ""
) -> Text:
    if not counts:
        return Text(empty, style="dim")
    text = Text()
    for i, (key, value) in enumerate(counts.items()):
        if i:
            text.append(" · ", style="dim")
        text.append(f"{key} {value}", style=styles.get(key, default))
    return text


def _fmt_rate(rate: float) -> str:
    return f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fmt_elapsed(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else _fmt_eta(seconds)


def _fmt_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    size = n / 1000
    for unit in ("kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
