"""``--since PREVIOUS``: what an earlier run learned about each URL, for a conditional
recrawl (validators to send, a content hash to compare, and in a crawl its pages).

The earlier run is an SQLite state file (opened read-only on a thread of its own) or a
PostgreSQL job, named ``postgresql://.../db#JOB`` (read over a small pool). Lookups are
by the URL's unique index, one small query each.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urldefrag

import orjson

from shoal.errors import StoreError, UsageError
from shoal.store.base import PAGE, NewUrl

_JOB = re.compile(r"[A-Za-z0-9_]{1,40}")
_PASSWORD = re.compile(r"^([a-z]+://[^/@:]*):[^/@]*@")


@dataclass(frozen=True, slots=True)
class Prior:
    """One URL's record in the previous run, and the validators its response carried."""

    final_url: str
    etag: str | None
    last_modified: str | None
    sha256: str | None
    content_type: str | None
    title: str | None
    links: int

    def conditional_headers(self, url: str) -> dict[str, str] | None:
        """The headers of a conditional GET of ``url`` (validators apply to the final URL
        of the previous fetch), or None when there is nothing to send."""
        if url != self.final_url or (self.etag is None and self.last_modified is None):
            return None
        headers = {}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        if self.last_modified is not None:
            headers["If-Modified-Since"] = self.last_modified
        return headers


class Previous(Protocol):
    """An earlier run, read-only."""

    path: str  # as the store of that run displays itself

    async def lookup(self, url: str) -> Prior | None: ...
    async def pages_after(self, after_id: int, limit: int) -> list[tuple[int, NewUrl]]: ...
    async def close(self) -> None: ...


async def open_previous(spec: str) -> Previous:
    """The earlier run ``spec`` names: an SQLite state path or ``postgresql://...#JOB``.

    Raises:
        UsageError: it does not exist or is not a shoal state.
    """
    named = job_url(spec, what="--since", whose="the earlier job")
    if named is not None:
        pg = PostgresPrevious(*named)
        await pg.open()
        return pg
    return SqlitePrevious(spec)


def job_url(spec: str, *, what: str, whose: str = "the job") -> tuple[str, str] | None:
    """(dsn, job) of a PostgreSQL job named ``postgresql://.../db#JOB``, None for anything
    else (an SQLite path).

    Raises:
        UsageError: a postgresql:// URL without a valid job after '#' (``what`` and
            ``whose`` word the message).
    """
    if not spec.startswith(("postgresql://", "postgres://")):
        return None
    shown = _PASSWORD.sub(r"\1@", spec)  # messages never show the password
    try:
        dsn, job = urldefrag(spec)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 host
        raise UsageError(f"{what} {shown!r}: not a database URL ({exc})") from exc
    if not _JOB.fullmatch(job):
        raise UsageError(f"{what} {shown!r}: name {whose} after '#', as "
                         "postgresql://host/db#JOB (JOB as given to --job)")
    return dsn, job


def _prior(url: str, record: bytes, etag: str | None, last_modified: str | None
           ) -> Prior | None:
    try:
        rec: dict[str, Any] = orjson.loads(record)
    except orjson.JSONDecodeError:
        return None
    if rec.get("error") is not None or rec.get("status") is None:
        return None  # no body came then: nothing to compare with
    return Prior(final_url=rec.get("final_url") or url, etag=etag, last_modified=last_modified,
                 sha256=rec.get("sha256"), content_type=rec.get("content_type"),
                 title=rec.get("title"), links=rec.get("links") or 0)


