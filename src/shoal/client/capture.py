"""A response as received, kept for a WARC: request head, status line, headers and payload.

The payload is the body as it came off the connection after HTTP/1.1 framing, that is
still content-encoded (gzip, br ...) exactly as the server sent it. aiohttp removes
chunked framing before we see the bytes, so a chunked response is framed again here, one
chunk per read, which keeps its real ``Transfer-Encoding: chunked`` header true (readers
such as warcio remove the framing again; warcio computes and checks the digests over the
payload as stored).

The payload is spooled: in memory up to ``SPOOL_MEMORY``, in a temporary file beyond, so
archiving a large body costs no more memory than a small one.
"""

from __future__ import annotations

import tempfile
from typing import IO

SPOOL_MEMORY = 1024 * 1024


class Capture:
    """One HTTP exchange for the WARC; ``close()`` frees the spool."""

    def __init__(self, *, method: str, target: str, request_headers: list[tuple[str, str]],
                 protocol: str, status: int, reason: str,
                 headers: list[tuple[str, str]], chunked: bool, ip: str | None) -> None:
        self.method = method
        self.target = target  # path and query as sent
        self.request_headers = request_headers
        self.protocol = protocol  # "HTTP/1.1"
        self.status = status
        self.reason = reason
        self.headers = headers  # as received, in order, duplicates kept
        self.chunked = chunked
        self.ip = ip
        self.complete = False  # the whole body was read
        self.spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115

    def feed(self, data: bytes) -> None:
        """Add raw body bytes (as received, before content decoding)."""
        if not data:
            return
        if self.chunked:
            self.spool.write(b"%x\r\n" % len(data))
            self.spool.write(data)
            self.spool.write(b"\r\n")
        else:
            self.spool.write(data)

    def finish(self) -> None:
        """The body is complete."""
        if self.chunked:
            self.spool.write(b"0\r\n\r\n")
        self.complete = True

    @property
    def length(self) -> int:
        return self.spool.tell() if not self.spool.closed else 0

    def close(self) -> None:
        self.spool.close()
