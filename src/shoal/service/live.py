"""A running job's live figures, made in the job's process and reported to the service.

The counters are fed from each committed batch of records; ``live_summary`` adds what
the engine knows (counts, rates, each host's slots, delay and robots state).
"""

from __future__ import annotations

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

LATEST = 20  # latest records kept per running job for the dashboard
HOSTS_SHOWN = 100  # hosts in a job's summary, most pages first


@dataclass(slots=True, eq=False)
class Tally:
    """A job's counters, fed from each committed batch of records (in the job's process)."""

    hosts: dict[str, list[int]] = field(default_factory=dict)  # host -> [pages, errors]
    status: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    body_bytes: int = 0
    records: int = 0
    latest: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LATEST))

    def ingest(self, rows: list[tuple[str, int | None, str | None, int, dict[str, Any]]]
               ) -> None:
        for host, status, kind, size, record in rows:
            self.count(host, status, kind, size, 1)
            self.latest.append(record)

    def count_rows(self, rows: Sequence[Sequence[Any]]) -> None:
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


def live_summary(tally: Tally, engine: Engine, stats: Statistics) -> dict[str, Any]:
    """The live part of a running job's summary: counts, rates, hosts, latest records."""
    sched = engine.sched
    config = engine.config
    now = time.monotonic()
    # most pages first; nlargest keeps this linear for a crawl over many thousand hosts
    top = heapq.nlargest(HOSTS_SHOWN, tally.hosts.items(), key=lambda kv: kv[1][0])
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
        "bytes": tally.body_bytes,
        "status_classes": dict(tally.status),
        "errors": dict(tally.errors),
        "hosts": hosts,
        "latest": list(tally.latest)[-10:],
    }


def stopped_summary(part: dict[str, Any]) -> dict[str, Any]:
    """A job's last live summary as it stays once its process has ended: nothing in
    flight or queued any more."""
    part = {**part, "counts": {**part["counts"], "in_flight": 0, "queued": 0},
            "rates": {**part["rates"], "pages_per_second": 0.0},
            "hosts": [{**h, "in_flight": 0, "queued": 0} for h in part["hosts"]]}
    return part
