"""The job runner of the service: one process per running job, all owned by one TaskGroup.

The manager lives as long as the application (its lifespan). Jobs are rows of the
service database; each job's URL file lives in its own directory (``urls.txt``) and its
records in the same state database the CLI uses, so export and resume work as they do
there: ``state.db`` in that directory (SQLite), or the schema ``shoal_svc_<id>`` of a
``PostgresStore`` when the service's ``--db`` is PostgreSQL. A job that was running when
the service stopped is started again when it comes back, and its engine resumes from its
state.

Each running job's engine runs in a process of its own (``service.jobproc``, started
by ``runner.JobProcess``), the way Scrapyd runs its jobs: this process keeps the job
database, the API, the event streams, the metrics and the dashboard; the job's process
has the engine, its store and its counters. An engine fetching at full speed keeps its
loop (and, were it a thread here, the GIL) busy; in a process of its own it takes
nothing from the API, nor the API from it. The job's process reports its statistics and
the live part of its summary about once a second over a pipe; the service sends it
control messages (stop with a grace period, a new share of the fetch budget). Its
records are committed to the job's state database, which the API reads.

The fetch capacity is shared: ``--concurrency`` is the service's budget of requests in
flight, split among the running jobs by max-min fairness (``core.fairshare``): each job
gets at most its own ``concurrency``, and what one does not take goes to the others.
Shares are worked out again whenever a job starts or ends (a pause and a resume end and
start one). A job whose share is lowered finishes the requests it has in flight and
starts no new one until it is below its share. Each host's politeness is kept per job,
by that job's scheduler: a slow host holds only that job's slots.

A job's process ends when the service does (its lifeline, standard input, closes), and
on SIGTERM it finishes or returns its work in flight. A process that dies (a crash, the
OOM killer) fails its job with a message saying so; the service goes on, and the job can
be resumed from what it committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
from typing import Any

import orjson

from shoal._signals import EXIT_INTERRUPTED
from shoal.client.resolver import TableResolver
from shoal.core.fairshare import fair_shares
from shoal.errors import StoreError
from shoal.records import utc_now_iso
from shoal.service.jobdb import ACTIVE, FINAL, JobDB, JobRow, JobState
from shoal.service.live import stopped_summary
from shoal.service.metrics import Metrics
from shoal.service.models import job_config
from shoal.service.pgservice import JOB_POOL_SIZE, PgJobDB, job_store_name
from shoal.service.records import JobRecords, SqliteRecords
from shoal.service.runner import JobProcess, Live, exit_description
from shoal.service.settings import ServiceSettings
from shoal.service.ticker import Ticker

log = logging.getLogger("shoal.service")

LAG_INTERVAL = 0.1
EVENT_TTL = 0.5  # of a tick: how long the event of a job without a process is reused
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
                 resolver: TableResolver | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.db: JobDB | PgJobDB = (PgJobDB(settings.db, schema=settings.schema)
                                    if settings.postgres else JobDB(settings.db))
        # tests map names to addresses with it; the guard checks what it answers all the same
        self._resolver = resolver
        self._live: dict[str, Live] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()  # the dispatcher looks for queued jobs
        self.ticker = Ticker(settings.tick)  # the event streams' clock; stops with the service
        # the event of a job without a process, read from the database at most once per
        # EVENT_TTL ticks however many watch it: job id -> (until, (event, final) or None)
        self._events: dict[str, tuple[float, tuple[bytes, bool] | None]] = {}
        self._event_lock = asyncio.Lock()
        self.stopping = False
        self.ready = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> JobManager:
        await asyncio.to_thread(os.makedirs, self.settings.jobs_dir, exist_ok=True)
        await self.db.open()
        self._stack = contextlib.AsyncExitStack()
        try:
            self._stack.push_async_callback(self.db.close)
            # every job task has awaited its process before the task group exits
            self._tg = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._tg.create_task(self._dispatch(), name="shoal-service-dispatch")
            self._tg.create_task(self._lag(), name="shoal-service-lag")
            self._tg.create_task(self.ticker.run(), name="shoal-service-ticker")
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
        self.ticker.stop()

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

    def _store_spec(self, job_id: str) -> dict[str, Any]:
        """Where the job's process finds the job's state."""
        if self.settings.postgres:
            return {"postgres": self.settings.db, "name": job_store_name(job_id),
                    "pool_size": JOB_POOL_SIZE}
        return {"sqlite": self.state_path(job_id)}

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
        if row.state not in (JobState.PAUSED, JobState.FAILED):
            raise JobError(409, f"job {job_id} is {row.state}; only a paused or failed job "
                                "can resume")
        await self.check_quota(row.token)
        if not await self.db.update(job_id, when=row.state, state=JobState.QUEUED,
                                    finished=None, error=None):
            raise JobError(409, f"job {job_id} is changing state; try again")
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
        """The job as the API shows it: state, counts, rates, errors by kind, hosts, and
        its share of the fetch budget."""
        live = self._live.get(row.id)
        if live is not None and row.state != JobState.RUNNING and row.summary is not None:
            live = None  # finishing: its final summary is written
        out: dict[str, Any] = {
            "id": row.id, "kind": row.kind, "state": str(row.state), "created": row.created,
            "started": row.started, "finished": row.finished, "error": row.error,
            "urls": row.urls, "spec": row.spec,
            # requests in flight it may have now, of the service's budget (--concurrency)
            "share": {"concurrency": live.share if live is not None else 0,
                      "budget": self.settings.concurrency},
            # a job saved as ended has no process, even before its live entry is dropped
            "pid": live.proc.pid if live is not None and live.proc is not None
            and row.state == JobState.RUNNING else None,
        }
        if live is not None and live.part is not None:
            out.update(live.part)
            return out
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

    async def event(self, job_id: str) -> tuple[bytes, bool] | None:
        """The job's progress event for its watchers (its summary as JSON), and whether it
        is the last one (the job has stopped); None if there is no such job.

        Made once for all its watchers: a running job's with each report of its process
        (``_heard``); any other's is read at most once per ``EVENT_TTL`` ticks.
        """
        live = self._live.get(job_id)
        if live is not None and live.event:
            return live.event, False
        async with self._event_lock:  # watchers woken together: the first one reads
            now = asyncio.get_running_loop().time()
            hit = self._events.get(job_id)
            if hit is not None and hit[0] > now:
                return hit[1]
            row = await self.get(job_id)
            event = None if row is None else (orjson.dumps(self.summary(row)),
                                              row.state not in ACTIVE)
            for key in [k for k, (until, _) in self._events.items() if until <= now]:
                del self._events[key]
            self._events[job_id] = (now + EVENT_TTL * self.settings.tick, event)
            return event

    def _heard(self, live: Live, message: dict[str, Any]) -> None:
        """A message from a job's process: its progress event and metrics follow it."""
        live.hear(message)
        if live.stats is None:
            return
        if message.get("type") == "report":
            live.event = orjson.dumps(self.summary(live.row))
        self.metrics.observe_job(live.row.id, live.stats, live.previous)
        live.previous = live.stats

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
            self._reshare()  # the jobs started here are told their share as they start

    def _reshare(self) -> None:
        """Split the fetch budget among the running jobs again (max-min fair)."""
        shares = fair_shares(self.settings.concurrency,
                             {job_id: live.requested for job_id, live in self._live.items()})
        for job_id, live in self._live.items():
            if live.set_share(shares[job_id]):
                self.metrics.observe_share(job_id, live.share)

    def _start(self, row: JobRow) -> Live | None:
        assert self._tg is not None
        try:
            config, _ = job_config(row.kind, row.spec["options"],
                                   allow_net=self.settings.allow_net)
        except Exception as exc:  # a row no longer valid (e.g. --allow-net changed)
            self._tg.create_task(self._save_state(row, JobState.FAILED, error=str(exc),
                                                  finished=utc_now_iso()))
            return None
        live = Live(row=row, requested=config.concurrency)
        self._live[row.id] = live
        self._tg.create_task(self._run(live), name=f"shoal-job-{row.id}")
        return live

    def _spec(self, row: JobRow, base: list[Any]) -> dict[str, Any]:
        """What the job's process needs (``service.jobproc``), as JSON."""
        return {"id": row.id, "kind": row.kind, "options": row.spec["options"],
                "seeds": row.spec.get("seeds") if row.kind == "crawl" else None,
                "urls": self.urls_path(row.id), "store": self._store_spec(row.id),
                "allow_net": list(self.settings.allow_net), "base": base,
                "limit": self._live[row.id].share, "tick": self.settings.tick,
                "grace": self.settings.drain_grace,
                "resolve": None if self._resolver is None else self._resolver.table}

    async def _run(self, live: Live) -> None:
        row = live.row
        error: str | None = None
        started = row.started or utc_now_iso()
        if not await self.db.claim(row.id, started):
            # paused, cancelled or deleted since the dispatcher read it: not to run
            self._end(live)
            return
        row.state, row.started = JobState.RUNNING, started
        try:
            # what earlier runs of the job recorded, counted again by its process
            base = await self.records(row.id).base_counts()
            spec = self._spec(row, base)
            proc = live.proc = await JobProcess.start(spec)
            if live.share != spec["limit"]:  # the shares changed while it started
                proc.send({"op": "concurrency", "limit": live.share})
            if live.stop is not None:  # a stop came while it started
                live.request_stop(live.grace)
            try:
                async for message in proc.messages():
                    self._heard(live, message)
                code = await proc.wait()
            except asyncio.CancelledError:
                await asyncio.shield(proc.close())  # requests in flight go back to pending
                raise
            ended = live.ended or {}
            if ended.get("type") == "error":
                error = str(ended["error"])
            elif not ended and code != EXIT_INTERRUPTED and live.stop is None:
                # it died while it ran (a crash, SIGKILL, the OOM killer); one that had
                # to be killed as it was being stopped has stopped all the same
                error = exit_description(proc.pid, code)
                log.error("job %s: %s", row.id, error)
        except Exception as exc:  # a failed job is a state, not a crash of the service
            log.exception("job %s failed", row.id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                await asyncio.shield(self._finish(live, error))
            finally:
                self._end(live)

    def _end(self, live: Live) -> None:
        """The job's process is over: its share goes to the others."""
        self._live.pop(live.row.id, None)
        self.metrics.observe_share(live.row.id, 0)
        live.done.set()
        self._reshare()
        self._wake.set()

    async def _finish(self, live: Live, error: str | None) -> None:
        row = live.row
        part = stopped_summary(live.part) if live.part is not None else row.summary
        ended = live.ended or {}
        # interrupted with no stop asked for (a SIGTERM from outside): it stays running
        # and starts again, unless the service is stopping
        stop = live.stop or ("shutdown" if ended.get("interrupted") or not ended else None)
        state, finished = {
            None: (JobState.COMPLETED, utc_now_iso()),
            "pause": (JobState.PAUSED, None),
            "cancel": (JobState.CANCELLED, utc_now_iso()),
            "delete": (JobState.CANCELLED, utc_now_iso()),
            "shutdown": (JobState.RUNNING, None),
        }[stop]
        if error is not None:
            state, finished = JobState.FAILED, utc_now_iso()
        row.summary = part
        await self._save_state(row, state, finished=finished, error=error, summary=part)
