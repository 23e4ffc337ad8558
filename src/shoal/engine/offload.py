"""CPU work off the loop when it pays: hashing and parsing of large bodies.

Handing a typical 20 KB page to another process costs more than parsing it in place
(about 45 us), so small bodies are handled inline; large ones go to a thread (hashlib
releases the GIL) or to a process (the HTML parser holds it).

A hostile page can make the HTML parser quadratic: every block start tag (<div>, <li>,
...) looks down the stack of open elements, so 50,000 open <span>s and as many <div>s
(500 KB) take lexbor 5 s, and 10 MB would take hours. Inline parsing is therefore kept to
bodies whose worst case is a fraction of a second, and a page parsed in the worker process
gets PARSE_DEADLINE seconds: past it the worker is killed and the page is recorded
without title and links, like a binary body.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.pool import Pool
from typing import Any, TypeVar

from shoal.parse.html import ParsedPage, parse_html

T = TypeVar("T")

HASH_INLINE = 256 * 1024
PARSE_INLINE = 128 * 1024  # worst case (nesting) about 0.5 s on the loop, 1 s when busy
PARSE_DEADLINE = 10.0  # seconds a page may take in the worker process


class Offload:
    """Runs hashing and parsing inline for small bodies, elsewhere for large ones."""

    def __init__(self) -> None:
        self._pool: Pool | None = None
        self._turn = asyncio.Lock()  # one page in the worker at a time: its deadline is its own
        self._workers: ProcessPoolExecutor | None = None  # route handlers marked cpu=True

    async def sha256(self, body: bytes) -> str:
        if len(body) <= HASH_INLINE:
            return hashlib.sha256(body).hexdigest()
        return await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())

    async def parse(self, body: bytes, charset: str | None, *, want_links: bool = False
                    ) -> ParsedPage:
        if len(body) <= PARSE_INLINE:
            return parse_html(body, charset, want_links=want_links)
        async with self._turn:
            if self._pool is None:
                # spawn: never fork a process that runs an event loop and threads
                self._pool = multiprocessing.get_context("spawn").Pool(1)
            loop = asyncio.get_running_loop()
            done: asyncio.Future[ParsedPage] = loop.create_future()

            def ok(page: ParsedPage) -> None:
                loop.call_soon_threadsafe(_settle, done, page, None)

            def failed(exc: BaseException) -> None:
                loop.call_soon_threadsafe(_settle, done, None, exc)

            self._pool.apply_async(_parse, (body, charset, want_links), callback=ok,
                                   error_callback=failed)
            try:
                async with asyncio.timeout(PARSE_DEADLINE):
                    return await done
            except TimeoutError:
                self._kill()  # stuck in a pathological page: the next one gets a fresh worker
                return ParsedPage()
            except asyncio.CancelledError:
                self._kill()  # nobody waits for this page any more
                raise

    def _kill(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.terminate()  # the worker process is killed, not waited for

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
        self._kill()
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None


def _settle(fut: asyncio.Future[ParsedPage], page: ParsedPage | None,
            exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        assert page is not None
        fut.set_result(page)


def _parse(body: bytes, charset: str | None, want_links: bool) -> ParsedPage:
    return parse_html(body, charset, want_links=want_links)
