"""A running job as the service sees it: its engine and the counters fed by its records."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shoal.core import urls as urlmod
from shoal.engine.engine import Engine
from shoal.engine.stats import Statistics
from shoal.service.jobdb import JobRow

LATEST = 20  # latest records kept per running job for the dashboard
HOSTS_SHOWN = 100  # hosts in a job's summary, most pages first
STATS_TTL = 0.2  # seconds a job's statistics snapshot is reused for

@dataclass(slots=True, eq=False)
class Live:
    """A job with an engine: its counters, fed from each committed batch of records."""

    row: JobRow
    engine: Engine
    stop: str | None = None  # pause | cancel | delete | shutdown
    done: asyncio.Event = field(default_factory=asyncio.Event)
    hosts: dict[str, list[int]] = field(default_factory=dict)  # host -> [pages, errors]
    status: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    body_bytes: int = 0
    records: int = 0
    latest: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LATEST))
    event: bytes = b""  # the last progress snapshot, JSON
    previous: Statistics | None = None  # the last snapshot passed to the metrics
    loop: asyncio.AbstractEventLoop | None = None  # the engine's own loop, while it runs
    _stats: Statistics | None = None
    _stats_at: float = 0.0

    def request_stop(self, grace: float) -> None:
        """Ask the engine (on its own thread) to stop; safe before and after it runs."""
        loop = self.loop
        if loop is None:
            return  # not started yet: it checks ``stop`` before running
        with contextlib.suppress(RuntimeError):  # its loop has closed: the engine ended
            loop.call_soon_threadsafe(functools.partial(self.engine.request_stop,
                                                        grace=grace))

    def statistics(self) -> Statistics:
        """The engine's statistics, taken at most every STATS_TTL seconds: API requests
        may ask often, and a snapshot costs more the longer the job has run."""
        now = time.monotonic()
        if self._stats is None or now - self._stats_at >= STATS_TTL:
            self._stats, self._stats_at = self.engine.statistics(), now
        return self._stats

    def ingest(self, rows: list[tuple[str, int | None, str | None, int, dict[str, Any]]]
               ) -> None:
        for host, status, kind, size, record in rows:
            self.count(host, status, kind, size, 1)
            self.latest.append(record)

    def count_rows(self, rows: Sequence[tuple[str, int | None, str | None, int | None, int]]
                   ) -> None:
        """Add what earlier runs of this job recorded (host, status, kind, bytes, count)."""
        for host, status, kind, size, n in rows:
            self.count(host, status, kind, int(size or 0), n)

    def count(self, host: str, status: int | None, kind: str | None, size: int, n: int
              ) -> None:
        self.records += n
        self.body_bytes += size
        if status is not None:
            self.status[f"{status // 100}xx"] += n
        if kind is not None:
            self.errors[kind] += n
        counts = self.hosts.setdefault(host, [0, 0])
        counts[0] += n
        if kind is not None:
            counts[1] += n


def parse_records(rows: list[tuple[int, bytes]]
           ) -> list[tuple[str, int | None, str | None, int, dict[str, Any]]]:
    out = []
    for _, line in rows:
        record = orjson.loads(line)
        error = record.get("error")
        try:
            host = urlmod.host_key(record["url"])
        except (ValueError, IndexError):
            host = ""
        out.append((host if error is None or error["kind"] != "invalid_url" else "",
                    record.get("status"), None if error is None else error["kind"],
                    int(record.get("bytes") or 0), record))
    return out


def live_summary(live: Live, stats: Statistics) -> dict[str, Any]:
    """The live part of a running job's summary: counts, rates, hosts, latest records."""
    sched = live.engine.sched
    config = live.engine.config
    now = time.monotonic()
    # most pages first; nlargest keeps this linear for a crawl over many thousand hosts
    top = heapq.nlargest(HOSTS_SHOWN, live.hosts.items(), key=lambda kv: kv[1][0])
    hosts = []
    for key, (pages, errors) in top:
        if not key:
            continue
        h = sched.hosts.get(key)
        delay = config.delay
        robots = "off" if not config.robots else "unknown"
        in_flight = queued = 0
        if h is not None:
            delay = max(config.delay, h.crawl_delay) + h.penalty
            if h.paused_until > now:
                delay = max(delay, h.paused_until - now)
            in_flight, queued = h.inflight, h.waiting
            if config.robots:
                robots = ("loading" if h.robots_loading else
                          "loaded" if h.robots is not None else "pending")
        hosts.append({"host": key, "pages": pages, "errors": errors,
                      "in_flight": in_flight, "queued": queued,
                      "delay": round(delay, 3), "robots": robots})
    return {
        "counts": {"total": stats.total, "done": stats.done, "in_flight": stats.in_flight,
                   "queued": stats.queued},
        "rates": {"pages_per_second": round(stats.pages_per_second, 2),
                  "elapsed": round(stats.elapsed, 2)},
        "bytes": live.body_bytes,
        "status_classes": dict(live.status),
        "errors": dict(live.errors),
        "hosts": hosts,
        "latest": list(live.latest)[-10:],
    }
