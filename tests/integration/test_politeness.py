"""Politeness proven from the server's side: limits per host, overall, and delays.

Delays are measured by ``TimedServer``, which logs when a request reached the kernel, so
the gaps are the crawler's own and not this test's event loop lag on a loaded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from aiohttp import web

import shoal
from tests.servers import RequestLog, TimedServer, html_page, sites

pytestmark = pytest.mark.timeout(60)


def slow_pages(n: int, delay: float) -> dict[str, object]:
    async def page(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(text=html_page("p"), content_type="text/html")

    return {f"/p/{i}": page for i in range(n)}


async def test_per_host_and_global_concurrency_are_kept() -> None:
    log = RequestLog()
    async with sites(4, slow_pages(20, 0.05), log=log) as hosts:
        urls = [h.url(f"/p/{i}") for h in hosts for i in range(20)]
        cfg = shoal.Config(concurrency=6, per_host=2, robots=False)
        records = await shoal.fetch(urls, cfg)
    assert len(records) == 80 and all(r.status == 200 for r in records)
    for h in hosts:
        assert log.max_in_flight(h.netloc) <= 2
    assert log.max_in_flight() <= 6
    assert log.max_in_flight() >= 4  # hosts really ran in parallel


async def test_delay_between_starts_includes_robots_request() -> None:
    routes = {**{f"/p/{i}": html_page("p") for i in range(6)},
              "/robots.txt": "User-agent: *\nAllow: /\n"}
    async with contextlib.AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(TimedServer(routes)) for _ in range(2)]
        urls = [h.url(f"/p/{i}") for h in hosts for i in range(6)]
        cfg = shoal.Config(concurrency=10, per_host=5, delay=0.2)
        started = time.monotonic()
        records = await shoal.fetch(urls, cfg)
        took = time.monotonic() - started
    assert all(r.status == 200 for r in records)
    for h in hosts:
        assert h.log.count() == 7  # robots.txt + 6 pages
        assert h.log.min_gap() >= 0.2
    assert took < 7 * 0.2 * 1.1 * 2  # the two hosts were paced in parallel, not in series


async def test_crawl_delay_from_robots_is_honoured() -> None:
    routes = {**{f"/p/{i}": html_page("p") for i in range(3)},
              "/robots.txt": "User-agent: shoal\nCrawl-delay: 0.3\n"}
    async with TimedServer(routes) as h:
        await shoal.fetch([h.url(f"/p/{i}") for i in range(3)], shoal.Config())
    assert h.log.min_gap() >= 0.3


async def test_one_slow_host_does_not_stall_the_others() -> None:
    async with sites(2, [slow_pages(6, 2.0), slow_pages(40, 0.0)]) as (slow, fast):
        urls = [slow.url(f"/p/{i}") for i in range(6)] + [fast.url(f"/p/{i}")
                                                           for i in range(40)]
        cfg = shoal.Config(concurrency=8, per_host=2, robots=False)
        order: list[str] = []
        started = time.monotonic()
        fast_done_at = 0.0
        async with shoal.Crawler(cfg) as crawler:
            async for r in crawler.fetch(urls):
                order.append(r.url)
                if r.url.startswith(fast.base_url):
                    fast_done_at = time.monotonic() - started
    assert len(order) == 46
    assert fast_done_at < 1.5  # all 40 fast pages done while the slow host still works


async def test_retry_after_pauses_the_host_and_is_honoured() -> None:
    hits: list[float] = []

    async def limited(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        if len(hits) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(text=html_page("ok"), content_type="text/html")

    async with sites(1, {"/x": limited}) as (h,):
        records = await shoal.fetch([h.url("/x")], shoal.Config(robots=False))
    assert records[0].status == 200 and records[0].attempts == 2
    assert hits[1] - hits[0] >= 1.0


async def test_absurd_retry_after_is_recorded_at_once() -> None:
    async def limited(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "86400"})

    async with sites(1, {"/x": limited}) as (h,):
        started = time.monotonic()
        records = await shoal.fetch([h.url("/x")], shoal.Config(robots=False))
    assert time.monotonic() - started < 2
    r = records[0]
    assert r.status == 503 and r.error is not None and r.error.kind == "http"
    assert "86400" in r.error.message and r.attempts == 1


async def test_a_paced_host_whose_urls_lie_beyond_the_window_is_not_left_idle() -> None:
    """Host B has one URL at the top of the input and the rest after all of A's; with a
    window smaller than A's share, B's later URLs are taken from the frontier as soon as
    B runs short, so both hosts are paced side by side (in series this takes 1.5 times as
    long)."""
    a_pages = {f"/a/{i}": html_page("a") for i in range(40)}
    b_pages = {f"/b/{i}": html_page("b") for i in range(20)}
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(TimedServer(a_pages))
        b = await stack.enter_async_context(TimedServer(b_pages))
        urls = ([b.url("/b/0")] + [a.url(f"/a/{i}") for i in range(40)]
                + [b.url(f"/b/{i}") for i in range(1, 20)])
        cfg = shoal.Config(concurrency=4, per_host=1, delay=0.05, window=8, robots=False)
        records = await shoal.fetch(urls, cfg)
    assert len(records) == 60 and all(r.status == 200 for r in records)
    a_starts, b_starts = a.log.starts(), b.log.starts()
    assert a.log.min_gap() >= 0.05 and b.log.min_gap() >= 0.05
    # B's last request came while A was still being fetched, not after it
    assert max(b_starts) < max(a_starts), (max(b_starts) - min(a_starts),
                                           max(a_starts) - min(a_starts))
