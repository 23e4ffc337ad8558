"""The library API: the engine driven from a user's own asyncio code."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import threading
import types
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import orjson
from aiohttp.abc import AbstractResolver

from shoal.client.fetcher import Fetcher
from shoal.config import Config, CrawlOptions
from shoal.engine.engine import Engine, RunResult
from shoal.engine.source import LineSource
from shoal.errors import ConfigError, UsageError
from shoal.extract.router import Handler, Router
from shoal.output import Output
from shoal.records import Record
from shoal.store.base import Store
from shoal.store.sqlite import SqliteStore

_DELIVERED = "api_delivered_seq"  # meta: the last record seq handed to the consumer
_BACKLOG = 8  # committed batches that may wait for the consumer before the engine slows


class _Run:
    """One call's generator, as far as the Crawler must know: started, and finished."""

    def __init__(self) -> None:
        self.gen: weakref.ref[types.AsyncGeneratorType[Record, None]] | None = None
        self.started = False
        self.done = asyncio.Event()  # its state is saved and its store closed

    async def settle(self) -> None:
        """Stop this run if its consumer left it suspended, and wait until it is saved."""
        if not self.started:
            return
        gen = self.gen() if self.gen is not None else None
        if gen is not None and gen.ag_frame is not None and not gen.ag_running:
            await gen.aclose()  # suspended at a record nobody asks for: stop it now
        await self.done.wait()  # collected (its close is on its way) or closing elsewhere


