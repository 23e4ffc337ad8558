"""`shoal export`: records of a real state database as JSON lines, CSV and Parquet."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web

import shoal
from shoal.export import export_records
from shoal.records import Record
from shoal.store.sqlite import SqliteStore
from tests.conftest import read_records, run_shoal, shoal_cmd, write_urls
from tests.servers import binary, html_page, redirect, site

pytestmark = pytest.mark.timeout(120)

COLUMNS = ["url", "final_url", "status", "error_kind", "error_message", "content_type",
           "bytes", "elapsed_ms", "attempts", "depth", "parent", "redirects", "title",
           "links", "sha256", "fetched_at"]
SCHEMA = pa.schema([
    pa.field("url", pa.string(), nullable=False),
    ("final_url", pa.string()), ("status", pa.int32()), ("error_kind", pa.string()),
    ("error_message", pa.string()), ("content_type", pa.string()), ("bytes", pa.int64()),
    ("elapsed_ms", pa.float64()), ("attempts", pa.int32()), ("depth", pa.int32()),
    ("parent", pa.string()), ("redirects", pa.list_(pa.string())), ("title", pa.string()),
    ("links", pa.int32()), ("sha256", pa.string()),
    ("fetched_at", pa.timestamp("ms", tz="UTC")),
])


@dataclass
class States:
    output: Path  # the JSONL a `shoal fetch` run wrote
    fetch: Path  # its state database
    crawl: Path  # the state of a crawl (records carry `parent`)


def _routes() -> dict[str, Any]:
    async def boom(request: web.Request) -> web.Response:
        return web.Response(status=500, text="no")

    return {
        **{f"/p/{i}": html_page(f"Page {i}", [f"/p/{i + 1}", "/gone", "/moved"])
           for i in range(4)},
        "/p/4": html_page('Café, "quoted", and a comma', ["/p/0"]),
        "/moved": redirect("/p/1", 301),
        "/hop": redirect("/moved"),
        "/boom": boom,
        "/bin": binary(),  # any other path: 404 from the site
    }


async def _make_states(tmp: Path) -> States:
    async with site(_routes()) as srv:
        urls = [srv.url(p) for p in ("/p/0", "/p/1", "/p/2", "/p/3", "/p/4", "/gone",
                                      "/moved", "/hop", "/boom", "/bin")]
        inp = write_urls(tmp / "urls.txt", [*urls, "not a url", "ftp://example.com/x"])
        output = tmp / "out.jsonl"
        run = await run_shoal("fetch", str(inp), "-o", str(output), "--no-robots",
                              "--retries", "0", "--quiet")
        assert run.code == 0, run.stderr
        crawl_state = tmp / "crawl.db"
        async with shoal.Crawler(shoal.Config(robots=False, retry=shoal.RetryPolicy(retries=0)),
                                 state=crawl_state) as crawler:
            crawled = [r async for r in crawler.crawl([srv.url("/p/0")])]
    assert len(crawled) >= 7 and any(r.parent for r in crawled)
    return States(output=output, fetch=Path(f"{output}.state.db"), crawl=crawl_state)


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> States:
    return asyncio.run(_make_states(tmp_path_factory.mktemp("export")))


def _stored(state: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT record FROM urls WHERE seq IS NOT NULL ORDER BY seq")
        return [json.loads(line) for (line,) in rows]


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    error = record["error"] or {}
    return {**{c: record.get(c) for c in COLUMNS},
            "error_kind": error.get("kind"), "error_message": error.get("message")}


# ------------------------------------------------------------------------------ jsonl

async def test_jsonl_export_is_byte_identical_to_the_runs_output(states: States,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    run = await run_shoal("export", str(states.fetch), "--format", "jsonl", "-o", str(out))
    assert run.code == 0, run.stderr
    assert out.read_bytes() == states.output.read_bytes()
    records = read_records(out)
    assert len(records) == 12
    assert run.stderr == f"shoal: exported 12 records to {out}\n"

    to_stdout = await run_shoal("export", str(states.fetch))  # jsonl is the default
    assert to_stdout.code == 0, to_stdout.stderr
    assert to_stdout.stdout.encode() == states.output.read_bytes()
    assert "exported 12 records to standard output" in to_stdout.stderr


def test_the_fetch_state_covers_every_kind_of_record(states: States) -> None:
    recs = {r["url"].rsplit("/", 1)[-1]: r for r in _stored(states.fetch)}
    assert recs["gone"]["status"] == 404 and recs["gone"]["error"] is None
    assert recs["boom"]["error"]["kind"] == "http" and recs["boom"]["status"] == 500
    assert len(recs["hop"]["redirects"]) == 2  # /hop -> /moved -> /p/1
    assert recs["not a url"]["error"]["kind"] == "invalid_url"
    assert recs["not a url"]["final_url"] is None and recs["not a url"]["status"] is None
    assert recs["4"]["title"] == 'Café, "quoted", and a comma'


# ------------------------------------------------------------------------------ csv

@pytest.mark.parametrize("which", ["fetch", "crawl"])
async def test_csv_round_trip(states: States, tmp_path: Path, which: str) -> None:
    state = getattr(states, which)
    out = tmp_path / "x.csv"
    run = await run_shoal("export", str(state), "--format", "csv", "-o", str(out))
    assert run.code == 0, run.stderr
    data = out.read_bytes()
    assert data.startswith(b",".join(c.encode() for c in COLUMNS) + b"\n")
    assert b"\r" not in data
    with out.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        assert next(reader) == COLUMNS
        rows = list(reader)
    records = _stored(state)
    assert len(rows) == len(records) == int(run.stderr.split()[2])
    for row, record in zip(rows, records, strict=True):
        got = dict(zip(COLUMNS, row, strict=True))
        want = _flat(record)
        assert json.loads(got.pop("redirects")) == want.pop("redirects")
        assert got == {c: "" if v is None else str(v) for c, v in want.items()}
    if which == "crawl":
        assert any(r["parent"] for r in records) and all("parent" in r for r in records)


async def test_csv_to_standard_output(states: States) -> None:
    run = await run_shoal("export", str(states.fetch), "--format", "csv", "-o", "-")
    assert run.code == 0, run.stderr
    rows = list(csv.reader(io.StringIO(run.stdout, newline="")))
    assert rows[0] == COLUMNS and len(rows) == 13
    by_url = {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in rows[1:]}
    gone = next(v for k, v in by_url.items() if k.endswith("/gone"))
    assert (gone["status"], gone["error_kind"], gone["error_message"]) == ("404", "", "")
    invalid = by_url["not a url"]
    assert invalid["status"] == "" and invalid["error_kind"] == "invalid_url"
    assert invalid["error_message"] and invalid["redirects"] == "[]"


# ------------------------------------------------------------------------------ parquet

@pytest.mark.parametrize("which", ["fetch", "crawl"])
async def test_parquet_round_trip(states: States, tmp_path: Path, which: str) -> None:
    state = getattr(states, which)
    out = tmp_path / "x.parquet"
    run = await run_shoal("export", str(state), "--format", "parquet", "-o", str(out))
    assert run.code == 0, run.stderr
    table = pq.read_table(out)
    assert table.schema.remove_metadata() == SCHEMA
    assert table.schema.field("url").nullable is False
    assert pq.ParquetFile(out).metadata.row_group(0).column(0).compression == "ZSTD"
    records = _stored(state)
    assert table.num_rows == len(records)
    for row, record in zip(table.to_pylist(), records, strict=True):
        want = _flat(record)
        assert row.pop("fetched_at") == datetime.fromisoformat(want.pop("fetched_at"))
        assert row == want
    if which == "crawl":
        assert table.column("parent").null_count < table.num_rows


def test_parquet_writes_one_row_group_per_batch(states: States, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    n = export_records(str(states.fetch), "parquet", str(out), batch=5)
    assert n == 12
    meta = pq.ParquetFile(out).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [5, 5, 2]


# ------------------------------------------------------------------------------ errors

async def test_usage_errors_exit_2_with_one_line(states: States, tmp_path: Path) -> None:
    not_shoal = tmp_path / "other.db"
    with sqlite3.connect(not_shoal) as db:
        db.execute("CREATE TABLE t (x)")
    text = write_urls(tmp_path / "urls.txt", ["http://example.com/"])
    cases = [
        (["export", str(tmp_path / "missing.db")], "does not exist"),
        (["export", str(not_shoal)], "is not a shoal state database"),
        (["export", str(text)], "is not a shoal state database"),
        (["export", str(states.fetch), "--format", "parquet"], "standard output"),
        (["export", str(states.fetch), "--format", "parquet", "-o", "-"], "standard output"),
        (["export", str(states.fetch), "-o", str(tmp_path / "no" / "x.jsonl")],
         "No such file or directory"),
        (["export", str(states.fetch), "-o", str(states.fetch)], "refusing to overwrite"),
        (["export", str(states.fetch), "--format", "xml"], "'xml' is not one of"),
    ]
    for args, message in cases:
        run = await run_shoal(*args)
        assert run.code == 2, (args, run.stderr)
        assert run.stderr.startswith("shoal: error: ") and message in run.stderr, args
        assert run.stderr.count("\n") == 1 and run.stdout == "", args
    assert _stored(states.fetch)  # the state survived the attempt to overwrite it


async def test_a_broken_record_fails_cleanly_and_leaves_no_partial_file(tmp_path: Path) -> None:
    state = await _synthetic_state(tmp_path / "s.db", 50)
    with sqlite3.connect(state) as db:
        db.execute("UPDATE urls SET record = CAST('{\"url\": tru' AS BLOB) WHERE seq = 30")
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"x.{fmt}"
        run = await run_shoal("export", str(state), "--format", fmt, "-o", str(out))
        assert run.code == 2 and "record 30 is not valid JSON" in run.stderr, run.stderr
        assert run.stderr.count("\n") == 1
        assert not out.exists()


async def test_reader_closing_the_pipe_early_is_quiet(tmp_path: Path) -> None:
    state = await _synthetic_state(tmp_path / "s.db", 20_000)
    first, code, err = await asyncio.to_thread(_read_a_line_and_leave, "export", str(state))
    assert json.loads(first)["url"] == "https://host-0.example/page/0"
    assert (code, err) == (0, b"")


def _read_a_line_and_leave(*args: str) -> tuple[bytes, int, bytes]:
    with subprocess.Popen(shoal_cmd(*args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # like `| head -n 1`
        return first, proc.wait(timeout=30), proc.stderr.read()


# ------------------------------------------------------------------------------ memory

async def _synthetic_state(path: Path, n: int) -> Path:
    """A state of ``n`` finished crawl records, built with the real schema."""
    store = SqliteStore(path)
    await store.open()
    await store.close()
    title = "A synthetic page title " * 30  # ~700 bytes: a job that would not fit in memory
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=MEMORY")  # bulk load: write the rows once, not twice
        db.execute("PRAGMA synchronous=OFF")
        db.executemany(
            "INSERT INTO urls (id, url, host, depth, parent, state, seq, record, kind) "
            "VALUES (?, ?, ?, ?, ?, 2, ?, ?, 0)",
            ((i, url, f"https://host-{i % 97}.example", i % 5, parent, i + 1, Record(
                url=url, final_url=url, status=200 if i % 10 else 404, content_type="text/html",
                bytes=1000 + i, elapsed_ms=i / 7, attempts=1, depth=i % 5,
                redirects=[url + "/r"] if i % 3 == 0 else [], title=title, links=i % 50,
                sha256=f"{i:064x}", fetched_at="2026-11-22T10:00:00.123Z", parent=parent,
                crawl=True).to_json())
             for i in range(n)
             for url, parent in [(f"https://host-{i % 97}.example/page/{i}",
                                  None if i == 0 else "https://host-0.example/page/0")]))
        db.commit()
        db.execute("PRAGMA journal_mode=WAL")  # as shoal leaves it
    return path


_PEAK = ("import resource, subprocess, sys; "
         "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
         "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


async def _peak_rss_mb(*args: str) -> float:
    """Peak RSS of ``shoal *args`` in its own process, in MB."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PEAK, *shoal_cmd(*args), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    code, kb = out.split()
    assert int(code) == 0
    return int(kb) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KB on Linux")
async def test_export_memory_is_bounded_by_the_batch_not_the_job(tmp_path: Path) -> None:
    small = await _synthetic_state(tmp_path / "small.db", 1_000)
    big = await _synthetic_state(tmp_path / "big.db", 200_000)
    stored_mb = sum(len(r) for (r,) in sqlite3.connect(big).execute(
        "SELECT record FROM urls")) / 1e6
    assert stored_mb > 150  # holding the records at once would show
    formats = ("jsonl", "csv", "parquet")
    peaks = await asyncio.gather(*(
        _peak_rss_mb("export", str(state), "--format", fmt, "-o", f"{state}.{fmt}")
        for state in (small, big) for fmt in formats))
    growth = {fmt: peaks[3 + i] - peaks[i] for i, fmt in enumerate(formats)}
    print(f"peak RSS growth, 1k -> 200k records ({stored_mb:.0f} MB): "
          + ", ".join(f"{k} {v:.1f} MB" for k, v in growth.items()))
    assert all(g < 150 for g in growth.values()), growth
    table = pq.ParquetFile(f"{big}.parquet").metadata
    assert table.num_rows == 200_000 and table.num_row_groups == math.ceil(200_000 / 10_000)
