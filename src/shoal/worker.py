"""``shoal worker``: join every shared job in a PostgreSQL database and work until stopped.

A job is shared when ``shoal fetch`` or ``shoal crawl`` submitted it with a PostgreSQL
``--db`` (its meta holds ``shared``, the job's politeness and crawl options). The worker
looks for such jobs every few seconds, runs one engine per job with work left (URLs
pending, or the input still loading), each with its own connection pool, and leaves a job
once nothing of it is pending anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson

from shoal.config import Config, CrawlOptions, RetryPolicy
from shoal.engine.engine import Engine, SharedRun
from shoal.engine.shared import HOST_TURN
from shoal.engine.source import LineSource
from shoal.errors import ShoalError, StoreError
from shoal.store.postgres import PostgresStore

DISCOVER_EVERY = 2.0  # seconds between two looks for jobs
RETRY_AFTER_ERROR = 5.0  # seconds before a job that failed here is joined again


def is_solo(crawl: CrawlOptions | None) -> bool:
    """Whether a crawl needs one process: its limits count over the whole job in order
    (--max-pages, --max-pages-per-host, level-by-level --max-depth)."""
    return crawl is not None and (crawl.max_pages is not None or crawl.max_depth is not None
                                  or crawl.max_pages_per_host is not None)


def owner_id(name: str | None) -> str:
    """A lease owner unique among all processes: NAME (default: host name), pid, random."""
    return f"{name or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def job_meta(config: Config, crawl: CrawlOptions | None, seeds: list[str] | None
             ) -> dict[str, str]:
    """What a worker needs to run a job the way its submitter asked (kept in its meta)."""
    cfg = {"per_host": config.per_host, "delay": config.delay, "timeout": config.timeout,
           "retries": config.retry.retries, "max_retry_after": config.retry.max_retry_after,
           "max_bytes": config.max_bytes, "robots": config.robots,
           "user_agent": config.user_agent, "block_private": config.block_private,
           "allow_net": list(config.allow_net)}
    meta = {"shared": "1", "config": orjson.dumps(cfg).decode()}
    if crawl is not None:
        meta["crawl"] = orjson.dumps({
            "scope": crawl.scope, "include": list(crawl.include),
            "exclude": list(crawl.exclude), "sitemaps": crawl.sitemaps,
            "seeds": seeds or []}).decode()
    return meta


def job_from_meta(meta: dict[str, str], concurrency: int
                  ) -> tuple[Config, CrawlOptions | None, list[str] | None]:
    """The config (with this worker's concurrency), crawl options and seeds of a job."""
    c: dict[str, Any] = orjson.loads(meta["config"])
    config = Config(concurrency=concurrency, per_host=c["per_host"], delay=c["delay"],
                    timeout=c["timeout"],
                    retry=RetryPolicy(retries=c["retries"],
                                      max_retry_after=c["max_retry_after"]),
                    max_bytes=c["max_bytes"], robots=c["robots"], user_agent=c["user_agent"],
                    block_private=c["block_private"], allow_net=tuple(c["allow_net"]))
    if "crawl" not in meta:
        return config, None, None
    k: dict[str, Any] = orjson.loads(meta["crawl"])
    crawl = CrawlOptions(scope=k["scope"], include=tuple(k["include"]),
                         exclude=tuple(k["exclude"]), sitemaps=k["sitemaps"])
    return config, crawl, list(k["seeds"])


async def shared_jobs(dsn: str) -> dict[str, bool]:
    """Every shared job in the database -> whether it has work left.

    Raises:
        StoreError: the database cannot be reached or read.
    """
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"cannot connect to {dsn.rpartition('@')[2]}: {exc}") from exc
    jobs: dict[str, bool] = {}
    try:
        schemas = await conn.fetch(
            "SELECT n.nspname FROM pg_namespace n "
            "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'meta' "
            "WHERE n.nspname LIKE 'shoal\\_%' ORDER BY 1")
        for (schema,) in schemas:
            s = '"' + schema.replace('"', '""') + '"'
            try:
                meta = dict(await conn.fetch(
                    f"SELECT key, value FROM {s}.meta WHERE key IN ('shared', 'loaded')"))
                if meta.get("shared") != "1":
                    continue
                pending = await conn.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {s}.urls WHERE state = 0)")
            except asyncpg.UndefinedTableError:
                continue  # being created or dropped right now
            jobs[schema[len("shoal_"):]] = bool(pending) or meta.get("loaded") != "1"
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"cannot read the jobs: {exc}") from exc
    finally:
        await conn.close()
    return jobs


