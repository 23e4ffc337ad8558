"""Export the items of a state database (what route handlers and ``--extract`` yielded).

The state is an SQLite file or a PostgreSQL job, read through export.py's ``StateReader``.

Items are schemaless JSON objects, so CSV and Parquet need their columns before the first
row: a first pass over the items finds every key (in order of first appearance, so the
column order is the same on every export of the same items) and, for Parquet, each
column's type; a second pass writes. Both passes read in batches by a keyset query on
the item id, so memory is bounded by the batch and the number of distinct keys.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson

from shoal.errors import UsageError
from shoal.export import (
    StateReader,
    _remove_partial,
    check_target,
    keyset,
    open_reader,
)

_SLICE = 1000
_INT64 = (-(1 << 63), (1 << 63) - 1)


def export_items(state_path: str, fmt: str, out_path: str | None, *,
                 batch: int = 10_000) -> int:
    """Write every item of the state at ``state_path`` to ``out_path`` in ``fmt``.

    ``out_path`` None or "-" is standard output (not for parquet). Returns the number of
    items written.

    Raises:
        UsageError: unknown format, parquet to standard output, the state is missing, is
            not a shoal state database, or holds no items table (an older shoal wrote it).
        OSError: the output cannot be written.
    """
    out_path = check_target(fmt, out_path, batch)
    state = open_reader(state_path, out_path)
    try:
        if not state.has_items():
            raise UsageError(f"{state.path!r} holds no items (it was written by an older "
                             "shoal, before extraction)")
        reader = _Reader(state, state.last("items"), batch)
        if out_path is None:
            return _write_stream(reader, fmt, sys.stdout.buffer)
        with open(out_path, "wb") as fh:
            try:
                if fmt == "parquet":
                    return _write_parquet(reader, fh)
                return _write_stream(reader, fmt, fh)
            except BaseException:
                fh.close()
                _remove_partial(out_path)
                raise
    finally:
        state.close()


class _Reader:
    """Passes over the items present when the export started."""

    def __init__(self, state: StateReader, last: int, size: int) -> None:
        self.state, self.path, self.last, self.size = state, state.path, last, size

    def batches(self) -> Iterator[list[tuple[int, bytes]]]:
        return keyset(self.state, "items", self.last, self.size)

    def decoded(self, rows: list[tuple[int, bytes]]) -> Iterator[dict[str, Any]]:
        for item_id, data in rows:
            try:
                item = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise UsageError(f"{self.path!r}: item {item_id} is not valid JSON ({exc})"
                                 ) from exc
            if not isinstance(item, dict):
                raise UsageError(f"{self.path!r}: item {item_id} is not a JSON object")
            yield item

    def columns(self) -> dict[str, set[str]]:
        """Every key in order of first appearance, with the kinds of value it holds."""
        kinds: dict[str, set[str]] = {}
        for rows in self.batches():
            for item in self.decoded(rows):
                for key, value in item.items():
                    seen = kinds.setdefault(key, set())
                    if value is not None:
                        seen.add(_kind(value))
        return kinds


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64[0] <= value <= _INT64[1] else "bigint"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _text(value: Any) -> str | None:
    """A value as one text cell: strings as they are, anything else as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _write_stream(reader: _Reader, fmt: str, out: BinaryIO) -> int:
    count = 0
    if fmt == "jsonl":
        for rows in reader.batches():
            out.write(b"".join(data + b"\n" for _, data in rows))
            count += len(rows)
            del rows
        out.flush()
        return count
    columns = list(reader.columns())
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    try:
        writer = csv.writer(text, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        if columns:
            writer.writerow(columns)
        for rows in reader.batches():
            for item in reader.decoded(rows):
                writer.writerow(["" if (v := _text(item.get(c))) is None else v
                                 for c in columns])
            count += len(rows)
            del rows
        text.flush()
    finally:
        text.detach()
    return count


def _arrow_type(pa: Any, kinds: set[str]) -> tuple[Any, str]:
    """(Arrow type, how to convert) for a column holding values of ``kinds``."""
    if kinds == {"bool"}:
        return pa.bool_(), "as_is"
    if kinds == {"int"}:
        return pa.int64(), "as_is"
    if kinds and kinds <= {"int", "float"}:
        return pa.float64(), "float"
    if kinds == {"str"} or not kinds:
        return pa.string(), "as_is"
    return pa.string(), "text"  # mixed, nested or huge integers: JSON text


def _write_parquet(reader: _Reader, out: BinaryIO) -> int:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    kinds = reader.columns()
    fields, converts = [], []
    for name, seen in kinds.items():
        arrow_type, convert = _arrow_type(pa, seen)
        fields.append(pa.field(name, arrow_type))
        converts.append(convert)
    schema = pa.schema(fields)
    count = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for rows in reader.batches():
            size = len(rows)
            tables = []
            for i in range(0, size if fields else 0, _SLICE):  # no keys at all: no columns
                columns: list[list[Any]] = [[] for _ in fields]
                for item in reader.decoded(rows[i:i + _SLICE]):
                    for col, (f, convert) in zip(columns, zip(fields, converts, strict=True),
                                                 strict=True):
                        value = item.get(f.name)
                        if value is not None and convert == "float":
                            value = float(value)
                        elif convert == "text":
                            value = _text(value)
                        col.append(value)
                try:
                    table = pa.Table.from_arrays(
                        [pa.array(c, type=f.type) for c, f in zip(columns, fields, strict=True)],
                        schema=schema)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    raise UsageError(f"{reader.path!r}: items do not fit the export schema "
                                     f"({exc})") from exc
                tables.append(table)
            if tables:  # one row group a batch
                writer.write_table(pa.concat_tables(tables), row_group_size=size)
                del tables
            count += size
            del rows
    return count
