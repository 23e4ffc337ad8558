"""The JSON-lines output, written so that a killed run resumes to exactly one line per URL.

The state database is the truth. Records are committed there first and appended to the
output after; the database also remembers how many bytes of output were complete (and
which record seq they end at) as of the previous commit. On resume the output is cut back
to that length, which drops a torn last line and anything written after the last
bookkeeping, and the records after that seq are appended again from the database.
"""

from __future__ import annotations

import os
import sys
import time
from typing import BinaryIO

from shoal.errors import OutputError, UsageError


class Output:
    """Appends record lines to a file (resumable) or to standard output (streamed)."""

    def __init__(self, path: str | None) -> None:
        self.path = path  # None: standard output
        self.failed = False  # a write failed: what is buffered is not flushed at close
        self._fh: BinaryIO | None = None
        # (last record seq written, bytes of complete lines written), replaced as one
        # object: the event loop reads it while the store's thread writes
        self._at = (0, 0)
        self.lines_this_run = 0
        self._synced = 0.0

    @property
    def seq(self) -> int:
        return self._at[0]

    @property
    def size(self) -> int:
        """Bytes of complete lines written."""
        return self._at[1]

    @property
    def display(self) -> str:
        return self.path or "<stdout>"

    def open(self, seq: int, size: int) -> None:
        """Open for appending after record ``seq`` ending at byte ``size`` (blocking)."""
        if self.path is None:
            self._fh = sys.stdout.buffer
            self._at = (seq, size)
            return
        try:
            fh = open(self.path, "r+b" if os.path.exists(self.path) else "w+b")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot write output {self.path!r}: {exc.strerror or exc}") from exc
        try:
            actual = fh.seek(0, os.SEEK_END)
            if actual < size:
                # The file was cut or replaced since: rebuild it from the database.
                seq, size = 0, 0
            fh.truncate(size)
            fh.seek(size)
        except OSError as exc:
            fh.close()
            raise UsageError(f"cannot write output {self.path!r}: {exc.strerror or exc}") from exc
        self._fh = fh
        self._at = (seq, size)

    def write(self, rows: list[tuple[int, bytes]]) -> None:
        """Append records (seq, line) in order (blocking)."""
        if not rows:
            return
        assert self._fh is not None
        data = b"".join(r for _, r in rows)
        try:
            self._fh.write(data)
            self._fh.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:  # the disk is full, the file system went read-only, ...
            self.failed = True
            raise OutputError(f"cannot write output {self.display}: "
                              f"{exc.strerror or exc}") from exc
        self._at = (rows[-1][0], self._at[1] + len(data))
        self.lines_this_run += len(rows)

    def sync(self, *, at_most_every: float = 0.0) -> None:
        """Flush to disk (blocking), at most once per ``at_most_every`` seconds.

        Correctness does not hang on it: a resume that finds the file shorter than the
        database says rebuilds it from the database. It bounds what a power cut can take.
        """
        now = time.monotonic()
        if self._fh is not None and self.path is not None and (
                now - self._synced >= at_most_every):
            try:
                os.fsync(self._fh.fileno())
            except OSError as exc:
                self.failed = True
                raise OutputError(f"cannot write output {self.display}: "
                                  f"{exc.strerror or exc}") from exc
            self._synced = now

    def mark(self) -> dict[str, str]:
        """The bookkeeping to commit once ``sync`` has returned (safe from any thread)."""
        seq, size = self._at  # one read: never a seq of one write with the size of another
        return {"out_seq": str(seq), "out_bytes": str(size)}

    def close(self) -> None:
        if self._fh is not None and self.path is not None:
            try:
                self._fh.close()
            except OSError:
                if not self.failed:
                    raise
        self._fh = None
