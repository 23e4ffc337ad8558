"""Export the records of a state database as JSON lines, CSV or Parquet, streamed.

The state is an SQLite file or a PostgreSQL job (``postgresql://.../db#JOB``, read by
export_pg.py); both are a ``StateReader``, and one set of writers serves both. Records are
read in output order (seq) in batches by a keyset query, so memory is bounded by the batch
size whatever the size of the job. The export covers the records committed when it
started; a run still writing to the state adds its later records after that cut.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any, BinaryIO, Protocol

import orjson

from shoal.errors import UsageError

FORMATS = ("jsonl", "csv", "parquet")

# The CSV header and the Parquet column order: the record's fields, `error` split in two.
COLUMNS = ("url", "final_url", "status", "error_kind", "error_message", "content_type",
           "bytes", "elapsed_ms", "attempts", "depth", "parent", "redirects", "title",
           "links", "sha256", "fetched_at")

# Fields only some runs' records have (--extract / route handlers, --since): columns after
# the others when the state's meta says a run of it had them.
EXTRA_COLUMNS = ("items", "changed")
EXTRAS_META = "record_extras"

_BATCH_QUERY = "SELECT seq, record FROM urls WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
_ITEMS_QUERY = "SELECT id, item FROM items WHERE id > ? AND id <= ? ORDER BY id LIMIT ?"


class StateReader(Protocol):
    """A run's state, read-only, as an export reads it: tables of (key, JSON bytes).

    ``table`` is "urls" (key: the record's seq) or "items" (key: the item id). Read
    errors are UsageErrors naming ``path``.
    """

    path: str  # how messages name the state

    def meta(self, key: str) -> str | None: ...
    def has_items(self) -> bool: ...
    def last(self, table: str) -> int: ...
    def rows(self, table: str, after: int, last: int, size: int) -> list[tuple[int, bytes]]: ...
    def close(self) -> None: ...


def open_reader(state: str, out_path: str | None) -> StateReader:
    """The state ``state`` names: an SQLite path, or ``postgresql://.../db#JOB``.

    Raises:
        UsageError: it is missing, unreachable or not a shoal state, or ``out_path`` is
            the state itself.
    """
    from shoal.recrawl import job_url

    named = job_url(state, what="export")
    if named is not None:
        from shoal.export_pg import PgReader

        return PgReader(*named)
    if not os.path.exists(state):
        raise UsageError(f"state database {state!r} does not exist")
    if out_path is not None and _same_file(state, out_path):
        raise UsageError(f"refusing to overwrite the state database {state!r} "
                         "with its own export")
    return SqliteReader(_open_state(state), state)


class SqliteReader:
    """An SQLite state file, opened read-only (a ``StateReader``)."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self.db, self.path = db, path

    def meta(self, key: str) -> str | None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else str(row[0])

    def has_items(self) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                               "AND name = 'items'").fetchone() is not None

    def last(self, table: str) -> int:
        # `WHERE seq IS NOT NULL` lets SQLite read the max off the partial seq index
        sql = ("SELECT coalesce(max(seq), 0) FROM urls WHERE seq IS NOT NULL"
               if table == "urls" else "SELECT coalesce(max(id), 0) FROM items")
        try:
            (last,) = self.db.execute(sql).fetchone()
        except sqlite3.Error as exc:
            raise UsageError(f"cannot read state database {self.path!r}: {exc}") from exc
        return int(last)

    def rows(self, table: str, after: int, last: int, size: int) -> list[tuple[int, bytes]]:
        sql = _BATCH_QUERY if table == "urls" else _ITEMS_QUERY
        try:
            rows: list[tuple[int, bytes]] = self.db.execute(sql, (after, last, size)).fetchall()
        except sqlite3.Error as exc:
            raise UsageError(f"cannot read state database {self.path!r}: {exc}") from exc
        return rows

    def close(self) -> None:
        self.db.close()


