"""``--since PREVIOUS_STATE``: what an earlier run learned about each URL, for a conditional
recrawl (validators to send, a content hash to compare, and in a crawl its pages).

The previous state is opened read-only on a thread of its own; lookups are by the URL's
unique index, one small query each.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from shoal.errors import UsageError
from shoal.store.base import PAGE, NewUrl


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


class Previous:
    """A previous run's state, read-only."""

    def __init__(self, path: str) -> None:
        """Raises UsageError when ``path`` is not a readable shoal SQLite state."""
        if path.startswith(("postgresql://", "postgres://")):
            raise UsageError("--since takes the SQLite state file of an earlier run "
                             "(PostgreSQL jobs are not supported yet)")
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

    def same_file(self, other: str | None) -> bool:
        try:
            return other is not None and os.path.samefile(self.path, other)
        except OSError:
            return False

    async def lookup(self, url: str) -> Prior | None:
        """The previous record of ``url`` (None when it had none)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._lookup,
                                                                url)

    def _lookup(self, url: str) -> Prior | None:
        row = self._db.execute(self._lookup_sql, (url,)).fetchone()
        if row is None:
            return None
        try:
            rec: dict[str, Any] = orjson.loads(row[0])
        except orjson.JSONDecodeError:
            return None
        if rec.get("error") is not None or rec.get("status") is None:
            return None  # no body came then: nothing to compare with
        return Prior(final_url=rec.get("final_url") or url, etag=row[1], last_modified=row[2],
                     sha256=rec.get("sha256"), content_type=rec.get("content_type"),
                     title=rec.get("title"), links=rec.get("links") or 0)

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


def _uri(path: str) -> str:
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
