"""One store suite, run against SQLite (in tmp_path) and PostgreSQL (SHOAL_TEST_POSTGRES_URL).

Each test runs on both backends and asserts the same behaviour. Row ids are opaque (a
PostgreSQL sequence skips the ids of URLs that were already known), so tests compare URLs,
records and seqs, never raw ids across backends.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import pytest

import shoal
from shoal.config import CrawlOptions
from shoal.engine.engine import Engine
from shoal.engine.source import LineSource
from shoal.errors import ConfigError, StoreError
from shoal.output import Output
from shoal.store.base import PAGE, SITEMAP, DoneUrl, NewUrl, PageData, PendingRow, Store
from shoal.store.postgres import PostgresStore
from shoal.store.sqlite import SqliteStore
from tests.conftest import postgres_url, read_records
from tests.servers import html_page, site

pytestmark = pytest.mark.timeout(120)

ENV = "SHOAL_TEST_POSTGRES_URL"
A, B = "http://a.test", "http://b.test"


@dataclass
class Backend:
    """One place a run's state lives; ``make`` gives a new (unopened) store on it."""

    kind: str
    make: Callable[[], Store]
    dsn: str = ""
    schema: str = ""
    sqlite_path: str = ""

    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run ``sql`` on a connection of its own (``{t}`` is the urls table, ``?`` params)."""
        if self.kind == "sqlite":
            db = sqlite3.connect(self.sqlite_path)
            try:
                return db.execute(sql.replace("{t}", "urls"), args).fetchall()
            finally:
                db.close()
        n = 0

        def number(part: str) -> str:
            nonlocal n
            n += 1
            return f"${n}{part}"

        first, *rest = sql.replace("{t}", f'"{self.schema}".urls').split("?")
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(first + "".join(number(p) for p in rest), *args)
        finally:
            await conn.close()
        return [tuple(r) for r in rows]

    async def row(self, url: str) -> tuple[Any, ...] | None:
        """(depth, parent, state, seq) of ``url``'s row, read independently."""
        rows = await self.query("SELECT depth, parent, state, seq FROM {t} WHERE url = ?", url)
        return rows[0] if rows else None

    async def set_version(self, version: int) -> None:
        """Pretend a newer shoal wrote the state."""
        if self.kind == "sqlite":
            db = sqlite3.connect(self.sqlite_path)
            db.execute(f"PRAGMA user_version={version}")
            db.close()
            return
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'INSERT INTO "{self.schema}".schema_version (version) '
                               "VALUES ($1)", version)
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = str(tmp_path / "state.db")
        yield Backend("sqlite", lambda: SqliteStore(path), sqlite_path=path)
        return
    dsn = postgres_url()
    name = uuid.uuid4().hex[:12]
    yield Backend("postgres", lambda: PostgresStore(dsn, name=name), dsn=dsn,
                  schema=f"shoal_{name}")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "shoal_{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = backend.make()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def page(path: str, host: str = A, depth: int = 0, parent: str | None = None,
         kind: int = PAGE) -> NewUrl:
    return NewUrl(host + path, host, depth, parent, kind)


def line(url: str) -> bytes:
    return orjson.dumps({"url": url}) + b"\n"


