"""The shared state database: PostgreSQL, one schema per job, reached through an asyncpg pool.

``PostgresStore(dsn, name=...)`` keeps a job's state in the schema ``shoal_<name>`` (so one
database holds many jobs) and talks to it over a pool of ``pool_size`` connections
(``asyncpg.create_pool(dsn, min_size=1, max_size=pool_size)``): the feeder's reads run
beside the writer's commits instead of queueing behind them as on SQLite's one thread.

The semantics are those of ``SqliteStore``:

* Writes (``add``, ``complete``, ``set_meta``) are one transaction each, one at a time: an
  asyncio lock orders them in this process and a transaction-level advisory lock on the job
  orders them against other processes. So ids rise in commit order (a read never sees a
  row appear behind the feeder's cursor), and record seqs, ``max(seq) + 1, ...`` read under
  that lock, rise strictly in commit order with no duplicates. Only rows that were pending
  get a seq (a URL already done is skipped, and leaves no gap), and sitemap rows (record
  ``None``) are marked done without one.
* ``sink`` gets the written (seq, record) pairs in seq order right after the commit and
  before the call returns, on the store's one thread (the one ``in_thread`` uses): file
  writes never block the event loop, stay ordered with the engine's other output calls,
  and a sink may block (the library's sink waits for its consumer, which runs on the loop).
* A URL known again keeps its row; a pending one found at a smaller depth takes the new
  depth and parent (the upsert below). ``complete`` counts only the URLs inserted.
* Ids are opaque and ordered, not dense: the sequence also moves for URLs already known.

Bulk paths are single statements over ``unnest`` of typed arrays (asyncpg sends those in
the binary format), not one statement per row. URLs are unique by ``url_hash``, the sha256
of their UTF-8 bytes, because a B-tree entry cannot hold a URL longer than about 2.7 KB.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from shoal.errors import ConfigError, StoreError
from shoal.store.base import DoneUrl, NewUrl, PageData, PendingRow, Sink
from shoal.store.pg_leases import HOSTS_PENDING, MIGRATION, MIGRATION_3, LeaseMixin
from shoal.store.pgpool import DB_ERRORS, open_pool

T = TypeVar("T")

_NAME = re.compile(r"[A-Za-z0-9_]{1,40}")

ANALYZE_EVERY = 10_000  # rows written, at least, between two ANALYZEs of the urls table

# Versioned migrations: index i moves the schema from version i to i + 1. ``{s}`` is the
# job's quoted schema name.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE {s}.urls (
        id       bigserial PRIMARY KEY,
        url      text NOT NULL,          -- the normalised URL (or the raw invalid line)
        url_hash bytea NOT NULL,         -- sha256 of the url's UTF-8 bytes: the unique key
        host     text NOT NULL,          -- scheme://host:port, '' for invalid lines
        depth    int NOT NULL DEFAULT 0,
        parent   text,
        state    smallint NOT NULL DEFAULT 0,  -- 0 pending, 2 done
        seq      bigint,                 -- output order of the record
        record   bytea,                  -- the JSON line
        kind     smallint NOT NULL DEFAULT 0   -- 0 page, 1 sitemap
    );
    CREATE UNIQUE INDEX urls_url_hash ON {s}.urls (url_hash);
    CREATE INDEX urls_pending ON {s}.urls (id) WHERE state = 0;
    CREATE INDEX urls_pending_host ON {s}.urls (host, id) WHERE state = 0;
    CREATE UNIQUE INDEX urls_seq ON {s}.urls (seq) WHERE seq IS NOT NULL;
    """,
    # 2: the shared frontier: URL and host leases, per-host politeness (pg_leases.py)
    MIGRATION,
    # 3: one lease deadline per process for all its URLs
    MIGRATION_3,
    # 4: items extracted from pages, and each page's validators for a conditional recrawl
    """
    CREATE TABLE {s}.items (
        id     bigserial PRIMARY KEY,    -- export order
        url_id bigint NOT NULL,          -- the page it came from (urls.id)
        item   bytea NOT NULL            -- one JSON object
    );
    ALTER TABLE {s}.urls ADD COLUMN etag text, ADD COLUMN last_modified text;
    """,
)
COPY_AT = 1_000  # URLs added at once from which they are loaded with COPY