class SqlitePrevious:
    """An earlier run's SQLite state file."""

    def __init__(self, path: str) -> None:
        """Raises UsageError when ``path`` is not a readable shoal SQLite state."""
        if not os.path.isfile(path):
            raise UsageError(f"--since {path!r}: no such state database")
        self.path = path
        try:
            db = sqlite3.connect(f"file:{_uri(path)}?mode=ro", uri=True,
                                 check_same_thread=False)
            tables = {n for (n,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {r[1] for r in db.execute("PRAGMA table_info(urls)")}
        except sqlite3.Error as exc:
            raise UsageError(f"--since {path!r}: not a shoal state database ({exc})") from exc
        if not {"urls", "meta"} <= tables:
            db.close()
            raise UsageError(f"--since {path!r}: not a shoal state database")
        # states written before validators were kept: compare content hashes only
        validators = "etag, last_modified" if "etag" in columns else "NULL, NULL"
        self._lookup_sql = (f"SELECT record, {validators} FROM urls "
                            "WHERE url = ? AND seq IS NOT NULL")
        self._has_kind = "kind" in columns
        self._db = db
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-since")

    async def lookup(self, url: str) -> Prior | None:
        """The previous record of ``url`` (None when it had none)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._lookup,
                                                                url)

    def _lookup(self, url: str) -> Prior | None:
        row = self._db.execute(self._lookup_sql, (url,)).fetchone()
        return None if row is None else _prior(url, row[0], row[1], row[2])

    async def pages_after(self, after_id: int, limit: int) -> list[tuple[int, NewUrl]]:
        """The previous run's pages with a record after row ``after_id``, in id order, as
        frontier rows at their previous depth and parent."""
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._pages_after, after_id, limit)

    def _pages_after(self, after_id: int, limit: int) -> list[tuple[int, NewUrl]]:
        kind = " AND kind = 0" if self._has_kind else ""
        rows: Sequence[tuple[int, str, str, int, str | None]] = self._db.execute(
            "SELECT id, url, host, depth, parent FROM urls WHERE id > ? AND seq IS NOT NULL "
            f"AND host != ''{kind} ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        return [(r[0], NewUrl(r[1], r[2], r[3], r[4], PAGE)) for r in rows]

    async def close(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._db.close)
        finally:
            self._thread.shutdown(wait=True)


class PostgresPrevious:
    """An earlier run's PostgreSQL job (its schema ``shoal_<job>``)."""

    def __init__(self, dsn: str, job: str) -> None:
        from shoal.store.postgres import display_dsn

        self.schema = f"shoal_{job}"
        self.path = display_dsn(dsn, self.schema)
        self._dsn = dsn
        self._s = f'"{self.schema}"'
        self._pool: Any = None

    async def open(self) -> None:
        """Raises UsageError when the job does not exist or the server cannot be reached."""
        import asyncpg  # type: ignore[import-untyped]

        try:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=2)
            columns = {r[0] for r in await self._pool.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = $1 AND table_name = 'urls'", self.schema)}
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            raise UsageError(f"--since {self.path}: cannot read it ({exc})") from exc
        if not columns:
            await self.close()
            raise UsageError(f"--since {self.path}: no such job in that database")
        validators = "etag, last_modified" if "etag" in columns else "NULL, NULL"
        self._lookup_sql = (f"SELECT record, {validators} FROM {self._s}.urls "
                            "WHERE url_hash = sha256(convert_to($1, 'UTF8')) "
                            "AND seq IS NOT NULL")

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        import asyncpg

        try:
            rows: list[Any] = await self._pool.fetch(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"--since {self.path}: {exc}") from exc
        return rows

    async def lookup(self, url: str) -> Prior | None:
        rows = await self._fetch(self._lookup_sql, url)
        return None if not rows else _prior(url, rows[0][0], rows[0][1], rows[0][2])

    async def pages_after(self, after_id: int, limit: int) -> list[tuple[int, NewUrl]]:
        rows = await self._fetch(
            f"SELECT id, url, host, depth, parent FROM {self._s}.urls WHERE id > $1 "
            "AND seq IS NOT NULL AND host <> '' AND kind = 0 ORDER BY id LIMIT $2",
            after_id, limit)
        return [(r[0], NewUrl(r[1], r[2], r[3], r[4], PAGE)) for r in rows]

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


def same_run(previous: Previous, store_path: str) -> bool:
    """True when ``previous`` is the state ``store_path`` (this run's own)."""
    if isinstance(previous, PostgresPrevious):
        return previous.path == store_path
    try:
        return os.path.samefile(previous.path, store_path)
    except OSError:
        return False


def _uri(path: str) -> str:
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
