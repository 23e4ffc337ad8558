"""Records of a job in PostgreSQL, read in output order for ``shoal export``.

The export code is synchronous (it writes files and standard output as it reads); this
drives one asyncpg connection on an event loop of its own, one batch at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from shoal.errors import UsageError
from shoal.store.postgres import _NAME, display_dsn

_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresRecords:
    """A read-only view of one job's records (``shoal_<job>``)."""

    def __init__(self, dsn: str, job: str | None) -> None:
        """Raises UsageError for a missing or malformed job name."""
        if not job:
            raise UsageError("exporting from PostgreSQL needs --job NAME")
        if not _NAME.fullmatch(job):
            raise UsageError(f"--job must be 1 to 40 letters, digits or underscores, got {job!r}")
        self.dsn, self.schema = dsn, f"shoal_{job}"
        self.path = display_dsn(dsn, self.schema)
        self._loop = asyncio.new_event_loop()
        self._conn: Any = None

    def __enter__(self) -> PostgresRecords:
        try:
            self._conn = self._run(asyncpg.connect(self.dsn, timeout=10))
            found = self._run(self._conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f'"{self.schema}".urls'))
        except _DB_ERRORS as exc:
            self.close()
            raise UsageError(f"cannot read {self.path}: {exc}") from exc
        if not found:
            self.close()
            raise UsageError(f"{self.path}: no such job in that database")
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                self._run(conn.close())
        finally:
            self._loop.close()

    def extras(self) -> str:
        """The optional record fields some run of this job wrote (meta ``record_extras``)."""
        from shoal.export import EXTRAS_META

        try:
            value = self._run(self._conn.fetchval(
                f'SELECT value FROM "{self.schema}".meta WHERE key = $1', EXTRAS_META))
        except _DB_ERRORS as exc:
            raise UsageError(f"cannot read {self.path}: {exc}") from exc
        return str(value or "")

    def batches(self, size: int) -> Iterator[list[tuple[int, bytes]]]:
        """(seq, record line) in output order, ``size`` at a time, up to the last seq at
        start (records committed later are not part of this export)."""
        s = f'"{self.schema}"'
        try:
            last = self._run(self._conn.fetchval(f"SELECT max(seq) FROM {s}.urls"))
            seq = 0
            while last is not None and seq < last:
                rows = self._run(self._conn.fetch(
                    f"SELECT seq, record FROM {s}.urls WHERE seq > $1 AND seq <= $2 "
                    "ORDER BY seq LIMIT $3", seq, last, size))
                if not rows:
                    return
                seq = rows[-1][0]
                yield [(r[0], bytes(r[1])) for r in rows]
        except _DB_ERRORS as exc:
            raise UsageError(f"cannot read {self.path}: {exc}") from exc
