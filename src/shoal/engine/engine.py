"""The engine: one TaskGroup owning the loader, feeder, workers, writer and monitors.

    input --loader--> state DB (frontier) --feeder--> Scheduler (host slots, bounded window)
          --workers (fetch, parse)--> results queue (bounded) --writer--> state DB + output

The state database is the truth: a URL is done when its record is committed there, and
the output is written from what was committed. Anything in memory (the window, retries
waiting, requests in flight) is simply pending in the database and is fetched again by a
rerun after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson

from shoal.client.fetcher import Fetcher
from shoal.config import Config, CrawlOptions
from shoal.core import urls
from shoal.core.scope import Scope
from shoal.engine.lag import LagMonitor
from shoal.engine.offload import Offload
from shoal.engine.scheduler import Host, Job, Scheduler
from shoal.engine.source import Source
from shoal.engine.stats import Statistics
from shoal.engine.steps import Steps
from shoal.errors import FetchError, StoreError
from shoal.output import Output
from shoal.records import Record, utc_now_iso
from shoal.store.base import PAGE, SITEMAP, DoneUrl, NewUrl, PendingRow, Store

LOAD_BATCH = 5_000
WRITE_BATCH = 1_000
WRITE_INTERVAL = 0.25
RATE_WINDOW = 10.0  # seconds the "pages per second" figure looks back
STOP_GRACE = 5.0  # seconds requests in flight may take to finish after SIGINT/SIGTERM


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended."""

    stats: Statistics
    interrupted: bool
    nothing_to_do: bool
    output: str | None
    state: str
    output_closed: bool = False  # the reader of the output pipe left (`| head`)


