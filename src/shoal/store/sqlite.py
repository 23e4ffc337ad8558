"""The embedded state database: SQLite in WAL mode, owned by one dedicated thread.

Every call runs on that thread, in order, so the connection is never shared and the event
loop never waits on disk. Writes are batched by the caller (hundreds of rows a commit).

Bulk statements take their rows as one JSON parameter (``json_each``) and reads return one
JSON aggregate, so each is a single ``sqlite3_step``. Python's sqlite3 releases the GIL
around every step; with one step per row, the database thread and the busy event loop
thread hand the GIL back and forth for every row (each hand-back can wait a whole switch
interval), and a 1,000-row commit took longer than fetching the pages.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from shoal.errors import StoreError
from shoal.store.base import DoneUrl, NewUrl, PageData, PendingRow, Sink

try:
    import fcntl
except ImportError:  # not POSIX: runs on one state are not kept apart
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")

PENDING, DONE = 0, 2
_NO_LIMIT = 1 << 62
# A URL already known keeps its row; a shorter path found before it is fetched lowers its
# depth (and takes its parent), so depths stay breadth-first when pages finish out of order.
# The rows come as one JSON array of [url, host, depth, parent, kind].
_INSERT = (
    "INSERT INTO urls (url, host, depth, parent, kind) "
    "SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4 "
    "FROM json_each(?) AS j WHERE true "  # WHERE: lets the parser see the upsert clause
    "ON CONFLICT (url) DO UPDATE SET depth = excluded.depth, parent = excluded.parent "
    "WHERE urls.state = 0 AND excluded.depth < urls.depth")
# [[seq, record, id, etag, last_modified], ...]: the records of finished URLs, and their
# pages' validators for a conditional recrawl (in the same pass over the rows)
_DONE = ("UPDATE urls SET state = 2, seq = j.value->>0, record = CAST(j.value->>1 AS BLOB), "
         "etag = coalesce(j.value->>3, urls.etag), "
         "last_modified = coalesce(j.value->>4, urls.last_modified) "
         "FROM json_each(?) AS j WHERE urls.id = j.value->>2 AND urls.state = 0")
_MAX_SEQ = "SELECT max(seq) FROM urls INDEXED BY urls_seq WHERE seq IS NOT NULL"
# [[id, item], ...] of pages finished in this transaction: rows whose record got a seq in
# [?, ?) (a URL done before keeps its own)
_ITEMS = ("INSERT INTO items (url_id, item) SELECT u.id, CAST(j.value->>1 AS BLOB) "
          "FROM json_each(?) AS j JOIN urls AS u ON u.id = j.value->>0 "
          "WHERE u.seq >= ? AND u.seq < ? ORDER BY u.seq, j.key")
_NO_VALIDATORS = (None, None)
_PENDING_COLUMNS = "json_group_array(json_array(id, url, host, depth, parent, kind))"


def _new_rows(new: Sequence[NewUrl]) -> bytes:
    return orjson.dumps([(u.url, u.host, u.depth, u.parent, u.kind) for u in new])


def _pending(found: str | None) -> list[PendingRow]:
    return [PendingRow(*r) for r in orjson.loads(found or "[]")]

# Versioned migrations: index i moves the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE urls (
        id     INTEGER PRIMARY KEY,
        url    TEXT NOT NULL UNIQUE,     -- the normalised URL (or the raw invalid line)
        host   TEXT NOT NULL,            -- scheme://host:port, '' for invalid lines
        depth  INTEGER NOT NULL DEFAULT 0,
        parent TEXT,
        state  INTEGER NOT NULL DEFAULT 0,  -- 0 pending, 2 done
        seq    INTEGER,                  -- output order of the record
        record BLOB                      -- the JSON line
    );
    CREATE INDEX urls_pending ON urls (id) WHERE state = 0;
    CREATE INDEX urls_pending_host ON urls (host, id) WHERE state = 0;
    CREATE UNIQUE INDEX urls_seq ON urls (seq) WHERE seq IS NOT NULL;
    """,
    # 2: sitemap files live in the frontier too; they yield URLs, not records
    """
    ALTER TABLE urls ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;  -- 0 page, 1 sitemap
    """,
    # 3: items extracted from pages, and each page's validators for a conditional recrawl
    """
    CREATE TABLE items (
        id     INTEGER PRIMARY KEY,      -- export order
        url_id INTEGER NOT NULL,         -- the page it came from (urls.id)
        item   BLOB NOT NULL             -- one JSON object
    );
    ALTER TABLE urls ADD COLUMN etag TEXT;
    ALTER TABLE urls ADD COLUMN last_modified TEXT;
    """,
)


