"""``--extract`` and ``--extract-jsonld`` from the command line: items in the state, in the
records' ``items`` count and in ``shoal export --items``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.conftest import read_records, run_shoal, write_urls
from tests.integration.test_extract import catalogue, price
from tests.servers import site

pytestmark = pytest.mark.timeout(120)


async def test_crawl_with_extract_rules_exports_one_item_per_product(tmp_path: Path) -> None:
    routes = catalogue(10)
    for i in range(10):  # an attribute to read: the image of each product
        routes[f"/products/{i}"] = routes[f"/products/{i}"].replace(
            "</h1>", f'</h1><img class="main" src="/img/{i}.png">')
    out = tmp_path / "out.jsonl"
    async with site(routes) as srv:
        run = await run_shoal(
            "crawl", srv.url("/products?page=1"), "-o", str(out), "--quiet",
            "--extract", "name=h1", "--extract", "price=.price",
            "--extract", "image=img.main@src", "--extract-jsonld", "--max-depth", "3")
        assert run.code == 0, run.stderr
    records = read_records(out)
    by_path = {str(r["url"]).split(str(srv.port), 1)[1]: r for r in records}
    products = {f"/products/{i}" for i in range(10)}
    assert products <= set(by_path)  # every link is followed, as in any crawl
    assert all(by_path[p]["items"] == 1 for p in products)
    assert by_path["/products?page=1"]["items"] == 0  # no h1, no price, no JSON-LD
    assert all("items" in r for r in records)

    run = await run_shoal("export", f"{out}.state.db", "--format", "csv")
    header, *lines = list(csv.reader(io.StringIO(run.stdout, newline="")))
    assert header[-1] == "items" and sorted(int(r[-1]) for r in lines) == sorted(
        int(str(r["items"])) for r in records)
    run = await run_shoal("export", f"{out}.state.db", "--items", "--format", "csv")
    assert run.code == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout, newline="")))
    assert list(rows[0]) == ["url", "name", "price", "image", "jsonld"]
    got = {row["url"]: row for row in rows}
    assert set(got) == {srv.url(p) for p in products}
    for i in range(10):
        row = got[srv.url(f"/products/{i}")]
        assert (row["name"], row["price"], row["image"]) == (f"Product {i}", price(i),
                                                             f"/img/{i}.png")
        assert f'"sku":"SKU-{i:04d}"' in row["jsonld"]


async def test_fetch_with_extract_and_missing_fields(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with site(catalogue(3)) as srv:
        urls = write_urls(tmp_path / "urls.txt", [srv.url("/products/0"),
                                                 srv.url("/products?page=1"), "not a url",
                                                 "http://127.0.0.1:9/refused"])
        run = await run_shoal("fetch", str(urls), "-o", str(out), "--quiet", "--retries", "0",
                              "--extract", "name=h1", "--extract", "missing=.nothing@href")
        assert run.code == 0, run.stderr
    records = {r["url"]: r for r in read_records(out)}
    assert {u: r["items"] for u, r in records.items()} == {  # every record says how many
        srv.url("/products/0"): 1, srv.url("/products?page=1"): 0, "not a url": 0,
        "http://127.0.0.1:9/refused": 0}
    run = await run_shoal("export", f"{out}.state.db", "--items")
    lines = run.stdout.splitlines()
    assert lines == [f'{{"url":"{srv.url("/products/0")}","name":"Product 0","missing":null}}']


@pytest.mark.parametrize(("spec", "message"), [
    ("name", "expected NAME=SELECTOR"),
    ("name=", "expected NAME=SELECTOR"),
    ("=h1", "the name must be"),
    ("na me=h1", "the name must be"),
    ("name=h1 >", "is not a CSS selector"),
    ("url=h1", "'url' is a field shoal fills"),
])
async def test_bad_extract_rules_exit_2(spec: str, message: str, tmp_path: Path) -> None:
    urls = write_urls(tmp_path / "urls.txt", ["http://127.0.0.1:9/"])
    run = await run_shoal("fetch", str(urls), "-o", str(tmp_path / "o.jsonl"),
                          "--extract", spec)
    assert run.code == 2 and message in run.stderr, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("shoal: error: --extract")
    twice = await run_shoal("crawl", "http://127.0.0.1:9/", "--extract", "a=h1",
                            "--extract", "a=h2")
    assert twice.code == 2 and "given twice" in twice.stderr
