"""The engine's writer and output: results -> state DB + output.

Results are collected into batches and committed in order, one commit at a time, while
the next batch is collected; the output is appended from what was committed (by the sink
on the store thread, or by the tail from the database when other processes fetch too).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson

from shoal.engine.parts import EngineState, Result
from shoal.output import Output
from shoal.records import Record
from shoal.store.base import SITEMAP, NewUrl, PageData

WRITE_BATCH = 1_000
WRITE_INTERVAL = 0.25
TAIL_INTERVAL = 0.2  # how often records committed by other processes are appended


class Writing(EngineState):
    """The writer, the output and the tail of an ``Engine``."""

    async def _replay(self, out: Output) -> None:
        """Append records committed after the last complete output line."""
        while rows := await self.store.records_after(out.seq):
            await self.store.in_thread(out.write, rows)
        await self.store.in_thread(out.sync)

    def _close_output(self) -> None:
        assert self.output is not None
        if not self.output.failed:  # else it would only fail again
            self.output.sync()
        self.output.close()

    def _sink(self, rows: list[tuple[int, bytes]]) -> None:
        """After a commit, on the store thread: append to the output, tell the library."""
        if self._tail_mode:
            return  # the tail writes every record of the job (or of every --workers process)
        self._deliver(rows)

    def _deliver(self, rows: list[tuple[int, bytes]]) -> None:
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

    # -- tail: records of every process (a shared job, --workers) -> output ---------------
    async def _tail(self) -> None:
        """Append records as they are committed, whoever fetched them; with --workers,
        stop everything if a follower died."""
        while not self._tail_done.is_set():
            await self._tail_once()
            if (self._followers is not None and self._followers.failed() is not None
                    and not self._stop_requested):
                self.request_stop(grace=0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TAIL_INTERVAL):
                    await self._tail_done.wait()

    async def _tail_once(self) -> None:
        wrote = False
        while rows := await self.store.records_after(self._tail_seq):
            self._tail_seq = rows[-1][0]
            await self.store.in_thread(self._deliver, rows)
            wrote = True
            if self._tailing:  # --workers: the summary counts every process's records
                self._done += len(rows)
                for _, line in rows:
                    rec = orjson.loads(line)
                    if rec["status"] is not None:
                        self._status[f"{rec['status'] // 100}xx"] += 1
                    if rec["error"] is not None:
                        self._errors[rec["error"]["kind"]] += 1
                    self._bytes += rec["bytes"] or 0
        if wrote and self.output is not None:
            await self.store.in_thread(self.output.sync)
            await self.store.set_meta(self.output.mark())

    # -- writer: results -> state DB + output -----------------------------------------------
    async def _write(self) -> None:
        """Collect results into batches and commit them in order, one commit at a time,
        collecting the next batch while the previous one is being committed."""
        queue = self._results
        batch: list[tuple[int, bytes | None]] = []
        found: list[NewUrl] = []
        pages: list[PageData] = []
        try:
            async with asyncio.TaskGroup() as commits:
                await self._write_loop(queue, batch, found, pages, commits)
        finally:
            if batch:  # cancelled (a second SIGINT): keep what was collected
                await asyncio.shield(self._commit(list(batch), list(found), list(pages)))

    async def _write_loop(self, queue: asyncio.Queue[Result | None],
                          batch: list[tuple[int, bytes | None]], found: list[NewUrl],
                          pages: list[PageData], commits: asyncio.TaskGroup) -> None:
        committing: asyncio.Task[None] | None = None
        while True:
            item = await queue.get()
            stop = item is None
            if item is not None:
                self._collect(item, batch, found, pages)
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
                self._collect(item, batch, found, pages)
            if batch:
                if committing is not None:
                    await committing  # commits stay in order, one at a time
                committing = commits.create_task(self._commit(list(batch), list(found),
                                                              list(pages)))
                batch.clear()
                found.clear()
                pages.clear()
            if stop:
                return

    def _collect(self, item: Result, batch: list[tuple[int, bytes | None]],
                 found: list[NewUrl], pages: list[PageData]) -> None:
        url_id, record, links, kind, data = item
        found.extend(links)
        if data is not None:
            pages.append(data)
        if kind == SITEMAP:
            batch.append((url_id, None))
            return
        if not self._tailing:
            self._count(record)
        batch.append((url_id, record.to_json()))

    async def _commit(self, batch: list[tuple[int, bytes | None]], found: list[NewUrl],
                      pages: list[PageData]) -> None:
        """Records, the links their pages found, their items and validators, in one
        transaction, then the output."""
        meta = self.output.mark() if self.output is not None else None
        added = await self.store.complete(batch, meta, self._sink, found, pages)
        if found:
            self._generation += 1
            self._known += added
        if not self._tailing:
            self._done += sum(1 for _, line in batch if line is not None)
        self._uncommitted -= len(batch)
        self._feeder_wakeup.set()

    def _count(self, record: Record) -> None:
        if record.status is not None:
            self._status[f"{record.status // 100}xx"] += 1
        if record.error is not None:
            self._errors[str(record.error.kind)] += 1
        self._bytes += record.bytes


