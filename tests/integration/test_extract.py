"""Route handlers against generated loopback catalogue sites: items, follows, failures,
worker processes and cancellation."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

import shoal
from tests.servers import Site, html_page, site

pytestmark = pytest.mark.timeout(120)

FAST = shoal.Config(concurrency=20, per_host=20, timeout=10)
LISTING = r"/products\?page=\d+$"
PRODUCT = r"/products/\d+$"


def price(i: int) -> str:
    return f"{10 + i * 1.25:.2f}"


def catalogue(n: int = 30, per_page: int = 7) -> dict[str, str]:
    """Listing pages ``/products?page=P`` (products, pagination, an ad) and product pages
    ``/products/I`` (name, price, JSON-LD, OpenGraph, links nobody should follow)."""
    routes: dict[str, str] = {}
    pages = (n + per_page - 1) // per_page
    for p in range(1, pages + 1):
        items = "".join(f'<li><a class="product" href="/products/{i}">P{i}</a></li>'
                        for i in range((p - 1) * per_page, min(n, p * per_page)))
        nxt = f'<a href="/products?page={p + 1}">next</a>' if p < pages else ""
        routes[f"/products?page={p}"] = (
            f"<!doctype html><html><head><title>Page {p}</title></head><body>"
            f'<ul>{items}</ul><nav class="pagination">{nxt}</nav>'
            f'<a href="/ads/{p}">buy now</a></body></html>')
    for i in range(n):
        jsonld = orjson.dumps({"@context": "https://schema.org", "@type": "Product",
                               "sku": f"SKU-{i:04d}", "name": f"Product {i}"}).decode()
        routes[f"/products/{i}"] = (
            f'<!doctype html><html><head><title>Product {i}</title>'
            f'<meta property="og:title" content="OG {i}">'
            f'<script type="application/ld+json">{jsonld}</script></head><body>'
            f'<h1> Product {i} </h1><span class="price">{price(i)}</span>'
            f'<a href="/products/{i}/reviews">reviews</a><a href="/ads/x{i}">ad</a>'
            "</body></html>")
    return routes


def items_of(state: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(state)
    try:
        return [orjson.loads(b) for (b,) in db.execute("SELECT item FROM items ORDER BY id")]
    finally:
        db.close()


def add_listing(crawler: shoal.Crawler) -> None:
    @crawler.route(LISTING)
    async def listing(page: shoal.Page) -> Any:
        for href in page.links("a.product"):
            yield page.follow(href)
        for href in page.links(".pagination a"):
            yield page.follow(href)


def requested(srv: Site) -> Counter[str]:
    return Counter(p for p in srv.log.paths() if p != "/robots.txt")


async def test_handlers_yield_items_and_decide_what_is_followed(tmp_path: Path) -> None:
    state = tmp_path / "run.db"
    async with site(catalogue(30)) as srv:
        async with shoal.Crawler(FAST, state=state) as crawler:
            add_listing(crawler)

            @crawler.route(PRODUCT)
            async def product(page: shoal.Page) -> Any:
                h1, tag = page.css_first("h1"), page.css_first(".price")
                assert h1 is not None and tag is not None
                yield {"url": page.url, "name": h1.text(strip=True),
                       "price": float(tag.text()), "sku": page.jsonld()[0]["sku"],
                       "og": page.opengraph()["title"]}

            records = [r async for r in crawler.crawl([srv.url("/products?page=1")])]
        paths = requested(srv)
    products = {f"/products/{i}" for i in range(30)}
    listings = {f"/products?page={p}" for p in range(1, 6)}
    assert set(paths) == products | listings  # no ads, no reviews: handlers chose
    assert max(paths.values()) == 1
    by_path = {r.url.split(str(srv.port), 1)[1]: r for r in records}
    assert all(r.error is None and r.status == 200 for r in records)
    assert {p: r.items for p, r in by_path.items()} == {
        **dict.fromkeys(products, 1), **dict.fromkeys(listings, 0)}
    assert all("items" in r.to_dict() for r in records)
    got = items_of(state)
    assert sorted(got, key=lambda x: x["sku"]) == [
        {"url": srv.url(f"/products/{i}"), "name": f"Product {i}", "price": float(price(i)),
         "sku": f"SKU-{i:04d}", "og": f"OG {i}"} for i in range(30)]
    # items come in record order
    order = [r.url for r in records if r.items]
    assert [x["url"] for x in got] == order


async def test_items_are_read_back_from_python_even_with_a_temporary_state() -> None:
    async with site(catalogue(9)) as srv, shoal.Crawler(FAST) as crawler:
        add_listing(crawler)

        @crawler.route(PRODUCT)
        async def product(page: shoal.Page) -> Any:
            yield {"url": page.url}

        with pytest.raises(shoal.UsageError, match="fetch or crawl first"):
            _ = [x async for x in crawler.items()]
        records = [r async for r in crawler.crawl([srv.url("/products?page=1")])]
        got = [x["url"] async for x in crawler.items()]
    assert got == [r.url for r in records if r.items]
    assert sorted(got) == sorted(srv.url(f"/products/{i}") for i in range(9))


async def test_an_exception_in_a_handler_is_the_page_error_not_a_dead_crawl(
        tmp_path: Path) -> None:
    state = tmp_path / "run.db"
    async with site(catalogue(20)) as srv, shoal.Crawler(FAST, state=state) as crawler:
        add_listing(crawler)

        @crawler.route(PRODUCT)
        async def product(page: shoal.Page) -> Any:
            n = int(page.url.rsplit("/", 1)[1])
            yield {"n": n}  # yielded before failing: dropped with the page
            if n % 5 == 0:
                raise KeyError(f"no price on {n}")
            if n % 5 == 1:
                yield 42  # not an item
            if n % 5 == 2:
                yield {"bad": object()}  # not JSON

        records = [r async for r in crawler.crawl([srv.url("/products?page=1")])]
    assert len(records) == 20 + 3
    failed = {int(r.url.rsplit("/", 1)[1]): r for r in records if r.error is not None}
    assert set(failed) == {n for n in range(20) if n % 5 in (0, 1, 2)}
    for n, r in failed.items():
        assert r.error is not None and r.error.kind is shoal.ErrorKind.HANDLER
        assert r.status == 200 and r.title == f"Product {n}"
        line = orjson.loads(r.to_json())
        assert line["error"]["kind"] == "handler"
    assert "KeyError: 'no price on 0'" in failed[0].error.message  # type: ignore[union-attr]
    assert "yielded int" in failed[1].error.message  # type: ignore[union-attr]
    assert "JSON" in failed[2].error.message  # type: ignore[union-attr]
    assert sorted(x["n"] for x in items_of(state)) == [n for n in range(20) if n % 5 > 2]


async def test_a_slow_handler_is_cut_at_the_timeout() -> None:
    config = FAST.replace(timeout=1)
    async with site({"/slow": html_page("slow"), "/ok": html_page("ok")}) as srv, \
            shoal.Crawler(config) as crawler:
        @crawler.route(r"/slow$")
        async def slow(page: shoal.Page) -> Any:
            await asyncio.sleep(30)
            yield {}

        @crawler.route(r"/ok$")
        def plain(page: shoal.Page) -> list[dict[str, str]]:  # a plain function works too
            return [{"title": page.css_first("title").text()}]  # type: ignore[union-attr]

        records = {r.url: r async for r in crawler.fetch([srv.url("/slow"),
                                                          srv.url("/ok")])}
    slow_rec = records[srv.url("/slow")]
    assert slow_rec.error is not None and slow_rec.error.kind is shoal.ErrorKind.HANDLER
    assert "longer than --timeout" in slow_rec.error.message
    assert records[srv.url("/ok")].error is None and records[srv.url("/ok")].items == 1


def cpu_product(page: shoal.Page) -> Any:
    """A handler for a worker process: module level, so it pickles by name."""
    h1 = page.css_first("h1")
    assert h1 is not None
    yield {"name": h1.text(strip=True), "pid": os.getpid()}
    yield page.follow("../products/0")
    if page.url.endswith("/3"):
        raise RuntimeError("boom in a worker")


async def test_cpu_handlers_run_in_worker_processes(tmp_path: Path) -> None:
    state = tmp_path / "run.db"
    async with site(catalogue(8)) as srv, shoal.Crawler(FAST, state=state) as crawler:
        add_listing(crawler)
        crawler.route(PRODUCT, cpu=True)(cpu_product)
        records = [r async for r in crawler.crawl([srv.url("/products?page=1")])]
    got = items_of(state)
    assert sorted(x["name"] for x in got) == sorted(f"Product {i}" for i in range(8) if i != 3)
    assert all(x["pid"] != os.getpid() for x in got)
    failed = [r for r in records if r.error is not None]
    assert [r.url for r in failed] == [srv.url("/products/3")]
    assert failed[0].error is not None and "RuntimeError: boom in a worker" in (
        failed[0].error.message)


def test_cpu_handlers_must_be_plain_module_level_functions() -> None:
    crawler = shoal.Crawler()

    async def agen(page: shoal.Page) -> Any:
        yield {}

    with pytest.raises(shoal.ConfigError, match="plain"):
        crawler.route("x", cpu=True)(agen)
    with pytest.raises(shoal.ConfigError, match="module-level"):
        crawler.route("x", cpu=True)(lambda page: [])
    with pytest.raises(shoal.ConfigError, match="does not compile"):
        crawler.route("(")(agen)


async def test_fetch_with_handlers_keeps_items_and_ignores_follows(tmp_path: Path) -> None:
    state = tmp_path / "run.db"
    async with site(catalogue(4)) as srv:
        async with shoal.Crawler(FAST, state=state) as crawler:
            @crawler.route(PRODUCT)
            async def product(page: shoal.Page) -> Any:
                yield {"url": page.url}
                yield page.follow("/products/99")

            records = [r async for r in crawler.fetch([srv.url(f"/products/{i}")
                                                       for i in range(4)])]
        paths = requested(srv)
    assert sorted(r.items or 0 for r in records) == [1, 1, 1, 1]
    assert "/products/99" not in paths
    assert sorted(x["url"] for x in items_of(state)) == sorted(
        srv.url(f"/products/{i}") for i in range(4))


async def test_cancelling_a_crawl_with_handlers_running_is_clean(tmp_path: Path) -> None:
    state = tmp_path / "run.db"
    entered = asyncio.Event()
    running: set[str] = set()
    closed: list[str] = []

    async with site(catalogue(12)) as srv:
        async def first_run() -> None:
            async with shoal.Crawler(FAST, state=state) as crawler:
                add_listing(crawler)

                @crawler.route(PRODUCT)
                async def stuck(page: shoal.Page) -> Any:
                    running.add(page.url)
                    entered.set()
                    try:
                        yield {"url": page.url, "run": 1}
                        await asyncio.Event().wait()  # never set
                    finally:
                        closed.append(page.url)

                async for _ in crawler.crawl([srv.url("/products?page=1")]):
                    pass

        task = asyncio.create_task(first_run())
        await asyncio.wait_for(entered.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        assert running and sorted(closed) == sorted(running)  # every generator was closed

        async with shoal.Crawler(FAST, state=state) as crawler:
            add_listing(crawler)

            @crawler.route(PRODUCT)
            async def product(page: shoal.Page) -> Any:
                yield {"url": page.url, "run": 2}

            rerun = [r async for r in crawler.crawl([srv.url("/products?page=1")])]
    db = sqlite3.connect(state)
    lines = [orjson.loads(b) for (b,) in db.execute("SELECT record FROM urls WHERE seq > 0")]
    db.close()
    urls = Counter(line["url"] for line in lines)
    assert len(urls) == 12 + 2 and max(urls.values()) == 1
    got = items_of(state)
    assert sorted(x["url"] for x in got) == sorted(srv.url(f"/products/{i}") for i in range(12))
    assert {x["run"] for x in got} == {2}  # nothing of a page whose record was not written
    assert rerun
