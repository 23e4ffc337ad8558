"""``python -m shoal.service.jobproc``: one job of the service, in a process of its own.

The service (``service.runner``) starts one such process per running job, the way
Scrapyd runs each job as a process: the job's engine has an interpreter and an event
loop to itself, so the fetching never waits for the service's API (nor for its GIL), and
the API never queues behind a busy engine.

Both directions carry JSON lines. On standard input, the parent writes the job first
(``JobSpec`` as a dict), then control messages as it needs:

    {"op": "stop", "grace": 5.0}      finish requests in flight (grace seconds), then end
    {"op": "concurrency", "limit": n} the job's share of the service's fetch budget
    {"op": "report"}                  send a report now

Standard input is also the lifeline (``engine.child``): end of file means the service
is gone, and the job stops at once; SIGINT is ignored, SIGTERM is a graceful stop.
Requests that do not finish go back to pending in the job's state, so a restarted service
resumes the job. The process runs at a lower CPU priority (``JOB_NICE``) than the
service: the API's work is small, and done at once when both want the CPU (the crawl
loses the same CPU time either way, the API no longer waits for it).

On standard output, the child writes

    {"type": "report", "stats": {...}, "summary": {...}}   every tick, and when asked
    {"type": "end", "interrupted": bool, "stats": ..., "summary": ...}   the run is over
    {"type": "error", "error": "..."}                      the job failed (exit code 1)

where ``stats`` is the engine's ``Statistics`` and ``summary`` the live part of the job's
summary (``live.live_summary``). Anything else the process prints goes to standard error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from shoal._signals import EXIT_INTERRUPTED
from shoal.api import seeds_name
from shoal.client.fetcher import Fetcher
from shoal.client.resolver import TableResolver
from shoal.engine.child import child_signals, on_sigterm, open_lifeline
from shoal.engine.engine import Engine
from shoal.engine.source import FileSource, LineSource, Source
from shoal.service.live import Tally, live_summary, parse_records
from shoal.service.models import job_config
from shoal.store.base import Store

log = logging.getLogger("shoal.service")

JOB_NICE = 5  # the API (nice 0) goes first when both want the CPU
FIRST_REPORT = 0.25  # seconds after the start: the job's first figures
EXIT_FAILED = 1


class JobRun:
    """The job's engine, its store and its counters, driven by the parent's messages."""

    def __init__(self, spec: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> None:
        """Raises: whatever makes the job unable to start (its options, its store)."""
        self.spec = spec
        self.send = send
        config, crawl = job_config(spec["kind"], spec["options"],
                                   allow_net=tuple(spec["allow_net"]))
        self.store = _store(spec["store"])
        self.tally = Tally()
        self.tally.count_rows(spec["base"])  # what earlier runs of the job recorded
        loop = asyncio.get_running_loop()

        def sink(rows: list[tuple[int, bytes]]) -> None:
            # on the store's thread, right after a commit
            loop.call_soon_threadsafe(self.tally.ingest, parse_records(rows))

        # the guard is always on (job_config); tests may only replace DNS, never the guard
        table = spec.get("resolve")
        resolver = TableResolver(table) if table is not None else None
        self.engine = Engine(config, self.store, None, crawl=crawl, seeds=spec.get("seeds"),
                             on_records=sink, fetcher=Fetcher(config, resolver=resolver))
        self.engine.set_concurrency(spec["limit"])
        self.stopping = False
        self.running = False

    def stop(self, grace: float) -> None:
        """Finish requests in flight within ``grace`` seconds, then end (safe any time)."""
        self.stopping = True
        if self.running:
            self.engine.request_stop(grace=grace)

    def snapshot(self) -> dict[str, Any]:
        stats = self.engine.statistics()
        return {"stats": stats, "summary": live_summary(self.tally, self.engine, stats)}

    async def tick(self, interval: float) -> None:
        """A report every ``interval`` seconds, the first soon after the start."""
        await asyncio.sleep(min(FIRST_REPORT, interval))
        while True:
            self.send({"type": "report", **self.snapshot()})
            await asyncio.sleep(interval)

    async def listen(self, lines: asyncio.Queue[bytes]) -> None:
        """Obey the parent's control messages."""
        while True:
            message = orjson.loads(await lines.get())
            op = message.get("op")
            if op == "stop":
                self.stop(float(message["grace"]))
            elif op == "concurrency":
                self.engine.set_concurrency(int(message["limit"]))
            elif op == "report":
                self.send({"type": "report", **self.snapshot()})
            else:
                log.warning("job process: unknown message %r", message)

    async def run(self) -> int:
        """Run the job until it is done or stopped; report how it ended."""
        try:
            await self.store.open()
            try:
                interrupted = True
                if not self.stopping:  # else a stop came before the engine could hear it
                    self.running = True
                    source = await asyncio.to_thread(self._source)
                    interrupted = (await self.engine.run(source)).interrupted
            finally:
                await self.store.close()
        except Exception as exc:  # a failed job is a state: the service records why
            log.exception("job %s failed", self.spec["id"])
            self.send({"type": "error", "error": f"{type(exc).__name__}: {exc}"})
            return EXIT_FAILED
        self.send({"type": "end", "interrupted": interrupted, **self.snapshot()})
        return 0

    def _source(self) -> Source:
        spec = self.spec
        if spec["kind"] == "crawl":
            seeds = list(spec["seeds"])
            return LineSource(seeds, name=seeds_name(seeds))
        return FileSource(spec["urls"])