# url_hash is set on insert: convert_to() is only STABLE, so it cannot be a generated column.
# A URL already known keeps its row; a shorter path found before it is fetched lowers its
# depth (and takes its parent), so depths stay breadth-first when pages finish out of order.
# ORDER BY ord: ids follow the input order. Counts only the rows inserted (xmax = 0), not the
# ones whose depth was lowered.
_INSERT = """
WITH written AS (
    INSERT INTO {s}.urls (url, url_hash, host, depth, parent, kind)
    SELECT t.url, sha256(convert_to(t.url, 'UTF8')), t.host, t.depth, t.parent, t.kind
    FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::smallint[])
         WITH ORDINALITY AS t(url, host, depth, parent, kind, ord)
    ORDER BY t.ord
    ON CONFLICT (url_hash) DO UPDATE SET depth = excluded.depth, parent = excluded.parent
    WHERE urls.state = 0 AND excluded.depth < urls.depth
    RETURNING xmax = 0 AS inserted)
SELECT count(*) FILTER (WHERE inserted) FROM written
"""
# The same from the rows COPY loaded into the session's staging table.
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS shoal_stage (
    url text, host text, depth int, parent text, kind smallint, ord bigint
) ON COMMIT DELETE ROWS
"""
_INSERT_STAGED = """
WITH written AS (
    INSERT INTO {s}.urls (url, url_hash, host, depth, parent, kind)
    SELECT t.url, sha256(convert_to(t.url, 'UTF8')), t.host, t.depth, t.parent, t.kind
    FROM pg_temp.shoal_stage t
    ORDER BY t.ord
    ON CONFLICT (url_hash) DO UPDATE SET depth = excluded.depth, parent = excluded.parent
    WHERE urls.state = 0 AND excluded.depth < urls.depth
    RETURNING xmax = 0 AS inserted)
SELECT count(*) FILTER (WHERE inserted) FROM written
"""
# Finished invalid lines: the ones not known yet get the next seqs, in input order. The key
# is hashed from its own bytes (text cannot hold NUL; ``url`` keeps a readable copy).
_INSERT_DONE = """
INSERT INTO {s}.urls (url, url_hash, host, state, seq, record)
SELECT t.url, sha256(t.key), '', 2,
       (SELECT coalesce(max(seq), 0) FROM {s}.urls) + row_number() OVER (ORDER BY t.ord),
       t.record
FROM unnest($1::text[], $2::bytea[], $3::bytea[]) WITH ORDINALITY AS t(url, key, record, ord)
WHERE NOT EXISTS (SELECT 1 FROM {s}.urls u WHERE u.url_hash = sha256(t.key))
ORDER BY t.ord
ON CONFLICT (url_hash) DO NOTHING
RETURNING seq, record
"""
# Records of finished URLs (by id): those still pending get the next seqs, in input order.
_DONE = """
WITH todo AS (
    SELECT t.id, t.record, t.ord,
           (SELECT coalesce(max(seq), 0) FROM {s}.urls) + row_number() OVER (ORDER BY t.ord)
               AS seq
    FROM unnest($1::bigint[], $2::bytea[]) WITH ORDINALITY AS t(id, record, ord)
    JOIN {s}.urls u ON u.id = t.id AND u.state = 0
                   AND ($3::text IS NULL OR u.owner = $3))
