"""The service's jobs table (in the service database, beside the tokens), on one thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import orjson

from shoal.errors import StoreError

T = TypeVar("T")


class JobState(StrEnum):
    """A job's lifecycle: queued -> running -> completed, or paused / cancelled / failed."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING})  # will run without being asked
FINAL = frozenset({JobState.COMPLETED, JobState.CANCELLED, JobState.FAILED})

_COLUMNS = "seq, id, kind, spec, state, token, urls, created, started, finished, error, summary"


@dataclass(slots=True, kw_only=True)
class JobRow:
    """One row of the jobs table."""

    seq: int
    id: str
    kind: str
    spec: dict[str, Any]
    state: JobState
    token: str
    urls: int
    created: str
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None


def _row(r: tuple[Any, ...]) -> JobRow:
    return JobRow(seq=r[0], id=r[1], kind=r[2], spec=orjson.loads(r[3]), state=JobState(r[4]),
                  token=r[5], urls=r[6], created=r[7], started=r[8], finished=r[9],
                  error=r[10], summary=None if r[11] is None else orjson.loads(r[11]))


def stored_columns(values: dict[str, Any]) -> dict[str, Any]:
    """Job columns as both databases store them: ``summary`` as JSON text, ``state`` as
    its name."""
    out = dict(values)
    if out.get("summary") is not None:
        out["summary"] = orjson.dumps(out["summary"]).decode()
    if "state" in out:
        out["state"] = str(out["state"])
    return out


class JobDB:
    """Reads and writes of the jobs table, each run in order on the table's own thread.

    The schema is created by the service database's migrations (``tokens.MIGRATIONS``),
    which ``TokenStore`` applies; open one of those on the file first.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-jobs")
        self._db: sqlite3.Connection | None = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("service database is not open")
        return self._db

    async def open(self) -> None:
        def connect() -> None:
            try:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA busy_timeout=5000")
                db.execute("SELECT 1 FROM jobs LIMIT 1")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot use service database {self.path}: {exc}") from exc
            self._db = db

        await self._call(connect)

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await self._call(close)
        finally:
            self._executor.shutdown(wait=True)

    async def insert(self, row: JobRow) -> JobRow:
        def insert() -> int:
            cur = self.db.execute(
                "INSERT INTO jobs (id, kind, spec, state, token, urls, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.kind, orjson.dumps(row.spec).decode(), str(row.state), row.token,
                 row.urls, row.created))
            return int(cur.lastrowid or 0)

        row.seq = await self._call(insert)
        return row

    async def get(self, job_id: str) -> JobRow | None:
        r = await self._call(lambda: self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return None if r is None else _row(r)

    async def page(self, before: int | None, limit: int) -> list[JobRow]:
        """Newest first: ``limit`` jobs created before the job numbered ``before``."""
        rows = await self._call(lambda: self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE seq < ? ORDER BY seq DESC LIMIT ?",
            (before if before is not None else 1 << 62, limit)).fetchall())
        return [_row(r) for r in rows]

    async def in_states(self, states: frozenset[JobState]) -> list[JobRow]:
        marks = ",".join("?" * len(states))
        rows = await self._call(lambda: self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY seq",
            tuple(str(s) for s in states)).fetchall())
        return [_row(r) for r in rows]

    async def count_active(self, token: str) -> int:
        """Jobs of this token that are queued or running."""
        r = await self._call(lambda: self.db.execute(
            "SELECT count(*) FROM jobs WHERE token = ? AND state IN (?, ?)",
            (token, str(JobState.QUEUED), str(JobState.RUNNING))).fetchone())
        return int(r[0])

    async def update(self, job_id: str, *, when: JobState | None = None, **values: Any
                     ) -> bool:
        """Set columns of a job (``summary`` given as a dict); with ``when``, only if the
        job is in that state. True if the row was changed."""
        values = stored_columns(values)
        sets = ", ".join(f"{name} = ?" for name in values)
        cond, args = ("", ()) if when is None else (" AND state = ?", (str(when),))
        cur = await self._call(lambda: self.db.execute(
            f"UPDATE jobs SET {sets} WHERE id = ?{cond}", (*values.values(), job_id, *args)))
        return bool(cur.rowcount == 1)

    async def claim(self, job_id: str, started: str) -> bool:
        """Mark a queued (or interrupted running) job as running; False if it is neither
        any more (paused, cancelled or deleted meanwhile). One statement: atomic."""
        def claim() -> bool:
            cur = self.db.execute(
                "UPDATE jobs SET state = ?, started = coalesce(started, ?) "
                "WHERE id = ? AND state IN (?, ?)",
                (str(JobState.RUNNING), started, job_id, str(JobState.QUEUED),
                 str(JobState.RUNNING)))
            return cur.rowcount == 1

        return await self._call(claim)

    async def delete(self, job_id: str) -> None:
        await self._call(lambda: self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)))
