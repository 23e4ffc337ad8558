"""The engine: one TaskGroup owning the loader, feeder, workers, writer and monitors.

    input --loader--> state DB (frontier) --feeder--> Scheduler (host slots, bounded window)
          --workers (fetch, parse)--> results queue (bounded) --writer--> state DB + output

The state database is the truth: a URL is done when its record is committed there, and
the output is written from what was committed. Anything in memory (the window, retries
waiting, requests in flight) is simply pending in the database and is fetched again by a
rerun after a crash.

The loader and feeder are in ``feeder.py``, the writer and output in ``writer.py``; the
state they share is declared in ``parts.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from shoal.client.fetcher import Fetcher
from shoal.config import Config, CrawlOptions
from shoal.core import urls
from shoal.core.scope import Scope
from shoal.engine.feeder import Feeding
from shoal.engine.lag import LagMonitor
from shoal.engine.offload import Offload
from shoal.engine.parts import STOP_GRACE, Result, SharedRun
from shoal.engine.scheduler import Host, Scheduler
from shoal.engine.shards import Followers, Shard
from shoal.engine.shared import Leases, lease_for
from shoal.engine.source import Source
from shoal.engine.stats import Statistics
from shoal.engine.steps import Steps
from shoal.engine.writer import WRITE_BATCH, Writing
from shoal.errors import FetchError, ShoalError, StoreError, WorkerError
from shoal.export import EXTRAS_META
from shoal.extract.router import Router
from shoal.output import Output
from shoal.records import utc_now_iso
from shoal.store.base import (
    SITEMAP,
    NewUrl,
    SharedStore,
    Store,
)

if TYPE_CHECKING:
    from shoal.recrawl import Previous
    from shoal.warc import WarcWriter

__all__ = ["STOP_GRACE", "Engine", "RunResult", "SharedRun"]

RATE_WINDOW = 10.0  # seconds the "pages per second" figure looks back


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended."""

    stats: Statistics
    interrupted: bool
    nothing_to_do: bool
    output: str | None
    state: str
    output_closed: bool = False  # the reader of the output pipe left (`| head`)


