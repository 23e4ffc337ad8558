"""The public API is exactly shoal.__all__, and records serialise to the documented line."""

from __future__ import annotations

import orjson
import pytest

import shoal
from shoal.errors import ErrorKind, FetchError

FETCH_FIELDS = ["url", "final_url", "status", "error", "content_type", "bytes", "elapsed_ms",
                "attempts", "depth", "redirects", "title", "links", "sha256", "fetched_at"]


def test_public_names_are_pinned() -> None:
    assert sorted(shoal.__all__) == sorted([
        "Config", "ConfigError", "CrawlOptions", "Crawler", "ErrorKind", "FetchError",
        "Follow", "Page", "Record", "RetryPolicy", "ShoalError", "StoreError", "UsageError",
        "__version__", "crawl", "export_items", "export_records", "fetch"])
    for name in shoal.__all__:
        assert getattr(shoal, name) is not None
    with pytest.raises(AttributeError):
        _ = shoal.Engine  # type: ignore[attr-defined]


def test_error_kinds_are_exactly_the_documented_ones() -> None:
    assert {k.value for k in ErrorKind} == {
        "timeout", "connect", "dns", "tls", "too_large", "too_many_redirects",
        "robots_disallowed", "invalid_url", "protocol", "blocked_address",
        "unsupported_scheme", "http", "handler"}


def test_record_line_has_the_documented_fields_in_order() -> None:
    r = shoal.Record(url="http://a/", status=200, title="t", links=3)
    line = r.to_json()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert list(orjson.loads(line)) == FETCH_FIELDS
    crawl = shoal.Record(url="http://a/x", depth=1, parent="http://a/", crawl=True)
    assert list(orjson.loads(crawl.to_json())) == [*FETCH_FIELDS, "parent"]


def test_record_round_trips() -> None:
    r = shoal.Record(url="http://a/", error=FetchError(ErrorKind.TIMEOUT, "slow"), attempts=3,
                     redirects=["http://a/b"], crawl=True, depth=2, parent="http://a/p")
    back = shoal.Record.from_json(r.to_json())
    assert back.to_json() == r.to_json()
    assert back.error is not None and back.error.kind is ErrorKind.TIMEOUT


def test_items_and_changed_appear_only_when_their_feature_is_on() -> None:
    plain = shoal.Record(url="http://a/")
    assert "items" not in plain.to_dict() and "changed" not in plain.to_dict()
    on = shoal.Record(url="http://a/", items=2, recrawl=True, changed=None, crawl=True)
    assert list(orjson.loads(on.to_json()))[-3:] == ["parent", "items", "changed"]
    back = shoal.Record.from_json(on.to_json())
    assert back.to_json() == on.to_json() and back.recrawl and back.items == 2
    assert shoal.Record.from_json(plain.to_json()).to_json() == plain.to_json()
