"""--sitemaps: robots.txt Sitemap lines and /sitemap.xml, indexes and gzip, within scope."""

from __future__ import annotations

import gzip

import pytest
from aiohttp import web

import shoal
from tests.servers import reply, site

pytestmark = pytest.mark.timeout(60)


def urlset(locs: list[str]) -> bytes:
    return ("<?xml version='1.0'?><urlset>"
            + "".join(f"<url><loc>{loc}</loc></url>" for loc in locs) + "</urlset>").encode()


def index(locs: list[str]) -> bytes:
    return ("<sitemapindex>" + "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
            + "</sitemapindex>").encode()


async def test_sitemaps_seed_the_frontier_within_scope() -> None:
    async with site() as srv:
        b = srv.base_url
        srv.add({f"/p/{i}": f"<title>p{i}</title>" for i in range(30)})
        srv.add({
            "/": "<title>home</title>",  # links to nothing: only sitemaps reach the pages
            "/robots.txt": f"User-agent: *\nAllow: /\nSitemap: {b}/from-robots.xml\n",
            "/sitemap.xml": reply(200, index([f"{b}/part1.xml.gz"]),
                                  content_type="application/xml"),
            "/part1.xml.gz": reply(200, gzip.compress(urlset(
                [f"{b}/p/{i}" for i in range(10)] + ["http://elsewhere.example/x"])),
                content_type="application/gzip"),
            "/from-robots.xml": reply(200, urlset([f"{b}/p/{i}" for i in range(10, 15)]),
                                      content_type="application/xml"),
        })
        async with shoal.Crawler(shoal.Config()) as crawler:
            records = [r async for r in crawler.crawl([b + "/"], sitemaps=True)]
        stats = crawler.last_result.stats if crawler.last_result else None
    urls = sorted(r.url for r in records)
    assert urls == sorted([b + "/"] + [f"{b}/p/{i}" for i in range(15)])
    assert all(r.status == 200 for r in records)
    assert not any(r.url.endswith((".xml", ".gz")) for r in records)  # sitemaps: no records
    assert stats is not None and stats.out_of_scope == 1  # elsewhere.example
    assert srv.log.count(path_prefix="/p/") == 15  # each page once
    assert srv.log.count(path_prefix="/p/2") == 1


async def test_without_sitemaps_flag_no_sitemap_is_requested() -> None:
    async def never(request: web.Request) -> web.Response:
        raise AssertionError("sitemap fetched")

    async with site({"/": "<title>home</title>", "/sitemap.xml": never}) as srv:
        records = await shoal.crawl([srv.url("/")], shoal.Config())
    assert [r.url for r in records] == [srv.url("/")]
    assert srv.log.count(path_prefix="/sitemap") == 0


async def test_max_pages_counts_pages_not_sitemaps() -> None:
    async with site() as srv:
        b = srv.base_url
        srv.add({f"/p/{i}": "<title>p</title>" for i in range(20)})
        srv.add({"/": "<title>home</title>",
                 "/sitemap.xml": reply(200, urlset([f"{b}/p/{i}" for i in range(20)]),
                                       content_type="application/xml")})
        records = await shoal.crawl([b + "/"], shoal.Config(concurrency=10, per_host=10),
                                    sitemaps=True, max_pages=7)
    assert len(records) == 7