class Crawler:
    """Fetches URLs with one engine per call, records streamed as they are committed.

    ``state`` keeps the run in an SQLite file, or in PostgreSQL when it is a
    ``postgresql://`` URL (the run named ``job`` there), so that calling again with the
    same URLs resumes; without it the state lives in a temporary directory for the call.

        async with shoal.Crawler(shoal.Config(concurrency=200, per_host=4)) as crawler:
            async for record in crawler.fetch(urls):
                ...
    """

    def __init__(self, config: Config | None = None, *, state: str | os.PathLike[str] | None
                 = None, output: str | os.PathLike[str] | None = None,
                 resolver: AbstractResolver | None = None, job: str = "default",
                 warc: str | os.PathLike[str] | None = None, warc_max_size: int = 1024 ** 3
                 ) -> None:
        self.config = config or Config()
        if self.config.workers > 1:
            raise ConfigError("workers > 1 is a command-line option (shoal fetch --workers); "
                              "the library runs in its caller's process")
        # every response is archived to this WARC (rolling over at warc_max_size bytes)
        self._warc = None if warc is None else str(warc)
        self._warc_max_size = warc_max_size
        self._job = job  # the run's name when ``state`` is a postgresql:// URL
        self._resolver = resolver  # DNS for every connection (tests map names to loopback)
        self._state = None if state is None else str(state)
        self._output = None if output is None else str(output)
        self.last_result: RunResult | None = None
        self.last_state: str | None = None  # the state of the last fetch/crawl call
        self.router = Router()
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        self._runs: list[_Run] = []  # calls not yet finished

    async def __aenter__(self) -> Crawler:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        # A loop left with `break` leaves its generator to the garbage collector, which
        # closes it on a later turn of the event loop: finish every run here, state saved.
        for run in list(self._runs):
            await run.settle()
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None

    def _state_path(self) -> str:
        if self._state is not None:
            return self._state
        if self._temp is None:
            self._temp = tempfile.TemporaryDirectory(prefix="shoal-")
        return str(Path(self._temp.name) / f"state-{os.urandom(4).hex()}.db")

    def route(self, pattern: str, *, cpu: bool = False, follow_links: bool = False
              ) -> Callable[[Handler], Handler]:
        """Decorator: pages whose final URL matches ``pattern`` (``re.search``; the first
        route that matches wins) go to the decorated handler.

        The handler takes a ``shoal.Page`` and yields dicts (items, stored with the run)
        and ``page.follow(href)`` (links the crawl follows, within its scope and depth).
        Usually an ``async def`` generator, run on the event loop; ``cpu=True`` runs a
        plain module-level generator function in a worker process instead. With
        ``follow_links`` a crawl also follows every link of the page, as it does for pages
        no route handles.

        Raises:
            ConfigError: the pattern does not compile, or a cpu handler cannot be pickled.
        """
        def register(handler: Handler) -> Handler:
            self.router.add(pattern, handler, cpu=cpu, follow_links=follow_links)
            return handler

        return register

    def fetch(self, urls: Iterable[str], *, fresh: bool = False,
              name: str = "api", since: str | os.PathLike[str] | None = None
              ) -> AsyncIterator[Record]:
        """Fetch ``urls``; yield one Record per distinct URL as it is committed.

        Breaking out of the loop or cancelling the consuming task stops the engine
        cleanly: requests in flight return to pending and the state is saved. ``since``
        is an earlier run's SQLite state: a conditional recrawl (records carry
        ``changed``).

        Raises:
            UsageError: ``since`` is not a usable state.
        """
        return self._start(urls, name=name, fresh=fresh, crawl=None, since=since)

    def crawl(self, seeds: Iterable[str], *, max_pages: int | None = None,
              max_depth: int | None = None, scope: str = "host", include: Sequence[str] = (),
              exclude: Sequence[str] = (), sitemaps: bool = False,
              max_pages_per_host: int | None = None, fresh: bool = False,
              since: str | os.PathLike[str] | None = None) -> AsyncIterator[Record]:
        """Crawl from ``seeds`` following links in scope; yield one Record per page.

        ``since`` is an earlier run's SQLite state: a conditional recrawl that also
        revisits every page that run had (records carry ``changed``).

        Raises:
            ConfigError: an option is out of range or a pattern does not compile.
            UsageError: ``since`` is not a usable state.
        """
        seeds = list(seeds)
        options = CrawlOptions(max_pages=max_pages, max_depth=max_depth, scope=scope,
                               include=tuple(include), exclude=tuple(exclude),
                               sitemaps=sitemaps, max_pages_per_host=max_pages_per_host)
        return self._start(seeds, name=seeds_name(seeds), fresh=fresh, crawl=options,
                           since=since)

    def _start(self, urls: Iterable[str], *, name: str, fresh: bool,
               crawl: CrawlOptions | None, since: str | os.PathLike[str] | None = None
               ) -> AsyncIterator[Record]:
        # forget calls whose generator was dropped without ever being iterated
        self._runs = [r for r in self._runs
                      if r.started or (r.gen is not None and r.gen() is not None)]
        run = _Run()
        gen = self._run(run, urls, name=name, fresh=fresh, crawl=crawl, since=since)
        run.gen = weakref.ref(cast(types.AsyncGeneratorType[Record, None], gen))
        self._runs.append(run)
        return gen

    async def _run(self, run: _Run, urls: Iterable[str], *, name: str, fresh: bool,
                   crawl: CrawlOptions | None, since: str | os.PathLike[str] | None
                   ) -> AsyncGenerator[Record, None]:
        run.started = True
        try:
            if self._state is not None:
                # one run at a time on a state: an earlier one the consumer left (break)
                # may still be stopping; it must have saved what it delivered first
                for other in list(self._runs):
                    if other is not run:
                        await other.settle()
            # closed here, not left to the garbage collector like the generator we are
            stream = self._run_engine(urls, name=name, fresh=fresh, crawl=crawl, since=since)
            async with contextlib.aclosing(stream):
                async for record in stream:
                    yield record
        finally:
            run.done.set()
            self._runs.remove(run)

    async def _run_engine(self, urls: Iterable[str], *, name: str, fresh: bool,
                          crawl: CrawlOptions | None, since: str | os.PathLike[str] | None
                          ) -> AsyncGenerator[Record, None]:
        store = self._store()
        output = Output(self._output) if self._output is not None else None
        loop = asyncio.get_running_loop()
        batches: asyncio.Queue[list[tuple[int, bytes]] | None] = asyncio.Queue()
        space = threading.Semaphore(_BACKLOG)
        closed = threading.Event()

        def sink(rows: list[tuple[int, bytes]]) -> None:
            # on the store's thread: wait for the consumer, unless it has gone away
            while not space.acquire(timeout=0.1):
                if closed.is_set():
                    return
            loop.call_soon_threadsafe(batches.put_nowait, rows)

        seeds = list(urls) if crawl is not None else None
        warc = None
        if self._warc is not None:
            from shoal.warc import WarcWriter

            warc = WarcWriter(self._warc, max_size=self._warc_max_size, info={"isPartOf": name})
        previous = None
        if since is not None:
            from shoal.recrawl import open_previous, same_run

            previous = await open_previous(str(since))
            if same_run(previous, store.path):
                await previous.close()
                raise UsageError(f"since={str(since)!r} is this run's own state")
        engine = Engine(self.config, store, output, crawl=crawl, seeds=seeds, on_records=sink,
                        fetcher=Fetcher(self.config, resolver=self._resolver),
                        router=self.router, warc=warc, previous=previous)
        ran = False  # the engine closes the WARC and the previous state when it runs

        async def release() -> None:
            if not ran:
                if warc is not None:
                    await warc.close()
                if previous is not None:
                    await previous.close()

        try:
            await store.open(fresh=fresh)
        except BaseException:
            await store.close()
            await release()
            raise
        # Records committed by an earlier call that its consumer never took (it stopped
        # early or crashed) come first, so that over all calls each URL is yielded.
        delivered = int((await store.get_meta()).get(_DELIVERED, "0"))
        task: asyncio.Task[None] | None = None
        try:
            while replay := await store.records_after(delivered, 1000):
                for seq, line in replay:
                    delivered = seq  # handed over, even if the consumer stops right here
                    yield Record.from_dict(orjson.loads(line))

            async def drive() -> None:
                nonlocal ran
                ran = True
                try:
                    source = LineSource(seeds if seeds is not None else urls, name=name)
                    self.last_result = await engine.run(source)
                finally:
                    batches.put_nowait(None)

            # Owned here, not by a TaskGroup: a task group cannot stay open across this
            # generator's yields. The finally below always awaits or cancels it.
            task = asyncio.create_task(drive(), name="shoal-crawler")
            while True:
                rows = await batches.get()
                if rows is None:
                    break
                space.release()
                for seq, line in rows:
                    delivered = seq  # handed over, even if the consumer stops right here
                    yield Record.from_dict(orjson.loads(line))
            await task  # re-raise what ended the engine
        finally:
            closed.set()
            await asyncio.shield(release())
            if task is not None and not task.done():
                engine.request_stop(grace=0)  # the consumer left: requests go back to pending
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise
                finally:
                    await asyncio.shield(self._close(store, delivered))
            else:
                await asyncio.shield(self._close(store, delivered))

    def _store(self, path: str | None = None) -> Store:
        if self._state is not None and self._state.startswith(("postgresql://", "postgres://")):
            from shoal.store.postgres import PostgresStore

            self.last_state = self._state
            return PostgresStore(self._state, name=self._job)
        self.last_state = path or self._state_path()
        return SqliteStore(self.last_state)

    async def items(self) -> AsyncIterator[dict[str, Any]]:
        """The items of the last ``fetch``/``crawl`` call's state, in record order (all of
        them, earlier runs of the same state included). Without ``state=`` the state is
        temporary: read the items inside the ``async with`` block.

        Raises:
            UsageError: no run has happened yet.
        """
        if self.last_state is None:
            raise UsageError("Crawler.items(): fetch or crawl first")
        store = self._store(self.last_state)
        await store.open()
        try:
            after = 0
            while rows := await store.items_after(after, 1000):
                after = rows[-1][0]
                for _, data in rows:
                    yield orjson.loads(data)
        finally:
            await store.close()

    @staticmethod
    async def _close(store: Store, delivered: int) -> None:
        try:
            await store.set_meta({_DELIVERED: str(delivered)})
        finally:
            await store.close()


def seeds_name(seeds: Sequence[str]) -> str:
    """The identity of a crawl's seed list, kept in its state to recognise a rerun."""
    return "seeds:" + hashlib.sha256("\n".join(seeds).encode()).hexdigest()[:16]


async def fetch(urls: Iterable[str], config: Config | None = None) -> list[Record]:
    """Fetch ``urls`` and return every record (convenience for small lists)."""
    async with Crawler(config) as crawler:
        return [r async for r in crawler.fetch(urls)]


async def crawl(seeds: Iterable[str], config: Config | None = None, **options: Any
                ) -> list[Record]:
    """Crawl from ``seeds`` and return every record (convenience for small crawls)."""
    async with Crawler(config) as crawler:
        return [r async for r in crawler.crawl(seeds, **options)]
