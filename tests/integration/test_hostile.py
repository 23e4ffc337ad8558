"""Hostile and broken servers, through the library API: every URL ends as one clean record.

Each test runs the real engine (``shoal.fetch`` / ``shoal.Crawler``) against the loopback
servers of ``tests.servers`` and pins the record fields that matter, and where it proves
something (retries, robots.txt, pacing) what the server saw in ``srv.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import resource
import socket
import time
import zlib
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import brotli  # type: ignore[import-untyped]
import pytest
from aiohttp import web

import shoal
from shoal.engine.engine import STOP_GRACE
from tests import servers as S

pytestmark = pytest.mark.timeout(60)

FAST_RETRY = shoal.RetryPolicy(retries=1, backoff_base=0.01)  # 2 attempts, ~no back-off


def config(**changes: Any) -> shoal.Config:
    """A test config: robots off (tests about robots turn it on), quick back-off."""
    changes.setdefault("robots", False)
    changes.setdefault("retry", FAST_RETRY)
    return shoal.Config(**changes)


async def fetch_one(url: str, **changes: Any) -> shoal.Record:
    records = await shoal.fetch([url], config(**changes))
    assert len(records) == 1, records
    return records[0]


def by_url(records: Sequence[shoal.Record]) -> dict[str, shoal.Record]:
    out = {r.url: r for r in records}
    assert len(out) == len(records), "more than one record for a URL"
    return out


def kind(record: shoal.Record) -> str | None:
    return None if record.error is None else str(record.error.kind)


def message(record: shoal.Record) -> str:
    assert record.error is not None, record
    return record.error.message


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


async def page_handler(request: web.Request) -> web.Response:
    return web.Response(text=S.html_page(f"page {request.path}", ["/a", "/b"]),
                        content_type="text/html")


def pages(n: int, prefix: str = "/p") -> dict[str, S.Route]:
    return {f"{prefix}/{i}": page_handler for i in range(n)}


# --------------------------------------------------------------------------- 1. timeouts


SLOW_SERVERS: dict[str, Callable[[], S.RawServer]] = {
    "drip-1-byte-per-s": lambda: S.drip(1.0),
    "hold-after-headers": S.hold_after_headers,
    "silent": S.silent,
}


@pytest.mark.parametrize("name", list(SLOW_SERVERS))
async def test_timeout_bounds_the_whole_attempt(name: str) -> None:
    async with SLOW_SERVERS[name]() as srv:
        started = time.monotonic()
        r = await fetch_one(srv.url("/page"), timeout=1)
        took = time.monotonic() - started
    assert kind(r) == "timeout" and "1 s" in message(r) and "--timeout" in message(r)
    assert r.status is None and r.attempts == 2 and r.bytes == 0 and r.title is None
    assert srv.log.paths() == ["/page", "/page"]
    assert 2.0 <= took < 4.0  # two attempts of 1 s each, not the server's pace


async def test_a_dripping_host_does_not_delay_fast_hosts() -> None:
    async with S.drip(1.0) as dripping, S.site(pages(20)) as fast:
        urls = [dripping.url("/slow")] + [fast.url(f"/p/{i}") for i in range(20)]
        cfg = config(timeout=2, retry=shoal.RetryPolicy(retries=0), concurrency=4, per_host=2)
        arrived: dict[str, float] = {}
        started = time.monotonic()
        async with shoal.Crawler(cfg) as crawler:
            async for r in crawler.fetch(urls):
                arrived[r.url] = time.monotonic() - started
                if r.url != urls[0]:
                    assert r.status == 200 and r.error is None
                else:
                    assert kind(r) == "timeout" and r.attempts == 1
    assert set(arrived) == set(urls)
    assert max(arrived[u] for u in urls[1:]) < 1.0  # all fast pages long before the timeout
    assert arrived[urls[0]] >= 2.0
    assert fast.log.max_in_flight() <= 2


# --------------------------------------------------------------------------- 2. retries


async def test_5xx_forever_is_tried_retries_plus_one_times() -> None:
    async with S.site({"/x": 500}) as srv:
        r = await fetch_one(srv.url("/x"), retry=shoal.RetryPolicy(retries=2, backoff_base=0.01))
    assert r.status == 500 and kind(r) == "http" and r.attempts == 3
    assert "HTTP 500" in message(r) and "3 attempts" in message(r)
    assert srv.log.count(path_prefix="/x") == 3


async def test_retry_after_503_succeeds_on_the_third_attempt() -> None:
    handler = S.retry_after(2, retry_after="0")
    async with S.site({"/x": handler}) as srv:
        r = await fetch_one(srv.url("/x"), retry=shoal.RetryPolicy(retries=2, backoff_base=0.01))
    assert r.status == 200 and r.error is None and r.attempts == 3 and r.title == "recovered"
    assert handler.count == 3 and srv.log.count(path_prefix="/x") == 3


async def test_429_is_retried() -> None:
    handler = S.retry_after(1, status=429, retry_after=None)
    async with S.site({"/x": handler}) as srv:
        r = await fetch_one(srv.url("/x"))
    assert r.status == 200 and r.error is None and r.attempts == 2
    assert srv.log.count(path_prefix="/x") == 2


async def test_dropped_connection_is_retried() -> None:
    async with S.site({"/x": S.flaky(1)}) as srv:
        r = await fetch_one(srv.url("/x"), retry=shoal.RetryPolicy(retries=2, backoff_base=0.01))
    assert r.status == 200 and r.error is None and r.attempts == 2 and r.title == "finally"
    assert srv.log.count(path_prefix="/x") == 2  # no hidden re-send by aiohttp


async def test_404_is_an_answer_and_not_retried() -> None:
    async with S.site({}) as srv:
        r = await fetch_one(srv.url("/missing"))
    assert r.status == 404 and r.error is None and r.attempts == 1
    assert srv.log.count(path_prefix="/missing") == 1


async def test_retry_after_http_date_is_honoured() -> None:
    hits: list[float] = []
    asked: list[float] = []  # seconds from the 503 to the date it named

    async def handler(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        if len(hits) == 1:
            when = math.ceil(time.time()) + 1  # an HTTP date has whole seconds
            asked.append(when - time.time())
            date = S.http_date(datetime.fromtimestamp(when, UTC))
            return web.Response(status=503, headers={"Retry-After": date})
        return web.Response(text=S.html_page("later"), content_type="text/html")

    async with S.site({"/x": handler}) as srv:
        r = await fetch_one(srv.url("/x"))
    assert r.status == 200 and r.error is None and r.attempts == 2
    assert len(hits) == 2 and asked[0] > 1.0
    assert hits[1] - hits[0] >= asked[0] - 0.05


@pytest.mark.parametrize("retry_after", ["120", timedelta(hours=1)], ids=["seconds", "date"])
async def test_retry_after_over_the_cap_ends_at_once(retry_after: str | timedelta) -> None:
    handler = S.retry_after(3, retry_after=retry_after)
    async with S.site({"/x": handler}) as srv:
        started = time.monotonic()
        r = await fetch_one(srv.url("/x"), retry=shoal.RetryPolicy(retries=3, max_retry_after=30))
        took = time.monotonic() - started
    assert r.status == 503 and kind(r) == "http" and r.attempts == 1
    assert "retry after" in message(r) and "--max-retry-after 30" in message(r)
    if isinstance(retry_after, str):
        assert "120 s" in message(r)
    assert handler.count == 1 and took < 1.5


# --------------------------------------------------------------------------- 3. redirects


async def test_redirect_chain_is_followed_hop_by_hop() -> None:
    async with S.site(S.redirect_chain(3)) as srv:
        r = await fetch_one(srv.url("/r/1"))
    assert r.status == 200 and r.error is None and r.title == "final"
    assert r.url == srv.url("/r/1") and r.final_url == srv.url("/final")
    assert r.redirects == [srv.url("/r/2"), srv.url("/r/3"), srv.url("/final")]
    assert srv.log.paths() == ["/r/1", "/r/2", "/r/3", "/final"]


async def test_redirect_hops_are_not_attempts() -> None:
    async with S.site(S.redirect_chain(3)) as srv:
        r = await fetch_one(srv.url("/r/1"))
    assert r.status == 200 and len(r.redirects) == 3
    assert r.attempts == 1, r


async def test_redirect_hops_do_not_use_up_retries() -> None:
    target = S.retry_after(1, status=500, retry_after=None)
    async with S.site({**S.redirect_chain(3, final="/flaky"), "/flaky": target}) as srv:
        r = await fetch_one(srv.url("/r/1"))  # --retries 1
    assert r.status == 200 and r.error is None and r.title == "recovered", r
    assert r.attempts == 2 and len(r.redirects) == 3
    assert target.count == 2


async def test_ten_redirects_are_fine_eleven_are_too_many() -> None:
    async with S.site({**S.redirect_chain(10, prefix="/ten"),
                       **S.redirect_chain(11, prefix="/eleven", final="/final11")}) as srv:
        records = by_url(await shoal.fetch([srv.url("/ten/1"), srv.url("/eleven/1")], config()))
    ten, eleven = records[srv.url("/ten/1")], records[srv.url("/eleven/1")]
    assert ten.status == 200 and ten.error is None and len(ten.redirects) == 10
    assert ten.final_url == srv.url("/final")
    assert kind(eleven) == "too_many_redirects" and "more than 10 redirects" in message(eleven)
    assert eleven.redirects == [srv.url(f"/eleven/{i}") for i in range(2, 12)]
    assert eleven.final_url == srv.url("/eleven/11")
    assert srv.log.count(path_prefix="/final11") == 0


async def test_redirect_loop() -> None:
    async with S.site(S.redirect_loop()) as srv:
        r = await fetch_one(srv.url("/loop/a"))
    assert kind(r) == "too_many_redirects" and "loop" in message(r)
    assert r.redirects == [srv.url("/loop/b")]
    assert srv.log.paths() == ["/loop/a", "/loop/b"]  # stopped at once, not after 10 hops


async def test_redirect_to_ftp_is_unsupported_scheme() -> None:
    async with S.site({"/go": S.redirect_ftp()}) as srv:
        r = await fetch_one(srv.url("/go"))
    assert kind(r) == "unsupported_scheme" and "ftp" in message(r)
    assert r.final_url == srv.url("/go") and r.redirects == []


@pytest.mark.parametrize(("location", "want"), [
    ("http://[::1", "invalid_url"),  # urljoin itself refuses it
    ("http://exa mple.com/", "invalid_url"),
    ("mailto:someone@example.test", "unsupported_scheme"),
])
async def test_a_bad_redirect_target_keeps_the_status_that_came(location: str,
                                                                want: str) -> None:
    head = S.http_head("HTTP/1.1 302 Found", [("Location", location), ("Content-Length", "0")])
    async with S.scripted(head) as srv:
        r = await fetch_one(srv.url("/go"))
    assert kind(r) == want and r.attempts == 1
    assert r.status == 302  # a response came: status is not null


async def test_redirect_to_another_host_goes_through_its_robots() -> None:
    async with S.sites(2) as (a, b):
        b.add({
            "/robots.txt": "User-agent: *\nDisallow: /private/\n",
            "/page": S.html_page("other host", ["/x"]),
            "/private/x": S.html_page("secret"),
        })
        a.add({"/go": S.redirect(b.url("/page")), "/go-private": S.redirect(b.url("/private/x"))})
        records = by_url(await shoal.fetch([a.url("/go"), a.url("/go-private")],
                                           config(robots=True)))
    ok, blocked = records[a.url("/go")], records[a.url("/go-private")]
    assert ok.status == 200 and ok.error is None and ok.title == "other host" and ok.links == 1
    assert ok.final_url == b.url("/page") and ok.redirects == [b.url("/page")]
    assert kind(blocked) == "robots_disallowed" and "robots.txt" in message(blocked)
    assert blocked.final_url == b.url("/private/x") and blocked.redirects == [b.url("/private/x")]
    assert a.log.count(path_prefix="/robots.txt") == 1
    assert b.log.count(path_prefix="/robots.txt") == 1  # once for both hops into b
    assert b.log.count(path_prefix="/private") == 0


# --------------------------------------------------------------------------- 4. size cap

CAP = 1000
Framing = Literal["cl", "chunked", "close"]


def served_body(decoded: bytes, coding: str, framing: Framing) -> S.RawServer:
    """A raw server answering ``decoded`` encoded by ``coding``, framed as ``framing``."""
    wire = decoded if coding == "identity" else S.encode_body(decoded, cast(S.Coding, coding))
    headers = [("Content-Type", "application/octet-stream")]
    if coding != "identity":
        headers.append(("Content-Encoding", "deflate" if coding == "deflate-raw" else coding))
    if framing == "cl":
        headers.append(("Content-Length", str(len(wire))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        half = len(wire) // 2
        wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (wire[:half], wire[half:]) if p)
        wire += b"0\r\n\r\n"
    return S.scripted(S.http_head("HTTP/1.1 200 OK", headers) + wire, name=f"body[{framing}]")


@pytest.mark.parametrize("coding", ["identity", "gzip", "deflate", "deflate-raw", "br"])
async def test_max_bytes_caps_the_decoded_body(coding: str) -> None:
    # every framing (Content-Length, chunked, close-delimited), at the cap and one byte over
    framings: tuple[Framing, ...] = ("cl", "chunked", "close")
    cases = [(framing, size) for framing in framings for size in (CAP, CAP + 1)]
    async with contextlib.AsyncExitStack() as stack:
        servers = {}
        for framing, size in cases:
            body = bytes(i * 7 % 251 for i in range(size))
            srv = await stack.enter_async_context(served_body(body, coding, framing))
            servers[srv.url("/b")] = (framing, body, srv)
        records = by_url(await shoal.fetch(list(servers), config(max_bytes=CAP)))
    assert set(records) == set(servers)
    for url, (framing, body, srv) in servers.items():
        r, case = records[url], (framing, len(body))
        if len(body) <= CAP:
            assert r.status == 200 and r.error is None, case
            assert r.bytes == len(body) and r.sha256 == sha(body), case
        else:
            assert kind(r) == "too_large" and f"--max-bytes {CAP}" in message(r), (case, r)
            assert r.bytes == 0 and r.sha256 is None and r.title is None, case
        assert r.attempts == 1, case  # too large is final, not retried
        assert srv.log.count() == 1, case


def stacked(decoded: bytes, codings: Sequence[S.Coding], framing: Framing) -> S.RawServer:
    """A raw server answering ``decoded`` with several codings applied in order."""
    wire = decoded
    for coding in codings:
        wire = S.encode_body(wire, coding)
    headers = [("Content-Type", "text/html"), ("Content-Encoding", ", ".join(codings))]
    if framing == "cl":
        headers.append(("Content-Length", str(len(wire))))
    else:
        headers.append(("Transfer-Encoding", "chunked"))
        wire = b"".join(b"%x\r\n%s\r\n" % (len(wire[i:i + 999]), wire[i:i + 999])
                        for i in range(0, len(wire), 999)) + b"0\r\n\r\n"
    return S.scripted(S.http_head("HTTP/1.1 200 OK", headers) + wire, name="stacked")


@pytest.mark.parametrize("framing", ["cl", "chunked"])
@pytest.mark.parametrize("codings", [("gzip", "br"), ("br", "gzip"), ("deflate", "gzip")])
async def test_stacked_content_codings_are_undone_in_reverse(
        codings: tuple[S.Coding, ...], framing: Framing) -> None:
    page = b"<title>stacked</title>" + b"<a href=/x>x</a>" * 2000
    async with stacked(page, codings, framing) as srv:
        r = await fetch_one(srv.url("/"))
    assert r.status == 200 and r.error is None, r
    assert r.bytes == len(page) and r.sha256 == sha(page)
    assert r.title == "stacked" and r.links == 2000


async def test_a_bomb_inside_another_coding_is_too_large_with_memory_flat() -> None:
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(zeros.compress(bytes(1 << 20)) for _ in range(200)) + zeros.flush()
    wire = brotli.compress(bomb)  # 200 MB of zeros, gzipped, then brotli'd
    headers = [("Content-Type", "text/html"), ("Content-Encoding", "gzip, br"),
               ("Content-Length", str(len(wire)))]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with S.scripted(S.http_head("HTTP/1.1 200 OK", headers) + wire) as srv:
        r = await fetch_one(srv.url("/"), max_bytes=CAP)
    assert kind(r) == "too_large", r
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50, grown_mb


BOMBS = [
    pytest.param(coding, framing, id=f"{coding}-{framing}")
    for coding in ("gzip", "deflate", "deflate-raw", "br")
    for framing in ("cl", "chunked", "close")
]


@pytest.mark.parametrize(("coding", "framing"), BOMBS)
async def test_decompression_bomb_is_too_large_with_memory_flat(coding: str,
                                                                 framing: Framing) -> None:
    opts = {"content_length": framing == "cl", "chunked": framing == "chunked"}
    if coding == "br":
        srv = S.brotli_bomb(**opts)
    elif coding == "gzip":
        srv = S.gzip_bomb(**opts)
    else:
        srv = S.deflate_bomb(raw=coding == "deflate-raw", **opts)
    async with srv:  # builds the 1 GiB bomb (~1 MB on the wire) first
        before = peak_rss_bytes()
        started = time.monotonic()
        r = await fetch_one(srv.url("/bomb"), max_bytes=S.MiB, timeout=10)
        took = time.monotonic() - started
        grown = peak_rss_bytes() - before
    assert kind(r) == "too_large" and f"--max-bytes {S.MiB}" in message(r)
    assert r.bytes == 0 and r.sha256 is None and r.attempts == 1
    assert grown < 200 * S.MiB, f"peak RSS grew {grown / S.MiB:.0f} MiB"
    assert took < 3  # stopped early, not after decoding 1 GiB


# --------------------------------------------------------------------------- 5. broken servers

# name -> (server, error kind, a phrase of the message)
BROKEN: dict[str, tuple[Callable[[], S.RawServer], str, str]] = {
    "garbage-status-line": (lambda: S.garbage_status("status"), "protocol", "malformed"),
    "garbage-bytes": (lambda: S.garbage_status("bytes"), "protocol", "malformed"),
    "conflicting-content-length": (S.conflicting_content_length, "protocol", "malformed"),
    "bad-content-length": (S.bad_content_length, "protocol", "malformed"),
    "short-body": (S.short_body, "protocol", "broken body"),
    "truncated-chunked": (S.truncated_chunked, "protocol", "broken body"),
    "reset-mid-body": (S.reset_mid_body, "protocol", "broken body"),
    "reset-mid-close-delimited-body": (S.reset_mid_close_delimited_body, "protocol",
                                       "broken body"),
    "huge-header-line": (lambda: S.huge_headers("long"), "protocol", "malformed"),
    "too-many-headers": (lambda: S.huge_headers("many"), "protocol", "malformed"),
    "close-immediately": (S.close_immediately, "connect", "closed"),
    "reset-immediately": (lambda: S.close_immediately(reset=True), "connect", "reset"),
}


def cut_body(coding: str, framing: Framing) -> S.RawServer:
    """A compressed HTML page whose stream stops halfway, yet framed as a complete message."""
    decoded = S.html_page("cut short", ["/a"]).encode() + bytes(i % 251 for i in range(4000))
    wire = S.encode_body(decoded, cast(S.Coding, coding))
    wire = wire[:len(wire) // 2]
    label = "deflate" if coding == "deflate-raw" else coding
    headers = [("Content-Type", "text/html"), ("Content-Encoding", label)]
    if framing == "cl":
        headers.append(("Content-Length", str(len(wire))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        wire = b"%x\r\n%s\r\n0\r\n\r\n" % (len(wire), wire)
    return S.scripted(S.http_head("HTTP/1.1 200 OK", headers) + wire, name=f"cut[{framing}]")


@pytest.mark.parametrize(("coding", "framing"), [
    pytest.param(coding, framing, id=f"{coding}-{framing}")
    for coding in ("gzip", "deflate", "deflate-raw", "br")
    for framing in ("cl", "chunked", "close")
])
async def test_a_compressed_stream_cut_short_is_protocol_not_a_truncated_200(
        coding: str, framing: Framing) -> None:
    async with cut_body(coding, framing) as srv:
        r = await fetch_one(srv.url("/page"), timeout=5)
    assert kind(r) == "protocol" and "truncated" in message(r), r
    assert r.status is None and r.bytes == 0 and r.sha256 is None and r.title is None
    assert r.attempts == 2  # a broken response is retried
    assert srv.log.paths() == ["/page", "/page"]


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
async def test_an_empty_body_labelled_compressed_is_an_empty_page(coding: str) -> None:
    head = S.http_head("HTTP/1.1 200 OK", [("Content-Type", "text/html"),
                                           ("Content-Encoding", coding),
                                           ("Content-Length", "0")])
    async with S.scripted(head) as srv:
        r = await fetch_one(srv.url("/page"))
    assert r.status == 200 and r.error is None and r.bytes == 0 and r.attempts == 1


@pytest.mark.parametrize("name", list(BROKEN))
async def test_broken_server_is_a_clean_error_record(name: str) -> None:
    factory, want_kind, phrase = BROKEN[name]
    async with factory() as srv:
        started = time.monotonic()
        r = await fetch_one(srv.url("/page"), timeout=2)
        took = time.monotonic() - started
    assert kind(r) == want_kind and phrase in message(r).lower(), r
    assert r.status is None  # never a 200 with whatever part of the body came
    assert r.bytes == 0 and r.sha256 is None and r.title is None
    assert r.attempts == 2  # broken responses are retried
    assert srv.log.paths() == ["/page", "/page"]
    assert took < 1.5  # no hang until the timeout


async def test_close_at_accept_is_connect() -> None:
    async with S.close_immediately(read_request=False) as srv:
        r = await fetch_one(srv.url("/page"), timeout=2)
    assert kind(r) == "connect" and r.status is None and r.attempts == 2
    assert srv.log.connections == 2


async def test_close_delimited_body_is_valid() -> None:
    body = S.html_page("close-delimited", ["/a", "/b", "/c"]).encode()
    async with S.no_content_length_close_delimited(body) as srv:
        r = await fetch_one(srv.url("/page"))
    assert r.status == 200 and r.error is None and r.attempts == 1
    assert r.bytes == len(body) and r.sha256 == sha(body)
    assert r.title == "close-delimited" and r.links == 3 and r.content_type == "text/html"


def nesting_bomb(depth: int) -> bytes:
    """HTML that costs the parser depth x depth steps: every <div> start looks down a stack
    of ``depth`` open elements (HTML's "p in button scope" check)."""
    return (b"<!doctype html><title>bomb</title>" + b"<span>" * depth + b"<div>" * depth)


async def test_a_page_that_is_pathological_to_parse_does_not_stall_the_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.engine import offload

    monkeypatch.setattr(offload, "PARSE_DEADLINE", 2.0)
    routes = {
        "/inline-size": S.reply(200, nesting_bomb(40_000), content_type="text/html"),  # 440 KB
        "/big": S.reply(200, nesting_bomb(200_000), content_type="text/html"),  # 2.2 MB
        "/fine": S.html_page("fine", ["/a", "/b"]),
    }
    async with S.site(routes) as srv:
        urls = [srv.url(p) for p in routes]
        started = time.monotonic()
        async with shoal.Crawler(config(timeout=30)) as crawler:
            records = by_url([r async for r in crawler.fetch(urls)])
            result = crawler.last_result
        took = time.monotonic() - started
    assert result is not None
    assert took < 15, took  # not the minutes the big one would take to parse
    assert result.stats.loop_lag_max < 1.0  # the loop never froze on a page
    fine = records[srv.url("/fine")]
    assert fine.title == "fine" and fine.links == 2
    for path in ("/inline-size", "/big"):
        r = records[srv.url(path)]
        assert r.status == 200 and r.error is None and r.sha256 is not None, r
        assert r.title in (None, "bomb")  # given up, or parsed in time: never a hang


async def test_pages_are_parsed_off_the_loop() -> None:
    """Pages small enough for the page thread still may take the parser half a second;
    the loop goes on meanwhile (it measured that long a stall when it parsed them)."""
    from shoal.engine import offload

    bomb = nesting_bomb(11_000)  # 121 KB: about 0.45 s of lexbor
    assert len(bomb) <= offload.PARSE_INLINE
    routes = {f"/bomb{i}": S.reply(200, bomb, content_type="text/html") for i in range(3)}
    routes["/fine"] = S.html_page("fine", ["/a"])
    async with S.site(routes) as srv, shoal.Crawler(config(timeout=30)) as crawler:
        records = by_url([r async for r in crawler.fetch([srv.url(p) for p in routes])])
        result = crawler.last_result
    assert result is not None
    assert result.stats.loop_lag_max < 0.2, result.stats.loop_lag_max
    assert all(records[srv.url(f"/bomb{i}")].title == "bomb" for i in range(3))
    assert records[srv.url("/fine")].links == 1


# --------------------------------------------------------------------------- 6. robots.txt


async def test_robots_is_fetched_once_per_host() -> None:
    async with S.sites(2, {**pages(8), "/robots.txt": "User-agent: *\nAllow: /\n"}) as hosts:
        urls = [h.url(f"/p/{i}") for h in hosts for i in range(8)]
        records = await shoal.fetch(urls, config(robots=True, per_host=4))
    assert len(records) == 16 and all(r.status == 200 and r.error is None for r in records)
    for h in hosts:
        assert h.log.count(path_prefix="/robots.txt") == 1
        assert h.log.paths()[0] == "/robots.txt"  # before any page


@pytest.mark.parametrize("status", [404, 403, 410])
async def test_robots_4xx_allows_everything(status: int) -> None:
    async with S.site({"/robots.txt": status, "/private/x": S.html_page("ok")}) as srv:
        r = await fetch_one(srv.url("/private/x"), robots=True)
    assert r.status == 200 and r.error is None and r.title == "ok"
    assert srv.log.count(path_prefix="/robots.txt") == 1


async def test_robots_5xx_disallows_everything() -> None:
    async with S.site({"/robots.txt": 500, "/page": S.html_page("never")}) as srv:
        r = await fetch_one(srv.url("/page"), robots=True)
    assert kind(r) == "robots_disallowed" and "500" in message(r), r
    assert r.status is None and r.attempts == 0
    assert srv.log.count(path_prefix="/robots.txt") == 2  # retried like a page
    assert srv.log.count(path_prefix="/page") == 0


async def test_unreachable_robots_disallows_everything() -> None:
    async with S.scripted(b"", abuse_robots=True, name="closes-everything") as srv:
        r = await fetch_one(srv.url("/page"), robots=True)
    assert kind(r) == "robots_disallowed" and "unreachable" in message(r), r
    assert r.status is None
    assert srv.log.paths() == ["/robots.txt", "/robots.txt"]  # retried, then given up


@pytest.mark.parametrize(("hops", "obeyed"), [(2, True), (5, True), (6, False)])
async def test_robots_redirects_are_followed_up_to_five(hops: int, obeyed: bool) -> None:
    routes = {**S.robots_redirects(hops), "/private/x": S.html_page("p"), "/open": "open"}
    async with S.site(routes) as srv:
        records = by_url(await shoal.fetch([srv.url("/private/x"), srv.url("/open")],
                                           config(robots=True)))
    private, public = records[srv.url("/private/x")], records[srv.url("/open")]
    assert public.status == 200 and public.error is None
    if obeyed:
        assert kind(private) == "robots_disallowed" and srv.log.count(path_prefix="/private") == 0
        assert srv.log.count(path_prefix="/robots-final.txt") == 1
    else:  # more than 5 redirects: robots.txt counts as unavailable (RFC 9309 2.3.1.2)
        assert private.status == 200 and private.error is None
        assert srv.log.count(path_prefix="/robots-final.txt") == 0
    assert srv.log.count(path_prefix="/robots.txt") == 1


async def test_robots_group_for_our_token_wins_over_star() -> None:
    text = S.robots_txt(shoal_disallow=["/secret/"], star_disallow=["/"])
    routes = {"/robots.txt": text, "/page": S.html_page("mine"), "/secret/x": "s"}
    async with S.site(routes) as srv:
        records = by_url(await shoal.fetch([srv.url("/page"), srv.url("/secret/x")],
                                           config(robots=True)))
    assert records[srv.url("/page")].status == 200  # `*` disallows /, our group does not
    secret = records[srv.url("/secret/x")]
    assert kind(secret) == "robots_disallowed" and "shoal" in message(secret)
    assert srv.log.paths() == ["/robots.txt", "/page"]


async def test_robots_txt_starting_with_a_byte_order_mark_is_obeyed() -> None:
    # Files saved by Windows editors start with a UTF-8 BOM; its first line still counts.
    text = b"\xef\xbb\xbfUser-agent: *\r\nDisallow: /private/\r\n"
    routes = {"/robots.txt": S.robots(text), "/page": S.html_page("open"), "/private/x": "p"}
    async with S.site(routes) as srv:
        records = by_url(await shoal.fetch([srv.url("/page"), srv.url("/private/x")],
                                           config(robots=True)))
    assert records[srv.url("/page")].status == 200
    assert kind(records[srv.url("/private/x")]) == "robots_disallowed"
    assert srv.log.paths() == ["/robots.txt", "/page"]


async def test_robots_crawl_delay_of_our_group_is_honoured() -> None:
    text = S.robots_txt(star_disallow=[], crawl_delay=0.4, star_crawl_delay=5)
    routes = {**{f"/p/{i}": S.html_page(f"page /p/{i}") for i in range(3)}, "/robots.txt": text}
    async with S.TimedServer(routes) as srv:  # logs arrival in the kernel: exact gaps
        started = time.monotonic()
        records = await shoal.fetch([srv.url(f"/p/{i}") for i in range(3)],
                                    config(robots=True, per_host=4))
        took = time.monotonic() - started
    assert all(r.status == 200 for r in records)
    assert srv.log.count() == 4
    assert srv.log.min_gap(path_prefix="/p/") >= 0.4
    # robots.txt counts as a start
    robots_start, first_page = srv.log.starts()[:2]
    assert first_page - robots_start >= 0.4
    assert took < 3  # our group's 0.4 s, not `*`'s 5 s


async def test_huge_robots_rules_past_500_kib_are_ignored() -> None:
    routes = {"/robots.txt": S.huge_robots("/after-cap", early_disallow="/before-cap"),
              "/before-cap": "b", "/after-cap": "a"}
    async with S.site(routes) as srv:
        records = by_url(await shoal.fetch([srv.url("/before-cap"), srv.url("/after-cap")],
                                           config(robots=True)))
    before, after = records[srv.url("/before-cap")], records[srv.url("/after-cap")]
    assert kind(before) == "robots_disallowed" and before.status is None
    assert after.status == 200 and after.error is None
    assert srv.log.paths() == ["/robots.txt", "/after-cap"]




@pytest.mark.parametrize("coding", ["identity", "gzip"])
async def test_huge_robots_is_read_to_the_full_500_kib(coding: str) -> None:
    # a rule ending just before the 500 KiB mark is obeyed, one past it is not
    head = "User-agent: *\nDisallow: /before-cap\n"
    pad = "# padding " + "x" * 69 + "\n"
    near = "Disallow: /near-cap\n"
    text = head + pad * ((S.ROBOTS_CAP - len(head) - len(near) - 200) // len(pad)) + near
    assert S.ROBOTS_CAP - 300 < len(text) <= S.ROBOTS_CAP
    text += pad * 1500 + "Disallow: /after-cap\n"
    assert text.index("Disallow: /after-cap") > S.ROBOTS_CAP
    robots_route: S.Route = text
    if coding == "gzip":
        robots_route = S.compressed(text, "gzip", content_type="text/plain")
    routes = {"/robots.txt": robots_route, "/before-cap": "b", "/near-cap": "n",
              "/after-cap": "a"}
    async with S.site(routes) as srv:
        records = by_url(await shoal.fetch([srv.url(p) for p in
                                            ("/before-cap", "/near-cap", "/after-cap")],
                                           config(robots=True)))
    assert kind(records[srv.url("/before-cap")]) == "robots_disallowed"
    assert kind(records[srv.url("/near-cap")]) == "robots_disallowed"
    after = records[srv.url("/after-cap")]
    assert after.status == 200 and after.error is None
    assert srv.log.paths() == ["/robots.txt", "/after-cap"]


async def test_no_robots_fetches_disallowed_urls_and_never_asks() -> None:
    routes = {"/robots.txt": "User-agent: *\nDisallow: /\n", "/page": S.html_page("free")}
    async with S.site(routes) as srv:
        r = await fetch_one(srv.url("/page"), robots=False)
    assert r.status == 200 and r.error is None and r.title == "free"
    assert srv.log.paths() == ["/page"]


# --------------------------------------------------------------------------- 7. charsets


def page_bytes(title: str, encoding: str, meta: str | None = None, bom: bytes = b"") -> bytes:
    return bom + S.html_page(title, charset=meta).encode(encoding)



CHARSETS = [
    pytest.param(S.encoded_page(S.CP1251_TITLE, encoding="cp1251"), S.CP1251_TITLE,
                 id="cp1251-header"),
    pytest.param(S.encoded_page(S.LATIN1_TITLE, encoding="latin-1"), S.LATIN1_TITLE,
                 id="latin1-header"),
    pytest.param(S.encoded_page(S.CP1252_TITLE, encoding="cp1252"), S.CP1252_TITLE,
                 id="cp1252-header"),
    pytest.param(S.encoded_page(S.CP1251_TITLE, encoding="cp1251", declared_in="meta"),
                 S.CP1251_TITLE, id="cp1251-meta"),
    pytest.param(S.encoded_page(S.LATIN1_TITLE, encoding="latin-1", declared_in="http-equiv"),
                 S.LATIN1_TITLE, id="latin1-http-equiv"),
    pytest.param(S.encoded_page(S.CP1252_TITLE, encoding="cp1252", declared_in="meta"),
                 S.CP1252_TITLE, id="cp1252-meta"),
    pytest.param(S.encoded_page(S.CP1251_TITLE, encoding="utf-8", declared_in="bom"),
                 S.CP1251_TITLE, id="utf8-bom"),
    pytest.param(S.encoded_page(S.CP1251_TITLE, encoding="utf-16-le", declared_in="bom"),
                 S.CP1251_TITLE, id="utf16le-bom"),
    pytest.param(S.encoded_page(S.LATIN1_TITLE, encoding="utf-16-be", declared_in="bom"),
                 S.LATIN1_TITLE, id="utf16be-bom"),
    pytest.param(S.encoded_page(S.CP1252_TITLE, encoding="cp1252", declared_in="none"),
                 S.CP1252_TITLE, id="cp1252-detected"),
    pytest.param(S.encoded_page(S.CP1251_TITLE, encoding="cp1251", declared_in="none"),
                 S.CP1251_TITLE, id="cp1251-detected"),
    pytest.param(S.encoded_page(S.LATIN1_TITLE, encoding="latin-1", declared_in="none"),
                 S.LATIN1_TITLE, id="latin1-detected"),
    pytest.param(S.encoded_page(S.CP1251_TITLE, encoding="utf-8", declared_in="none"),
                 S.CP1251_TITLE, id="utf8-undeclared"),
    # precedence: HTTP charset over <meta>, BOM over <meta>
    pytest.param(S.reply(200, page_bytes(S.CP1251_TITLE, "cp1251", meta="utf-8"),
                         content_type="text/html; charset=windows-1251"),
                 S.CP1251_TITLE, id="header-beats-meta"),
    pytest.param(S.reply(200, page_bytes(S.LATIN1_TITLE, "utf-8", meta="cp1251",
                                         bom=b"\xef\xbb\xbf"), content_type="text/html"),
                 S.LATIN1_TITLE, id="bom-beats-meta"),
]


@pytest.mark.parametrize(("handler", "title"), CHARSETS)
async def test_title_is_decoded_by_the_right_charset(handler: S.Handler, title: str) -> None:
    async with S.site({"/": handler}) as srv:
        r = await fetch_one(srv.url("/"))
    assert r.status == 200 and r.error is None and r.content_type == "text/html"
    assert r.title == title


async def test_invalid_utf8_never_crashes() -> None:
    async with S.site({"/": S.invalid_utf8_page()}) as srv:
        r = await fetch_one(srv.url("/"))
    assert r.status == 200 and r.error is None
    assert r.title == S.INVALID_UTF8_TITLE_BYTES.decode("utf-8", errors="replace")


@pytest.mark.parametrize(("handler", "body", "ctype"), [
    pytest.param(S.binary(), S.OCTET_BYTES, "application/octet-stream", id="octet-stream"),
    pytest.param(S.png(), S.PNG_BYTES, "image/png", id="png"),
    pytest.param(S.binary("application/pdf", b"%PDF-1.4 <a href='/x'>" + S.OCTET_BYTES),
                 b"%PDF-1.4 <a href='/x'>" + S.OCTET_BYTES, "application/pdf", id="pdf"),
])
async def test_binary_bodies_have_no_title_or_links(handler: S.Handler, body: bytes,
                                                    ctype: str) -> None:
    async with S.site({"/b": handler}) as srv:
        r = await fetch_one(srv.url("/b"))
    assert r.status == 200 and r.error is None and r.content_type == ctype
    assert r.title is None and r.links == 0
    assert r.bytes == len(body) and r.sha256 == sha(body)


# --------------------------------------------------------------------------- 8. invalid input


async def test_invalid_input_becomes_records_and_the_run_goes_on() -> None:
    junk_host = "http://" + "a" * 100_000 + "/"
    junk_ctrl = "\x07\x1b[0m junk " * 10_000
    expected = {
        "not a url": ("invalid_url", "missing scheme"),
        "ftp://x/": ("unsupported_scheme", "ftp"),
        "mailto:a@b": ("unsupported_scheme", "mailto"),
        "http://": ("invalid_url", "empty host"),
        "http://exa mple.com/": ("invalid_url", "host"),
        "http://127.0.0.1:99999/": ("invalid_url", "port"),
        junk_host: ("invalid_url", "longer than 63"),
        junk_ctrl.strip(): ("invalid_url", "control character"),
    }
    async with S.site(pages(3)) as srv:
        good = [srv.url(f"/p/{i}") for i in range(3)]
        lines = [good[0], "not a url", "ftp://x/", "mailto:a@b", good[1], "http://",
                 "http://exa mple.com/", "http://127.0.0.1:99999/", junk_host, junk_ctrl,
                 good[2]]
        records = by_url(await shoal.fetch(lines, config()))
    assert len(records) == len(lines)
    for url in good:
        assert records[url].status == 200 and records[url].error is None
    for line, (want, phrase) in expected.items():
        r = records[line]
        assert kind(r) == want and phrase in message(r), (line[:40], r.error)
        assert r.status is None and r.attempts == 0
        assert len(message(r)) < 1000  # junk is quoted clipped, not whole
    assert srv.log.count() == 3


# --------------------------------------------------------------------------- 9-10. DNS, refused


@pytest.mark.parametrize("robots", [True, False], ids=["robots", "no-robots"])
async def test_unresolvable_host_is_dns(robots: bool) -> None:
    url = "http://nonexistent.invalid/page"
    started = time.monotonic()
    r = await fetch_one(url, robots=robots, timeout=5)
    assert kind(r) == "dns" and "nonexistent.invalid" in message(r), r
    assert r.status is None and r.final_url == url
    assert time.monotonic() - started < 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_connection_refused_is_connect_after_every_attempt() -> None:
    url = f"http://127.0.0.1:{free_port()}/page"
    started = time.monotonic()
    r = await fetch_one(url, retry=shoal.RetryPolicy(retries=2, backoff_base=0.01))
    assert kind(r) == "connect" and r.status is None and r.attempts == 3, r
    assert "connect" in message(r).lower() and r.final_url == url
    assert time.monotonic() - started < 2


async def test_connection_refused_with_robots_is_an_unreachable_robots_txt() -> None:
    # RFC 9309 2.3.1.4: robots.txt unreachable through network errors means disallow all
    url = f"http://127.0.0.1:{free_port()}/page"
    r = await fetch_one(url, robots=True)
    assert kind(r) == "robots_disallowed" and "unreachable" in message(r), r
    assert r.status is None and r.attempts == 0


# --------------------------------------------------------------------------- 11. cancellation


def shoal_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("shoal") and not t.done()]


async def test_cancelling_the_consumer_stops_promptly(tmp_path: Path) -> None:
    async with S.site({f"/s/{i}": S.slow(30) for i in range(6)}) as srv:
        urls = [srv.url(f"/s/{i}") for i in range(6)]
        cfg = config(per_host=2, concurrency=4)
        state = tmp_path / "s.db"
        got: list[shoal.Record] = []

        async def consume() -> None:
            async with shoal.Crawler(cfg, state=state) as crawler:
                async for record in crawler.fetch(urls):
                    got.append(record)

        task = asyncio.create_task(consume())
        async with asyncio.timeout(5):
            await srv.log.wait_started(2)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - started
        async with asyncio.timeout(2):
            await srv.log.wait_idle()  # the requests in flight were closed, not leaked
        assert took < STOP_GRACE + 1
        assert got == [] and shoal_tasks() == []

        # the requests cut off went back to pending: a rerun fetches every URL once
        srv.add({f"/s/{i}": S.html_page(f"s{i}") for i in range(6)})
        async with shoal.Crawler(cfg, state=state) as crawler:
            again = by_url([r async for r in crawler.fetch(urls)])
    assert sorted(again) == sorted(urls)
    assert all(r.status == 200 and r.error is None for r in again.values())
    assert shoal_tasks() == []


async def test_break_and_rerun_yield_each_url_once(tmp_path: Path) -> None:
    async def slowish(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return await page_handler(request)

    async with S.site({f"/p/{i}": slowish for i in range(12)}) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(12)]
        cfg = config(per_host=2, concurrency=2)
        async with shoal.Crawler(cfg, state=tmp_path / "s.db") as crawler:
            first: list[shoal.Record] = []
            # Crawler.fetch is typed AsyncIterator, but is an async generator: close it now
            stream = cast(AsyncGenerator[shoal.Record, None], crawler.fetch(urls))
            async with contextlib.aclosing(stream):
                async for record in stream:
                    first.append(record)
                    break
            assert shoal_tasks() == []
            second = [r async for r in crawler.fetch(urls)]
    seen = [r.url for r in first + second]
    assert sorted(seen) == sorted(urls), f"first {len(first)}, second {len(second)}"
    assert all(r.status == 200 for r in first + second)


async def test_break_without_closing_then_rerun_at_once_yields_each_url_once(
        tmp_path: Path) -> None:
    # The plain `async for ...: break` leaves the generator to the garbage collector, which
    # closes it on a later turn of the loop: the next run on the same state must wait for it.
    async def slowish(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return await page_handler(request)

    async with S.site({f"/p/{i}": slowish for i in range(40)}) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(40)]
        cfg = config(per_host=4, concurrency=4)
        seen: list[str] = []
        async with shoal.Crawler(cfg, state=tmp_path / "s.db") as crawler:
            async for record in crawler.fetch(urls):
                seen.append(record.url)
                if len(seen) == 3:
                    break
            async for record in crawler.fetch(urls):  # at once, same state
                seen.append(record.url)
                if len(seen) == 10:
                    break
        assert shoal_tasks() == []  # leaving the Crawler finished every run it started
        async with shoal.Crawler(cfg, state=tmp_path / "s.db") as crawler:
            seen += [r.url async for r in crawler.fetch(urls)]
    assert sorted(seen) == sorted(urls), f"{len(seen)} records for {len(urls)} URLs"
    assert srv.log.count(path_prefix="/p/") <= len(urls) + 2 * cfg.concurrency
