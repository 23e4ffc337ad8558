"""The bundled demo site, served on loopback and fetched with a real client."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from shoal.demo.site import DEMO_STATE, demo_urls, make_app, serve_demo

PAGES = 200

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with serve_demo(pages=PAGES) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def hrefs(html: str) -> list[str]:
    return [str(a.attributes["href"]) for a in HTMLParser(html).css("a[href]")]


def title(html: str) -> str | None:
    node = HTMLParser(html).css_first("title")
    return None if node is None else node.text()


async def test_serves_on_loopback(base: str) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)
    assert not base.endswith(":0")


async def test_pages_look_like_pages(base: str, session: aiohttp.ClientSession) -> None:
    for n in (0, 7, 123, PAGES - 1):
        async with session.get(f"{base}/page/{n}") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert resp.charset == "utf-8"
            body = await resp.read()
        assert 8_000 <= len(body) <= 20_000
        html = body.decode()
        assert title(html) == f"Demo page {n} — shoal"
        assert "<h1>" in html and "<h2>" in html and "<p>" in html
        links = hrefs(html)
        assert 20 <= len(links) <= 30
        page_links = [h for h in links if h.startswith("/page/")]
        assert len(page_links) >= len(links) * 2 // 3
        assert all(int(h.rsplit("/", 1)[1]) < PAGES for h in page_links)
        assert any(h.startswith("/missing/") for h in links)
        assert any(h.startswith("/redirect/") for h in links)
        for h in links:
            assert h == "/" or re.fullmatch(r"/(page|missing|redirect|private)/\d+", h), h


async def test_pages_are_deterministic(base: str, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{base}/page/42") as resp:
        first = await resp.read()
    async with serve_demo(pages=PAGES) as other, session.get(f"{other}/page/42") as resp:
        second = await resp.read()
    assert first == second


async def test_index_links_to_first_pages(base: str, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{base}/") as resp:
        assert resp.status == 200
        html = await resp.text()
    links = hrefs(html)
    assert "/page/0" in links and "/page/1" in links
    assert title(html) == "Demo site — shoal"


async def test_robots_and_sitemap(base: str, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{base}/robots.txt") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        robots = await resp.text()
    assert "User-agent: *" in robots
    assert "Disallow: /private/" in robots
    assert "crawl-delay" not in robots.lower()
    assert f"Sitemap: {base}/sitemap.xml" in robots

    async with session.get(f"{base}/sitemap.xml") as resp:
        assert resp.status == 200
        xml = await resp.text()
    locs = re.findall(r"<loc>([^<]+)</loc>", xml)
    assert len(locs) == PAGES + 1
    assert f"{base}/page/{PAGES - 1}" in locs


async def test_missing_and_out_of_range_are_404(base: str, session: aiohttp.ClientSession) -> None:
    for path in ("/missing/3", f"/page/{PAGES}", "/page/abc", "/nowhere"):
        async with session.get(base + path) as resp:
            assert resp.status == 404, path


async def test_redirect_goes_to_a_page(base: str, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{base}/redirect/{PAGES + 5}", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/page/5"
    async with session.get(f"{base}/redirect/5") as resp:
        assert resp.status == 200
        assert str(resp.url) == f"{base}/page/5"
        assert len(resp.history) == 1
        assert title(await resp.text()) == "Demo page 5 — shoal"


async def test_error_fails_once_then_succeeds(base: str, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{base}/error/1") as resp:
        assert resp.status == 500
    for _ in range(2):
        async with session.get(f"{base}/error/1") as resp:
            assert resp.status == 200
            assert title(await resp.text()) == "Recovered page 1 — shoal"
    async with session.get(f"{base}/error/2") as resp:  # each URL fails once on its own
        assert resp.status == 500


async def test_slow_answers_late(base: str, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    async with session.get(f"{base}/slow/0") as resp:
        assert resp.status == 200
        await resp.read()
    assert 0.45 <= time.monotonic() - started <= 2.0


async def test_state_counts_hits_by_route(session: aiohttp.ClientSession) -> None:
    app = make_app(pages=20)
    async with TestServer(app) as server:
        for path in ("/", "/page/1", "/page/1", "/private/3", "/robots.txt", "/missing/1"):
            async with session.get(server.make_url(path)) as resp:
                await resp.read()
    assert app[DEMO_STATE].hits == Counter(
        {"index": 1, "page": 2, "private": 1, "robots": 1, "missing": 1}
    )


def test_make_app_checks_pages() -> None:
    with pytest.raises(ValueError, match="pages must be >= 1, got 0"):
        make_app(pages=0)


def test_demo_urls_content() -> None:
    urls = demo_urls("http://127.0.0.1:8080/")
    assert len(urls) == 2000
    assert urls == demo_urls("http://127.0.0.1:8080")  # deterministic, slash or not
    assert all(u.strip() and u == u.strip() and not u.startswith("#") for u in urls)

    assert urls.count("not a url") == 1
    assert sum(u.startswith("mailto:") for u in urls) == 1
    http = [u for u in urls if u.startswith("http://")]
    assert len(http) == 1998
    assert all(u.startswith("http://127.0.0.1:8080/") for u in http)

    kinds = Counter(u.split("/")[3] for u in http)
    assert kinds["page"] > 1800
    for kind in ("missing", "redirect", "slow", "error", "private"):
        assert 1 <= kinds[kind] <= 40, kind
    assert kinds["slow"] <= 10

    fragments = [u for u in http if "#" in u]
    assert len(fragments) == 1
    assert fragments[0].split("#")[0] in http  # the one duplicate, spelled differently
    assert len(set(http)) == len(http)
    assert all(int(u.rsplit("/", 1)[1]) < 2000 for u in http if "/page/" in u and "#" not in u)


def test_demo_urls_small_and_bounds() -> None:
    urls = demo_urls("http://h:1", count=10, pages=3)
    assert len(urls) == 10
    assert all(int(u.rsplit("/", 1)[1]) < 3 for u in urls if "/page/" in u and "#" not in u)
    with pytest.raises(ValueError, match="count must be >= 10, got 9"):
        demo_urls("http://h:1", count=9)
