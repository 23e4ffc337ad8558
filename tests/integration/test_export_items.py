"""``shoal export --items``: items read back from JSONL, CSV and Parquet, typed columns,
stable column order, old states, and memory bounded by the batch."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

import shoal
from shoal.store.sqlite import MIGRATIONS, SqliteStore, migrate
from tests.conftest import run_shoal
from tests.integration.test_export import _peak_rss_mb
from tests.servers import html_page, site

pytestmark = pytest.mark.timeout(180)


# what the handler yields for page i: keys come and go, types mix
def item(i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": i, "name": f"Café «{i}», \"quoted\"\nline"}
    out["price"] = i * 2 if i % 2 else i + 0.5  # int and float: a float column
    if i % 3 == 0:
        out["tags"] = ["a", {"b": i}]  # nested: JSON text
    out["mixed"] = "x" if i % 4 == 0 else i  # str and int: text
    out["ok"] = i % 2 == 0
    out["none"] = None
    if i == 5:
        out["late"] = "only here"  # a key that first appears late: a column at the end
    return out


async def _state(tmp: Path, n: int = 12) -> Path:
    state = tmp / "items.db"
    async with site({f"/i/{i}": html_page(f"item {i}") for i in range(n)}) as srv, \
            shoal.Crawler(shoal.Config(robots=False), state=state) as crawler:
        @crawler.route(r"/i/\d+$")
        async def handler(page: shoal.Page) -> Any:
            yield item(int(page.url.rsplit("/", 1)[1]))

        records = [r async for r in crawler.fetch([srv.url(f"/i/{i}") for i in range(n)])]
    order = [int(r.url.rsplit("/", 1)[1]) for r in records]
    assert sorted(order) == list(range(n))
    return state


def _in_order(state: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(state)
    try:
        return [orjson.loads(b) for (b,) in db.execute("SELECT item FROM items ORDER BY id")]
    finally:
        db.close()


COLUMNS = ["n", "name", "price", "tags", "mixed", "ok", "none", "late"]


async def test_items_round_trip_through_every_format(tmp_path: Path) -> None:
    state = await _state(tmp_path)
    want = _in_order(state)
    assert sorted(x["n"] for x in want) == list(range(12))
    out = tmp_path / "items.jsonl"
    run = await run_shoal("export", str(state), "--items", "-o", str(out))
    assert run.code == 0 and "exported 12 items" in run.stderr, run.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == want

    run = await run_shoal("export", str(state), "--items", "--format", "csv")
    assert run.code == 0, run.stderr
    rows = list(csv.reader(io.StringIO(run.stdout, newline="")))
    header, body = rows[0], rows[1:]
    seen: dict[str, None] = {}
    for x in want:
        seen.update(dict.fromkeys(x))
    assert header == list(seen)  # keys in order of first appearance
    assert sorted(header) == sorted(COLUMNS) and header[:3] == ["n", "name", "price"]
    for x, row in zip(want, body, strict=True):
        cells = dict(zip(header, row, strict=True))
        assert cells["name"] == x["name"] and cells["n"] == str(x["n"])
        assert cells["none"] == "" and cells["late"] == x.get("late", "")
        assert cells["ok"] == ("true" if x["ok"] else "false")
        assert cells["tags"] == ("" if "tags" not in x else
                                 json.dumps(x["tags"], separators=(",", ":")))
    again = await run_shoal("export", str(state), "--items", "--format", "csv")
    assert again.stdout == run.stdout  # stable

    pq_out = tmp_path / "items.parquet"
    run = await run_shoal("export", str(state), "--items", "--format", "parquet",
                          "-o", str(pq_out))
    assert run.code == 0, run.stderr
    table = pq.read_table(pq_out)
    types = {f.name: f.type for f in table.schema}
    assert types == {"n": pa.int64(), "name": pa.string(), "price": pa.float64(),
                     "tags": pa.string(), "mixed": pa.string(), "ok": pa.bool_(),
                     "none": pa.string(), "late": pa.string()}
    assert list(types) == header
    got = table.to_pylist()
    for x, row in zip(want, got, strict=True):
        assert row["n"] == x["n"] and row["name"] == x["name"]
        assert row["price"] == float(x["price"]) and row["ok"] is x["ok"]
        assert row["mixed"] == (x["mixed"] if isinstance(x["mixed"], str) else str(x["mixed"]))
        assert row["tags"] == (None if "tags" not in x else
                               json.dumps(x["tags"], separators=(",", ":")))
        assert row["none"] is None and row["late"] == x.get("late")


async def test_no_items_and_old_states(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    store = SqliteStore(empty)
    await store.open()
    await store.close()
    run = await run_shoal("export", str(empty), "--items")
    assert (run.code, run.stdout) == (0, "") and "exported 0 items" in run.stderr
    out = tmp_path / "e.parquet"
    run = await run_shoal("export", str(empty), "--items", "--format", "parquet", "-o", str(out))
    assert run.code == 0 and pq.read_table(out).num_rows == 0

    old = tmp_path / "old.db"
    db = sqlite3.connect(old, isolation_level=None)
    migrate(db, MIGRATIONS[:2], str(old))
    db.close()
    run = await run_shoal("export", str(old), "--items", "-o", str(tmp_path / "x.jsonl"))
    assert run.code == 2 and "holds no items" in run.stderr and run.stderr.count("\n") == 1
    assert not (tmp_path / "x.jsonl").exists()


async def _synthetic_items(path: Path, n: int) -> Path:
    store = SqliteStore(path)
    await store.open()
    await store.close()
    text = "some long extracted description " * 20
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=MEMORY")
        db.execute("PRAGMA synchronous=OFF")
        db.executemany("INSERT INTO items (id, url_id, item) VALUES (?, ?, ?)", (
            (i + 1, i, orjson.dumps({"url": f"https://h.example/p/{i}", "n": i,
                                     "price": i / 3, "text": text, "ok": i % 2 == 0}))
            for i in range(n)))
        db.commit()
        db.execute("PRAGMA journal_mode=WAL")
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KB on Linux")
async def test_items_export_memory_is_bounded_by_the_batch(tmp_path: Path) -> None:
    small = await _synthetic_items(tmp_path / "small.db", 1_000)
    big = await _synthetic_items(tmp_path / "big.db", 200_000)
    formats = ("jsonl", "csv", "parquet")
    peaks = [await _peak_rss_mb("export", str(state), "--items", "--format", fmt,
                                "-o", f"{state}.{fmt}")
             for state in (small, big) for fmt in formats]
    growth = {fmt: peaks[3 + i] - peaks[i] for i, fmt in enumerate(formats)}
    print(f"items: peak RSS growth 1k -> 200k items (~140 MB): {growth}")
    assert all(g < 100 for g in growth.values()), growth
    meta = pq.ParquetFile(f"{big}.parquet").metadata
    assert meta.num_rows == 200_000 and meta.num_row_groups == math.ceil(200_000 / 10_000)
    with open(f"{big}.csv", encoding="utf-8") as fh:
        assert sum(1 for _ in fh) == 200_001