class Engine:
    """Runs one fetch job to completion against a store, an output and a source."""

    def __init__(
        self,
        config: Config,
        store: Store,
        output: Output | None,
        *,
        crawl: CrawlOptions | None = None,
        seeds: list[str] | None = None,
        on_records: Callable[[list[tuple[int, bytes]]], None] | None = None,
        progress: Callable[[Callable[[], Statistics]], Coroutine[Any, Any, None]] | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.output = output
        self.mode = "crawl" if crawl is not None else "fetch"
        self.crawl = crawl
        self._scope: Scope | None = None
        if crawl is not None:
            normalised = []
            for seed in seeds or ():
                # an invalid seed becomes a record when the input is loaded
                with contextlib.suppress(FetchError):
                    normalised.append(urls.normalize(seed))
            self._scope = Scope(normalised, crawl.scope, include=crawl.include,
                                exclude=crawl.exclude)
        self._admitted = 0
        self._uncommitted = 0  # results handed to the writer and not yet committed
        self._on_records = on_records
        self._progress = progress
        self._fetcher = fetcher
        self.sched = Scheduler(config)
        self.sched.on_low = self._wake_feeder
        self.sched.on_refill = self._request_refill
        self.sched.keep_hosts = crawl is not None and crawl.max_pages_per_host is not None
        self.lag = LagMonitor()
        self._offload = Offload()
        self.steps = Steps(config, self.sched, self._offload, crawl=crawl, scope=self._scope,
                           on_robots=self._add_robots_sitemaps)
        self._results: asyncio.Queue[tuple[int, Record, list[NewUrl], int] | None] = asyncio.Queue(
            maxsize=max(2 * WRITE_BATCH, config.concurrency * 4))
        self._feeder_wakeup = asyncio.Event()
        self._refills: deque[Host] = deque()
        self._input_done = False
        self._stop_requested = False
        self._started = time.monotonic()
        # statistics of this run
        self._known = 0
        self._done_before = 0
        self._done = 0
        self._bytes = 0
        self._status = Counter[str]()
        self._errors = Counter[str]()
        self._rate: deque[tuple[float, int]] = deque()
        self._workers_task: asyncio.Task[None] | None = None
        self._grace_expired = False
        self._known_at_start = 0
        self._generation = 0  # bumped whenever URLs are added to the frontier
        self._loop: asyncio.AbstractEventLoop | None = None
        self.output_closed = False  # writing the output met a closed pipe

    # -- public -----------------------------------------------------------------------------
    def request_stop(self, *, grace: float = STOP_GRACE) -> None:
        """Graceful stop: no new requests; those in flight get ``grace`` seconds to finish,
        then go back to pending."""
        if self._stop_requested:
            return
        self._stop_requested = True
        self.sched.stop()
        self._feeder_wakeup.set()
        if self._workers_task is not None:
            asyncio.get_running_loop().call_later(grace, self._cancel_workers)

    def _cancel_workers(self) -> None:
        if self._workers_task is not None and not self._workers_task.done():
            self._grace_expired = True
            self._workers_task.cancel()

    def statistics(self) -> Statistics:
        now = time.monotonic()
        done_total = self._done_before + self._done
        rate = self._recent_rate(now)
        p50, p99, pmax = self.lag.percentiles()
        return Statistics(
            elapsed=now - self._started,
            total=self._total_expected() if self._input_done else None,
            done=done_total,
            done_this_run=self._done,
            in_flight=self.sched.in_flight,
            queued=self.sched.queued,
            hosts_active=self.sched.hosts_active,
            pages_per_second=rate,
            bytes=self._bytes,
            status_classes=dict(self._status),
            errors=dict(self._errors),
            loop_lag_p50=p50, loop_lag_p99=p99, loop_lag_max=pmax,
            stopping=self._stop_requested,
            out_of_scope=self.steps.out_of_scope,
        )

    def _total_expected(self) -> int:
        """Records this state will hold at the end, as far as is known now."""
        known = self._known
        if self.crawl is not None and self.crawl.max_pages is not None:
            return min(known, self.crawl.max_pages)
        return known

    def _recent_rate(self, now: float) -> float:
        """Records per second over the last ~10 s, whoever asks and however often."""
        samples = self._rate
        if not samples or now - samples[-1][0] >= 0.5:
            samples.append((now, self._done))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()  # keep one sample at least RATE_WINDOW old
        t0, d0 = samples[0]
        return (self._done - d0) / (now - t0) if now - t0 > 0.2 else 0.0

    async def run(self, source: Source) -> RunResult:
        """Load the input, fetch everything pending, write every record; then return."""
        self._loop = asyncio.get_running_loop()
        await self._check_meta(source)
        meta = await self.store.get_meta()
        if self.output is not None:
            out = self.output
            await self.store.in_thread(out.open, int(meta.get("out_seq", "0")),
                                       int(meta.get("out_bytes", "0")))
            await self._replay(out)
        total, done = await self.store.counts()
        self._known, self._done_before = total, done
        if self.crawl is not None and self.crawl.max_pages_per_host is not None:
            for key, n in (await self.store.done_by_host()).items():
                self.sched.host(key).admitted = n
        self._known_at_start = total
        await self.store.in_thread(source.start, int(meta.get("input_pos", "0")))
        self._started = time.monotonic()
        self._rate.append((self._started, 0))

        fetcher = self._fetcher or Fetcher(self.config)
        try:
            async with fetcher, asyncio.TaskGroup() as tg:
                self.steps.fetcher = fetcher
                fetcher.on_sent = self.sched.sent  # pace each host from real request starts
                monitors = [tg.create_task(self.lag.run(), name="shoal-lag")]
                if self._progress is not None:
                    monitors.append(tg.create_task(self._progress(self.statistics),
                                                   name="shoal-progress"))
                loader = tg.create_task(self._load(source), name="shoal-loader")
                feeder = tg.create_task(self._feed(), name="shoal-feeder")
                self._workers_task = tg.create_task(self._work(), name="shoal-workers")
                writer = tg.create_task(self._write(), name="shoal-writer")
                try:
                    await self._workers_task
                except asyncio.CancelledError:
                    me = asyncio.current_task()
                    if not self._grace_expired or (me is not None and me.cancelling()):
                        raise
                finally:
                    await self._results.put(None)  # the writer drains and stops
                await writer
                for t in (loader, feeder, *monitors):
                    t.cancel()
        finally:
            await self.store.in_thread(source.close)
            self._offload.close()
            if self.output is not None:
                await self.store.in_thread(self._close_output)
        stats = self.statistics()
        return RunResult(stats=stats, interrupted=self._stop_requested,
                         nothing_to_do=self._done == 0 and self._known == self._known_at_start
                         and not self._stop_requested,
                         output=self.output.display if self.output else None,
                         state=self.store.path, output_closed=self.output_closed)

    # -- meta and output --------------------------------------------------------------------
    async def _check_meta(self, source: Source) -> None:
        meta = await self.store.get_meta()
        if not meta:
            await self.store.set_meta({"mode": self.mode, "input": source.name,
                                       "created": utc_now_iso()})
            return
        if meta.get("mode") != self.mode or meta.get("input") != source.name:
            raise StoreError(
                f"state file {self.store.path} belongs to another run "
                f"({meta.get('mode')} of {meta.get('input')}); pass --fresh to start over "
                f"or --state to use another file")

    async def _replay(self, out: Output) -> None:
        """Append records committed after the last complete output line."""
        while rows := await self.store.records_after(out.seq):
            await self.store.in_thread(out.write, rows)
        await self.store.in_thread(out.sync)

    def _close_output(self) -> None:
        assert self.output is not None
        self.output.sync()
        self.output.close()

    def _sink(self, rows: list[tuple[int, bytes]]) -> None:
        """After a commit, on the store thread: append to the output, tell the library."""
        if self.output is not None and not self.output_closed:
            try:
                self.output.write(rows)
                self.output.sync(at_most_every=5.0)
            except BrokenPipeError:  # the reader left (`shoal fetch ... | head`): stop
                self.output_closed = True
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(lambda: self.request_stop(grace=0))
        if self._on_records is not None:
            self._on_records(rows)

    # -- loader: input -> frontier ----------------------------------------------------------
    async def _load(self, source: Source) -> None:
        store = self.store
        crawl = self.mode == "crawl"
        sitemaps = self.crawl is not None and self.crawl.sitemaps
        while not self._stop_requested:
            # reading and normalising run on a worker thread, off the loop
            new, done, position = await asyncio.to_thread(_read_batch, source, crawl)
            if not new and not done:
                break
            if sitemaps:
                new += [NewUrl(h + "/sitemap.xml", h, 0, None, SITEMAP)
                        for h in dict.fromkeys(u.host for u in new)]
            meta = {"input_pos": str(position)}
            if self.output is not None:
                meta.update(self.output.mark())
            written = await store.add(new, done, meta, self._sink)
            self._generation += 1
            for _, line in written:  # invalid lines: records of this run, counted as such
                self._errors[orjson.loads(line)["error"]["kind"]] += 1
            self._done += len(written)
            self._admitted += len(written)  # records in all: --max-pages counts them too
            self._feeder_wakeup.set()
        if not self._stop_requested:
            self._input_done = True
            self._known, _ = await store.counts()
            self._feeder_wakeup.set()

    # -- feeder: frontier -> scheduler ------------------------------------------------------
    def _wake_feeder(self) -> None:
        self._feeder_wakeup.set()

    def _request_refill(self, host: Host) -> None:
        self._refills.append(host)
        self._feeder_wakeup.set()

    async def _feed(self) -> None:
        sched, store, window = self.sched, self.store, self.config.frontier_window
        cursor = 0
        overflowing: set[str] = set()
        # With --max-depth, crawl level by level: a page of depth k starts only once every
        # page of depth < k has its record, so each depth is the shortest link distance and
        # the pages within the limit are exactly those fetched.
        max_depth = self.crawl.max_depth if self.crawl is not None else None
        level = 0 if max_depth is not None else None
        while not self._stop_requested:
            self._feeder_wakeup.clear()
            while self._refills:
                host = self._refills.popleft()
                room = min(self._room(host), self._budget())
                want = min(sched.host_cap - host.waiting, room)
                rows = await store.pending_for_host(host.key, host.last_id, max(want, 1), level)
                host.refilling = False
                if len(rows) < want or room <= len(rows):
                    host.overflow = False
                    overflowing.discard(host.key)
                for row in rows[:max(want, 0)]:
                    self._admit(row)
            if self._budget() <= 0:
                # --max-pages reached: finish what was taken, take nothing more
                if sched.idle and self._uncommitted == 0 and not self._refills:
                    sched.finish()
                    return
            elif sched.queued < window:
                # what was known before the query: rows added after it are not in its answer
                input_done, generation = self._input_done, self._generation
                rows = await store.next_pending(cursor, min(2_000, window - sched.queued), level)
                if rows:
                    cursor = rows[-1].id
                    for row in rows:
                        host = sched.host(row.host)
                        if row.id <= host.last_id:
                            continue  # already taken in by a refill
                        if row.kind == PAGE and (self._budget() <= 0 or self._room(host) <= 0):
                            continue  # over --max-pages or this host's cap: left pending
                        if host.overflow or host.waiting >= sched.host_cap:
                            # leave it in the frontier: refills take this host's rows in
                            # id order, so none is skipped for good
                            if not host.overflow:
                                host.overflow = True
                                overflowing.add(host.key)
                            continue
                        self._admit(row)
                    continue
                if (input_done and generation == self._generation and not overflowing
                        and sched.idle and self._uncommitted == 0 and not self._refills):
                    if level is not None and max_depth is not None and level < max_depth:
                        level += 1  # every page up to this depth is done: the next level
                        cursor = 0
                        for host in sched.hosts.values():
                            host.last_id, host.overflow = 0, False
                        continue
                    sched.finish()
                    return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._feeder_wakeup.wait()

    def _budget(self) -> int:
        """Records --max-pages still allows us to start."""
        if self.crawl is None or self.crawl.max_pages is None:
            return 1 << 62
        return self.crawl.max_pages - self._done_before - self._admitted

    def _room(self, host: Host) -> int:
        """URLs --max-pages-per-host still allows on ``host``."""
        if self.crawl is None or self.crawl.max_pages_per_host is None:
            return 1 << 62
        return self.crawl.max_pages_per_host - host.admitted

    def _admit(self, row: PendingRow) -> None:
        host = self.sched.host(row.host)
        if row.kind == PAGE:  # sitemaps count against no page budget
            host.admitted += 1
            self._admitted += 1
        host.last_id = max(host.last_id, row.id)
        self.sched.put(Job(id=row.id, url=row.url, host=row.host, depth=row.depth,
                           parent=row.parent, kind=row.kind))

    # -- workers ----------------------------------------------------------------------------
    async def _work(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for i in range(self.config.concurrency):
                tg.create_task(self._worker(), name=f"shoal-worker-{i}")

    async def _worker(self) -> None:
        sched = self.sched
        while True:
            job = await sched.get()
            if job is None:
                if sched.stopping or sched.finished:
                    return
                continue
            try:
                record = await self.steps.process(job)
                if record is not None:
                    self._uncommitted += 1
            finally:
                sched.release(job)
            if record is not None:
                await self._results.put((job.id, record, job.found, job.kind))
            elif sched.idle and self._input_done:
                self._feeder_wakeup.set()

    async def _add_robots_sitemaps(self, host: Host) -> None:
        """Seed the frontier from the Sitemap lines of a seed host's robots.txt."""
        if host.robots is None or self._scope is None or not self._scope.allows(host.key + "/"):
            return
        new = []
        for loc in host.robots.sitemaps():
            try:
                url = urls.normalize(loc)
            except FetchError:
                continue
            new.append(NewUrl(url, urls.host_key(url), 0, urls.robots_url(host.key), SITEMAP))
        if new:
            self._known += await self.store.complete([], None, None, new)
            self._generation += 1
            self._feeder_wakeup.set()

    # -- writer: results -> state DB + output -----------------------------------------------
    async def _write(self) -> None:
        """Collect results into batches and commit them in order, one commit at a time,
        collecting the next batch while the previous one is being committed."""
        queue = self._results
        batch: list[tuple[int, bytes | None]] = []
        found: list[NewUrl] = []
        try:
            async with asyncio.TaskGroup() as commits:
                await self._write_loop(queue, batch, found, commits)
        finally:
            if batch:  # cancelled (a second SIGINT): keep what was collected
                await asyncio.shield(self._commit(list(batch), list(found)))

    async def _write_loop(self, queue: asyncio.Queue[tuple[int, Record, list[NewUrl], int]
                                                     | None],
                          batch: list[tuple[int, bytes | None]], found: list[NewUrl],
                          commits: asyncio.TaskGroup) -> None:
        committing: asyncio.Task[None] | None = None
        while True:
            item = await queue.get()
            stop = item is None
            if item is not None:
                self._collect(item, batch, found)
            deadline = time.monotonic() + WRITE_INTERVAL
            while not stop and len(batch) < WRITE_BATCH:
                sched = self.sched
                if sched.queued == 0 and (found or sched.in_flight == 0):
                    break  # workers wait for these links, or nothing else is coming
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        async with asyncio.timeout(left):
                            item = await queue.get()
                    except TimeoutError:
                        break
                if item is None:
                    stop = True
                    break
                self._collect(item, batch, found)
            if batch:
                if committing is not None:
                    await committing  # commits stay in order, one at a time
                committing = commits.create_task(self._commit(list(batch), list(found)))
                batch.clear()
                found.clear()
            if stop:
                return

    def _collect(self, item: tuple[int, Record, list[NewUrl], int],
                 batch: list[tuple[int, bytes | None]], found: list[NewUrl]) -> None:
        url_id, record, links, kind = item
        found.extend(links)
        if kind == SITEMAP:
            batch.append((url_id, None))
            return
        self._count(record)
        batch.append((url_id, record.to_json()))

    async def _commit(self, batch: list[tuple[int, bytes | None]], found: list[NewUrl]
                      ) -> None:
        """Records and the links their pages found, in one transaction, then the output."""
        meta = self.output.mark() if self.output is not None else None
        added = await self.store.complete(batch, meta, self._sink, found)
        if found:
            self._generation += 1
            self._known += added
        self._done += sum(1 for _, line in batch if line is not None)
        self._uncommitted -= len(batch)
        self._feeder_wakeup.set()

    def _count(self, record: Record) -> None:
        if record.status is not None:
            self._status[f"{record.status // 100}xx"] += 1
        if record.error is not None:
            self._errors[str(record.error.kind)] += 1
        self._bytes += record.bytes


def _read_batch(source: Source, crawl: bool) -> tuple[list[NewUrl], list[DoneUrl], int]:
    """Read and normalise a batch of input lines (blocking): URLs for the frontier, records
    for the invalid ones, and the input position after them."""
    new: list[NewUrl] = []
    done: list[DoneUrl] = []
    for line in source.read(LOAD_BATCH):
        try:
            url = urls.normalize(line)
        except FetchError as exc:
            done.append(DoneUrl(line, Record(url=line, error=exc, crawl=crawl).to_json()))
            continue
        new.append(NewUrl(url, urls.host_key(url)))
    return new, done, source.position
