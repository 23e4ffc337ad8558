"""Streaming content decoders that never produce more than the room they are given.

aiohttp's own decompression is turned off so that a decompression bomb is caught while it
streams: every decoder is fed with the bytes still allowed and reports an overflow as soon
as its output would pass them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
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


class Chain:
    """Several codings, listed in the order they were applied (``gzip, br``: gzip first):
    undone last first. Every stage's output is held to the size cap, so a bomb nested
    inside another coding is stopped at the stage where it explodes."""

    def __init__(self, stages: list[Decoder]) -> None:
        self._stages = stages  # outermost coding first
        self._left: list[int] | None = None  # room left for each intermediate stage

    def feed(self, data: bytes, room: int) -> bytes:
        left = self._rooms(room)
        for i, stage in enumerate(self._stages[:-1]):
            data = stage.feed(data, left[i])
            left[i] -= len(data)
        return self._stages[-1].feed(data, room)

    def finish(self, room: int) -> bytes:
        left = self._rooms(room)
        out = b""
        for i, stage in enumerate(self._stages):
            last = i == len(self._stages) - 1
            if out:  # what the stages before flushed
                out = stage.feed(out, room if last else left[i])
                if not last:
                    left[i] -= len(out)
            rest = stage.finish(room - len(out) if last else left[i])
            if not last:
                left[i] -= len(rest)
            out += rest
        return out

    def _rooms(self, room: int) -> list[int]:
        if self._left is None:  # the first call gives the whole cap
            self._left = [room] * (len(self._stages) - 1)
        return self._left


_SINGLE: dict[str, Callable[[], Decoder]] = {
    "gzip": lambda: Zlib(gzip=True), "x-gzip": lambda: Zlib(gzip=True),
    "deflate": lambda: Zlib(gzip=False), "br": Brotli, "identity": Identity}


def decoder_for(content_encoding: str | None) -> Decoder:
    """The decoder for a Content-Encoding header (one coding or several, comma-separated);
    a body with a coding we do not know is kept as sent."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings or any(c not in _SINGLE for c in codings):
        return Identity()
    if len(codings) == 1:
        return _SINGLE[codings[0]]()
    return Chain([_SINGLE[c]() for c in reversed(codings)])
