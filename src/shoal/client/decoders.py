"""Streaming content decoders that never produce more than the room they are given.

aiohttp's own decompression is turned off so that a decompression bomb is caught while it
streams: every decoder is fed with the bytes still allowed and reports an overflow as soon
as its output would pass them.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli  # type: ignore[import-untyped]


class Overflow(Exception):
    """The decoded body would pass the size cap; ``partial`` is the output that fit."""

    def __init__(self, partial: bytes = b"") -> None:
        super().__init__("decoded body over the cap")
        self.partial = partial


class Truncated(Exception):
    """The compressed stream stopped before its end: the body is cut short."""

    def __init__(self, coding: str) -> None:
        super().__init__(f"the {coding} stream ends before its end marker (truncated body)")


class Decoder(Protocol):
    def feed(self, data: bytes, room: int) -> bytes:
        """Decode ``data``; raise Overflow if the output would pass ``room`` bytes."""
        ...

    def finish(self, room: int) -> bytes:
        """Whatever is still buffered at the end of the body; raise Truncated if the
        compressed stream did not reach its end."""
        ...


class Identity:
    def feed(self, data: bytes, room: int) -> bytes:
        if len(data) > room:
            raise Overflow(data[:room])
        return data

    def finish(self, room: int) -> bytes:
        return b""


class Zlib:
    """gzip (wbits 31, several members allowed) or deflate (zlib-wrapped, or raw as sent
    by some servers)."""

    def __init__(self, *, gzip: bool) -> None:
        self._gzip = gzip
        self._wbits = 31 if gzip else 15
        self._d = zlib.decompressobj(self._wbits)
        self._started = False
        self._fed = False  # an empty body is empty, not a truncated stream

    def feed(self, data: bytes, room: int) -> bytes:
        out: list[bytes] = []
        self._fed = self._fed or bool(data)
        while data:
            try:
                chunk = self._d.decompress(data, room + 1)
            except zlib.error:
                if self._gzip or self._started:
                    raise
                self._wbits = -15  # a raw deflate stream without the zlib header
                self._d = zlib.decompressobj(self._wbits)
                chunk = self._d.decompress(data, room + 1)
            self._started = True
            if len(chunk) > room:
                raise Overflow(b"".join(out) + chunk[:room])
            room -= len(chunk)
            out.append(chunk)
            data = self._d.unconsumed_tail
            if not data and self._d.eof and self._d.unused_data:
                data = self._d.unused_data  # the next gzip member
                if not self._gzip or not data.lstrip(b"\x00"):
                    break  # trailing garbage or padding after the stream
                self._d = zlib.decompressobj(self._wbits)
        return b"".join(out)

    def finish(self, room: int) -> bytes:
        rest = self._d.flush(room + 1)
        if len(rest) > room:
            raise Overflow(rest[:room])
        if self._fed and not self._d.eof:
            raise Truncated("gzip" if self._gzip else "deflate")
        return rest


class Brotli:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()
        self._fed = False

    def feed(self, data: bytes, room: int) -> bytes:
        self._fed = self._fed or bool(data)
        out = self._d.process(data, output_buffer_limit=room + 1)
        total = len(out)
        parts = [out]
        while total <= room and not self._d.can_accept_more_data():
            more = self._d.process(b"", output_buffer_limit=room + 1 - total)
            if not more:
                break
            parts.append(more)
            total += len(more)
        if total > room:
            raise Overflow(b"".join(parts)[:room])
        return b"".join(parts)

    def finish(self, room: int) -> bytes:
        if self._fed and not self._d.is_finished():
            raise Truncated("brotli")
        return b""


def decoder_for(content_encoding: str | None) -> Decoder:
    """The decoder for a Content-Encoding header; unknown codings are kept as sent."""
    enc = (content_encoding or "").strip().lower()
    if enc in ("gzip", "x-gzip"):
        return Zlib(gzip=True)
    if enc == "deflate":
        return Zlib(gzip=False)
    if enc == "br":
        return Brotli()
    return Identity()