UPDATE {s}.urls SET state = 2, seq = todo.seq, record = todo.record
FROM todo WHERE urls.id = todo.id AND urls.state = 0
RETURNING todo.seq, todo.ord
"""
_ITEMS = """
INSERT INTO {s}.items (url_id, item)
SELECT t.id, t.item FROM unnest($1::bigint[], $2::bytea[]) WITH ORDINALITY AS t(id, item, ord)
ORDER BY t.ord
"""
_VALIDATORS = """
UPDATE {s}.urls SET etag = t.etag, last_modified = t.lm
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(id, etag, lm) WHERE urls.id = t.id
"""
_SITEMAPS_DONE = ("UPDATE {s}.urls SET state = 2 WHERE id = ANY($1::bigint[]) AND state = 0 "
                  "AND ($2::text IS NULL OR owner = $2)")
_SET_META = """
INSERT INTO {s}.meta (key, value) SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (key) DO UPDATE SET value = excluded.value
"""
_COLUMNS = "id, url, host, depth, parent, kind"
_NEXT = f"SELECT {_COLUMNS} FROM {{s}}.urls WHERE state = 0 AND id > $1 ORDER BY id LIMIT $2"
_NEXT_DEPTH = (f"SELECT {_COLUMNS} FROM {{s}}.urls WHERE state = 0 AND id > $1 "
               "AND depth <= $3 ORDER BY id LIMIT $2")
_HOST = (f"SELECT {_COLUMNS} FROM {{s}}.urls WHERE state = 0 AND host = $1 AND id > $2 "
         "ORDER BY id LIMIT $3")
_HOST_DEPTH = (f"SELECT {_COLUMNS} FROM {{s}}.urls WHERE state = 0 AND host = $1 AND id > $2 "
               "AND depth <= $4 ORDER BY id LIMIT $3")


async def migrate_schema(conn: Any, s: str, migrations: Sequence[str], shown: str) -> None:
    """Create the schema ``s`` (quoted) if need be and bring it to the latest of
    ``migrations`` (index i: version i to i + 1; ``{s}`` in them is the schema), its
    version kept in ``s.schema_version``. Call it in a transaction that holds the
    schema's advisory lock.

    Raises:
        StoreError: the schema was written by a newer shoal.
    """
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.schema_version ("
                       "version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())")
    version: int = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")
    if version > len(migrations):
        raise StoreError(f"{shown} was written by a newer shoal "
                         f"(schema {version}, this one knows {len(migrations)})")
    for v in range(version, len(migrations)):
        await conn.execute(migrations[v].replace("{s}", s))
        await conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES ($1)", v + 1)


class PostgresStore(LeaseMixin):
    """State of one run in one schema of a PostgreSQL database."""

    shared = True  # many processes may work on one job (the SharedStore methods)

    def __init__(self, dsn: str, *, name: str = "default", pool_size: int = 4) -> None:
        """Raises ConfigError if ``name`` is not 1-40 letters, digits or underscores."""
        if not _NAME.fullmatch(name):
            raise ConfigError(f"--job must be 1 to 40 letters, digits or underscores, "
                              f"got {name!r}")
        if pool_size < 1:
            raise ConfigError(f"pool_size must be >= 1, got {pool_size}")
        self.schema = f"shoal_{name}"
        self.path = display_dsn(dsn, self.schema)
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: Any = None  # asyncpg.Pool once open
        self._s = f'"{self.schema}"'  # quoted: the name keeps its case
        # one advisory lock per job: migrations, and each write transaction
        self._lock_key = int.from_bytes(
            hashlib.sha256(f"shoal:{self.schema}".encode()).digest()[:8], "big", signed=True)
        self._write_lock = asyncio.Lock()
        self._analyzed_rows = 0  # rows the table held at our last ANALYZE
        self._changed = 0  # rows written since
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-pg")

    def _sql(self, template: str) -> str:
        return template.replace("{s}", self._s)

    # -- plumbing ---------------------------------------------------------------------------
    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn`` on the store's own thread, after everything queued before it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        """A pooled connection; driver and network failures become StoreError."""
        if self._pool is None:
            raise StoreError("state database is not open")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except DB_ERRORS as exc:
            raise StoreError(f"state database {self.path}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[Any]:
        """A write transaction, alone among this job's writers in other processes too."""
        # callers hold _write_lock, which orders the writers of this process
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            yield conn

    async def _after_commit(self, sink: Sink | None, written: list[tuple[int, bytes]],
                            changed: int) -> None:
        """Hand ``written`` to the sink (in commit = seq order: callers hold the write lock)."""
        if sink is not None and written:
            await self.in_thread(sink, written)
        self._changed += changed
        if self._changed >= max(ANALYZE_EVERY, self._analyzed_rows):
            await self._analyze()

    async def _analyze(self) -> None:
        """Refresh the planner's statistics of the urls table."""
        # Without them (a new table, or one that grew fast) the planner thinks few URLs are
        # pending and answers next_pending by sorting every pending row instead of walking
        # urls_pending in id order; autovacuum would catch up only a minute or so later.
        # Run when the rows written since the last one reach the table's size then (a
        # handful of times over a run); it samples at most 30,000 rows.
        async with self._conn() as conn:
            await conn.execute(self._sql("ANALYZE {s}.urls"))
            rows = await conn.fetchval(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass",
                self._sql("{s}.urls"))
        self._analyzed_rows, self._changed = max(rows, 0), 0

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self, *, fresh: bool = False) -> None:
        """Connect, create or migrate the job's schema (dropped first if ``fresh``)."""
        self._pool = await open_pool(self._dsn, max_size=self._pool_size,
                                     what=f"state database {self.path}",
                                     setup=lambda conn: self._migrate(conn, fresh))
        await self._analyze()  # a resumed run plans with statistics from the start

    async def _migrate(self, conn: Any, fresh: bool) -> None:
        s = self._s
        async with conn.transaction():
            # two processes opening the same job at once: the second waits, then finds it done
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            if fresh:
                await conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
            await migrate_schema(conn, s, MIGRATIONS, self.path)

    async def close(self) -> None:
        """Close the pool (waiting for connections in use), then the store's thread."""
        try:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                await pool.close()
        finally:
            self._executor.shutdown(wait=True)

    # -- meta -------------------------------------------------------------------------------
    async def get_meta(self) -> dict[str, str]:
        """Every meta key and value."""
        async with self._conn() as conn:
            rows = await conn.fetch(self._sql("SELECT key, value FROM {s}.meta"))
        return {r[0]: r[1] for r in rows}

    async def set_meta(self, values: dict[str, str]) -> None:
        """Upsert meta keys in one transaction."""
        async with self._write_lock, self._tx() as conn:
            await self._set_meta(conn, values)

    async def _set_meta(self, conn: Any, values: dict[str, str]) -> None:
        if values:
            await conn.execute(self._sql(_SET_META), list(values), list(values.values()))

    # -- frontier ---------------------------------------------------------------------------
    async def add(self, new: Sequence[NewUrl], done: Sequence[DoneUrl] = (),
                  meta: dict[str, str] | None = None, sink: Sink | None = None
                  ) -> list[tuple[int, bytes]]:
        """Add URLs (duplicates ignored) and finished invalid lines in one transaction.

        Returns the (seq, record) of the finished lines that were new; ``sink`` gets them on
        the store's thread right after the commit, so output follows seq order.
        """
        written: list[tuple[int, bytes]] = []
        async with self._write_lock:
            async with self._tx() as conn:
                if new:
                    await self._insert(conn, new)
                if done:
                    keys: dict[str, bytes] = {}
                    for d in done:
                        keys.setdefault(d.key, d.record)  # a line twice: the first one
                    rows = await conn.fetch(
                        self._sql(_INSERT_DONE), [_as_text(k) for k in keys],
                        [k.encode("utf-8", "surrogatepass") for k in keys], list(keys.values()))
                    written = sorted((r[0], r[1]) for r in rows)
                if meta:
                    await self._set_meta(conn, meta)
            await self._after_commit(sink, written, len(new) + len(done))
        return written

    async def _insert(self, conn: Any, new: Sequence[NewUrl]) -> int:
        """Add URLs (a big batch through COPY); their hosts have pending URLs again."""
        columns = _new_columns(new)
        if len(columns[0]) >= COPY_AT:
            await conn.execute(_STAGE)
            await conn.copy_records_to_table(
                "shoal_stage", schema_name="pg_temp",
                records=zip(*columns, range(len(columns[0])), strict=True),
                columns=("url", "host", "depth", "parent", "kind", "ord"))
            inserted: int = await conn.fetchval(self._sql(_INSERT_STAGED))
        else:
            inserted = await conn.fetchval(self._sql(_INSERT), *columns)
        await conn.execute(self._sql(HOSTS_PENDING), sorted(set(columns[1])))
        return inserted

    async def next_pending(self, after_id: int, limit: int, max_depth: int | None = None
                           ) -> list[PendingRow]:
        """Pending URLs after ``after_id`` in id order (only those up to ``max_depth``)."""
        async with self._conn() as conn:
            if max_depth is None:
                rows = await conn.fetch(self._sql(_NEXT), after_id, limit)
            else:
                rows = await conn.fetch(self._sql(_NEXT_DEPTH), after_id, limit, max_depth)
        return [PendingRow(*r) for r in rows]

    async def pending_for_host(self, host: str, after_id: int, limit: int,
                               max_depth: int | None = None) -> list[PendingRow]:
        """Pending URLs of one host after ``after_id`` in id order (up to ``max_depth``)."""
        async with self._conn() as conn:
            if max_depth is None:
                rows = await conn.fetch(self._sql(_HOST), host, after_id, limit)
            else:
                rows = await conn.fetch(self._sql(_HOST_DEPTH), host, after_id, limit,
                                        max_depth)
        return [PendingRow(*r) for r in rows]

    # -- results ----------------------------------------------------------------------------
    async def complete(self, results: Sequence[tuple[int, bytes | None]],
                       meta: dict[str, str] | None = None, sink: Sink | None = None,
                       new: Sequence[NewUrl] = (), pages: Sequence[PageData] = ()) -> int:
        """``Store.complete``: records, found URLs and page data in one transaction."""
        sitemaps = [url_id for url_id, record in results if record is None]
        records: dict[int, bytes] = {}
        for url_id, record in results:
            if record is not None:
                records.setdefault(url_id, record)  # an id twice in one batch: the first
        written: list[tuple[int, bytes]] = []
        inserted = 0
        async with self._write_lock:
            async with self._tx() as conn:
                if sitemaps:  # done, no record of their own
                    await conn.execute(self._sql(_SITEMAPS_DONE), sitemaps, self.owner)
                if records:
                    lines = list(records.values())
                    rows = await conn.fetch(self._sql(_DONE), list(records), lines, self.owner)
                    written = sorted((r[0], lines[r[1] - 1]) for r in rows)
                    if pages:
                        ids = list(records)
                        order = {ids[ord_ - 1]: seq for seq, ord_ in rows}  # id -> seq
                        await self._page_data(conn, pages, order)
                if new:
                    inserted = await self._insert(conn, new)
                if meta:
                    await self._set_meta(conn, meta)
            await self._after_commit(sink, written, len(results) + len(new))
        return inserted

    async def _page_data(self, conn: Any, pages: Sequence[PageData], order: dict[int, int]
                         ) -> None:
        """Items and validators of the pages whose record was written (``order``: id -> seq)."""
        kept = sorted((p for p in pages if p.url_id in order), key=lambda p: order[p.url_id])
        items = [(p.url_id, i) for p in kept for i in p.items]
        if items:
            await conn.execute(self._sql(_ITEMS), [i for i, _ in items], [b for _, b in items])
        validators = [p for p in kept if p.etag is not None or p.last_modified is not None]
        if validators:
            await conn.execute(self._sql(_VALIDATORS), [p.url_id for p in validators],
                               [p.etag for p in validators],
                               [p.last_modified for p in validators])

    async def items_after(self, after: int, limit: int = 2000) -> list[tuple[int, bytes]]:
        """The next ``limit`` items (id, JSON) after item id ``after``, in order."""
        async with self._conn() as conn:
            rows = await conn.fetch(self._sql(
                "SELECT id, item FROM {s}.items WHERE id > $1 ORDER BY id LIMIT $2"),
                after, limit)
        return [(r[0], r[1]) for r in rows]

    async def done_by_host(self) -> dict[str, int]:
        """Records per host key so far (for per-host page caps on resume)."""
        async with self._conn() as conn:
            rows = await conn.fetch(self._sql(
                "SELECT host, count(*) FROM {s}.urls "
                "WHERE state = 2 AND host <> '' AND kind = 0 GROUP BY host"))
        return {r[0]: r[1] for r in rows}

    async def counts(self) -> tuple[int, int]:
        """(URLs known, URLs done)."""
        async with self._conn() as conn:
            row = await conn.fetchrow(self._sql(
                "SELECT count(*), count(*) FILTER (WHERE state <> 0) FROM {s}.urls"))
        total: int = row[0]
        done: int = row[1]
        return total, done

    async def records_after(self, seq: int, limit: int = 2000) -> list[tuple[int, bytes]]:
        """The next ``limit`` records after ``seq``, in output order ([] at the end)."""
        async with self._conn() as conn:
            rows = await conn.fetch(self._sql(
                "SELECT seq, record FROM {s}.urls WHERE seq > $1 ORDER BY seq LIMIT $2"),
                seq, limit)
        return [(r[0], r[1]) for r in rows]


