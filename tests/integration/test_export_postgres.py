"""`shoal export` from a PostgreSQL job (``postgresql://.../db#JOB`` or ``--db ... --job``):
the same bytes and columns as from SQLite, in batches, from one snapshot."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from shoal.export import export_records
from shoal.export_pg import PgReader
from shoal.items import export_items
from shoal.store.postgres import MIGRATIONS
from tests.conftest import postgres_url, read_records, run_shoal, write_urls
from tests.integration.test_export import COLUMNS, SCHEMA, _flat, _peak_rss_mb, _routes
from tests.integration.test_extract import catalogue
from tests.servers import site

pytestmark = pytest.mark.timeout(180)

# what may differ between two runs of the same crawl
_TIMING = ("elapsed_ms", "fetched_at")


@dataclass
class Runs:
    pg: str  # the database URL
    fetch: str  # postgresql://...#JOB of a `shoal fetch --db ... --job ...`
    fetch_out: Path  # the JSONL that run wrote
    crawl: str  # a `shoal crawl --extract ...` on PostgreSQL
    crawl_out: Path
    crawl_sqlite: Path  # the state of the same crawl on SQLite
    jobs: list[str]


def _job() -> str:
    return "t" + uuid.uuid4().hex[:12]


async def _make_runs(tmp: Path, pg: str) -> Runs:
    fetch_job, crawl_job = _job(), _job()
    async with site(_routes()) as srv:
        urls = [srv.url(p) for p in ("/p/0", "/p/1", "/p/2", "/p/3", "/p/4", "/gone",
                                      "/moved", "/hop", "/boom", "/bin")]
        inp = write_urls(tmp / "urls.txt", [*urls, "not a url", "ftp://example.com/x"])
        fetch_out = tmp / "fetch.jsonl"
        run = await run_shoal("fetch", str(inp), "-o", str(fetch_out), "--no-robots",
                              "--retries", "0", "--quiet", "--db", pg, "--job", fetch_job)
        assert run.code == 0, run.stderr
    # one request at a time: both crawls visit the pages, and find the items, in one order
    crawl = ["--extract", "name=h1", "--extract", "price=.price", "--extract-jsonld",
             "--max-depth", "3", "--concurrency", "1", "--per-host", "1", "--no-robots",
             "--quiet"]
    async with site(catalogue(12)) as srv:
        crawl_out = tmp / "crawl-pg.jsonl"
        run = await run_shoal("crawl", srv.url("/products?page=1"), "-o", str(crawl_out),
                              "--db", pg, "--job", crawl_job, *crawl)
        assert run.code == 0, run.stderr
        sqlite_out = tmp / "crawl-sqlite.jsonl"
        run = await run_shoal("crawl", srv.url("/products?page=1"), "-o", str(sqlite_out),
                              *crawl)
        assert run.code == 0, run.stderr
    return Runs(pg=pg, fetch=f"{pg}#{fetch_job}", fetch_out=fetch_out,
                crawl=f"{pg}#{crawl_job}", crawl_out=crawl_out,
                crawl_sqlite=Path(f"{sqlite_out}.state.db"), jobs=[fetch_job, crawl_job])


async def _drop(pg: str, jobs: list[str]) -> None:
    conn = await asyncpg.connect(pg)
    try:
        for job in jobs:
            await conn.execute(f'DROP SCHEMA IF EXISTS "shoal_{job}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    pg = postgres_url()
    made = asyncio.run(_make_runs(tmp_path_factory.mktemp("export_pg"), pg))
    yield made
    asyncio.run(_drop(pg, made.jobs))


@pytest.fixture
def scratch(runs: Runs) -> Iterator[list[str]]:
    """Jobs a test makes by hand (dropped after it)."""
    jobs: list[str] = []
    yield jobs
    asyncio.run(_drop(runs.pg, jobs))


async def _pg_rows(spec: str, sql: str) -> list[Any]:
    dsn, job = spec.split("#")
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql.format(s=f'"shoal_{job}"')))
    finally:
        await conn.close()


def _csv(data: str | bytes) -> list[list[str]]:
    text = data.decode() if isinstance(data, bytes) else data
    return list(csv.reader(io.StringIO(text, newline="")))


# ------------------------------------------------------------------------------ records

async def test_jsonl_from_postgres_is_byte_identical_to_the_runs_output(runs: Runs,
                                                                        tmp_path: Path) -> None:
    want = runs.fetch_out.read_bytes()
    assert len(read_records(runs.fetch_out)) == 12
    out = tmp_path / "x.jsonl"
    run = await run_shoal("export", runs.fetch, "--format", "jsonl", "-o", str(out))
    assert run.code == 0, run.stderr
    assert out.read_bytes() == want
    assert run.stderr == f"shoal: exported 12 records to {out}\n"

    dsn, job = runs.fetch.split("#")
    spelled = await run_shoal("export", "--db", dsn, "--job", job)  # the other spelling
    assert spelled.code == 0, spelled.stderr
    assert spelled.stdout.encode() == want
    assert "exported 12 records to standard output" in spelled.stderr
    again = await run_shoal("export", dsn, "--job", job)
    assert again.code == 0 and again.stdout.encode() == want

    crawl = await run_shoal("export", runs.crawl)
    assert crawl.code == 0 and crawl.stdout.encode() == runs.crawl_out.read_bytes()


async def test_csv_from_postgres(runs: Runs) -> None:
    run = await run_shoal("export", runs.fetch, "--format", "csv")
    assert run.code == 0, run.stderr
    assert "\r" not in run.stdout
    header, *rows = _csv(run.stdout)
    assert header == COLUMNS
    records = read_records(runs.fetch_out)
    assert len(rows) == len(records) == 12
    for row, record in zip(rows, records, strict=True):
        got = dict(zip(COLUMNS, row, strict=True))
        want = _flat(record)
        assert json.loads(got.pop("redirects")) == want.pop("redirects")
        assert got == {c: "" if v is None else str(v) for c, v in want.items()}
    kinds = {r[COLUMNS.index("error_kind")] for r in rows}
    assert {"invalid_url", "http"} <= kinds


async def test_parquet_from_postgres(runs: Runs, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    run = await run_shoal("export", runs.fetch, "--format", "parquet", "-o", str(out))
    assert run.code == 0, run.stderr
    table = pq.read_table(out)
    assert table.schema.remove_metadata() == SCHEMA
    records = read_records(runs.fetch_out)
    assert table.num_rows == len(records)
    for row, record in zip(table.to_pylist(), records, strict=True):
        want = _flat(record)
        assert row.pop("fetched_at") == datetime.fromisoformat(str(want.pop("fetched_at")))
        assert row == want


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
async def test_crawl_records_have_the_columns_of_the_same_crawl_on_sqlite(
        runs: Runs, tmp_path: Path, fmt: str) -> None:
    got: dict[str, list[list[Any]]] = {}
    for name, state in (("pg", runs.crawl), ("sqlite", str(runs.crawl_sqlite))):
        out = tmp_path / f"{name}.{fmt}"
        run = await run_shoal("export", state, "--format", fmt, "-o", str(out))
        assert run.code == 0, run.stderr
        if fmt == "csv":
            header, *rows = _csv(out.read_bytes())
            cells: list[list[Any]] = rows
        else:
            table = pq.read_table(out)
            header = table.schema.names
            cells = [list(r.values()) for r in table.to_pylist()]
        timing = [header.index(c) for c in _TIMING]
        got[name] = [header] + [[v for i, v in enumerate(r) if i not in timing] for r in cells]
    assert got["pg"][0] == [*COLUMNS, "items"]  # the job's meta says its records count items
    assert got["pg"] == got["sqlite"]
    assert len(got["pg"]) > 12  # listing pages and products, every cell equal but timings


def test_records_are_read_in_batches(runs: Runs, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    assert export_records(runs.fetch, "parquet", str(out), batch=5) == 12
    meta = pq.ParquetFile(out).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [5, 5, 2]
    jsonl = tmp_path / "x.jsonl"
    assert export_records(runs.fetch, "jsonl", str(jsonl), batch=1) == 12
    assert jsonl.read_bytes() == runs.fetch_out.read_bytes()


# ------------------------------------------------------------------------------ items

async def test_items_from_postgres_equal_the_same_crawl_on_sqlite(runs: Runs,
                                                                  tmp_path: Path) -> None:
    stored = await _pg_rows(runs.crawl, "SELECT item FROM {s}.items ORDER BY id")
    assert len(stored) == 12  # one a product
    for fmt in ("jsonl", "csv", "parquet"):
        outs = {}
        for name, state in (("pg", runs.crawl), ("sqlite", str(runs.crawl_sqlite))):
            outs[name] = tmp_path / f"{name}-items.{fmt}"
            run = await run_shoal("export", state, "--items", "--format", fmt,
                                  "-o", str(outs[name]))
            assert run.code == 0, run.stderr
            assert run.stderr == f"shoal: exported 12 items to {outs[name]}\n"
        if fmt == "parquet":
            pg, lite = pq.read_table(outs["pg"]), pq.read_table(outs["sqlite"])
            assert pg.schema == lite.schema and pg.to_pylist() == lite.to_pylist()
            assert pg.schema.names == ["url", "name", "price", "jsonld"]
        else:
            assert outs["pg"].read_bytes() == outs["sqlite"].read_bytes(), fmt
        if fmt == "jsonl":
            lines = outs["pg"].read_bytes().splitlines()
            assert [orjson.loads(x) for x in lines] == [orjson.loads(r[0]) for r in stored]
    names = [row[1] for row in _csv(outs["pg"].with_suffix(".csv").read_bytes())[1:]]
    assert sorted(names) == sorted(f"Product {i}" for i in range(12))


def test_items_are_read_in_batches_in_one_snapshot(runs: Runs, tmp_path: Path) -> None:
    whole, batched = tmp_path / "whole.csv", tmp_path / "batched.csv"
    assert export_items(runs.crawl, "csv", str(whole)) == 12
    assert export_items(runs.crawl, "csv", str(batched), batch=5) == 12  # 3 batches, 2 passes
    assert batched.read_bytes() == whole.read_bytes()
    out = tmp_path / "x.parquet"
    assert export_items(runs.crawl, "parquet", str(out), batch=5) == 12
    meta = pq.ParquetFile(out).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [5, 5, 2]


# ------------------------------------------------------------------------------ snapshot

async def _v1_job(pg: str, job: str, records: list[bytes]) -> None:
    """A job as the first schema version left it (no items table), with ``records``."""
    conn = await asyncpg.connect(pg)
    try:
        s = f'"shoal_{job}"'
        await conn.execute(f"CREATE SCHEMA {s}")
        await conn.execute(MIGRATIONS[0].format(s=s))
        await conn.executemany(
            f"INSERT INTO {s}.urls (url, url_hash, host, state, seq, record) "
            "VALUES ($1, sha256(convert_to($1, 'UTF8')), 'https://h.example', 2, $2, $3)",
            [(f"https://h.example/{i}", i + 1, r) for i, r in enumerate(records)])
    finally:
        await conn.close()


def _record(i: int) -> bytes:
    return orjson.dumps({"url": f"https://h.example/{i}", "final_url": None, "status": 200,
                         "error": None, "redirects": [], "title": f"t{i}",
                         "fetched_at": "2026-11-22T10:00:00.123Z"}) + b"\n"


def test_an_export_reads_one_consistent_cut(runs: Runs, scratch: list[str]) -> None:
    job = _job()
    scratch.append(job)
    asyncio.run(_v1_job(runs.pg, job, [_record(i) for i in range(10)]))
    reader = PgReader(runs.pg, job)
    try:
        assert reader.last("urls") == 10
        first = reader.rows("urls", 0, 10, 4)

        async def meanwhile() -> None:  # a run still writing, and a rewrite of seq 5
            conn = await asyncpg.connect(runs.pg)
            try:
                s = f'"shoal_{job}"'
                await conn.execute(
                    f"INSERT INTO {s}.urls (url, url_hash, host, state, seq, record) "
                    "VALUES ('x', sha256('x'), '', 2, 11, $1)", _record(11))
                await conn.execute(f"UPDATE {s}.urls SET record = 'x' WHERE seq = 5")
                await conn.execute(f"INSERT INTO {s}.meta VALUES ('record_extras', 'items')")
            finally:
                await conn.close()

        asyncio.run(meanwhile())
        rest = reader.rows("urls", first[-1][0], 10, 100)
        assert [line for _, line in first + rest] == [_record(i) for i in range(10)]
        assert reader.last("urls") == 10 and reader.meta("record_extras") is None
        assert not reader.has_items()
    finally:
        reader.close()


# ------------------------------------------------------------------------------ errors

async def test_bad_inputs_exit_2_with_one_line(runs: Runs, tmp_path: Path,
                                               scratch: list[str]) -> None:
    old, broken = _job(), _job()
    scratch += [old, broken]
    await _v1_job(runs.pg, old, [_record(i) for i in range(3)])
    await _v1_job(runs.pg, broken, [_record(0), b'{"url": tru\n', _record(2)])
    dsn, job = runs.fetch.split("#")
    nowhere = "postgresql://postgres@127.0.0.1:9/none"
    out = tmp_path / "x.csv"
    cases = [
        (["export", f"{nowhere}#{job}"], "cannot read 'postgresql://postgres@127.0.0.1:9/none"),
        (["export", f"{dsn}#nosuchjob"], "no such job in that database"),
        (["export", f"{dsn}#{old}", "--items", "-o", str(out)], "holds no items"),
        (["export", f"{dsn}#{broken}", "--format", "csv", "-o", str(out)],
         "record 2 is not valid JSON"),
        (["export", f"{dsn}#{broken}", "--format", "parquet", "-o", str(out)],
         "record 2 is not valid JSON"),
        (["export", dsn], "name the job after '#'"),
        (["export", "postgresql://postgres@[::1:5432/x#j"], "not a database URL"),
        (["export", f"{dsn}#bad-name"], "name the job after '#'"),
        (["export", "--db", dsn, "--job", "bad name"], "name the job after '#'"),
        (["export", runs.fetch, "--format", "parquet"], "standard output"),
        (["export", runs.fetch, "--db", dsn], "not both"),
        (["export"], "name the state to export"),
        (["export", runs.fetch, "--job", job], "drop --job"),
        (["export", str(runs.crawl_sqlite), "--job", job], "--job goes with a postgresql://"),
        (["export", "--db", "mysql://x/y", "--job", job], "--db 'mysql://x/y'"),
    ]
    for args, message in cases:
        run = await run_shoal(*args)
        assert run.code == 2, (args, run.stderr)
        assert run.stderr.startswith("shoal: error: ") and message in run.stderr, (args,
                                                                                   run.stderr)
        assert run.stderr.count("\n") == 1 and run.stdout == "", args
        assert not out.exists(), args  # no partial file


async def test_the_password_stays_out_of_messages(runs: Runs) -> None:
    dsn, _ = runs.fetch.split("#")
    with_password = dsn.replace("://postgres@", "://postgres:s3cret@", 1)
    if with_password == dsn:
        pytest.skip("the test database URL does not name the postgres user")
    for spec, message in ((f"{with_password}#nosuchjob", "no such job"),
                          (with_password, "name the job after '#'"),
                          (f"{with_password}#bad-name", "name the job after '#'")):
        run = await run_shoal("export", spec)
        assert run.code == 2 and message in run.stderr, run.stderr
        assert "s3cret" not in run.stderr and "postgres@" in run.stderr, run.stderr


async def test_export_works_when_called_from_a_running_event_loop(runs: Runs,
                                                                  tmp_path: Path) -> None:
    # the library call drives asyncpg on a loop and thread of its own
    out = tmp_path / "x.jsonl"
    assert export_records(runs.fetch, "jsonl", str(out)) == 12
    assert out.read_bytes() == runs.fetch_out.read_bytes()
    assert export_items(runs.crawl, "jsonl", str(out)) == 12


# ------------------------------------------------------------------------------ memory

async def _synthetic_job(pg: str, job: str, n: int) -> None:
    """A job of ``n`` records of about 1.5 KB each, made on the server."""
    await _v1_job(pg, job, [])
    conn = await asyncpg.connect(pg)
    try:
        s = f'"shoal_{job}"'
        await conn.execute(
            f"INSERT INTO {s}.urls (url, url_hash, host, state, seq, record) "
            "SELECT u, sha256(convert_to(u, 'UTF8')), 'https://h.example', 2, i, "
            "convert_to(json_build_object('url', u, 'status', 200, 'redirects', "
            "json_build_array(u || '/r'), 'title', repeat('A synthetic title ', 80), "
            "'fetched_at', '2026-11-22T10:00:00.123Z')::text || E'\\n', 'UTF8') "
            "FROM generate_series(1, $1) AS i, "
            "LATERAL (SELECT 'https://h.example/page/' || i AS u) AS x", n)
        await conn.execute(f"ANALYZE {s}.urls")
    finally:
        await conn.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KB on Linux")
async def test_export_memory_is_bounded_by_the_batch_not_the_job(runs: Runs, tmp_path: Path,
                                                                 scratch: list[str]) -> None:
    small, big = _job(), _job()
    scratch += [small, big]
    await _synthetic_job(runs.pg, small, 1_000)
    await _synthetic_job(runs.pg, big, 100_000)
    (stored,) = await _pg_rows(f"{runs.pg}#{big}", "SELECT sum(length(record)) FROM {s}.urls")
    stored_mb = stored[0] / 1e6
    assert stored_mb > 140  # holding the records at once would show
    formats = ("jsonl", "csv", "parquet")
    peaks = [await _peak_rss_mb("export", f"{runs.pg}#{job}", "--format", fmt,
                                "-o", str(tmp_path / f"{job}.{fmt}"))
             for job in (small, big) for fmt in formats]
    growth = {fmt: peaks[3 + i] - peaks[i] for i, fmt in enumerate(formats)}
    print(f"peak RSS growth, 1k -> 100k records ({stored_mb:.0f} MB): "
          + ", ".join(f"{k} {v:.1f} MB" for k, v in growth.items()))
    assert all(g < 100 for g in growth.values()), growth
    assert (tmp_path / f"{big}.jsonl").stat().st_size == stored[0]
    meta = pq.ParquetFile(tmp_path / f"{big}.parquet").metadata
    assert meta.num_rows == 100_000 and meta.num_row_groups == 10
