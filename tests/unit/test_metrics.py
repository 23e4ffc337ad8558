"""Service metrics: counters from snapshot differences, bounded labels, exposition text."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, Info, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shoal.engine.stats import Statistics
from shoal.errors import ErrorKind
from shoal.service.metrics import Metrics


def snap(**kw: Any) -> Statistics:
    base: dict[str, Any] = {"elapsed": 1.0, "total": None, "done": 0, "done_this_run": 0,
                            "in_flight": 0, "queued": 0, "hosts_active": 0,
                            "pages_per_second": 0.0, "bytes": 0}
    return Statistics(**{**base, **kw})


def samples(m: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return samples(m).get((name, frozenset(labels.items())))


def test_two_snapshots_give_counters_and_gauges() -> None:
    m = Metrics()
    first = snap(elapsed=1.0, done_this_run=5, bytes=1000, in_flight=3, queued=7,
                 pages_per_second=5.0, status_classes={"2xx": 4}, errors={"timeout": 1})
    m.observe_job("j1", first, None)
    second = snap(elapsed=2.0, done_this_run=12, bytes=2500, in_flight=1, queued=2,
                  pages_per_second=7.5, status_classes={"2xx": 9, "4xx": 1},
                  errors={"timeout": 1, "dns": 1})
    m.observe_job("j1", second, first)
    assert value(m, "shoal_pages_total", job="j1", status_class="2xx") == 9
    assert value(m, "shoal_pages_total", job="j1", status_class="4xx") == 1
    assert value(m, "shoal_bytes_total", job="j1") == 2500
    assert value(m, "shoal_errors_total", job="j1", kind="timeout") == 1
    assert value(m, "shoal_errors_total", job="j1", kind="dns") == 1
    assert value(m, "shoal_in_flight", job="j1") == 1
    assert value(m, "shoal_queued", job="j1") == 2
    assert value(m, "shoal_pages_per_second", job="j1") == 7.5


def test_jobs_are_separate_series() -> None:
    m = Metrics()
    m.observe_job("a", snap(bytes=10, status_classes={"2xx": 1}), None)
    m.observe_job("b", snap(bytes=20, status_classes={"2xx": 2}), None)
    assert value(m, "shoal_bytes_total", job="a") == 10
    assert value(m, "shoal_bytes_total", job="b") == 20
    assert value(m, "shoal_pages_total", job="b", status_class="2xx") == 2
    m.forget_job("a")
    assert value(m, "shoal_bytes_total", job="a") is None
    assert value(m, "shoal_pages_total", job="a", status_class="2xx") is None
    assert value(m, "shoal_bytes_total", job="b") == 20


def test_counters_never_decrease() -> None:
    m = Metrics()
    big = snap(elapsed=10.0, done_this_run=100, bytes=5000, status_classes={"2xx": 100},
               errors={"connect": 4})
    m.observe_job("j", big, None)
    # one count going down without a restart (e.g. a recount) adds nothing
    odd = snap(elapsed=11.0, done_this_run=100, bytes=4000, status_classes={"2xx": 90},
               errors={"connect": 4})
    m.observe_job("j", odd, big)
    assert value(m, "shoal_bytes_total", job="j") == 5000
    assert value(m, "shoal_pages_total", job="j", status_class="2xx") == 100
    # a restarted job counts from zero again: its counts are new work, added on top
    restarted = snap(elapsed=0.5, done_this_run=3, bytes=300, status_classes={"2xx": 3},
                     errors={"connect": 1})
    m.observe_job("j", restarted, odd)
    assert value(m, "shoal_bytes_total", job="j") == 5300
    assert value(m, "shoal_pages_total", job="j", status_class="2xx") == 103
    assert value(m, "shoal_errors_total", job="j", kind="connect") == 5
    # the same snapshot twice adds nothing
    m.observe_job("j", restarted, restarted)
    assert value(m, "shoal_bytes_total", job="j") == 5300


def test_label_values_stay_bounded() -> None:
    m = Metrics()
    errors = {k.value: 1 for k in ErrorKind} | {"weird": 2, "also weird": 3}
    m.observe_job("j", snap(errors=errors, status_classes={"2xx": 1, "9xx": 2, "": 1}), None)
    kinds = {dict(labels)["kind"] for name, labels in samples(m)
             if name == "shoal_errors_total"}
    assert kinds == {k.value for k in ErrorKind} | {"other"}
    assert value(m, "shoal_errors_total", job="j", kind="other") == 5
    classes = {dict(labels)["status_class"] for name, labels in samples(m)
               if name == "shoal_pages_total"}
    assert classes == {"2xx", "other"}
    assert value(m, "shoal_pages_total", job="j", status_class="other") == 3
    m.observe_request("BREW", "/jobs/{id}", 405, 0.01)
    methods = {dict(labels)["method"] for name, labels in samples(m)
               if name == "shoal_api_request_seconds_count"}
    assert methods == {"other"}


def test_histograms() -> None:
    m = Metrics()
    for lag in (0.0005, 0.003, 0.2, 5.0):
        m.observe_lag(lag)
    assert value(m, "shoal_event_loop_lag_seconds_bucket", le="0.001") == 1
    assert value(m, "shoal_event_loop_lag_seconds_bucket", le="0.005") == 2
    assert value(m, "shoal_event_loop_lag_seconds_bucket", le="1.0") == 3
    assert value(m, "shoal_event_loop_lag_seconds_bucket", le="+Inf") == 4
    assert value(m, "shoal_event_loop_lag_seconds_count") == 4
    m.observe_request("get", "/jobs/{id}", 200, 0.02)
    m.observe_request("GET", "/jobs/{id}", 200, 0.04)
    labels = {"method": "GET", "route": "/jobs/{id}", "status": "200"}
    assert value(m, "shoal_api_request_seconds_count", **labels) == 2
    total = value(m, "shoal_api_request_seconds_sum", **labels)
    assert total is not None and abs(total - 0.06) < 1e-9


def test_own_registry_not_the_global_one() -> None:
    a, b = Metrics(), Metrics()  # a second instance would clash in a shared registry
    a.observe_job("j", snap(bytes=1), None)
    assert value(b, "shoal_bytes_total", job="j") is None
    assert REGISTRY.get_sample_value("shoal_bytes_total", {"job": "j"}) is None


def busy(m: Metrics) -> None:
    """Every kind of series the service has: jobs, errors, requests, lag, shares."""
    for i in range(3):
        m.observe_job(f"job{i}", snap(bytes=1000 * i, in_flight=i, queued=2 * i,
                                      pages_per_second=0.5 * i,
                                      status_classes={"2xx": 10 * i, "4xx": i},
                                      errors={"timeout": i, "weird": 1}), None)
        m.observe_share(f"job{i}", 50 + i)
    for route, status in (("/v1/jobs/{job_id}", 200), ("/v1/jobs", 201), ("/metrics", 200),
                          ("unmatched", 404)):
        m.observe_request("GET", route, status, 0.0123)
    m.observe_request("BREW", "/v1/jobs", 405, 7.5)
    for lag in (0.0001, 0.02, 3.0, 1e-9):
        m.observe_lag(lag)


def test_the_exposition_is_generate_latests_byte_for_byte() -> None:
    m = Metrics()
    assert m.render()[0] == generate_latest(m.registry)  # no series yet
    busy(m)
    for _ in range(2):  # with its series' prefixes remembered, and then again
        assert m.render()[0] == generate_latest(m.registry)
    m.forget_job("job1")
    m.observe_request("GET", "/v1/jobs", 200, 1e22)  # a value Go writes with an exponent
    assert m.render()[0] == generate_latest(m.registry)
    assert b"job1" not in m.render()[0]


def test_what_the_exposition_does_not_handle_is_left_to_generate_latest() -> None:
    m = Metrics()
    busy(m)
    Info("shoal_build", "Build.", registry=m.registry).info({"version": "1"})
    assert m.render()[0] == generate_latest(m.registry)
    assert b'shoal_build_info{version="1"} 1.0' in m.render()[0]
    odd = Metrics()
    busy(odd)
    odd.observe_request("GET", 'a "quoted"\\ route\n', 200, 0.1)  # escaped label values
    assert odd.render()[0] == generate_latest(odd.registry)
