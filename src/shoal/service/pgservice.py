"""The service's own tables (tokens, jobs) and its jobs' records in PostgreSQL.

``shoal serve --db postgresql://...`` keeps its tokens and jobs in the schema
``shoal-service`` (a name no ``shoal fetch/crawl --job`` schema, ``shoal_<name>``, can take)
and each job's state in the schema of a ``PostgresStore`` named ``svc_<id>``. The semantics
are those of the SQLite versions (``tokens.TokenStore``, ``jobdb.JobDB``,
``records.SqliteRecords``): the same rows, the same order, the same filters.

``PgTokenStore`` is synchronous like ``TokenStore`` (the CLI and ``asyncio.to_thread``
callers use it): its asyncpg pool lives on an event loop of its own, on its own thread.
``PgJobDB`` and ``PgRecords`` run on the service's loop, over one shared pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import orjson

from shoal.errors import StoreError
from shoal.service.jobdb import JobRow, JobState, stored_columns
from shoal.service.records import SCAN, RecordFilter
from shoal.service.tokens import HashedRow, KeyColumn, TokenInfo, TokenRow, Tokens
from shoal.store.pgpool import DB_ERRORS, open_pool
from shoal.store.postgres import display_dsn, migrate_schema

T = TypeVar("T")

SCHEMA = "shoal-service"  # the service's tables; jobs are in "shoal_svc_<id>"
POOL_SIZE = 4  # connections of the service's own pool (jobs, records, exports)
JOB_POOL_SIZE = 3  # connections of each running job's store
TIMEOUT = 30.0  # seconds one call on the service tables may take
# InternalClientError: a connection the server ended while it sat idle in the pool
_DB_ERRORS = (*DB_ERRORS, asyncpg.InternalClientError, asyncio.TimeoutError)

# Versioned migrations of the service schema ({s}: its quoted name), as tokens.MIGRATIONS.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {s}.tokens (
        seq       bigserial,               -- listing order
        id        text PRIMARY KEY,        -- short public identifier (8 hex digits)
        name      text,
        hash      bytea NOT NULL UNIQUE,   -- sha256 of the token, never the token
        read_only boolean NOT NULL,
        created   text NOT NULL,           -- ISO 8601, UTC
        revoked   text                     -- when revoked, else NULL
    );
    CREATE TABLE {s}.jobs (
        seq      bigserial PRIMARY KEY,    -- listing order
        id       text NOT NULL UNIQUE,
        kind     text NOT NULL,            -- fetch | crawl
        spec     text NOT NULL,            -- JSON: seeds and options (URLs live in a file)
        state    text NOT NULL,            -- queued running paused completed cancelled failed
        token    text NOT NULL,            -- id of the token that created it ('' when open)
        urls     bigint NOT NULL,          -- input URLs (fetch) or seeds (crawl)
        created  text NOT NULL,
        started  text,
        finished text,
        error    text,
        summary  text                      -- JSON: counts when the last run ended
    );
    CREATE INDEX jobs_state ON {s}.jobs (state);
    """,
)


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def job_schema(job_id: str) -> str:
    """The schema of a job's state (``PostgresStore(name=job_store_name(id))``)."""
    return f"shoal_{job_store_name(job_id)}"


def job_store_name(job_id: str) -> str:
    return f"svc_{job_id}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"shoal:{schema}".encode()).digest()[:8], "big",
                          signed=True)


async def migrate(conn: Any, schema: str, *, create: bool, shown: str) -> None:
    """Create or migrate the service schema in one transaction (two services starting at
    once: the second waits for the first)."""
    s = _quote(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema))
        exists = await conn.fetchval(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1", schema)
        if not exists and not create:
            raise StoreError(f"no service database at {shown}")
        await migrate_schema(conn, s, MIGRATIONS, shown)


# -- tokens ---------------------------------------------------------------------------------
class PgTokenStore(Tokens):
    """``TokenStore`` with its table in PostgreSQL; safe to share between threads.

    Raises:
        StoreError: the database cannot be reached or used, is from a newer shoal, or
            (with ``create=False``) holds no service schema.
    """

    def __init__(self, dsn: str, *, create: bool = True, schema: str = SCHEMA) -> None:
        self.path = display_dsn(dsn, schema)
        self._s = _quote(schema)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="shoal-pg-tokens")
        self._thread.start()
        self._pool: Any = None
        try:
            self._pool = self._run(open_pool(
                dsn, max_size=2, what=f"service database {self.path}", errors=_DB_ERRORS,
                setup=lambda conn: migrate(conn, schema, create=create, shown=self.path)))
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        async def bounded() -> T:
            try:
                async with asyncio.timeout(TIMEOUT):
                    return await coro
            except _DB_ERRORS as exc:
                raise StoreError(f"service database {self.path}: {exc}") from exc

        return asyncio.run_coroutine_threadsafe(bounded(), self._loop).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                self._run(pool.close())
            finally:
                self._stop()

    def _sql(self, text: str) -> str:
        return text.replace("{s}", self._s)

    def count_active(self) -> int:
        n = self._run(self._pool.fetchval(self._sql(
            "SELECT count(*) FROM {s}.tokens WHERE revoked IS NULL")))
        return int(n)

    def _insert(self, info: TokenInfo, digest: bytes) -> bool:
        inserted = self._run(self._pool.fetchval(self._sql(
            "INSERT INTO {s}.tokens (id, name, hash, read_only, created) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING 1"),
            info.id, info.name, digest, info.read_only, info.created))
        return bool(inserted)

    def _find(self, digest: bytes) -> HashedRow | None:
        row = self._run(self._pool.fetchrow(self._sql(
            "SELECT id, name, read_only, created, revoked, hash FROM {s}.tokens "
            "WHERE hash = $1"), digest))
        return None if row is None else tuple(row)

    def _revoke(self, column: KeyColumn, key: str | bytes, when: str) -> bool:
        async def revoke() -> bool:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(self._sql(
                    f"UPDATE {{s}}.tokens SET revoked = $2 WHERE {column} = $1 "
                    "AND revoked IS NULL"), key, when)
                return await conn.fetchval(self._sql(
                    f"SELECT 1 FROM {{s}}.tokens WHERE {column} = $1"), key) is not None

        return self._run(revoke())

    def _rows(self) -> list[TokenRow]:
        rows = self._run(self._pool.fetch(self._sql(
            "SELECT id, name, read_only, created, revoked FROM {s}.tokens "
            "ORDER BY created, seq")))
        return [tuple(r) for r in rows]