def migrate(db: sqlite3.Connection, migrations: Sequence[str], path: str) -> None:
    """Bring ``db`` to the latest of ``migrations`` (index i: version i to i + 1), one
    transaction per step, its version kept in ``PRAGMA user_version``.

    Raises:
        StoreError: the file was written by a newer shoal.
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(migrations):
        raise StoreError(f"{path} was written by a newer shoal "
                         f"(schema {version}, this one knows {len(migrations)})")
    for v in range(version, len(migrations)):
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in migrations[v].split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute(f"PRAGMA user_version={v + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


class SqliteStore:
    """State of one run in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, lock: bool = True) -> None:
        """``lock=False``: a ``--workers`` follower, inside the run whose leader holds
        the state's lock (and which it never outlives)."""
        self.path = str(path)
        self._locking = lock
        self._db: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-sqlite")
        self._next_seq = 1
        self._lock_fd: int | None = None  # holds the flock that keeps other runs out

    # -- plumbing ---------------------------------------------------------------------------
    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the store's own thread, after everything queued before it."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            text = str(exc)
            if "full" in text or "I/O" in text:  # "database or disk is full", EFBIG, EIO
                raise StoreError(
                    f"state database {self.path}: cannot write ({text}); every record "
                    "committed so far is kept: free some space (or fix the disk) and re-run "
                    "the same command to resume") from exc
            raise StoreError(f"state database {self.path}: {text}") from exc

    _call = in_thread

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("state database is not open")
        return self._db

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self, *, fresh: bool = False) -> None:
        await self._call(self._open, fresh)

    def _open(self, fresh: bool) -> None:
        path = Path(self.path)
        try:
            if fresh:
                if path.exists():
                    self._lock()  # not from under a run that is using it
                    self._unlock()
                for suffix in ("", "-wal", "-shm"):
                    Path(self.path + suffix).unlink(missing_ok=True)
            if path.parent and not path.parent.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        except OSError as exc:
            self._unlock()
            raise StoreError(f"cannot use state database {self.path}: "
                             f"{exc.strerror or exc}") from exc
        except StoreError:
            self._unlock()
            raise
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA cache_size=-16000")  # 16 MB page cache
            migrate(db, MIGRATIONS, self.path)
        except sqlite3.DatabaseError as exc:
            self._unlock()
            raise StoreError(f"cannot use state database {self.path}: {exc}") from exc
        self._db = db

    def _lock(self) -> None:
        """One run at a time on a state: two would fetch every URL twice and write one
        output at once. An exclusive flock on the database file, held until close (flock
        does not touch the POSIX locks SQLite takes; our descriptor is closed only after
        SQLite's, since closing any descriptor of a file drops the process's POSIX locks)."""
        if fcntl is None or not self._locking:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"state database {self.path} is in use by another shoal run "
                             "(one run at a time per state)") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # the flock goes with it

    async def close(self) -> None:
        try:
            await self._call(self._close)
        finally:
            self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close()
        self._unlock()

    # -- meta -------------------------------------------------------------------------------
    async def get_meta(self) -> dict[str, str]:
        return await self._call(self._get_meta)

    def _get_meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    async def set_meta(self, values: dict[str, str]) -> None:
        await self._call(self._set_meta_tx, values)

    def _set_meta_tx(self, values: dict[str, str]) -> None:
        with self._tx():
            self._set_meta(values)

    def _set_meta(self, values: dict[str, str]) -> None:
        self.db.executemany("INSERT INTO meta (key, value) VALUES (?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            list(values.items()))

    def _tx(self) -> _Tx:
        return _Tx(self.db)

    def _read_next_seq(self) -> None:
        """Inside a write transaction: the next record seq. Read each time (one index
        probe), because other processes (``--workers``) commit records to this file too."""
        row = self.db.execute(_MAX_SEQ).fetchone()
        self._next_seq = (row[0] or 0) + 1

    # -- frontier ---------------------------------------------------------------------------
    async def add(self, new: Sequence[NewUrl], done: Sequence[DoneUrl] = (),
                  meta: dict[str, str] | None = None, sink: Sink | None = None
                  ) -> list[tuple[int, bytes]]:
        """Add URLs (duplicates ignored) and finished invalid lines, in one transaction.

        Returns the (seq, record) of the finished lines that were new; ``sink`` gets them
        on the store's thread right after the commit, so output follows seq order.
        """
        return await self._call(self._add, new, done, meta, sink)

    def _add(self, new: Sequence[NewUrl], done: Sequence[DoneUrl],
             meta: dict[str, str] | None, sink: Sink | None) -> list[tuple[int, bytes]]:
        db = self.db
        written: list[tuple[int, bytes]] = []
        with self._tx():
            if new:
                db.execute(_INSERT, (_new_rows(new),))
            if done:
                self._read_next_seq()
            for d in done:
                cur = db.execute("INSERT OR IGNORE INTO urls (url, host, state, seq, record) "
                                 "VALUES (?, '', 2, ?, ?)", (d.key, self._next_seq, d.record))
                if cur.rowcount == 1:
                    written.append((self._next_seq, d.record))
                    self._next_seq += 1
            if meta:
                self._set_meta(meta)
        if sink is not None and written:
            sink(written)
        return written

    async def next_pending(self, after_id: int, limit: int, max_depth: int | None = None
                           ) -> list[PendingRow]:
        """Pending URLs after ``after_id`` in id order (only those up to ``max_depth``)."""
        return await self._call(self._next_pending, after_id, limit, max_depth)

    def _next_pending(self, after_id: int, limit: int, max_depth: int | None
                      ) -> list[PendingRow]:
        (found,) = self.db.execute(
            f"SELECT {_PENDING_COLUMNS} FROM (SELECT * FROM urls INDEXED BY urls_pending "
            "WHERE state = 0 AND id > ? AND depth <= ? ORDER BY id LIMIT ?)",
            (after_id, _NO_LIMIT if max_depth is None else max_depth, limit)).fetchone()
        return _pending(found)

    async def pending_for_host(self, host: str, after_id: int, limit: int,
                               max_depth: int | None = None) -> list[PendingRow]:
        """Pending URLs of one host after ``after_id`` in id order (up to ``max_depth``)."""
        return await self._call(self._pending_for_host, host, after_id, limit, max_depth)

    def _pending_for_host(self, host: str, after_id: int, limit: int,
                          max_depth: int | None) -> list[PendingRow]:
        (found,) = self.db.execute(
            f"SELECT {_PENDING_COLUMNS} FROM (SELECT * FROM urls INDEXED BY urls_pending_host "
            "WHERE state = 0 AND host = ? AND id > ? AND depth <= ? ORDER BY id LIMIT ?)",
            (host, after_id, _NO_LIMIT if max_depth is None else max_depth, limit)).fetchone()
        return _pending(found)

    # -- results ----------------------------------------------------------------------------
    async def complete(self, results: Sequence[tuple[int, bytes | None]],
                       meta: dict[str, str] | None = None, sink: Sink | None = None,
                       new: Sequence[NewUrl] = (), pages: Sequence[PageData] = ()) -> int:
        """``Store.complete``: records, found URLs and page data in one transaction."""
        return await self._call(self._complete, results, meta, sink, new, pages)

    def _complete(self, results: Sequence[tuple[int, bytes | None]], meta: dict[str, str] | None,
                  sink: Sink | None, new: Sequence[NewUrl], pages: Sequence[PageData] = ()
                  ) -> int:
        db = self.db
        written: list[tuple[int, bytes]] = []
        inserted = 0
        with self._tx():
            self._read_next_seq()
            first = self._next_seq
            validators = {p.url_id: (p.etag, p.last_modified) for p in pages
                          if p.etag is not None or p.last_modified is not None}
            updates = []
            for url_id, record in results:
                if record is None:  # a sitemap: done, no record of its own
                    db.execute("UPDATE urls SET state = 2 WHERE id = ?", (url_id,))
                    continue
                etag, last_modified = validators.get(url_id, _NO_VALIDATORS)
                updates.append((self._next_seq, record.decode(), url_id, etag, last_modified))
                written.append((self._next_seq, record))
                self._next_seq += 1
            if updates:
                changed = db.execute(_DONE, (orjson.dumps(updates),)).rowcount
                if changed != len(updates):  # some were done already: keep what was written
                    written = db.execute(
                        "SELECT seq, record FROM urls WHERE seq >= ? AND seq < ? ORDER BY seq",
                        (first, self._next_seq)).fetchall()
            items = [(p.url_id, i.decode()) for p in pages for i in p.items]
            if items:
                db.execute(_ITEMS, (orjson.dumps(items), first, self._next_seq))
            if new:  # the upsert's rowcount also counts lowered depths: count new ids
                before = db.execute("SELECT coalesce(max(id), 0) FROM urls").fetchone()[0]
                db.execute(_INSERT, (_new_rows(new),))
                inserted = db.execute("SELECT coalesce(max(id), 0) FROM urls").fetchone()[0] \
                    - before
            if meta:
                self._set_meta(meta)
        if sink is not None and written:
            sink(written)
        return inserted

    async def items_after(self, after: int, limit: int = 2000) -> list[tuple[int, bytes]]:
        """The next ``limit`` items (id, JSON) after item id ``after``, in order."""
        return await self._call(lambda: self.db.execute(
            "SELECT id, item FROM items WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit)).fetchall())

    async def done_by_host(self) -> dict[str, int]:
        """Records per host key so far (for per-host page caps on resume)."""
        return await self._call(lambda: dict(self.db.execute(
            "SELECT host, count(*) FROM urls WHERE state = 2 AND host != '' AND kind = 0 "
            "GROUP BY host"
        ).fetchall()))

    async def counts(self) -> tuple[int, int]:
        """(URLs known, URLs done)."""
        return await self._call(self._counts)

    def _counts(self) -> tuple[int, int]:
        total = self.db.execute("SELECT count(*) FROM urls").fetchone()[0]
        pending = self.db.execute(
            "SELECT count(*) FROM urls INDEXED BY urls_pending WHERE state = 0").fetchone()[0]
        return total, total - pending

    async def records_after(self, seq: int, limit: int = 2000) -> list[tuple[int, bytes]]:
        """The next ``limit`` records after ``seq``, in output order ([] at the end)."""
        return await self._call(self._records_after, seq, limit)

    def _records_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        rows: list[tuple[int, bytes]] = self.db.execute(
            "SELECT seq, record FROM urls WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit)).fetchall()
        return rows


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, et: object, e: object, tb: object) -> None:
        self._db.execute("COMMIT" if et is None else "ROLLBACK")
