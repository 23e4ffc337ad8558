"""A job's records read from its state database: filtered pages and streamed exports.

``JobRecords`` is the interface: ``SqliteRecords`` here, ``pgservice.PgRecords`` for a job
in PostgreSQL. On SQLite each read opens the state read-only on a thread of its own (WAL
lets it read while the job's engine writes). Exports read batches with ``records_after``
up to the last record when they start, whatever the backend. Pages follow the record
order (``seq``) with a keyset cursor, and scan a bounded window of records per request, so
a filter that matches rarely still answers quickly: the client follows ``next_cursor``
until ``has_more`` is false.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from shoal.export import COLUMNS, _csv_row, _decode, _open_state

SCAN = 20_000  # records looked at for one page at most
EXPORT_BATCH = 2_000
_TEXT = "CAST(record AS TEXT)"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordFilter:
    status_class: str | None = None  # "2xx" ... "5xx", or "none" (no response)
    error_kind: str | None = None  # an ErrorKind value, or "none" (no error)
    host: str | None = None  # a host key as in the job summary (scheme://host:port)

    def sql(self) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if self.status_class == "none":
            where.append(f"json_extract({_TEXT}, '$.status') IS NULL")
        elif self.status_class is not None:
            low = int(self.status_class[0]) * 100
            where.append(f"json_extract({_TEXT}, '$.status') BETWEEN ? AND ?")
            args += [low, low + 99]
        if self.error_kind == "none":
            where.append(f"json_extract({_TEXT}, '$.error') IS NULL")
        elif self.error_kind is not None:
            where.append(f"json_extract({_TEXT}, '$.error.kind') = ?")
            args.append(self.error_kind)
        if self.host is not None:
            where.append("host = ?")
            args.append(self.host)
        return "".join(f" AND {w}" for w in where), args


def _connect(path: str) -> sqlite3.Connection:
    return _open_state(path)


def records_page(path: str, cursor: int, limit: int, filt: RecordFilter
                 ) -> tuple[list[bytes], int, bool]:
    """(record lines, next cursor, whether records after it exist now); blocking."""
    if not os.path.exists(path):
        return [], cursor, False
    db = _connect(path)
    try:
        where, args = filt.sql()
        (last,) = db.execute("SELECT max(seq) FROM urls WHERE seq IS NOT NULL").fetchone()
        last = last or 0
        window = min(last, cursor + SCAN)
        rows = db.execute(
            f"SELECT seq, record FROM urls WHERE seq > ? AND seq <= ?{where} "
            "ORDER BY seq LIMIT ?", (cursor, window, *args, limit)).fetchall()
    finally:
        db.close()
    next_cursor = rows[-1][0] if len(rows) == limit else window
    return [r[1].rstrip(b"\n") for r in rows], next_cursor, next_cursor < last


class JobRecords(Protocol):
    """A job's records wherever its state lives (SQLite file or PostgreSQL schema)."""

    name: str  # shown in messages

    async def records_after(self, seq: int, limit: int = 2000) -> list[tuple[int, bytes]]: ...
    async def page(self, cursor: int, limit: int, filt: RecordFilter
                   ) -> tuple[list[bytes], int, bool]: ...
    async def base_counts(self) -> list[tuple[str, int | None, str | None, int, int]]: ...
    async def last_seq(self) -> int: ...


_BASE_QUERY = (
    f"SELECT host, json_extract({_TEXT}, '$.status'), json_extract({_TEXT}, '$.error.kind'), "
    f"sum(json_extract({_TEXT}, '$.bytes')), count(*) "
    "FROM urls WHERE state = 2 AND kind = 0 GROUP BY 1, 2, 3")


class SqliteRecords:
    """A job's records in its SQLite state file, each read on a thread, read-only."""

    def __init__(self, path: str) -> None:
        self.path = self.name = path

    async def records_after(self, seq: int, limit: int = 2000) -> list[tuple[int, bytes]]:
        def read() -> list[tuple[int, bytes]]:
            if not os.path.exists(self.path):
                return []
            db = _connect(self.path)
            try:
                return db.execute("SELECT seq, record FROM urls WHERE seq > ? ORDER BY seq "
                                  "LIMIT ?", (seq, limit)).fetchall()
            finally:
                db.close()

        return await asyncio.to_thread(read)

    async def page(self, cursor: int, limit: int, filt: RecordFilter
                   ) -> tuple[list[bytes], int, bool]:
        return await asyncio.to_thread(records_page, self.path, cursor, limit, filt)

    async def last_seq(self) -> int:
        def read() -> int:
            if not os.path.exists(self.path):
                return 0
            db = _connect(self.path)
            try:
                return int(db.execute("SELECT max(seq) FROM urls").fetchone()[0] or 0)
            finally:
                db.close()

        return await asyncio.to_thread(read)

    async def base_counts(self) -> list[tuple[str, int | None, str | None, int, int]]:
        def read() -> list[tuple[str, int | None, str | None, int, int]]:
            if not os.path.exists(self.path):
                return []
            db = _connect(self.path)
            try:
                return [(h, s, k, int(b or 0), n)
                        for h, s, k, b, n in db.execute(_BASE_QUERY).fetchall()]
            finally:
                db.close()

        return await asyncio.to_thread(read)


async def stream_export(source: JobRecords, fmt: str) -> AsyncIterator[bytes]:
    """The job's records as JSON lines or CSV, a batch at a time, never all in memory.

    Covers the records committed when it started (the cut), as ``shoal export`` does."""
    if fmt == "csv":
        yield _csv_bytes([list(COLUMNS)])
    cut = await source.last_seq()
    seq = 0
    while seq < cut:
        rows = [r for r in await source.records_after(seq, EXPORT_BATCH) if r[0] <= cut]
        if not rows:
            return
        seq = rows[-1][0]
        if fmt == "jsonl":
            yield b"".join(bytes(line) for _, line in rows)
        else:
            yield _csv_bytes(_csv_row(_decode(s, bytes(line), source.name)) for s, line in rows)


def _csv_bytes(rows: Any) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()