class Engine(Feeding, Writing):
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
        shard: Shard | None = None,
        shared: SharedRun | None = None,
        router: Router | None = None,
        warc: WarcWriter | None = None,
        previous: Previous | None = None,
    ) -> None:
        self._run_config = config  # as given: what followers are started with
        # --workers N: the leader (shard 0) loads the input and writes every process's
        # records to the output; a follower (given its shard) only fetches its hosts.
        self._follower = shard is not None
        self._followers: Followers | None = None
        if shard is None and config.workers > 1:
            shard = Shard(0, config.workers)
            self._followers = Followers()
        self._shard = shard
        if shard is not None:  # --concurrency is shared out between the processes
            n, i = shard.count, shard.index
            config = config.replace(concurrency=max(1, config.concurrency // n
                                                    + (i < config.concurrency % n)))
        self.config = config
        self._tailing = self._followers is not None  # the tail counts every record
        self._tail_mode = self._shard is not None or shared is not None  # no sink output
        self._tail_done = asyncio.Event()  # the run is over: the tail task ends its loop
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
                           on_robots=self._add_robots_sitemaps, router=router, warc=warc,
                           previous=previous)
        self._previous = previous  # --since: closed when the run ends
        self._extract = bool(router)  # records carry `items`
        self._warc = warc  # closed (flushed, synced) when the run ends
        self._results: asyncio.Queue[Result | None] = asyncio.Queue(
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
        # A shared frontier (PostgreSQL): URLs are claimed under leases, not paged, and the
        # output is written from every record of the job, whoever fetched it.
        self.shared = shared
        self._leases: Leases | None = None
        self._tail_seq = 0
        if shared is not None:
            self._leases = Leases(cast(SharedStore, store), self.sched, config,
                                  owner=shared.owner, ttl=lease_for(config, shared.lease),
                                  on_lost=lambda: self.request_stop(grace=0),
                                  turn=shared.turn)
            self.sched.gate = self._leases.gate
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
        if self._followers is not None:
            self._followers.stop()
        self._feeder_wakeup.set()
        if self._workers_task is not None:
            asyncio.get_running_loop().call_later(grace, self._cancel_workers)

    def set_concurrency(self, limit: int) -> None:
        """Requests in flight at most from now on, between 1 and ``--concurrency`` (the
        workers started): the service gives a job its share of the fetch budget this way."""
        self.sched.set_limit(min(limit, self.config.concurrency))

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

    async def run(self, source: Source | None) -> RunResult:
        """Load the input, fetch everything pending, write every record; then return.

        A follower (``shard`` given) has no source: the leader loads the input."""
        self._loop = asyncio.get_running_loop()
        if source is not None:
            await self._check_meta(source)
        meta = await self.store.get_meta()
        if self.output is not None:
            out = self.output
            await self.store.in_thread(out.open, int(meta.get("out_seq", "0")),
                                       int(meta.get("out_bytes", "0")))
            await self._replay(out)
        if self._followers is not None:
            await self.store.set_meta({"loaded": "0"})  # followers wait for the loader
            await self._followers.start(self._run_config, self.store.path, self.config.workers)
        total, done = await self.store.counts()
        self._known, self._done_before = total, done
        if self.crawl is not None and self.crawl.max_pages_per_host is not None:
            for key, n in (await self.store.done_by_host()).items():
                self.sched.host(key).admitted = n
        self._known_at_start = total
        if source is not None:
            await self.store.in_thread(source.start, int(meta.get("input_pos", "0")))
        self._started = time.monotonic()
        self._rate.append((self._started, 0))

        tail = self._followers is not None or (
            self.shared is not None and (self.output is not None or self._on_records is not None))
        if tail:
            self._tail_seq = self.output.seq if self.output is not None else \
                await cast(SharedStore, self.store).last_seq()
        fetcher = self._fetcher or Fetcher(self.config)
        try:
            async with fetcher, asyncio.TaskGroup() as tg:
                self.steps.fetcher = fetcher
                fetcher.on_sent = self.sched.sent  # pace each host from real request starts
                monitors = [tg.create_task(self.lag.run(), name="shoal-lag")]
                if self._leases is not None:
                    monitors.append(tg.create_task(self._leases.run(), name="shoal-leases"))
                tailer = None
                if tail:
                    tailer = tg.create_task(self._tail(), name="shoal-tail")
                if self._progress is not None:
                    monitors.append(tg.create_task(self._progress(self.statistics),
                                                   name="shoal-progress"))
                helpers = []
                if source is not None:
                    helpers.append(tg.create_task(self._load(source), name="shoal-loader"))
                feeder = tg.create_task(
                    self._feed() if self._leases is None else self._feed_shared(),
                    name="shoal-feeder")
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
                if self._followers is not None:
                    await self._followers.wait()  # they finish their hosts; tail goes on
                if tailer is not None:
                    # never cancelled mid-step: a batch read but not yet written would be
                    # skipped by the last tail below (its seq already passed)
                    self._tail_done.set()
                    await tailer
                for t in (*helpers, feeder, *monitors):
                    t.cancel()
            if self._followers is not None:
                await self._tail_once()  # the last records any process committed
                if (failed := self._followers.failed()) is not None:
                    raise WorkerError(f"{failed}; the state is saved: re-run the same "
                                      "command to resume")
            elif tail and not self._stop_requested:
                await self._tail_once()  # the job is done: every record of it
        except BaseExceptionGroup as group:
            error = _own_error(group)
            if error is None:
                raise
            raise error from group  # a full disk, a lost database: said plainly
        finally:
            if self._followers is not None:
                await self._followers.close()
            if self._leases is not None:
                with contextlib.suppress(StoreError):  # else they run out on their own
                    await asyncio.shield(self._leases.release_all())
            if source is not None:
                await self.store.in_thread(source.close)
            self._offload.close()
            if self._warc is not None:
                await self._warc.close()
            if self._previous is not None:
                await self._previous.close()
            if self.output is not None:
                await self.store.in_thread(self._close_output)
        if self._leases is not None and self._leases.lost:
            raise StoreError(f"{self.store.path}: lost this process's leases (no heartbeat "
                             f"reached the database for {self._leases.ttl:.0f} s); other "
                             "processes take its URLs over")
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
            values = {"mode": self.mode, "input": source.name, "created": utc_now_iso()}
            if self.shared is not None:
                values.update(self.shared.meta or {})
            await self.store.set_meta(values)
        elif meta.get("mode") != self.mode or meta.get("input") != source.name:
            raise StoreError(
                f"state file {self.store.path} belongs to another run "
                f"({meta.get('mode')} of {meta.get('input')}); pass --fresh to start over "
                f"or --state to use another file")
        # the optional record fields some run of this state wrote (the export's columns)
        extras = {f for f in meta.get(EXTRAS_META, "").split(",") if f}
        extras |= {"items"} if self._extract else set()
        extras |= {"changed"} if self._previous is not None else set()
        if extras and ",".join(sorted(extras)) != meta.get(EXTRAS_META):
            await self.store.set_meta({EXTRAS_META: ",".join(sorted(extras))})

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
                await self._results.put((job.id, record, job.found, job.kind, job.data))
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

def _own_error(group: BaseExceptionGroup[BaseException]) -> ShoalError | None:
    """The first of the errors a task group failed with, when all of them are shoal's own
    (what the command line reports as a message, not a traceback)."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    if leaves and all(isinstance(e, ShoalError) for e in leaves):
        return cast(ShoalError, leaves[0])
    return None


