"""The examples in examples/ run as a user runs them, and do what they say."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from warcio.archiveiterator import ArchiveIterator  # type: ignore[import-untyped]

pytestmark = pytest.mark.timeout(180)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def run_example(name: str, *args: str, cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / name), *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 150)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_the_catalogue_example_scrapes_every_product_into_parquet(tmp_path: Path) -> None:
    out = await run_example("catalogue.py", "--out", "products.parquet", "--products", "57",
                            "--state", "run.db", cwd=tmp_path)
    assert "crawled 63 pages (0 failed), wrote 57 products to products.parquet" in out
    table = pq.read_table(tmp_path / "products.parquet")
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("sku", "string"), ("name", "string"), ("price", "double"), ("currency", "string"),
        ("in_stock", "bool"), ("url", "string")]
    sys.path.insert(0, str(EXAMPLES))
    try:
        import shop_site
    finally:
        sys.path.remove(str(EXAMPLES))
    rows = sorted(table.to_pylist(), key=lambda r: r["sku"])
    assert [(r["sku"], r["name"], r["price"], r["in_stock"]) for r in rows] == [
        (f"SKU-{i:05d}", f"Product {i}", shop_site.price(i), i % 7 != 0) for i in range(57)]


def warc_statuses(path: Path) -> Counter[str]:
    with open(path, "rb") as fh:
        return Counter(rec.http_headers.get_statuscode() for rec in
                       ArchiveIterator(fh, check_digests="raise") if rec.rec_type == "response")


async def test_the_archive_example_archives_and_recrawls_only_what_changed(
        tmp_path: Path) -> None:
    out = await run_example("archive.py", "--dir", "arch", cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("day 1: 67 pages") and "holds 67 responses" in lines[0]
    assert "65 unchanged (304), changed: products/3, products/4" in lines[1]
    day1, day2 = tmp_path / "arch" / "shop.warc.gz", tmp_path / "arch" / "shop-00001.warc.gz"
    assert warc_statuses(day1) == Counter({"200": 67})
    assert warc_statuses(day2) == Counter({"304": 65, "200": 2})
