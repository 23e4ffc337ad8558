"""The frontier window: bounded memory, and no URL left behind when one host dominates."""

from __future__ import annotations

from collections import Counter

import pytest
from aiohttp import web

import shoal
from tests.servers import sites

pytestmark = pytest.mark.timeout(120)


async def _page(request: web.Request) -> web.Response:
    return web.Response(text="<title>t</title>", content_type="text/html")


@pytest.mark.parametrize("layout", ["big-host-first", "interleaved", "big-host-last"])
async def test_every_url_is_fetched_when_one_host_overflows_the_window(layout: str) -> None:
    routes = {f"/p/{i}": _page for i in range(1500)}
    async with sites(4, routes) as (big, *small):
        big_urls = [big.url(f"/p/{i}") for i in range(1500)]
        small_urls = [s.url(f"/p/{i}") for s in small for i in range(100)]
        if layout == "big-host-first":
            urls = big_urls + small_urls
        elif layout == "big-host-last":
            urls = small_urls + big_urls
        else:
            urls = [u for pair in zip(big_urls, small_urls * 5, strict=False) for u in pair]
            urls += big_urls[len(small_urls) * 5:]
        cfg = shoal.Config(concurrency=8, per_host=1, robots=False, window=100)
        async with shoal.Crawler(cfg) as crawler:
            seen = Counter([r.url async for r in crawler.fetch(urls)])
    assert seen == Counter(set(urls))
    assert big.log.count(path_prefix="/p/") == 1500  # each fetched once