# -- jobs -----------------------------------------------------------------------------------
_COLUMNS = "seq, id, kind, spec, state, token, urls, created, started, finished, error, summary"


def _row(r: Any) -> JobRow:
    return JobRow(seq=r[0], id=r[1], kind=r[2], spec=orjson.loads(r[3]), state=JobState(r[4]),
                  token=r[5], urls=r[6], created=r[7], started=r[8], finished=r[9],
                  error=r[10], summary=None if r[11] is None else orjson.loads(r[11]))


class PgJobDB:
    """``JobDB`` with its table in PostgreSQL, on the service's event loop.

    The schema is made by ``PgTokenStore`` (as ``TokenStore`` makes the SQLite one).
    """

    def __init__(self, dsn: str, *, schema: str = SCHEMA) -> None:
        self.path = display_dsn(dsn, schema)
        self._dsn = dsn
        self._s = _quote(schema)
        self._pool: Any = None

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise StoreError("service database is not open")
        return self._pool

    def _sql(self, text: str) -> str:
        return text.replace("{s}", self._s)

    async def _q(self, method: str, sql: str, *args: Any) -> Any:
        try:
            async with asyncio.timeout(TIMEOUT):
                return await getattr(self.pool, method)(self._sql(sql), *args)
        except _DB_ERRORS as exc:
            raise StoreError(f"service database {self.path}: {exc}") from exc

    async def open(self) -> None:
        self._pool = await open_pool(self._dsn, max_size=POOL_SIZE,
                                     what=f"service database {self.path}", errors=_DB_ERRORS)
        try:
            await self._q("fetchval", "SELECT 1 FROM {s}.jobs LIMIT 1")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def insert(self, row: JobRow) -> JobRow:
        row.seq = await self._q(
            "fetchval",
            "INSERT INTO {s}.jobs (id, kind, spec, state, token, urls, created) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
            row.id, row.kind, orjson.dumps(row.spec).decode(), str(row.state), row.token,
            row.urls, row.created)
        return row

    async def get(self, job_id: str) -> JobRow | None:
        r = await self._q("fetchrow", f"SELECT {_COLUMNS} FROM {{s}}.jobs WHERE id = $1",
                          job_id)
        return None if r is None else _row(r)

    async def page(self, before: int | None, limit: int) -> list[JobRow]:
        """Newest first: ``limit`` jobs created before the job numbered ``before``."""
        rows = await self._q(
            "fetch", f"SELECT {_COLUMNS} FROM {{s}}.jobs WHERE seq < $1 ORDER BY seq DESC "
                     "LIMIT $2", before if before is not None else 1 << 62, limit)
        return [_row(r) for r in rows]

    async def in_states(self, states: frozenset[JobState]) -> list[JobRow]:
        rows = await self._q(
            "fetch", f"SELECT {_COLUMNS} FROM {{s}}.jobs WHERE state = ANY($1::text[]) "
                     "ORDER BY seq", [str(s) for s in states])
        return [_row(r) for r in rows]

    async def count_active(self, token: str) -> int:
        """Jobs of this token that are queued or running."""
        n = await self._q("fetchval", "SELECT count(*) FROM {s}.jobs WHERE token = $1 "
                          "AND state IN ($2, $3)", token, str(JobState.QUEUED),
                          str(JobState.RUNNING))
        return int(n)

    async def update(self, job_id: str, *, when: JobState | None = None, **values: Any
                     ) -> bool:
        """Set columns of a job (``summary`` given as a dict); with ``when``, only if the
        job is in that state. True if the row was changed."""
        values = stored_columns(values)
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, 2))
        args: list[Any] = [job_id, *values.values()]
        cond = ""
        if when is not None:
            args.append(str(when))
            cond = f" AND state = ${len(args)}"
        status = await self._q("execute", f"UPDATE {{s}}.jobs SET {sets} WHERE id = $1{cond}",
                               *args)
        return bool(status == "UPDATE 1")

    async def claim(self, job_id: str, started: str) -> bool:
        """Mark a queued (or interrupted running) job as running; False if it is neither
        any more (paused, cancelled or deleted meanwhile). One statement: atomic."""
        status = await self._q(
            "execute", "UPDATE {s}.jobs SET state = $2, started = coalesce(started, $3) "
            "WHERE id = $1 AND state IN ($4, $5)", job_id, str(JobState.RUNNING), started,
            str(JobState.QUEUED), str(JobState.RUNNING))
        return bool(status == "UPDATE 1")

    async def delete(self, job_id: str) -> None:
        """Delete the job's row and drop its state's schema."""
        await self._q("execute", "DELETE FROM {s}.jobs WHERE id = $1", job_id)
        await self._q("execute", f"DROP SCHEMA IF EXISTS {_quote(job_schema(job_id))} CASCADE")

    def records(self, job_id: str) -> PgRecords:
        return PgRecords(self, job_schema(job_id))