class Sink:
    """Collects what the store hands over, one list per call."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, bytes]]] = []

    def __call__(self, rows: list[tuple[int, bytes]]) -> None:
        self.calls.append(list(rows))


async def ids(store: Store) -> dict[str, int]:
    """url -> id of every pending row."""
    return {r.url: r.id for r in await store.next_pending(0, 1_000_000)}


async def all_records(store: Store) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while rows := await store.records_after(out[-1][0] if out else 0, 7):
        out += rows
    return out


def strictly_increasing(seqs: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(seqs))


# --------------------------------------------------------------------------- meta


async def test_meta_round_trip(store: Store) -> None:
    assert await store.get_meta() == {}
    await store.set_meta({"mode": "fetch", "input": "x"})
    await store.set_meta({"input": "y", "out_seq": "0"})
    assert await store.get_meta() == {"mode": "fetch", "input": "y", "out_seq": "0"}
    await store.add([page("/1")], meta={"input_pos": "1"})
    await store.complete([], meta={"out_seq": "5"})
    assert await store.get_meta() == {"mode": "fetch", "input": "y", "out_seq": "5",
                                      "input_pos": "1"}


# --------------------------------------------------------------------------- add


async def test_add_dedupes_and_returns_only_new_invalid_lines(store: Store) -> None:
    sink = Sink()
    bad1, bad2, nul = line("bad 1"), line("bad 2"), line("nul")
    written = await store.add(
        [page("/1"), page("/2"), page("/1")],
        [DoneUrl("bad 1", bad1), DoneUrl("bad 2", bad2), DoneUrl("bad 1", line("again")),
         DoneUrl("bad\x00line", nul)], sink=sink)
    assert written == [(1, bad1), (2, bad2), (3, nul)]
    assert sink.calls == [written]
    assert await store.counts() == (5, 3)

    written = await store.add([page("/1"), page("/3")],
                              [DoneUrl("bad 2", line("dup")), DoneUrl("bad\x00line", b"x\n"),
                               DoneUrl("bad 3", line("bad 3"))], sink=sink)
    assert written == [(4, line("bad 3"))]
    assert sink.calls[-1] == written
    assert await store.counts() == (7, 4)
    assert [r.url for r in await store.next_pending(0, 10)] == [A + "/1", A + "/2", A + "/3"]
    assert await all_records(store) == [(1, bad1), (2, bad2), (3, nul), (4, line("bad 3"))]

    assert await store.add([], [DoneUrl("bad 1", bad1)], sink=sink) == []
    assert len(sink.calls) == 2  # nothing written: the sink is not called


async def test_add_keeps_kind_host_and_the_smallest_depth_within_a_batch(store: Store) -> None:
    await store.add([page("/s", depth=3, parent="p3", kind=SITEMAP),
                     page("/s", depth=1, parent="p1"), page("/s", depth=1, parent="p1b"),
                     page("/t", B, depth=2, parent="q")])
    assert await store.next_pending(0, 10) == [
        PendingRow(1, A + "/s", A, 1, "p1", SITEMAP),
        PendingRow(2, B + "/t", B, 2, "q", PAGE),
    ]


# --------------------------------------------------------------------------- frontier reads


async def test_next_pending_order_limit_and_depth(store: Store) -> None:
    await store.add([page(f"/{i}", A if i % 2 else B, depth=i % 3, parent=f"p{i}")
                     for i in range(10)])
    rows = await store.next_pending(0, 4)
    assert [r.url for r in rows] == [B + "/0", A + "/1", B + "/2", A + "/3"]
    assert rows[1] == PendingRow(rows[1].id, A + "/1", A, 1, "p1", PAGE)
    assert strictly_increasing([r.id for r in rows])
    rest = await store.next_pending(rows[-1].id, 100)
    assert [r.url for r in rest] == [(A if i % 2 else B) + f"/{i}" for i in range(4, 10)]
    assert rest[0].id > rows[-1].id
    assert await store.next_pending(rest[-1].id, 100) == []

    shallow = await store.next_pending(0, 100, max_depth=1)
    assert [int(r.url.rsplit("/", 1)[1]) for r in shallow] == [0, 1, 3, 4, 6, 7, 9]
    assert [r.url for r in await store.next_pending(0, 2, max_depth=0)] == [B + "/0", A + "/3"]

    ids_ = await ids(store)
    await store.complete([(ids_[A + "/1"], line("1")), (ids_[B + "/2"], None)])
    assert [int(r.url.rsplit("/", 1)[1]) for r in await store.next_pending(0, 4)] == [0, 3, 4, 5]


async def test_pending_for_host(store: Store) -> None:
    await store.add([page(f"/{i}", A if i % 2 else B, depth=i % 3) for i in range(12)])
    rows = await store.pending_for_host(A, 0, 3)
    assert [r.url for r in rows] == [A + "/1", A + "/3", A + "/5"]
    assert all(r.host == A for r in rows)
    more = await store.pending_for_host(A, rows[-1].id, 100)
    assert [r.url for r in more] == [A + "/7", A + "/9", A + "/11"]
    assert [r.url for r in await store.pending_for_host(A, 0, 100, max_depth=0)] == [
        A + "/3", A + "/9"]
    assert [r.url for r in await store.pending_for_host(B, 0, 100, max_depth=1)] == [
        B + "/0", B + "/4", B + "/6", B + "/10"]
    assert await store.pending_for_host("http://nobody.test", 0, 10) == []

    ids_ = await ids(store)
    await store.complete([(ids_[A + "/3"], line("3"))])
    assert [r.url for r in await store.pending_for_host(A, 0, 2)] == [A + "/1", A + "/5"]


# --------------------------------------------------------------------------- complete


async def test_complete_assigns_seqs_writes_records_and_calls_the_sink(
        store: Store, backend: Backend) -> None:
    await store.add([page(f"/{i}") for i in range(6)] + [page("/sitemap.xml", kind=SITEMAP)],
                    [DoneUrl("bad", line("bad"))])
    ids_ = await ids(store)
    loop = asyncio.get_running_loop()
    seen_committed: list[list[int]] = []
    calls: list[list[tuple[int, bytes]]] = []

    def sink(rows: list[tuple[int, bytes]]) -> None:
        # another connection already sees the rows: the sink runs after the commit
        committed = asyncio.run_coroutine_threadsafe(
            backend.query("SELECT seq FROM {t} WHERE seq IS NOT NULL ORDER BY seq"), loop)
        seen_committed.append([r[0] for r in committed.result(timeout=30)])
        calls.append(rows)

    first = [(ids_[A + "/2"], line("2")), (ids_[A + "/sitemap.xml"], None),
             (ids_[A + "/0"], line("0")), (ids_[A + "/1"], line("1"))]
    assert await store.complete(first, sink=sink) == 0
    assert calls == [[(2, line("2")), (3, line("0")), (4, line("1"))]]
    assert seen_committed == [[1, 2, 3, 4]]
    assert await backend.row(A + "/sitemap.xml") == (0, None, 2, None)  # done, no seq
    assert await backend.row(A + "/2") == (0, None, 2, 2)

    # already done: skipped, their seqs not used; the rest continue the order
    again = [(ids_[A + "/0"], line("0 again")), (ids_[A + "/4"], line("4")),
             (ids_[A + "/2"], line("2 again")), (ids_[A + "/3"], line("3"))]
    await store.complete(again, sink=sink)
    last = calls[-1]
    assert [r for _, r in last] == [line("4"), line("3")]
    assert strictly_increasing([4] + [s for s, _ in last])
    assert seen_committed[-1] == [1, 2, 3, 4, *(s for s, _ in last)]

    # nothing left to write: no sink call
    await store.complete([(ids_[A + "/4"], line("4 again"))], sink=sink)
    assert len(calls) == 2
    records = await all_records(store)
    assert records == [(1, line("bad")), *calls[0], *calls[1]]
    assert await store.counts() == (8, 7)
    assert [r.url for r in await store.next_pending(0, 10)] == [A + "/5"]


async def test_complete_inserts_found_urls_and_counts_the_new_ones(store: Store) -> None:
    await store.add([page("/1"), page("/2", depth=1)])
    ids_ = await ids(store)
    found = [page("/2", depth=1), page("/3", depth=1, parent=A + "/1"), page("/1"),
             page("/4", B, depth=1), page("/3", depth=1)]
    sink = Sink()
    assert await store.complete([(ids_[A + "/1"], line("1"))], {"k": "v"}, sink, found) == 2
    assert sink.calls == [[(1, line("1"))]]
    assert [(r.url, r.depth, r.parent) for r in await store.next_pending(0, 10)] == [
        (A + "/2", 1, None), (A + "/3", 1, A + "/1"), (B + "/4", 1, None)]
    assert await store.counts() == (4, 1)
    assert await store.get_meta() == {"k": "v"}


async def test_concurrent_writes_keep_seqs_in_commit_order(store: Store) -> None:
    await store.add([page(f"/{i}") for i in range(200)])
    ids_ = list((await ids(store)).values())
    handed: list[tuple[int, bytes]] = []

    def sink(rows: list[tuple[int, bytes]]) -> None:
        handed.extend(rows)

    await asyncio.gather(
        *(store.complete([(i, line(str(i))) for i in ids_[k:k + 20]], sink=sink)
          for k in range(0, 200, 20)),
        *(store.add([page(f"/new/{k}")], [DoneUrl(f"bad {k}", line(f"bad {k}"))], sink=sink)
          for k in range(10)))
    assert [s for s, _ in handed] == list(range(1, 211))
    assert await all_records(store) == handed
    assert await store.counts() == (220, 210)


# --------------------------------------------------------------------------- the upsert


async def test_a_pending_url_found_closer_takes_the_new_depth_and_parent(
        store: Store, backend: Backend) -> None:
    await store.add([page("/deep", depth=3, parent="p3"), page("/done", depth=3, parent="d3")])
    ids_ = await ids(store)
    await store.complete([(ids_[A + "/done"], line("done"))])

    await store.complete([], new=[page("/deep", depth=5, parent="p5")])  # farther: no change
    assert await backend.row(A + "/deep") == (3, "p3", 0, None)
    await store.complete([], new=[page("/deep", depth=1, parent="p1")])
    assert await backend.row(A + "/deep") == (1, "p1", 0, None)
    await store.add([page("/deep", depth=0, parent=None)])  # add uses the same rule
    assert await backend.row(A + "/deep") == (0, None, 0, None)
    await store.complete([], new=[page("/done", depth=0, parent="p0")])  # done: unchanged
    assert await backend.row(A + "/done") == (3, "d3", 2, 1)
    assert [r.id for r in await store.next_pending(0, 10)] == [ids_[A + "/deep"]]
    assert await store.counts() == (2, 1)


async def test_complete_counts_only_urls_not_known_before(store: Store) -> None:
    await store.add([page("/deep", depth=3)])
    assert await store.complete([], new=[page("/deep", depth=1), page("/new", depth=1)]) == 1


# --------------------------------------------------------------------------- reads


async def test_counts_and_done_by_host(store: Store) -> None:
    assert await store.counts() == (0, 0)
    await store.add([page("/1"), page("/2"), page("/1", B), page("/2", B),
                     page("/sitemap.xml", kind=SITEMAP)], [DoneUrl("junk", line("junk"))])
    assert await store.counts() == (6, 1)
    assert await store.done_by_host() == {}
    ids_ = await ids(store)
    await store.complete([(ids_[A + "/1"], line("a1")), (ids_[A + "/2"], line("a2")),
                          (ids_[B + "/1"], line("b1")), (ids_[A + "/sitemap.xml"], None)])
    assert await store.counts() == (6, 5)
    assert await store.done_by_host() == {A: 2, B: 1}  # no sitemaps, no invalid lines


async def test_records_after_pages_in_seq_order(store: Store) -> None:
    await store.add([page(f"/{i}") for i in range(25)])
    ids_ = await ids(store)
    await store.complete([(ids_[A + f"/{i}"], line(str(i))) for i in reversed(range(25))])
    assert await store.records_after(0, 10) == [(s, line(str(25 - s))) for s in range(1, 11)]
    assert await store.records_after(10, 10) == [(s, line(str(25 - s))) for s in range(11, 21)]
    assert await store.records_after(20, 10) == [(s, line(str(25 - s))) for s in range(21, 26)]
    assert await store.records_after(25, 10) == []
    assert await store.records_after(12) == [(s, line(str(25 - s))) for s in range(13, 26)]


async def test_items_and_validators_are_kept_with_the_records_they_belong_to(
        store: Store, backend: Backend) -> None:
    await store.add([page(f"/{i}") for i in range(4)])
    ids_ = await ids(store)
    a0, a1, a2, a3 = (ids_[A + f"/{i}"] for i in range(4))

    def item(n: int | str) -> bytes:
        return orjson.dumps({"n": n, "text": "é\"\n"})

    # record order (seq) decides item order; within a page, the order they were yielded
    await store.complete([(a1, line("1")), (a0, line("0"))], pages=[
        PageData(a0, [item(0), item("0b")], etag='"e0"'),
        PageData(a1, [item(1)], last_modified="Tue, 01 Dec 2026 10:00:00 GMT")])
    # a page already done keeps its items; a page with none leaves none
    await store.complete([(a1, line("1 again")), (a2, line("2")), (a3, line("3"))], pages=[
        PageData(a1, [item("dup")], etag='"dup"'), PageData(a2, []),
        PageData(a3, [item(3)])])
    got = []
    after = 0
    while rows := await store.items_after(after, 2):
        got += [orjson.loads(b) for _, b in rows]
        after = rows[-1][0]
    assert [g["n"] for g in got] == [1, 0, "0b", 3]
    assert got[0]["text"] == "é\"\n"
    rows = await backend.query("SELECT url, etag, last_modified FROM {t} ORDER BY url")
    assert rows == [(A + "/0", '"e0"', None),
                    (A + "/1", None, "Tue, 01 Dec 2026 10:00:00 GMT"),
                    (A + "/2", None, None), (A + "/3", None, None)]


# --------------------------------------------------------------------------- lifecycle


async def test_reopen_keeps_everything_and_seq_continues(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.add([page(f"/{i}", depth=i) for i in range(5)], [DoneUrl("bad", line("bad"))],
                    {"input_pos": "6"})
    ids_ = await ids(store)
    await store.complete([(ids_[A + "/0"], line("0")), (ids_[A + "/1"], line("1"))])
    pending = await store.next_pending(0, 10)
    await store.close()

    again = backend.make()
    await again.open()
    try:
        assert await again.get_meta() == {"input_pos": "6"}
        assert await again.counts() == (6, 3)
        assert await again.next_pending(0, 10) == pending
        assert await all_records(again) == [(1, line("bad")), (2, line("0")), (3, line("1"))]
        sink = Sink()
        await again.complete([(ids_[A + "/3"], line("3"))], sink=sink)
        assert sink.calls == [[(4, line("3"))]]
        assert await again.add([], [DoneUrl("bad 2", line("bad 2"))]) == [(5, line("bad 2"))]
    finally:
        await again.close()


async def test_fresh_wipes(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.add([page("/1")], [DoneUrl("bad", line("bad"))], {"mode": "fetch"})
    await store.close()

    fresh = backend.make()
    await fresh.open(fresh=True)
    try:
        assert await fresh.get_meta() == {}
        assert await fresh.counts() == (0, 0)
        assert await fresh.records_after(0) == []
        assert await fresh.add([page("/1")], [DoneUrl("bad", line("bad"))]) == [(1, line("bad"))]
        assert [r.url for r in await fresh.next_pending(0, 10)] == [A + "/1"]
    finally:
        await fresh.close()


async def test_a_newer_schema_is_refused(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.close()
    await backend.set_version(99)
    newer = backend.make()
    with pytest.raises(StoreError, match="newer shoal"):
        await newer.open()
    await newer.close()


async def test_an_older_sqlite_state_is_migrated_in_place(tmp_path: Path) -> None:
    from shoal.store.sqlite import MIGRATIONS, migrate

    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, MIGRATIONS[:2], path)  # the schema before items and validators
    db.execute("INSERT INTO urls (url, host, state, seq, record) VALUES ('u', 'h', 2, 1, ?)",
               (line("u"),))
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.records_after(0) == [(1, line("u"))]
        assert await store.items_after(0) == []
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("SELECT etag, last_modified FROM urls").fetchall() == [(None, None)]
    db.close()


async def test_very_long_urls(store: Store) -> None:
    long = A + "/" + "x" * 2_600
    longer = A + "/" + "y" * 20_000
    await store.add([NewUrl(long, A), NewUrl(longer, A, parent=long)])
    assert await store.add([NewUrl(long, A)], [DoneUrl("z" * 5_000, line("z"))]) == [
        (1, line("z"))]
    assert await store.complete([], new=[NewUrl(longer, A)]) == 0
    rows = await store.next_pending(0, 10)
    assert [(r.url, r.parent) for r in rows] == [(long, None), (longer, long)]
    await store.complete([(rows[0].id, line(long))])
    assert await store.counts() == (3, 2)
    assert await store.records_after(1) == [(2, line(long))]


async def test_bulk_50000_rows(store: Store, backend: Backend) -> None:
    n = 50_000
    new = [NewUrl(f"https://host{i % 500}.test/some/path/{i}?q={i}", f"https://host{i % 500}.test",
                  i % 4, f"https://host{i % 500}.test/") for i in range(n)]
    started = time.perf_counter()
    await store.add(new)
    added = time.perf_counter() - started
    rows = await store.next_pending(0, n)
    assert len(rows) == n
    record = b'{"url":"https://example.test/","status":200,' + b'"x":"' + b"y" * 200 + b'"}\n'
    sink = Sink()
    started = time.perf_counter()
    await store.complete([(r.id, record) for r in rows], {"out_seq": str(n)}, sink,
                         [NewUrl(u.url + "&next", u.host, 1) for u in new[:n // 2]])
    completed = time.perf_counter() - started
    print(f"\n{backend.kind}: add {n} rows {added:.2f} s, complete {n} rows "
          f"(+{n // 2} found) {completed:.2f} s")
    assert [s for s, _ in sink.calls[0]] == list(range(1, n + 1))
    assert await store.counts() == (n + n // 2, n)
    assert added < 30 and completed < 30, (added, completed)


# --------------------------------------------------------------------------- PostgreSQL only


def test_postgres_job_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="--job"):
        PostgresStore("postgresql://localhost/db", name="bad-name")
    with pytest.raises(ConfigError, match="--job"):
        PostgresStore("postgresql://localhost/db", name="x" * 41)
    with pytest.raises(ConfigError, match="--job"):
        PostgresStore("postgresql://localhost/db", name="")
    store = PostgresStore("postgresql://me:secret@db.test:5433/crawls?sslmode=require",
                          name="Nightly_2")
    assert store.path == "postgresql://me@db.test:5433/crawls#shoal_Nightly_2"
    assert "secret" not in store.path


async def test_postgres_two_processes_opening_at_once_migrate_once() -> None:
    dsn = postgres_url()
    name = uuid.uuid4().hex[:12]
    stores = [PostgresStore(dsn, name=name, pool_size=1) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].add([page("/1")])
        assert [await s.counts() for s in stores] == [(1, 0)] * 4
    finally:
        for s in stores:
            await s.close()
        conn = await asyncpg.connect(dsn)
        try:
            versions = await conn.fetch(f'SELECT version FROM "shoal_{name}".schema_version')
            await conn.execute(f'DROP SCHEMA "shoal_{name}" CASCADE')
        finally:
            await conn.close()
    from shoal.store.postgres import MIGRATIONS

    assert [v[0] for v in versions] == list(range(1, len(MIGRATIONS) + 1))


async def test_postgres_unreachable_is_a_store_error() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/nothing", name="x")
    with pytest.raises(StoreError, match="cannot connect"):
        await store.open()
    await store.close()


# --------------------------------------------------------------------------- the engine


async def test_the_engine_runs_on_the_store(backend: Backend, tmp_path: Path) -> None:
    routes = {f"/p/{i}": f"<title>page {i}</title><p>{i}</p>" for i in range(50)}
    out = tmp_path / "out.jsonl"
    async with site(routes) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(50)]
        store = backend.make()
        await store.open()
        try:
            config = shoal.Config(concurrency=10, per_host=10, robots=False, timeout=10)
            engine = Engine(config, store, Output(str(out)))
            result = await engine.run(LineSource(urls, name="t"))
            assert await store.counts() == (50, 50)
            assert len(await all_records(store)) == 50
        finally:
            await store.close()
    records = read_records(out)
    assert sorted(str(r["url"]) for r in records) == sorted(urls)
    assert {r["status"] for r in records} == {200}
    assert result.stats.done == 50 and result.state == store.path
    assert srv.log.count(path_prefix="/robots.txt") == 0


async def test_the_engine_crawls_on_the_store(backend: Backend, tmp_path: Path) -> None:
    # page i links to 2i+1 and 2i+2 and back to the root: found links, known again, depths
    routes = {f"/p/{i}": html_page(f"page {i}", [f"/p/{2 * i + 1}", f"/p/{2 * i + 2}", "/p/0"])
              for i in range(50)}
    out = tmp_path / "out.jsonl"
    async with site(routes) as srv:
        store = backend.make()
        await store.open()
        try:
            config = shoal.Config(concurrency=10, per_host=10, robots=False, timeout=10)
            root = srv.url("/p/0")
            engine = Engine(config, store, Output(str(out)), crawl=CrawlOptions(max_depth=4),
                            seeds=[root])
            await engine.run(LineSource([root], name="t"))
            assert await store.counts() == (31, 31)  # links past --max-depth are not kept
        finally:
            await store.close()
    records = read_records(out)
    assert sorted(str(r["url"]) for r in records) == sorted(srv.url(f"/p/{i}") for i in range(31))
    assert {(str(r["url"]), r["depth"]) for r in records} == {
        (srv.url(f"/p/{i}"), (i + 1).bit_length() - 1) for i in range(31)}


async def test_the_engine_keeps_items_and_validators_on_the_store(backend: Backend,
                                                                  tmp_path: Path) -> None:
    from shoal.extract.router import Router

    async def etagged(request: Any) -> Any:
        from aiohttp import web

        n = request.path.rsplit("/", 1)[1]
        return web.Response(text=html_page(f"page {n}"), content_type="text/html",
                            headers={"ETag": f'"v{n}"'})

    async def handler(page: shoal.Page) -> Any:
        yield {"url": page.url, "title": page.css_first("title").text()}  # type: ignore[union-attr]

    router = Router()
    router.add(r"/p/\d+$", handler)
    async with site({f"/p/{i}": etagged for i in range(20)}) as srv:
        store = backend.make()
        await store.open()
        try:
            config = shoal.Config(concurrency=10, per_host=10, robots=False, timeout=10)
            urls = [srv.url(f"/p/{i}") for i in range(20)]
            engine = Engine(config, store, Output(str(tmp_path / "out.jsonl")), router=router)
            await engine.run(LineSource(urls, name="t"))
            items = [orjson.loads(b) for _, b in await store.items_after(0, 100)]
        finally:
            await store.close()
    records = read_records(tmp_path / "out.jsonl")
    assert [r["url"] for r in records if r["items"]] == [i["url"] for i in items]
    assert sorted(i["title"] for i in items) == sorted(f"page {n}" for n in range(20))
    rows = await backend.query("SELECT url, etag FROM {t}")
    assert {u: e for u, e in rows} == {srv.url(f"/p/{n}"): f'"v{n}"' for n in range(20)}
