"""Where input URLs come from: a file (resumable by byte offset), stdin, or an iterable."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from shoal.errors import UsageError


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


def _keep(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#")


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

    def start(self, position: int) -> None:
        size = os.fstat(self._fh.fileno()).st_size
        self._pos = min(position, size)
        self._fh.seek(self._pos)

    def read(self, n: int) -> list[str]:
        out: list[str] = []
        fh = self._fh
        while len(out) < n:
            line = fh.readline()
            if not line:
                break
            self._pos += len(line)
            text = line.decode("utf-8", errors="replace")
            if _keep(text):
                out.append(text.strip())
        return out

    @property
    def position(self) -> int:
        return self._pos

    def close(self) -> None:
        self._fh.close()


class LineSource(Source):
    """Standard input or any iterable of lines; resumes by skipping a count of lines."""

    def __init__(self, lines: Iterable[str] | None = None, *, name: str = "-") -> None:
        self.name = name
        self._it: Iterator[str] = iter(lines) if lines is not None else _stdin_lines()
        self._n = 0

    def start(self, position: int) -> None:
        for _ in range(position):
            if next(self._it, None) is None:
                break
            self._n += 1

    def read(self, n: int) -> list[str]:
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


def _stdin_lines() -> Iterator[str]:
    for raw in sys.stdin.buffer:
        yield raw.decode("utf-8", errors="replace")
