"""Pure pieces: retry decisions, robots.txt policy, size-capped decoders, HTML decoding."""

from __future__ import annotations

import gzip
import random
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import brotli
import pytest

from shoal.client.decoders import Overflow, decoder_for
from shoal.config import Config, RetryPolicy
from shoal.core.retry import backoff, decide, is_retryable_status, parse_retry_after
from shoal.core.robots import RobotsPolicy, RobotsState
from shoal.errors import ConfigError
from shoal.parse.html import decode_html, parse_html

# -- retry -------------------------------------------------------------------------------


def test_retryable_statuses() -> None:
    assert is_retryable_status(429) and is_retryable_status(503) and is_retryable_status(500)
    assert not any(is_retryable_status(s) for s in (200, 301, 404, 403, 410))


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after("7", now=now) == 7.0
    date = format_datetime(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(90)
    assert parse_retry_after("garbage", now=now) is None
    assert parse_retry_after(None, now=now) is None
    past = format_datetime(datetime(2025, 1, 1, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_decide_attempt_budget_backoff_and_cap() -> None:
    policy = RetryPolicy(retries=2, backoff_base=0.5, max_retry_after=30)
    rng = random.Random(3)
    first = decide(policy, attempt=1, rng=rng)
    assert first.retry and 0.5 <= first.wait <= 0.75
    second = decide(policy, attempt=2, rng=rng)
    assert second.retry and 1.0 <= second.wait <= 1.5
    assert not decide(policy, attempt=3).retry  # three attempts made: N + 1
    ra = decide(policy, attempt=1, retry_after=4)
    assert ra.retry and ra.wait == 4 and ra.host_wide
    absurd = decide(policy, attempt=1, retry_after=3600)
    assert not absurd.retry and "3600" in absurd.reason and "--max-retry-after" in absurd.reason
    assert backoff(RetryPolicy(backoff_base=1, backoff_max=4), 10) <= 4


def test_config_errors_name_the_flag_and_value() -> None:
    with pytest.raises(ConfigError, match=r"--per-host must be between 1 and 10000, got 0"):
        Config(per_host=0)
    with pytest.raises(ConfigError, match="--retries"):
        RetryPolicy(retries=-1)
    with pytest.raises(ConfigError, match="--user-agent"):
        Config(user_agent="a\nb")
    assert Config(user_agent="MyBot/2.0 (+x)").robots_token == "MyBot"


# -- robots ------------------------------------------------------------------------------

ROBOTS = b"""User-agent: *
Disallow: /

User-agent: shoal
Disallow: /private
Allow: /private/ok
Crawl-delay: 2
Sitemap: http://h/sitemap.xml
"""


def test_our_group_is_chosen_over_star() -> None:
    p = RobotsPolicy.from_response(200, ROBOTS, token="shoal")
    assert p.can_fetch("http://h/public")
    assert not p.can_fetch("http://h/private/x")
    assert p.can_fetch("http://h/private/ok")
    assert p.crawl_delay() == 2.0
    assert p.sitemaps() == ["http://h/sitemap.xml"]
    other = RobotsPolicy.from_response(200, ROBOTS, token="otherbot")
    assert not other.can_fetch("http://h/public")


@pytest.mark.parametrize(("status", "state"), [
    (404, RobotsState.ALLOW_ALL), (403, RobotsState.ALLOW_ALL), (410, RobotsState.ALLOW_ALL),
    (500, RobotsState.DISALLOW_ALL), (503, RobotsState.DISALLOW_ALL),
])
def test_status_rules_of_rfc_9309(status: int, state: RobotsState) -> None:
    p = RobotsPolicy.from_response(status, b"User-agent: *\nDisallow: /\n", token="shoal")
    assert p.state is state
    assert p.can_fetch("http://h/x") is (state is RobotsState.ALLOW_ALL)


def test_only_500_kib_are_read() -> None:
    body = b"User-agent: *\n" + b"# filler\n" * (600 * 1024 // 9) + b"Disallow: /late\n"
    p = RobotsPolicy.from_response(200, body, token="shoal")
    assert p.can_fetch("http://h/late")


# -- decoders ----------------------------------------------------------------------------


def _chunks(data: bytes, n: int = 4096) -> list[bytes]:
    return [data[i:i + n] for i in range(0, len(data), n)]


def _decode(coding: str, data: bytes, room: int) -> bytes:
    dec = decoder_for(coding)
    out = []
    for c in _chunks(data):
        got = dec.feed(c, room)
        room -= len(got)
        out.append(got)
    out.append(dec.finish(room))
    return b"".join(out)


PAYLOAD = b"<html><title>t</title>" + bytes(range(256)) * 400


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "raw-deflate", "br", ""])
def test_decoders_round_trip(coding: str) -> None:
    if coding in ("gzip", "x-gzip"):
        data = gzip.compress(PAYLOAD)
    elif coding == "deflate":
        data = zlib.compress(PAYLOAD)
    elif coding == "raw-deflate":
        c = zlib.compressobj(wbits=-15)
        data = c.compress(PAYLOAD) + c.flush()
        coding = "deflate"
    elif coding == "br":
        data = brotli.compress(PAYLOAD)
    else:
        data = PAYLOAD
    assert _decode(coding, data, len(PAYLOAD)) == PAYLOAD


def test_multi_member_gzip() -> None:
    assert _decode("gzip", gzip.compress(b"ab") + gzip.compress(b"cd"), 10) == b"abcd"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_bomb_overflows_without_inflating(coding: str) -> None:
    zeros = bytes(50 * 1024 * 1024)
    data = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[coding](zeros)
    with pytest.raises(Overflow):
        _decode(coding, data, 1024 * 1024)


# -- HTML decoding -----------------------------------------------------------------------


def test_charset_order_http_then_bom_then_meta_then_detection() -> None:
    title = "Привет мир"
    cp1251 = f"<title>{title}</title>".encode("cp1251")
    assert parse_html(cp1251, "windows-1251").title == title
    assert parse_html(b"\xef\xbb\xbf" + f"<title>{title}</title>".encode(), None).title == title
    meta = f'<meta charset="windows-1251"><title>{title}</title>'.encode("cp1251")
    assert parse_html(meta, None).title == title
    # HTTP wins over meta
    both = f'<meta charset="koi8-r"><title>{title}</title>'.encode("cp1251")
    assert parse_html(both, "windows-1251").title == title
    assert decode_html(b"<title>ok</title>", None)[1] == "utf-8"


def test_invalid_bytes_never_crash() -> None:
    page = parse_html(b"<title>bad \xff\xfe\xfa bytes</title>", "utf-8")
    assert page.title is not None and page.title.startswith("bad")
    assert parse_html(b"<title>x</title>", "no-such-charset").title == "x"