class Worker:
    """Works on every shared job of one database until stopped (or, optionally, idle)."""

    def __init__(self, dsn: str, *, concurrency: int, name: str | None = None,
                 lease: float | None = None, turn: float = HOST_TURN, pool_size: int = 4,
                 exit_when_done: bool = False,
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.dsn, self.concurrency, self.lease, self.turn = dsn, concurrency, lease, turn
        self.pool_size, self.exit_when_done = pool_size, exit_when_done
        self.owner = owner_id(name)
        self._log = log
        self._engines: dict[str, Engine] = {}
        self._stop = asyncio.Event()
        self.records = 0  # fetched by this worker, over all jobs

    def request_stop(self) -> None:
        """Graceful: stop joining jobs; engines finish requests in flight and return leases."""
        self._stop.set()
        for engine in self._engines.values():
            engine.request_stop()

    async def run(self) -> bool:
        """Work until stopped; True when stopped by ``request_stop``, False when idle.

        Raises:
            StoreError: the database cannot be reached at the start.
        """
        running: dict[str, asyncio.Task[None]] = {}
        pause_until: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        jobs = await shared_jobs(self.dsn)  # a wrong --db fails here, once
        async with asyncio.TaskGroup() as tg:
            while not self._stop.is_set():
                for job in [j for j, t in running.items() if t.done()]:
                    del running[job]
                now = loop.time()
                for job, work in jobs.items():
                    if work and job not in running and pause_until.get(job, 0) <= now:
                        running[job] = tg.create_task(self._work(job, pause_until),
                                                      name=f"shoal-job-{job}")
                if self.exit_when_done and not running and not any(jobs.values()):
                    return False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DISCOVER_EVERY):
                        await self._stop.wait()
                if self._stop.is_set():
                    break
                try:
                    jobs = await shared_jobs(self.dsn)
                except StoreError as exc:  # the database may come back: keep what runs
                    self._log(f"{exc}; trying again")
                    jobs = {job: True for job in running}
        return True

    async def _work(self, job: str, pause_until: dict[str, float]) -> None:
        store = PostgresStore(self.dsn, name=job, pool_size=self.pool_size)
        try:
            await store.open()
            meta = await store.get_meta()
            config, crawl, seeds = job_from_meta(meta, self.concurrency)
            engine = Engine(config, store, None, crawl=crawl, seeds=seeds,
                            shared=SharedRun(owner=self.owner, lease=self.lease, submit=False,
                                             turn=self.turn))
            self._engines[job] = engine
            if self._stop.is_set():
                return
            self._log(f"joined job {job}")
            result = await engine.run(LineSource([], name=meta.get("input", "-")))
            self.records += result.stats.done_this_run
            self._log(f"{'left' if result.interrupted else 'finished'} job {job}: "
                      f"{result.stats.done_this_run} records fetched here")
        except Exception as exc:  # one job failing must not stop the others
            errors = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
            why = "; ".join(str(e) if isinstance(e, ShoalError) else repr(e) for e in errors)
            self._log(f"job {job}: {why}; joining it again in {RETRY_AFTER_ERROR:.0f} s")
            pause_until[job] = asyncio.get_running_loop().time() + RETRY_AFTER_ERROR
        finally:
            self._engines.pop(job, None)
            await store.close()
