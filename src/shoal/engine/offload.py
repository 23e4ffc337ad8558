"""CPU work off the loop when it pays: hashing and parsing of large bodies.

Handing a typical 20 KB page to another process costs more than parsing it in place
(about 45 us), so small bodies are handled inline; large ones go to a thread (hashlib
releases the GIL) or to a process (the HTML parser holds it).
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from shoal.parse.html import ParsedPage, parse_html

T = TypeVar("T")

HASH_INLINE = 256 * 1024
PARSE_INLINE = 512 * 1024


class Offload:
    """Runs hashing and parsing inline for small bodies, elsewhere for large ones."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._workers: ProcessPoolExecutor | None = None  # route handlers marked cpu=True

    async def sha256(self, body: bytes) -> str:
        if len(body) <= HASH_INLINE:
            return hashlib.sha256(body).hexdigest()
        return await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())

    async def parse(self, body: bytes, charset: str | None, *, want_links: bool = False
                    ) -> ParsedPage:
        if len(body) <= PARSE_INLINE:
            return parse_html(body, charset, want_links=want_links)
        if self._pool is None:
            # spawn: never fork a process that runs an event loop and threads
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _parse, body, charset, want_links)

    async def in_process(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a pool of worker processes (one per core); ``fn`` and the
        arguments must pickle. A pool whose worker died is replaced for the next call."""
        if self._workers is None:
            self._workers = ProcessPoolExecutor(
                max_workers=os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn"))
        pool = self._workers
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            if self._workers is pool:
                self._workers = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        for pool in (self._pool, self._workers):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._workers = None


def _parse(body: bytes, charset: str | None, want_links: bool) -> ParsedPage:
    return parse_html(body, charset, want_links=want_links)
