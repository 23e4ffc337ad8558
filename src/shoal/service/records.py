"""A job's records read from its state database: filtered pages and streamed exports.

Each read opens the state read-only on a thread of its own (SQLite WAL lets it read while
the job's engine writes). Pages follow the record order (``seq``) with a keyset cursor, and
scan a bounded window of records per request, so a filter that matches rarely still
answers quickly: the client follows ``next_cursor`` until ``has_more`` is false.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shoal.export import COLUMNS, _batches, _csv_row, _decode, _open_state

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


async def stream_export(path: str, fmt: str) -> AsyncIterator[bytes]:
    """The job's records as JSON lines or CSV, a batch at a time, never all in memory."""
    if fmt == "csv":
        yield _csv_bytes([list(COLUMNS)])
    loop = asyncio.get_running_loop()
    if not await asyncio.to_thread(os.path.exists, path):
        return
    # sqlite3 connections stay on the thread that made them: one thread for this export
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-export") as pool:
        db = await loop.run_in_executor(pool, _connect, path)
        try:
            batches = _batches(db, path, EXPORT_BATCH)
            while True:
                chunk = await loop.run_in_executor(pool, _next_chunk, batches, fmt, path)
                if chunk is None:
                    return
                yield chunk
        finally:
            await loop.run_in_executor(pool, db.close)


def _next_chunk(batches: Iterator[list[tuple[int, bytes]]], fmt: str, path: str
                ) -> bytes | None:
    rows = next(batches, None)
    if rows is None:
        return None
    if fmt == "jsonl":
        return b"".join(line for _, line in rows)
    return _csv_bytes(_csv_row(_decode(seq, line, path)) for seq, line in rows)


def _csv_bytes(rows: Any) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()