# -- records --------------------------------------------------------------------------------
_J = "convert_from(record, 'UTF8')::json"  # json, not jsonb: it accepts \u0000 in strings


class PgRecords:
    """A job's records in its PostgreSQL schema, read over the service's pool."""

    def __init__(self, db: PgJobDB, schema: str) -> None:
        self._db = db
        self._s = _quote(schema)
        self.name = display_dsn(db._dsn, schema)
        self._schema = schema

    async def _q(self, method: str, sql: str, *args: Any) -> Any:
        # a job not started yet has no schema: nothing to read
        try:
            async with asyncio.timeout(TIMEOUT):
                return await getattr(self._db.pool, method)(sql.replace("{s}", self._s),
                                                            *args)
        except asyncpg.UndefinedTableError:
            return None
        except _DB_ERRORS as exc:
            raise StoreError(f"state database {self.name}: {exc}") from exc

    async def records_after(self, seq: int, limit: int = 2000) -> list[tuple[int, bytes]]:
        rows = await self._q("fetch", "SELECT seq, record FROM {s}.urls WHERE seq > $1 "
                             "ORDER BY seq LIMIT $2", seq, limit)
        return [(r[0], r[1]) for r in rows or ()]

    async def last_seq(self) -> int:
        return int(await self._q("fetchval", "SELECT max(seq) FROM {s}.urls") or 0)

    async def page(self, cursor: int, limit: int, filt: RecordFilter
                   ) -> tuple[list[bytes], int, bool]:
        """As ``records.records_page``: the same window, filters and cursor."""
        where: list[str] = []
        args: list[Any] = [cursor, 0, limit]
        if filt.status_class == "none":
            where.append(f"{_J}->>'status' IS NULL")
        elif filt.status_class is not None:
            low = int(filt.status_class[0]) * 100
            args += [low]
            where.append(f"({_J}->>'status')::numeric BETWEEN ${len(args)} "
                         f"AND ${len(args)} + 99")
        if filt.error_kind == "none":
            where.append(f"{_J}->>'error' IS NULL")
        elif filt.error_kind is not None:
            args.append(filt.error_kind)
            where.append(f"{_J}->'error'->>'kind' = ${len(args)}")
        if filt.host is not None:
            args.append(filt.host)
            where.append(f"host = ${len(args)}")
        last = await self._q("fetchval", "SELECT max(seq) FROM {s}.urls WHERE seq IS NOT NULL")
        last = last or 0
        window = min(last, cursor + SCAN)
        args[1] = window
        cond = "".join(f" AND {w}" for w in where)
        rows = await self._q("fetch", "SELECT seq, record FROM {s}.urls WHERE seq > $1 "
                             f"AND seq <= $2{cond} ORDER BY seq LIMIT $3", *args) or []
        next_cursor = rows[-1][0] if len(rows) == limit else window
        return [bytes(r[1]).rstrip(b"\n") for r in rows], next_cursor, next_cursor < last

    async def base_counts(self) -> list[tuple[str, int | None, str | None, int, int]]:
        """(host, status, error kind, bytes, records) of the records so far, grouped."""
        rows = await self._q(
            "fetch",
            f"SELECT host, ({_J}->>'status')::int, {_J}->'error'->>'kind', "
            f"sum(({_J}->>'bytes')::bigint), count(*) FROM {{s}}.urls "
            "WHERE state = 2 AND kind = 0 AND seq IS NOT NULL GROUP BY 1, 2, 3")
        return [(r[0], r[1], r[2], int(r[3] or 0), int(r[4])) for r in rows or ()]
