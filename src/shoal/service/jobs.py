"""The job runner of the service: one Engine per running job, all owned by one TaskGroup.

The manager lives as long as the application (its lifespan). Jobs are rows of the
service database; each job's URL file lives in its own directory (``urls.txt``) and its
records in the same state database the CLI uses, so export and resume work as they do
there: ``state.db`` in that directory (SQLite), or the schema ``shoal_svc_<id>`` of a
``PostgresStore`` when the service's ``--db`` is PostgreSQL. A job that was running when
the service stopped is started again when it comes back, and its engine resumes from its
state.

Capacity is shared by giving every running job its own engine: its own worker pool,
host slots and limits. A slow host holds only the slots of that host in that job; the
other jobs' workers never wait on it.

Each engine runs on an event loop of its own, in a thread of its own: an engine fetching
at full speed keeps its loop busy (100 ms and more between two turns), and the API
must not queue behind that. The API's loop only reads the engines' counters, and talks
to an engine through ``call_soon_threadsafe``. The threads share the GIL, so the API
costs the engines its own CPU time, no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiohttp.abc import AbstractResolver

from shoal.api import seeds_name
from shoal.client.fetcher import Fetcher
from shoal.config import Config, CrawlOptions
from shoal.engine.engine import Engine
from shoal.engine.source import FileSource, LineSource, Source
from shoal.errors import StoreError
from shoal.records import utc_now_iso
from shoal.service.jobdb import ACTIVE, FINAL, JobDB, JobRow, JobState
from shoal.service.live import Live, live_summary, parse_records
from shoal.service.metrics import Metrics
from shoal.service.pgservice import JOB_POOL_SIZE, PgJobDB, job_store_name
from shoal.service.records import JobRecords, SqliteRecords
from shoal.service.settings import ServiceSettings
from shoal.store.base import Store
from shoal.store.sqlite import SqliteStore

log = logging.getLogger("shoal.service")

LAG_INTERVAL = 0.1
DISPATCH_RETRY = 1.0  # seconds before the jobs are read again after a database error


class JobError(Exception):
    """A request on a job that its state does not allow (HTTP 409) or that is over a limit."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class JobManager:
    """Starts, pauses, resumes, cancels and deletes jobs; owns every job's engine."""

    def __init__(self, settings: ServiceSettings, metrics: Metrics, *,
                 resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.db: JobDB | PgJobDB = (PgJobDB(settings.db, schema=settings.schema)
                                    if settings.postgres else JobDB(settings.db))
        self._resolver = resolver  # tests map names to addresses with it
        self._live: dict[str, Live] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()  # the dispatcher looks for queued jobs
        self._tick_stop = asyncio.Event()  # set once stopping: event streams end
        self.stopping = False
        self.ready = asyncio.Event()
        self._threads = ThreadPoolExecutor(max_workers=settings.max_running,
                                           thread_name_prefix="shoal-job")
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> JobManager:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(os.makedirs, self.settings.jobs_dir, exist_ok=True)
        await self.db.open()
        self._stack = contextlib.AsyncExitStack()
        try:
            self._stack.push_async_callback(self.db.close)
            # every job task has awaited its thread before the task group exits
            self._stack.callback(self._threads.shutdown, wait=False)
            self._tg = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._tg.create_task(self._dispatch(), name="shoal-service-dispatch")
            self._tg.create_task(self._ticker(), name="shoal-service-ticker")
            self._tg.create_task(self._lag(), name="shoal-service-lag")
        except BaseException:
            await self._stack.aclose()
            raise
        self._wake.set()  # jobs running when the service stopped start again
        self.ready.set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.begin_shutdown()
        assert self._stack is not None
        await self._stack.__aexit__(*exc)  # type: ignore[arg-type]

    def begin_shutdown(self) -> None:
        """Stop taking work: running jobs finish their requests in flight (a grace period)
        and stay `running` in the database, so the next start resumes them."""
        if self.stopping:
            return
        self.stopping = True
        self.ready.clear()
        for live in self._live.values():
            if live.stop is None:
                live.stop = "shutdown"
            live.request_stop(self.settings.drain_grace)
        self._wake.set()
        self._tick_stop.set()

    # -- requests ---------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> str:
        return os.path.join(self.settings.jobs_dir, job_id)

    def state_path(self, job_id: str) -> str:
        return os.path.join(self.job_dir(job_id), "state.db")

    def urls_path(self, job_id: str) -> str:
        return os.path.join(self.job_dir(job_id), "urls.txt")

    def records(self, job_id: str) -> JobRecords:
        """The job's records, read where its state lives."""
        if isinstance(self.db, PgJobDB):
            return self.db.records(job_id)
        return SqliteRecords(self.state_path(job_id))

    def _store(self, job_id: str) -> Store:
        if self.settings.postgres:
            from shoal.store.postgres import PostgresStore

            return PostgresStore(self.settings.db, name=job_store_name(job_id),
                                 pool_size=JOB_POOL_SIZE)
        return SqliteStore(self.state_path(job_id))

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(6)

    async def check_quota(self, token: str) -> None:
        if await self.db.count_active(token) >= self.settings.max_jobs_per_token:
            raise JobError(429, f"this token already has {self.settings.max_jobs_per_token} "
                                "queued or running jobs (the per-token limit)")

    async def create(self, *, job_id: str, kind: str, spec: dict[str, Any], token: str,
                     urls: int) -> JobRow:
        """Record a job whose input is in place (``urls.txt`` for a fetch) and queue it."""
        if self.stopping:
            raise JobError(503, "the service is shutting down")
        row = JobRow(seq=0, id=job_id, kind=kind, spec=spec, state=JobState.QUEUED,
                     token=token, urls=urls, created=utc_now_iso())
        await self.db.insert(row)
        self._wake.set()
        return row

    def current(self, row: JobRow) -> JobRow:
        """The running job's own row when it runs (fresher than one read before)."""
        live = self._live.get(row.id)
        return live.row if live is not None else row

    async def get(self, job_id: str) -> JobRow | None:
        live = self._live.get(job_id)
        if live is not None:
            return live.row
        return await self.db.get(job_id)

    async def pause(self, job_id: str) -> JobRow:
        for _ in range(3):
            row = await self._need(job_id)
            live = self._live.get(job_id)
            if live is not None:
                if live.stop is None:
                    live.stop = "pause"
                    live.request_stop(self.settings.drain_grace)
                await live.done.wait()
                return await self._need(job_id)
            if row.state == JobState.PAUSED:
                return row
            if row.state not in ACTIVE:
                raise JobError(409, f"job {job_id} is {row.state}; only a queued or running "
                                    "job can be paused")
            if await self.db.update(job_id, when=row.state, state=JobState.PAUSED):
                return await self._need(job_id)
            # it started (or changed) meanwhile: look again
        raise JobError(409, f"job {job_id} is changing state; try again")

    async def resume(self, job_id: str) -> JobRow:
        row = await self._need(job_id)
        if row.state in ACTIVE:
            return row
        if row.state != JobState.PAUSED:
            raise JobError(409, f"job {job_id} is {row.state}; only a paused job can resume")
        await self.check_quota(row.token)
        await self.db.update(job_id, when=JobState.PAUSED, state=JobState.QUEUED)
        self._wake.set()
        return await self._need(job_id)

    async def cancel(self, job_id: str) -> JobRow:
        for _ in range(3):
            row = await self._need(job_id)
            live = self._live.get(job_id)
            if live is not None:
                if live.stop in (None, "pause", "shutdown"):
                    live.stop = "cancel"
                live.request_stop(0)
                await live.done.wait()
                return await self._need(job_id)
            if row.state in FINAL:
                raise JobError(409, f"job {job_id} is already {row.state}")
            if await self.db.update(job_id, when=row.state, state=JobState.CANCELLED,
                                    finished=utc_now_iso()):
                return await self._need(job_id)
            # it started (or changed) meanwhile: look again
        raise JobError(409, f"job {job_id} is changing state; try again")

    async def delete(self, job_id: str) -> None:
        await self._need(job_id)
        live = self._live.get(job_id)
        if live is not None:
            live.stop = "delete"
            live.request_stop(0)
            await live.done.wait()
        await self.db.delete(job_id)
        await asyncio.to_thread(shutil.rmtree, self.job_dir(job_id), True)
        self.metrics.forget_job(job_id)

    async def _need(self, job_id: str) -> JobRow:
        row = await self.get(job_id)
        if row is None:
            raise JobError(404, f"no job {job_id}")
        return row

    async def _set_state(self, row: JobRow, state: JobState, **values: Any) -> None:
        row.state = state
        for name, value in values.items():
            setattr(row, name, value)
        await self.db.update(row.id, state=state, **values)

    async def _save_state(self, row: JobRow, state: JobState, **values: Any) -> None:
        """``_set_state`` for the job runner's own tasks: a database that is away is logged,
        not a crash of the runner (the row keeps its last saved state: a job left
        ``running`` resumes at the next start)."""
        try:
            await self._set_state(row, state, **values)
        except StoreError as exc:
            log.error("job %s: cannot save its state %s: %s", row.id, state, exc)

    # -- progress ---------------------------------------------------------------------------
    def summary(self, row: JobRow) -> dict[str, Any]:
        """The job as the API shows it: state, counts, rates, errors by kind, hosts."""
        live = self._live.get(row.id)
        if live is not None and row.state != JobState.RUNNING and row.summary is not None:
            live = None  # finishing: its final summary is written
        out: dict[str, Any] = {
            "id": row.id, "kind": row.kind, "state": str(row.state), "created": row.created,
            "started": row.started, "finished": row.finished, "error": row.error,
            "urls": row.urls, "spec": row.spec,
        }
        if live is None:
            saved = row.summary or {}
            known = row.urls if row.kind == "fetch" else None  # before its first run
            out.update({"counts": saved.get("counts", {"total": known, "done": 0,
                                                       "in_flight": 0, "queued": 0}),
                        "rates": {"pages_per_second": 0.0,
                                  "elapsed": saved.get("rates", {}).get("elapsed", 0.0)},
                        "bytes": saved.get("bytes", 0),
                        "status_classes": saved.get("status_classes", {}),
                        "errors": saved.get("errors", {}),
                        "hosts": saved.get("hosts", []),
                        "latest": saved.get("latest", [])})
            return out
        out.update(live_summary(live, live.statistics()))
        return out

    async def wait_until(self, when: float) -> bool:
        """Sleep until loop time ``when`` (a watcher's next turn); False once stopping.

        Event streams start at random phases of the tick, so a thousand of them are
        written spread over the second rather than all in one turn of the loop.
        """
        if self.stopping:
            return False
        delay = when - asyncio.get_running_loop().time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._tick_stop.wait()
        return not self.stopping

    def live_event(self, job_id: str) -> bytes | None:
        live = self._live.get(job_id)
        return live.event if live is not None and live.event else None

    async def _ticker(self) -> None:
        while not self.stopping:
            await asyncio.sleep(self.settings.tick)
            for job_id, live in list(self._live.items()):
                stats = live.statistics()
                summary = self.summary(live.row)
                live.event = orjson.dumps(summary)
                self.metrics.observe_job(job_id, stats, live.previous)
                live.previous = stats

    async def _lag(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            start = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            self.metrics.observe_lag(loop.time() - start - LAG_INTERVAL)

    # -- running ----------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        """Start queued (and interrupted) jobs while there is room, oldest first."""
        assert self._tg is not None
        while not self.stopping:
            await self._wake.wait()
            self._wake.clear()
            if self.stopping:
                return
            room = self.settings.max_running - len(self._live)
            if room <= 0:
                continue
            try:
                rows = await self.db.in_states(ACTIVE)
            except StoreError as exc:  # the database is away (PostgreSQL): look again later
                log.error("cannot read the jobs: %s", exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DISPATCH_RETRY):
                        await self._wake.wait()
                self._wake.set()
                continue
            for row in rows:
                if room <= 0 or self.stopping:
                    break
                if row.id in self._live:
                    continue
                live = self._start(row)
                if live is not None:
                    room -= 1

    def _start(self, row: JobRow) -> Live | None:
        assert self._tg is not None
        try:
            config, crawl = self._options(row)
        except Exception as exc:  # a row no longer valid (e.g. --allow-net changed)
            self._tg.create_task(self._save_state(row, JobState.FAILED, error=str(exc),
                                                  finished=utc_now_iso()))
            return None
        loop = asyncio.get_running_loop()
        store = self._store(row.id)
        live_box: list[Live] = []

        def sink(rows: list[tuple[int, bytes]]) -> None:
            # on the store's thread, right after a commit
            parsed = parse_records(rows)
            loop.call_soon_threadsafe(live_box[0].ingest, parsed)

        seeds = row.spec.get("seeds") if row.kind == "crawl" else None
        engine = Engine(config, store, None, crawl=crawl, seeds=seeds, on_records=sink,
                        fetcher=Fetcher(config, resolver=self._resolver))
        live = Live(row=row, engine=engine)
        live_box.append(live)
        self._live[row.id] = live
        self._tg.create_task(self._run(live, store), name=f"shoal-job-{row.id}")
        return live

    def _options(self, row: JobRow) -> tuple[Config, CrawlOptions | None]:
        from shoal.service.models import CrawlJobOptions, FetchOptions

        allow = self.settings.allow_net
        if row.kind == "crawl":
            opts = CrawlJobOptions.model_validate(row.spec["options"])
            return opts.config(allow_net=allow), opts.crawl_options()
        return FetchOptions.model_validate(row.spec["options"]).config(allow_net=allow), None

    def _source(self, row: JobRow) -> Source:
        if row.kind == "crawl":
            seeds = list(row.spec["seeds"])
            return LineSource(seeds, name=seeds_name(seeds))
        return FileSource(self.urls_path(row.id))

    async def _run(self, live: Live, store: Store) -> None:
        row = live.row
        error: str | None = None
        started = row.started or utc_now_iso()
        if not await self.db.claim(row.id, started):
            # paused, cancelled or deleted since the dispatcher read it: not to run
            self._live.pop(row.id, None)
            live.done.set()
            self._wake.set()
            return
        row.state, row.started = JobState.RUNNING, started
        try:
            # what earlier runs of the job recorded, read here: the service's database
            # connections belong to this loop, not to the engine's
            live.count_rows(await self.records(row.id).base_counts())
            done = asyncio.get_running_loop().run_in_executor(
                self._threads, self._engine_thread, live, store)
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                live.request_stop(0)  # requests in flight go back to pending
                await asyncio.wait([done])
                raise
        except Exception as exc:  # a failed job is a state, not a crash of the service
            log.exception("job %s failed", row.id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                await asyncio.shield(self._finish(live, error))
            finally:
                self._live.pop(row.id, None)
                live.done.set()
                self._wake.set()

    def _engine_thread(self, live: Live, store: Store) -> None:
        """The job's engine on a loop of its own (uvloop when present), in this thread."""
        from shoal._runtime import loop_factory

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(self._engine_main(live, store))

    async def _engine_main(self, live: Live, store: Store) -> None:
        assert self._loop is not None
        live.loop = asyncio.get_running_loop()
        try:
            await store.open()
            if live.stop is None:  # else a stop came before this loop could hear of it
                source = await asyncio.to_thread(self._source, live.row)
                await live.engine.run(source)
        finally:
            live.loop = None
            await store.close()

    async def _finish(self, live: Live, error: str | None) -> None:
        row = live.row
        # the engine's thread has ended: its counters are final
        stats = live.engine.statistics()
        live._stats, live._stats_at = stats, time.monotonic()
        part = live_summary(live, stats)
        part["counts"]["in_flight"] = part["counts"]["queued"] = 0
        part["rates"]["pages_per_second"] = 0.0
        for h in part["hosts"]:
            h["in_flight"] = h["queued"] = 0
        if live.previous is not None or live.records:
            self.metrics.observe_job(row.id, stats, live.previous)
        state, finished = {
            None: (JobState.COMPLETED, utc_now_iso()),
            "pause": (JobState.PAUSED, None),
            "cancel": (JobState.CANCELLED, utc_now_iso()),
            "delete": (JobState.CANCELLED, utc_now_iso()),
            "shutdown": (JobState.RUNNING, None),
        }[live.stop]
        if error is not None:
            state, finished = JobState.FAILED, utc_now_iso()
        row.summary = part
        await self._save_state(row, state, finished=finished, error=error, summary=part)
