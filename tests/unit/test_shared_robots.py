"""robots.txt policies survive the trip through the shared frontier's hosts table."""

from __future__ import annotations

from shoal.core.robots import RobotsPolicy, RobotsState
from shoal.engine.shared import robots_policy, robots_row
from shoal.errors import ErrorKind, FetchError


def roundtrip(policy: RobotsPolicy) -> RobotsPolicy:
    return robots_policy(robots_row(policy), "shoal")


def test_rules_and_crawl_delay_come_back() -> None:
    body = b"User-agent: shoal\nDisallow: /private\nCrawl-delay: 1.5\n"
    back = roundtrip(RobotsPolicy.from_response(200, body, token="shoal"))
    assert back.state is RobotsState.RULES and back.crawl_delay() == 1.5
    assert not back.can_fetch("http://a.test/private/x") and back.can_fetch("http://a.test/")


def test_status_only_policies_come_back() -> None:
    assert roundtrip(RobotsPolicy.from_response(404, b"", token="shoal")).state \
        is RobotsState.ALLOW_ALL
    assert roundtrip(RobotsPolicy.from_response(503, b"", token="shoal")).state \
        is RobotsState.DISALLOW_ALL
    allow = roundtrip(RobotsPolicy.allow_all("redirected too often"))
    assert allow.state is RobotsState.ALLOW_ALL and allow.reason == "redirected too often"


def test_unreachable_keeps_the_error_the_pages_get() -> None:
    policy = RobotsPolicy.disallow_all("robots.txt unreachable: no such host")
    policy.fetch_error = FetchError(ErrorKind.DNS, "no such host: a.test")
    back = roundtrip(policy)
    assert back.state is RobotsState.DISALLOW_ALL and back.reason == policy.reason
    assert back.fetch_error is not None
    assert (back.fetch_error.kind, back.fetch_error.message) == (ErrorKind.DNS,
                                                                 "no such host: a.test")
