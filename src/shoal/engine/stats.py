"""Frozen snapshots of a run's progress, for the progress display, summary and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Statistics:
    """A snapshot of one run, cheap to take every fraction of a second."""

    elapsed: float  # seconds since this run started
    total: int | None  # distinct URLs known so far; None until the input is fully read
    done: int  # URLs with a record, including those done by earlier runs of this state
    done_this_run: int  # records produced by this process
    in_flight: int  # requests under way now
    queued: int  # URLs held in memory waiting for a host slot
    hosts_active: int  # hosts with a request in flight or waiting in memory
    pages_per_second: float  # recent rate (last few seconds)
    bytes: int  # decoded body bytes fetched by this run
    status_classes: dict[str, int] = field(default_factory=dict)  # "2xx" -> count (this run)
    errors: dict[str, int] = field(default_factory=dict)  # ErrorKind value -> count (this run)
    loop_lag_p50: float = 0.0  # seconds
    loop_lag_p99: float = 0.0
    loop_lag_max: float = 0.0
    stopping: bool = False  # a stop was requested (SIGINT/SIGTERM)
    out_of_scope: int = 0  # crawl: links found and not followed because of --scope etc.

    @property
    def remaining(self) -> int | None:
        return None if self.total is None else max(0, self.total - self.done)

    @property
    def eta_seconds(self) -> float | None:
        """Seconds to finish at the recent rate, or None when unknown."""
        rem = self.remaining
        if rem is None or self.pages_per_second <= 0:
            return None
        return rem / self.pages_per_second
