"""``--since``: conditional recrawls against loopback sites that serve ETags, Last-Modified,
or no validators at all, with pages changed between runs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from aiohttp import web

import shoal
from tests.conftest import postgres_url, read_records, run_shoal, write_urls
from tests.servers import Site, html_page, http_date, site

pytestmark = pytest.mark.timeout(120)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Pages:
    """A site whose pages change when the test says so. ``validators``: "etag", "lm" (both
    honoured on conditional requests), or neither. Counts what it sent."""

    def __init__(self, pages: dict[str, str], validators: set[str]) -> None:
        self.pages = dict(pages)
        self.modified = dict.fromkeys(pages, T0)
        self.validators = validators
        self.body_bytes = 0  # body bytes of 200 answers
        self.not_modified = 0
        self.conditional: list[dict[str, str | None]] = []

    def change(self, path: str, content: str) -> None:
        self.pages[path] = content
        self.modified[path] = self.modified.get(path, T0) + timedelta(hours=1)

    def routes(self) -> dict[str, Any]:
        return {path: self.handler for path in self.pages}

    async def handler(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path
        body = self.pages[path].encode()
        headers = {"Content-Type": "text/html; charset=utf-8"}
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        if "etag" in self.validators:
            headers["ETag"] = etag
        if "lm" in self.validators:
            headers["Last-Modified"] = http_date(self.modified[path])
        inm, ims = request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")
        if inm or ims:
            self.conditional.append({"path": path, "inm": inm, "ims": ims})
        fresh = False
        if "etag" in self.validators and inm is not None:
            fresh = inm == etag
        elif "lm" in self.validators and ims is not None:
            fresh = self.modified[path] <= parsedate_to_datetime(ims)
        if fresh:
            self.not_modified += 1
            return web.Response(status=304, headers=headers)
        self.body_bytes += len(body)
        return web.Response(status=200, body=body, headers=headers)


def by_path(records: list[dict[str, Any]], srv: Site) -> dict[str, dict[str, Any]]:
    return {str(r["url"]).split(str(srv.port), 1)[-1]: r for r in records}


@pytest.mark.parametrize("validators", [{"etag"}, {"lm"}, {"etag", "lm"}])
async def test_fetch_since_sends_validators_and_records_304_as_unchanged(
        tmp_path: Path, validators: set[str]) -> None:
    site_pages = Pages({f"/p/{i}": html_page(f"page {i}") for i in range(20)}, validators)
    async with site(site_pages.routes()) as srv:
        urls = write_urls(tmp_path / "urls.txt",
                          [srv.url(f"/p/{i}") for i in range(20)] + ["not a url"])
        runs = []
        for n in (1, 2, 3):
            if n == 2:
                site_pages.change("/p/3", html_page("page 3, new"))
                site_pages.change("/p/7", html_page("page 7, new"))
            out = tmp_path / f"run{n}.jsonl"
            since = [] if n == 1 else ["--since", f"{tmp_path}/run{n - 1}.jsonl.state.db"]
            sent_before = site_pages.body_bytes
            run = await run_shoal("fetch", str(urls), "-o", str(out), "--quiet", *since)
            assert run.code == 0, run.stderr
            runs.append((by_path(read_records(out), srv), site_pages.body_bytes - sent_before))
    (first, sent1), (second, sent2), (third, sent3) = runs
    assert all("changed" not in r for r in first.values())  # the plain record shape
    assert sent1 == sum(len(html_page(f"page {i}").encode()) for i in range(20))
    for path, rec in second.items():
        if path == "not a url":
            assert rec["changed"] is None and rec["error"]["kind"] == "invalid_url"
        elif path in ("/p/3", "/p/7"):
            assert (rec["status"], rec["changed"]) == (200, True)
            assert rec["title"].endswith(", new") and rec["sha256"] != first[path]["sha256"]
        else:
            assert (rec["status"], rec["changed"], rec["bytes"]) == (304, False, 0)
            for field in ("sha256", "title", "links", "content_type"):
                assert rec[field] == first[path][field], field
    assert sent2 == len(html_page("page 3, new").encode()) + len(
        html_page("page 7, new").encode())  # only what changed came
    # a third run against the second: nothing changed, nothing but 304s
    assert sent3 == 0
    assert all(r["changed"] is False and r["status"] == 304
               for p, r in third.items() if p != "not a url")
    assert third["/p/3"]["title"] == "page 3, new"
    assert len(site_pages.conditional) == 40  # every page of runs 2 and 3 asked
    # exports of a --since run have a typed `changed` column, after the others
    pq_out = tmp_path / "run2.parquet"
    run = await run_shoal("export", f"{tmp_path}/run2.jsonl.state.db", "--format", "parquet",
                          "-o", str(pq_out))
    assert run.code == 0, run.stderr
    table = pq.read_table(pq_out)
    assert table.schema.names[-1] == "changed" and str(table.schema.field("changed").type) \
        == "bool" and "items" not in table.schema.names
    assert sorted(table.column("changed").to_pylist(), key=str) == sorted(
        [r["changed"] for r in second.values()], key=str)
    run = await run_shoal("export", f"{tmp_path}/run1.jsonl.state.db", "--format", "csv")
    assert run.stdout.splitlines()[0].endswith(",fetched_at")  # a plain run: no new column
    for ask in site_pages.conditional:
        assert (ask["inm"] is not None) == ("etag" in validators)
        assert (ask["ims"] is not None) == ("lm" in validators)


async def test_without_validators_changed_comes_from_the_content_hash(tmp_path: Path) -> None:
    site_pages = Pages({f"/p/{i}": html_page(f"page {i}") for i in range(6)}, set())
    async with site(site_pages.routes()) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(6)]
        async with shoal.Crawler(shoal.Config(robots=False), state=tmp_path / "a.db") as c:
            first = {r.url: r async for r in c.fetch(urls)}
        site_pages.change("/p/2", html_page("page 2 edited"))
        async with shoal.Crawler(shoal.Config(robots=False), state=tmp_path / "b.db") as c:
            second = {r.url: r async for r in c.fetch(urls, since=tmp_path / "a.db")}
    assert not site_pages.conditional  # nothing to send
    assert {u: (r.status, r.changed) for u, r in second.items()} == {
        u: (200, u.endswith("/p/2")) for u in urls}
    assert all(r.changed is None and not r.recrawl for r in first.values())
    line = second[urls[0]].to_dict()
    assert list(line)[-1] == "changed" and line["changed"] is False


async def test_a_crawl_since_an_unchanged_site_transfers_almost_nothing(tmp_path: Path) -> None:
    # a tree: / -> /s/0..3 -> /s/i/0..4 (25 pages), served with ETags
    pages = {"/": html_page("home", [f"/s/{i}" for i in range(4)])}
    for i in range(4):
        pages[f"/s/{i}"] = html_page(f"section {i}", [f"/s/{i}/{j}" for j in range(5)])
        for j in range(5):
            pages[f"/s/{i}/{j}"] = html_page(f"leaf {i}.{j}", ["/"])
    pages["/new"] = html_page("a page nobody links to yet")
    site_pages = Pages(pages, {"etag"})
    config = shoal.Config(robots=False)
    async with site(site_pages.routes()) as srv:
        async with shoal.Crawler(config, state=tmp_path / "1.db") as c:
            first = {r.url: r async for r in c.crawl([srv.url("/")])}
        assert len(first) == 25 and site_pages.body_bytes > 0
        site_pages.body_bytes = 0
        async with shoal.Crawler(config, state=tmp_path / "2.db") as c:
            second = {r.url: r async for r in c.crawl([srv.url("/")], since=tmp_path / "1.db")}
        # the whole site is revisited although no 304 carries a link
        assert set(second) == set(first)
        assert site_pages.body_bytes == 0 and site_pages.not_modified == 25
        assert all(r.status == 304 and r.changed is False for r in second.values())
        assert {u: (r.depth, r.parent) for u, r in second.items()} == {
            u: (r.depth, r.parent) for u, r in first.items()}
        # a section changes and links to a new page: found, fetched, marked changed
        site_pages.change("/s/2", html_page("section 2 v2", [*(f"/s/2/{j}" for j in range(5)),
                                                             "/new"]))
        async with shoal.Crawler(config, state=tmp_path / "3.db") as c:
            third = {r.url: r async for r in c.crawl([srv.url("/")], since=tmp_path / "2.db")}
    assert set(third) == set(first) | {srv.url("/new")}
    changed = sorted(u for u, r in third.items() if r.changed)
    assert changed == sorted([srv.url("/s/2"), srv.url("/new")])
    assert third[srv.url("/new")].depth == 2


async def test_bad_since_exits_2(tmp_path: Path) -> None:
    urls = write_urls(tmp_path / "urls.txt", ["http://127.0.0.1:9/"])
    out = tmp_path / "o.jsonl"
    run = await run_shoal("fetch", str(urls), "-o", str(out), "--no-robots", "--retries", "0")
    assert run.code == 0
    cases = [
        (["--since", str(tmp_path / "missing.db")], "no such state database"),
        (["--since", str(urls)], "not a shoal state database"),
        (["--since", "postgresql://x@127.0.0.1/db"], "name the earlier job after '#'"),
        (["--since", "postgresql://x@127.0.0.1:9/db#job"], "cannot read it"),
        (["--since", f"{out}.state.db"], "this run's own state"),
    ]
    for args, message in cases:
        run = await run_shoal("fetch", str(urls), "-o", str(out), *args)
        assert run.code == 2 and message in run.stderr, (args, run.stderr)
        assert run.stderr.count("\n") == 1


async def test_since_a_postgres_job(tmp_path: Path) -> None:
    import uuid

    import asyncpg  # type: ignore[import-untyped]

    dsn = postgres_url()
    jobs = ["r" + uuid.uuid4().hex[:12] for _ in range(2)]
    site_pages = Pages({f"/p/{i}": html_page(f"page {i}") for i in range(10)}, {"etag"})
    try:
        async with site(site_pages.routes()) as srv:
            urls = write_urls(tmp_path / "urls.txt", [srv.url(f"/p/{i}") for i in range(10)])
            base = ["fetch", str(urls), "--quiet", "--db", dsn]
            run = await run_shoal(*base, "-o", str(tmp_path / "1.jsonl"), "--job", jobs[0])
            assert run.code == 0, run.stderr
            site_pages.change("/p/5", html_page("page 5 edited"))
            run = await run_shoal(*base, "-o", str(tmp_path / "2.jsonl"), "--job", jobs[1],
                                  "--since", f"{dsn}#{jobs[0]}")
            assert run.code == 0, run.stderr
            for since, message in ((f"{dsn}#{jobs[1]}", "this run's own state"),
                                   (f"{dsn}#nosuchjob", "no such job"),
                                   (dsn, "name the earlier job")):
                bad = await run_shoal(*base, "-o", str(tmp_path / "2.jsonl"), "--job", jobs[1],
                                      "--since", since)
                assert bad.code == 2 and message in bad.stderr, bad.stderr
            # from Python, against the second job (whose 304 rows kept their validators)
            async with shoal.Crawler(shoal.Config(robots=False), state=tmp_path / "3.db") as c:
                third = [r async for r in c.fetch([srv.url(f"/p/{i}") for i in range(10)],
                                                  since=f"{dsn}#{jobs[1]}")]
        second = by_path(read_records(tmp_path / "2.jsonl"), srv)
        assert {p: (r["status"], r["changed"]) for p, r in second.items()} == {
            f"/p/{i}": (200, True) if i == 5 else (304, False) for i in range(10)}
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            for job in jobs:
                await conn.execute(f'DROP SCHEMA IF EXISTS "shoal_{job}" CASCADE')
        finally:
            await conn.close()
    assert [r.status for r in third] == [304] * 10