def display_dsn(dsn: str, schema: str) -> str:
    """``postgresql://user@host:port/db#schema``: the DSN without password or options."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, hosts = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{hosts}"
    return f"{parts.scheme or 'postgresql'}://{netloc}{parts.path}#{schema}"


def _new_columns(new: Sequence[NewUrl]) -> tuple[list[str], list[str], list[int],
                                                 list[str | None], list[int]]:
    """The unnest columns of ``new``, one row per URL as SQLite's row-by-row upsert leaves it."""
    # PostgreSQL cannot upsert one row twice in a statement, so a URL repeated in the batch
    # is merged here: host and kind of its first occurrence, depth and parent of the first
    # one with the smallest depth.
    rows: dict[str, list[Any]] = {}
    for u in new:
        row = rows.get(u.url)
        if row is None:
            rows[u.url] = [u.host, u.depth, u.parent, u.kind]
        elif u.depth < row[1]:
            row[1], row[2] = u.depth, u.parent
    return (list(rows), [r[0] for r in rows.values()], [r[1] for r in rows.values()],
            [r[2] for r in rows.values()], [r[3] for r in rows.values()])


def _as_text(key: str) -> str:
    """``key`` as PostgreSQL text can hold it (NUL and lone surrogates replaced)."""
    return key.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
