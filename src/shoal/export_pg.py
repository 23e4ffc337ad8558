"""A PostgreSQL job read for ``shoal export`` (``postgresql://.../db#JOB``).

The export's writers are synchronous, so this reader drives asyncpg from a private event
loop of its own, run on a thread of its own (so that an export works the same when called
from code that runs an event loop): each call runs one query to completion there and
returns plain rows. Everything
is read in one read-only REPEATABLE READ transaction, so the export (and the two passes of
an items export) sees one consistent cut of the job, however long it takes and whatever a
run still writing to the job adds meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from shoal.errors import UsageError
from shoal.store.postgres import display_dsn

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0  # seconds to reach the server and open the transaction
QUERY_TIMEOUT = 300.0  # seconds for one query (a batch of records)

# What the driver raises when the server, the network, the DSN or the connection fails.
_ERRORS = (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError)

_LAST = {
    # `seq IS NOT NULL` lets PostgreSQL read the max off the partial seq index
    "urls": "SELECT coalesce(max(seq), 0) FROM {s}.urls WHERE seq IS NOT NULL",
    "items": "SELECT coalesce(max(id), 0) FROM {s}.items",
}
_ROWS = {
    "urls": ("SELECT seq, record FROM {s}.urls WHERE seq IS NOT NULL AND seq > $1 "
             "AND seq <= $2 ORDER BY seq LIMIT $3"),
    "items": "SELECT id, item FROM {s}.items WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3",
}


class PgReader:
    """One job's schema ``shoal_<job>``, read-only, in one snapshot (a ``StateReader``)."""

    def __init__(self, dsn: str, job: str) -> None:
        """Connect and open the snapshot.

        Raises:
            UsageError: the server cannot be reached, or the database holds no such job.
        """
        self.schema = f"shoal_{job}"
        self.path = display_dsn(dsn, self.schema)
        self._s = f'"{self.schema}"'
        self._loop = asyncio.new_event_loop()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-export")
        self._conn: Any = None
        try:
            tables = self._run(self._open(dsn), CONNECT_TIMEOUT, "cannot read")
        except BaseException:
            self.close()
            raise
        if not {"urls", "meta"} <= tables:
            self.close()
            raise UsageError(f"{self.path!r}: no such job in that database")
        self._tables = tables

    async def _open(self, dsn: str) -> set[str]:
        self._conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
        # a consistent cut: every later query sees the job as it was here
        await self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        rows = await self._conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            self.schema)
        return {r[0] for r in rows}

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float, doing: str) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await coro

        try:
            return self._thread.submit(self._loop.run_until_complete, bounded()).result()
        except _ERRORS as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(
                exc).__name__
            raise UsageError(f"{doing} {self.path!r}: {reason}") from exc

    def meta(self, key: str) -> str | None:
        """The job's meta value of ``key`` (None when it has none)."""
        value: str | None = self._run(self._conn.fetchval(
            f"SELECT value FROM {self._s}.meta WHERE key = $1", key),
            QUERY_TIMEOUT, "cannot read")
        return value

    def has_items(self) -> bool:
        """False for a job an older shoal wrote, before extraction."""
        return "items" in self._tables

    def last(self, table: str) -> int:
        """The last key (record seq, item id) of ``table`` in the snapshot, 0 when empty."""
        value: int = self._run(self._conn.fetchval(_LAST[table].format(s=self._s)),
                               QUERY_TIMEOUT, "cannot read")
        return value

    def rows(self, table: str, after: int, last: int, size: int) -> list[tuple[int, bytes]]:
        """(key, JSON bytes) of ``table`` in key order: at most ``size`` in (after, last]."""
        rows = self._run(self._conn.fetch(_ROWS[table].format(s=self._s), after, last, size),
                         QUERY_TIMEOUT, "cannot read")
        return [(r[0], r[1]) for r in rows]

    def close(self) -> None:
        """End the snapshot and the connection, then the private loop."""
        conn, self._conn = self._conn, None
        try:
            if conn is not None and not conn.is_closed():
                # closing ends the read-only transaction: nothing to commit
                self._thread.submit(self._loop.run_until_complete,
                                    asyncio.wait_for(conn.close(), 5.0)).result()
        except _ERRORS:
            conn.terminate()  # the export's result (or its first error) is what counts
        finally:
            self._thread.submit(self._loop.close).result()
            self._thread.shutdown(wait=True)
