"""Child processes driven through their standard input: spawning, lifeline, signals.

The parent starts ``python -m MODULE`` with a pipe on the child's standard input, writes
what the child needs there and keeps the pipe open. It is the child's lifeline: end of
file means the parent is gone (even SIGKILLed), and the child stops at once. Lines the
parent writes later reach the child as they come (control messages). The child ignores
SIGINT (a terminal's Ctrl-C reaches the whole process group; the parent decides) and
treats SIGTERM as a graceful stop: the first finishes requests in flight, a second stops
at once; one that comes before the child's loop runs counts too.

Used by ``--workers N`` (``engine.shards``) and by the service's jobs (``service.jobproc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterable

LINE_LIMIT = 64 * 1024 * 1024  # longest line read from a child's standard output

_terms_before_loop = 0


def _early_term(signum: int, frame: object) -> None:
    global _terms_before_loop
    _terms_before_loop += 1


def child_signals() -> None:
    """First thing in a child: SIGINT is the parent's business; SIGTERM is counted until
    ``on_sigterm`` takes over."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _early_term)


def on_sigterm(first: Callable[[], object], then: Callable[[], object]) -> Callable[[], None]:
    """Call ``first`` on the first SIGTERM (graceful stop) and ``then`` on any later one
    (stop now), counting those that came before; returns the function that removes it."""
    loop = asyncio.get_running_loop()
    terms = 0

    def handle() -> None:
        nonlocal terms
        terms += 1
        (first if terms == 1 else then)()

    loop.add_signal_handler(signal.SIGTERM, handle)
    for _ in range(_terms_before_loop):
        handle()

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGTERM)

    return remove


class Lifeline(asyncio.Protocol):
    """The child's end of its standard input: lines as they come; end of file (the
    parent is gone) calls ``on_lost`` unless the child closed it itself."""

    def __init__(self, on_lost: Callable[[], object],
                 on_line: Callable[[bytes], None] | None = None) -> None:
        self._on_lost = on_lost
        self._on_line = on_line
        self._buffer = b""
        self._closed = False
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._on_line is None:
            return
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            if line.strip():
                self._on_line(line)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            self._on_lost()

    def close(self) -> None:
        """Stop listening (the child is ending on its own)."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()


async def open_lifeline(on_lost: Callable[[], object],
                        on_line: Callable[[bytes], None] | None = None) -> Lifeline:
    """Listen to standard input on the running loop."""
    loop = asyncio.get_running_loop()
    _, lifeline = await loop.connect_read_pipe(lambda: Lifeline(on_lost, on_line), sys.stdin)
    return lifeline


async def spawn(module: str, *, stdout: int) -> asyncio.subprocess.Process:
    """``python -m module`` with its lifeline (a pipe on its standard input)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, stdin=asyncio.subprocess.PIPE, stdout=stdout,
        limit=LINE_LIMIT)


async def close_children(procs: Iterable[asyncio.subprocess.Process], *, grace: float
                         ) -> None:
    """Make sure no child outlives its parent: close the lifelines, wait ``grace``
    seconds, then kill what is left."""
    procs = list(procs)
    for proc in procs:
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
    try:
        async with asyncio.timeout(grace):
            for proc in procs:
                await proc.wait()
    except TimeoutError:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for proc in procs:
            await proc.wait()
