"""WARC 1.1 output: a request and a response record per HTTP exchange, through warcio.

Each record is its own gzip member, written and flushed as soon as the response is read,
by one dedicated thread (so records never interleave and the event loop never waits on
the disk). Files roll over once they pass ``max_size``: ``NAME.warc.gz``, then
``NAME-00001.warc.gz``, ``NAME-00002.warc.gz`` ... A file is never overwritten or
appended to: a new run (or a resumed one) starts at the first free name.

Crash safety: a killed run leaves every record it finished writing readable, and at most
one torn gzip member (a partial record) at the end of its last file. Responses are
archived when they arrive, before their record is committed to the state, so a page
whose record was not committed yet is fetched again on resume and archived twice (two
captures of the same URL, both valid).
"""

from __future__ import annotations

import asyncio
import io
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from warcio.statusandheaders import StatusAndHeaders  # type: ignore[import-untyped]
from warcio.warcwriter import WARCWriter  # type: ignore[import-untyped]

from shoal import __version__
from shoal.client.capture import Capture
from shoal.errors import UsageError

SUFFIX = ".warc.gz"
DEFAULT_MAX_SIZE = 1024 ** 3
GZIP_LEVEL = 6  # warcio's own wrapper uses 9: twice the CPU for a few percent of size


class _Member:
    """One gzip member: what is written through it is compressed; ``flush`` ends it."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS | 16)

    def write(self, data: bytes) -> None:
        self._out.write(self._z.compress(data))

    def flush(self) -> None:
        self._out.write(self._z.flush())
        self._out.flush()


class _GzipPerRecord(WARCWriter):  # type: ignore[misc]
    """warcio's writer with each record in a gzip member of our level."""

    def _write_warc_record(self, out: IO[bytes], record: Any) -> None:
        super()._write_warc_record(_Member(out), record)  # it flushes once, at the end


def check_path(path: str) -> None:
    """Raises UsageError unless ``path`` names a ``.warc.gz`` file in an existing directory."""
    if not path.endswith(SUFFIX) or len(path) == len(SUFFIX):
        raise UsageError(f"--warc {path!r}: the file name must end in {SUFFIX}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"--warc {path!r}: directory {parent!r} does not exist")


class WarcWriter:
    """Writes captures to rolling WARC files; ``files`` lists those written so far."""

    def __init__(self, path: str, *, max_size: int = DEFAULT_MAX_SIZE,
                 info: dict[str, str] | None = None) -> None:
        check_path(path)
        if max_size < 1:
            raise UsageError(f"--warc-max-size must be >= 1, got {max_size}")
        self.path = path
        self.max_size = max_size
        self.files: list[str] = []
        self.records = 0
        self._info = {"software": f"shoal/{__version__}", "format": "WARC File Format 1.1",
                      "conformsTo": "https://iipc.github.io/warc-specifications/"
                                    "specifications/warc-format/warc-1.1/",
                      **(info or {})}
        self._index = 0
        self._fh: IO[bytes] | None = None
        self._writer: WARCWriter | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-warc")

    async def write(self, uri: str, capture: Capture) -> None:
        """Archive ``capture`` (a complete exchange) as fetched from ``uri``."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._write, uri,
                                                         capture)

    async def close(self) -> None:
        """Flush, sync and close the current file (waits for writes queued before)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        finally:
            self._thread.shutdown(wait=True)

    # -- on the writer thread ---------------------------------------------------------------
    def _name(self, index: int) -> str:
        return self.path if index == 0 else f"{self.path[:-len(SUFFIX)]}-{index:05d}{SUFFIX}"

    def _open(self) -> WARCWriter:
        while True:
            name = self._name(self._index)
            self._index += 1
            try:
                fh = open(name, "xb")  # noqa: SIM115  # never overwrite an earlier file
            except FileExistsError:
                continue
            break
        self._fh = fh
        self.files.append(name)
        writer = _GzipPerRecord(fh, gzip=False, warc_version="1.1")
        writer.write_record(writer.create_warcinfo_record(os.path.basename(name), self._info))
        self._writer = writer
        return writer

    def _write(self, uri: str, cap: Capture) -> None:
        writer = self._writer or self._open()
        length = cap.length
        cap.spool.seek(0)
        extra: dict[str, Any] = {}
        if cap.ip:
            extra["WARC-IP-Address"] = cap.ip
        response = writer.create_warc_record(
            uri, "response", payload=cap.spool, length=length, warc_headers_dict=extra,
            http_headers=StatusAndHeaders(f"{cap.status} {cap.reason}".rstrip(), cap.headers,
                                          protocol=cap.protocol))
        request = writer.create_warc_record(
            uri, "request", payload=io.BytesIO(b""), length=0,
            http_headers=StatusAndHeaders(f"{cap.method} {cap.target} {cap.protocol}",
                                          cap.request_headers, is_http_request=True))
        writer.write_request_response_pair(request, response)
        self.records += 2
        assert self._fh is not None
        if self._fh.tell() >= self.max_size:
            self._close()

    def _close(self) -> None:
        if self._fh is not None:
            fh, self._fh, self._writer = self._fh, None, None
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