def _store(where: dict[str, Any]) -> Store:
    if "postgres" in where:
        from shoal.store.postgres import PostgresStore

        return PostgresStore(where["postgres"], name=where["name"],
                             pool_size=int(where["pool_size"]))
    from shoal.store.sqlite import SqliteStore

    return SqliteStore(where["sqlite"])


class Reporter:
    """Writes the job's messages to the parent without ever blocking the loop."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def send(self, message: dict[str, Any]) -> None:
        if not self._writer.is_closing():
            self._writer.write(orjson.dumps(message) + b"\n")

    async def close(self) -> None:
        try:
            await self._writer.drain()
            self._writer.close()
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass  # the parent is gone: nobody to tell


async def _reporter(out: BinaryIO) -> Reporter:
    loop = asyncio.get_running_loop()
    protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader())
    transport, _ = await loop.connect_write_pipe(lambda: protocol, out)
    return Reporter(asyncio.StreamWriter(transport, protocol, None, loop))


async def _main(out: BinaryIO) -> int:
    current = asyncio.current_task()
    assert current is not None
    main_task: asyncio.Task[object] = current
    lines: asyncio.Queue[bytes] = asyncio.Queue()
    lifeline = await open_lifeline(main_task.cancel, lines.put_nowait)  # service gone: stop
    reporter = await _reporter(out)
    try:
        spec = orjson.loads(await lines.get())
        return await _run_job(spec, lines, reporter, main_task)
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED
    finally:
        lifeline.close()
        await reporter.close()


async def _run_job(spec: dict[str, Any], lines: asyncio.Queue[bytes], reporter: Reporter,
                   main_task: asyncio.Task[object]) -> int:
    try:
        job = JobRun(spec, reporter.send)
    except Exception as exc:  # options no longer valid, say: the job fails, with why
        reporter.send({"type": "error", "error": f"{type(exc).__name__}: {exc}"})
        return EXIT_FAILED
    remove = on_sigterm(lambda: job.stop(spec["grace"]), main_task.cancel)
    try:
        async with asyncio.TaskGroup() as tg:
            control = tg.create_task(job.listen(lines), name="shoal-job-control")
            ticker = tg.create_task(job.tick(spec["tick"]), name="shoal-job-reports")
            try:
                return await job.run()
            finally:
                control.cancel()
                ticker.cancel()
    finally:
        remove()


def main() -> None:
    child_signals()  # before anything else: asked to stop while starting, stop at once
    os.nice(JOB_NICE)
    # standard output carries the messages only: whatever else is printed goes to stderr
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from shoal._runtime import run, tune_gc, tune_malloc

    tune_malloc()
    tune_gc()
    sys.exit(run(lambda: _main(out)))


if __name__ == "__main__":
    main()
