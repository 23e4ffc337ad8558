"""Prometheus metrics for the service, in a registry of its own (never the global one).

Jobs report cumulative ``Statistics`` snapshots; counters advance by the difference
between two snapshots of a job, so they only go up, and a job that restarts (its counts
start again from zero) adds its new work instead of going backwards. Label values come
from closed sets (status classes, ``ErrorKind``, HTTP methods) so that no input can grow
the number of series; ``route`` must be the route template (``/jobs/{id}``), not the path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from shoal.engine.stats import Statistics
from shoal.errors import ErrorKind
from shoal.service.exposition import Exposition

OTHER = "other"
STATUS_CLASSES = frozenset({"1xx", "2xx", "3xx", "4xx", "5xx"})
ERROR_KINDS = frozenset(k.value for k in ErrorKind)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)


def _bounded(counts: Mapping[str, int], allowed: frozenset[str]) -> dict[str, int]:
    """Counts keyed by allowed label values; anything else is summed under ``other``."""
    out: dict[str, int] = {}
    for key, n in counts.items():
        label = key if key in allowed else OTHER
        out[label] = out.get(label, 0) + n
    return out


def _restarted(stats: Statistics, previous: Statistics) -> bool:
    return stats.elapsed < previous.elapsed or stats.done_this_run < previous.done_this_run


class Metrics:
    """The service's metrics; ``render()`` gives the ``GET /metrics`` response."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.pages = Counter("shoal_pages_total", "Responses received, by HTTP status class.",
                             ["job", "status_class"], registry=r)
        self.bytes = Counter("shoal_bytes_total", "Decoded body bytes fetched.", ["job"],
                             registry=r)
        self.errors = Counter("shoal_errors_total", "URLs that failed, by error kind.",
                              ["job", "kind"], registry=r)
        self.in_flight = Gauge("shoal_in_flight", "Requests under way now.", ["job"],
                               registry=r)
        self.queued = Gauge("shoal_queued", "URLs in memory waiting for a host slot.", ["job"],
                            registry=r)
        self.share = Gauge("shoal_job_concurrency_share",
                           "Requests in flight the job may have now: its fair share of the "
                           "service's fetch budget (--concurrency); 0 once it stops.",
                           ["job"], registry=r)
        self.rate = Gauge("shoal_pages_per_second", "Recent rate of records (last seconds).",
                          ["job"], registry=r)
        self.lag = Histogram("shoal_event_loop_lag_seconds",
                             "How late a periodic timer woke up on the service's event loop.",
                             buckets=LAG_BUCKETS, registry=r)
        self.requests = Histogram("shoal_api_request_seconds",
                                  "API request latency, by method, route template and status.",
                                  ["method", "route", "status"], buckets=REQUEST_BUCKETS,
                                  registry=r)
        self._exposition = Exposition()

    def observe_job(self, job_id: str, stats: Statistics, previous: Statistics | None) -> None:
        """Advance a job's counters by ``stats - previous`` and set its gauges.

        ``previous`` is the snapshot last passed for this job (None for the first). When
        ``stats`` looks like a restart (less time or fewer records than ``previous``), its
        counts are all new work; otherwise a count that went down adds nothing.
        """
        before = None if previous is None or _restarted(stats, previous) else previous
        statuses = _bounded(stats.status_classes, STATUS_CLASSES)
        old_statuses = _bounded(before.status_classes, STATUS_CLASSES) if before else {}
        for cls, n in statuses.items():
            self._advance(self.pages.labels(job_id, cls), n - old_statuses.get(cls, 0))
        kinds = _bounded(stats.errors, ERROR_KINDS)
        old_kinds = _bounded(before.errors, ERROR_KINDS) if before else {}
        for kind, n in kinds.items():
            self._advance(self.errors.labels(job_id, kind), n - old_kinds.get(kind, 0))
        self._advance(self.bytes.labels(job_id), stats.bytes - (before.bytes if before else 0))
        self.in_flight.labels(job_id).set(stats.in_flight)
        self.queued.labels(job_id).set(stats.queued)
        self.rate.labels(job_id).set(stats.pages_per_second)

    def observe_share(self, job_id: str, share: int) -> None:
        self.share.labels(job_id).set(share)

    @staticmethod
    def _advance(counter: Counter, delta: int) -> None:
        if delta > 0:
            counter.inc(delta)

    def forget_job(self, job_id: str) -> None:
        """Drop a job's series (e.g. once the job is deleted), keeping cardinality bounded."""
        for metric in (self.bytes, self.in_flight, self.queued, self.rate, self.share):
            with contextlib.suppress(KeyError):
                metric.remove(job_id)
        for counter, labels in ((self.pages, STATUS_CLASSES), (self.errors, ERROR_KINDS)):
            for label in (*labels, OTHER):
                with contextlib.suppress(KeyError):  # older clients raise for absent series
                    counter.remove(job_id, label)

    def observe_lag(self, seconds: float) -> None:
        self.lag.observe(max(0.0, seconds))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One API request; ``route`` is the route template, never the raw path."""
        method = method.upper() if method.upper() in METHODS else OTHER
        self.requests.labels(method, route, str(status)).observe(max(0.0, seconds))

    def render(self) -> tuple[bytes, str]:
        """The exposition body (as ``generate_latest`` writes it) and its content type."""
        return self._exposition.render(self.registry), CONTENT_TYPE_LATEST