def keyset(reader: StateReader, table: str, last: int, size: int
           ) -> Iterator[list[tuple[int, bytes]]]:
    """The rows of ``table`` up to key ``last``, in key order, ``size`` at a time."""
    after = 0
    while after < last:
        rows = reader.rows(table, after, last, size)
        if not rows:
            return
        after = rows[-1][0]
        yield rows
        del rows  # the consumer is done with it: do not hold it while reading the next


def check_target(fmt: str, out_path: str | None, batch: int) -> str | None:
    """The output path (None: standard output) once ``fmt`` and ``batch`` are checked.

    Raises:
        UsageError: unknown format, or parquet to standard output.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if out_path == "-":
        out_path = None
    if fmt == "parquet" and out_path is None:
        raise UsageError("parquet cannot be written to standard output: give -o FILE.parquet")
    return out_path


def export_records(state_path: str, fmt: str, out_path: str | None, *,
                   batch: int = 10_000) -> int:
    """Write every record of the state at ``state_path`` to ``out_path`` in ``fmt``.

    ``out_path`` None or "-" is standard output (not for parquet). Returns the number of
    records written.

    Raises:
        UsageError: unknown format, parquet to standard output, or the state is missing
            or not a shoal state database.
        OSError: the output cannot be written.
    """
    out_path = check_target(fmt, out_path, batch)
    reader = open_reader(state_path, out_path)
    try:
        columns = _columns(reader)
        batches = keyset(reader, "urls", reader.last("urls"), batch)
        path = reader.path
        if out_path is None:
            return _write_stream(batches, fmt, sys.stdout.buffer, path, columns)
        with open(out_path, "wb") as fh:
            try:
                if fmt == "parquet":
                    return _write_parquet(batches, fh, path, columns)
                return _write_stream(batches, fmt, fh, path, columns)
            except BaseException:
                # no half-written file may pass for a whole export
                fh.close()
                _remove_partial(out_path)
                raise
    finally:
        reader.close()


def _remove_partial(path: str) -> None:
    """Delete a half-written export file (one this export created or truncated)."""
    try:
        if os.path.isfile(path):
            os.unlink(path)
    except OSError:
        pass  # the original error is the one to report


def _same_file(state_path: str, out_path: str) -> bool:
    if not os.path.exists(out_path):
        return False
    for target in (state_path + suffix for suffix in ("", "-wal", "-shm")):
        try:
            if os.path.samefile(target, out_path):
                return True
        except OSError:  # that file does not exist
            continue
    return False


def _open_state(path: str) -> sqlite3.Connection:
    """A read-only connection to a shoal state database (UsageError when it is not one)."""
    try:
        db = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise UsageError(f"cannot open state database {path!r}: {exc}") from exc
    try:
        tables = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        db.close()
        raise UsageError(f"{path!r} is not a shoal state database ({exc})") from exc
    if not {"urls", "meta"} <= tables:
        db.close()
        raise UsageError(f"{path!r} is not a shoal state database (no urls and meta tables)")
    return db


def _uri_path(path: str) -> str:
    # '?' and '#' would end the path part of the URI; '%' starts an escape
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _columns(reader: StateReader) -> tuple[str, ...]:
    """COLUMNS, and the extra fields some run of this state wrote (in EXTRA_COLUMNS order)."""
    have = set((reader.meta(EXTRAS_META) or "").split(","))
    return COLUMNS + tuple(c for c in EXTRA_COLUMNS if c in have)


def _batches(db: sqlite3.Connection, path: str, size: int) -> Iterator[list[tuple[int, bytes]]]:
    """(seq, record line) in output order, ``size`` at a time, up to the last seq at start."""
    reader = SqliteReader(db, path)
    yield from keyset(reader, "urls", reader.last("urls"), size)


def _decode(seq: int, line: bytes, path: str) -> dict[str, Any]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{path!r}: record {seq} is not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or "url" not in record:
        raise UsageError(f"{path!r}: record {seq} is not a shoal record")
    return record


def _write_stream(batches: Iterator[list[tuple[int, bytes]]], fmt: str, out: BinaryIO,
                  path: str, columns: tuple[str, ...] = COLUMNS) -> int:
    count = 0
    if fmt == "jsonl":
        for rows in batches:
            out.write(b"".join(line for _, line in rows))
            count += len(rows)
            del rows  # free it before the next batch is read
        out.flush()
        return count
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    try:
        writer = csv.writer(text, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(columns)
        for rows in batches:
            writer.writerows(_csv_row(_decode(seq, line, path), columns) for seq, line in rows)
            count += len(rows)
            del rows  # free it before the next batch is read
        text.flush()
    finally:
        text.detach()  # the caller owns (and closes) the binary stream
    return count


def _flat(record: dict[str, Any], columns: tuple[str, ...] = COLUMNS) -> dict[str, Any]:
    """The record with ``error`` split into ``error_kind`` and ``error_message``."""
    error = record.get("error") or {}
    flat = {name: record.get(name) for name in columns}
    flat["error_kind"] = error.get("kind")
    flat["error_message"] = error.get("message")
    return flat


def _csv_row(record: dict[str, Any], columns: tuple[str, ...] = COLUMNS) -> list[str]:
    flat = _flat(record, columns)
    redirects = flat["redirects"]
    flat["redirects"] = None if redirects is None else orjson.dumps(redirects).decode()
    if isinstance(flat.get("changed"), bool):
        flat["changed"] = "true" if flat["changed"] else "false"
    return ["" if flat[name] is None else str(flat[name]) for name in columns]


def _write_parquet(batches: Iterator[list[tuple[int, bytes]]], out: BinaryIO,
                   path: str, columns: tuple[str, ...] = COLUMNS) -> int:
    import pyarrow as pa  # type: ignore[import-untyped]  # only parquet pays for the import
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    schema = parquet_schema(columns[len(COLUMNS):])
    count = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for rows in batches:
            # Converted a slice at a time: the Python objects of a whole batch, and Arrow's
            # growing buffers for them, cost several times the batch's bytes.
            table = pa.concat_tables([_arrow_slice(pa, schema, rows[i:i + _SLICE], path,
                                                   columns)
                                      for i in range(0, len(rows), _SLICE)])
            size = len(rows)
            del rows  # one batch in memory at a time: free it before the next is read
            writer.write_table(table, row_group_size=size)  # one row group a batch
            del table
            count += size
    return count


_SLICE = 1000


def _arrow_slice(pa: Any, schema: Any, rows: list[tuple[int, bytes]], path: str,
                 names: tuple[str, ...] = COLUMNS) -> Any:
    """An Arrow table of ``rows`` (UsageError when a record does not fit the schema)."""
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for seq, line in rows:
        flat = _flat(_decode(seq, line, path), names)
        flat["fetched_at"] = _timestamp(flat["fetched_at"], seq, path)
        for name in names:
            columns[name].append(flat[name])
    try:
        return pa.Table.from_pydict(columns, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UsageError(f"{path!r}: records {rows[0][0]}-{rows[-1][0]} do not fit the "
                         f"export schema ({exc})") from exc


def _timestamp(value: Any, seq: int, path: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path!r}: record {seq} has a bad fetched_at {value!r}") from exc


def parquet_schema(extras: tuple[str, ...] = ()) -> Any:
    """The typed Arrow schema of a Parquet export (columns in ``COLUMNS`` order, then the
    ``extras`` of EXTRA_COLUMNS)."""
    import pyarrow as pa

    extra = {"items": pa.field("items", pa.int32()), "changed": pa.field("changed", pa.bool_())}
    return pa.schema([
        pa.field("url", pa.string(), nullable=False),
        pa.field("final_url", pa.string()),
        pa.field("status", pa.int32()),
        pa.field("error_kind", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("content_type", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("elapsed_ms", pa.float64()),
        pa.field("attempts", pa.int32()),
        pa.field("depth", pa.int32()),
        pa.field("parent", pa.string()),
        pa.field("redirects", pa.list_(pa.string())),
        pa.field("title", pa.string()),
        pa.field("links", pa.int32()),
        pa.field("sha256", pa.string()),
        pa.field("fetched_at", pa.timestamp("ms", tz="UTC")),
        *(extra[name] for name in extras),
    ])

