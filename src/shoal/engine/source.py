"""Where input URLs come from: a file (resumable by byte offset), stdin, or an iterable."""

from __future__ import annotations

import codecs
import os
import select
import stat
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from shoal.errors import UsageError

LINGER = 0.1  # seconds a pipe may stay silent before the URLs read so far are handed over
POLL = 0.25  # how often a read waiting on a silent pipe checks whether the run has stopped


class Source:
    """Lines of URLs read in batches off the loop; ``position`` says how far we got."""

    name: str = ""

    def start(self, position: int) -> None:
        """Skip what an earlier run already loaded (blocking)."""

    def read(self, n: int) -> list[str]:
        """Up to ``n`` URL lines, blank and ``#`` lines skipped; [] at the end (blocking)."""
        raise NotImplementedError

    @property
    def position(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _text(line: bytes, first: bool) -> str:
    """A line of input as text; a UTF-8 byte order mark opening the input is not in it."""
    if first and line.startswith(codecs.BOM_UTF8):
        line = line[len(codecs.BOM_UTF8):]
    return line.decode("utf-8", errors="replace")


def _keep(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#")


class _PipeLines:
    """Lines of a pipe or terminal, read straight from its descriptor.

    Unlike a buffered file it tells "no line yet" from "no more lines": a batch is handed
    over as soon as the producer pauses (not after thousands of lines), and a stopped run
    is never held by a read that waits for input that may not come.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = b""
        self._at = 0  # start of the unread part of _buf
        self._eof = False
        self._first = True  # the next line opens the input
        self.stopped = threading.Event()
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            self._poll.register(fd, select.POLLIN)

    def readline(self, timeout: float) -> bytes | None:
        """The next line (b"" at the end of the input), or None when none came in time."""
        deadline = time.monotonic() + timeout
        while True:
            end = self._buf.find(b"\n", self._at)
            if end >= 0:
                line = self._buf[self._at:end + 1]
                self._at = end + 1
                return line
            if self._eof:
                line = self._buf[self._at:]
                self._buf, self._at = b"", 0
                return line
            left = deadline - time.monotonic()
            if left <= 0 or self.stopped.is_set():
                return None
            if self._poll is not None and not self._poll.poll(min(left, POLL) * 1000):
                continue
            chunk = os.read(self._fd, 1 << 16)
            if chunk:
                self._buf = self._buf[self._at:] + chunk
                self._at = 0
            else:
                self._eof = True

    def read(self, n: int) -> tuple[list[str], int, int]:
        """Up to ``n`` URL lines, and the bytes and lines consumed: waits for the first,
        then returns what came once the input pauses for LINGER; [] at the end or once
        stopped."""
        out: list[str] = []
        used = lines = 0
        while len(out) < n:
            line = self.readline(LINGER if out else POLL)
            if line is None:
                if out or self.stopped.is_set():
                    break
                continue
            if not line:
                break
            used += len(line)
            lines += 1
            text = _text(line, self._first)
            self._first = False
            if _keep(text):
                out.append(text.strip())
        return out, used, lines

    def skip(self, lines: int | None = None, size: int | None = None) -> int:
        """Drop ``lines`` lines or ``size`` bytes (whole lines) read by an earlier run."""
        done = 0
        while (lines is not None and done < lines) or (size is not None and done < size):
            line = self.readline(POLL)
            if line is None:
                if self.stopped.is_set():
                    break
                continue
            if not line:
                break
            self._first = False
            done += 1 if lines is not None else len(line)
        return done


class FileSource(Source):
    """A file of URLs, one per line, read in chunks; resumes at a byte offset."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.abspath(path)
        try:
            self._fh: BinaryIO = open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read input file {path!r}: {exc.strerror}") from exc
        self._pos = 0
        # a named pipe or `<(command)`: read as it comes, without seeking
        mode = os.fstat(self._fh.fileno()).st_mode
        self._pipe = None if stat.S_ISREG(mode) else _PipeLines(self._fh.fileno())

    def start(self, position: int) -> None:
        if self._pipe is not None:  # a pipe cannot seek: read past what was loaded before
            self._pos = self._pipe.skip(size=position)
            return
        size = os.fstat(self._fh.fileno()).st_size
        self._pos = min(position, size)
        self._fh.seek(self._pos)

    def read(self, n: int) -> list[str]:
        if self._pipe is not None:
            urls, used, _ = self._pipe.read(n)
            self._pos += used
            return urls
        out: list[str] = []
        fh = self._fh
        while len(out) < n:
            line = fh.readline()
            if not line:
                break
            text = _text(line, self._pos == 0)
            self._pos += len(line)
            if _keep(text):
                out.append(text.strip())
        return out

    @property
    def position(self) -> int:
        return self._pos

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.stopped.set()  # a read waiting on the pipe returns; it closes then
            return
        self._fh.close()


class LineSource(Source):
    """Standard input or any iterable of lines; resumes by skipping a count of lines."""

    def __init__(self, lines: Iterable[str] | None = None, *, name: str = "-") -> None:
        self.name = name
        self._it: Iterator[str] = iter(lines if lines is not None else ())
        self._pipe: _PipeLines | None = None
        if lines is None:
            try:
                self._pipe = _PipeLines(sys.stdin.fileno())
            except (AttributeError, ValueError, OSError) as exc:
                raise UsageError("cannot read standard input: it is closed") from exc
        self._n = 0

    def start(self, position: int) -> None:
        if self._pipe is not None:
            self._n = self._pipe.skip(lines=position)
            return
        for _ in range(position):
            if next(self._it, None) is None:
                break
            self._n += 1

    def read(self, n: int) -> list[str]:
        if self._pipe is not None:  # counted in lines: a rerun skips lines, not bytes
            urls, _, lines = self._pipe.read(n)
            self._n += lines
            return urls
        out: list[str] = []
        for line in self._it:
            self._n += 1
            if _keep(line):
                out.append(line.strip())
                if len(out) >= n:
                    break
        return out

    @property
    def position(self) -> int:
        return self._n

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.stopped.set()  # a read waiting on standard input returns
