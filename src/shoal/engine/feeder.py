"""The engine's loader and feeder: input -> state DB (frontier) -> scheduler.

The loader normalises input lines into the frontier in batches; the feeder pages the
frontier into the scheduler's bounded window (or claims it under leases when the frontier
is shared), refills paced hosts whose queue runs short, and says when the run is done.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import orjson

from shoal.core import urls
from shoal.engine.parts import EngineState
from shoal.engine.scheduler import REFILL_LOW, Host, Job
from shoal.engine.source import Source
from shoal.errors import FetchError
from shoal.records import Record
from shoal.store.base import PAGE, SITEMAP, DoneUrl, NewUrl, PendingRow, SharedStore

LOAD_BATCH = 5_000
NORMALIZE_SLICE = 250  # input lines normalised between two turns of the loop


class Feeding(EngineState):
    """The loader and the feeder of an ``Engine``."""

    async def _load(self, source: Source) -> None:
        if self.shared is not None and not self.shared.submit:
            self._input_done = True  # a worker joins a job; its submitter loads the input
            return
        store = self.store
        crawl = self.mode == "crawl"
        sitemaps = self.crawl is not None and self.crawl.sitemaps
        while not self._stop_requested:
            # reading blocks (a pipe may wait for its writer): a thread does it. Normalising
            # is CPU work: on a thread it would contend for the GIL with the loop for the
            # whole batch, so it runs here in small slices, the loop going round between.
            lines, position = await asyncio.to_thread(_read_lines, source)
            new: list[NewUrl] = []
            done: list[DoneUrl] = []
            recrawl = self._previous is not None
            for i in range(0, len(lines), NORMALIZE_SLICE):
                _normalize_lines(lines[i:i + NORMALIZE_SLICE], crawl, new, done,
                                 recrawl=recrawl, extract=self._extract)
                await asyncio.sleep(0)
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
            if not self._tailing:
                for _, line in written:  # invalid lines: records of this run
                    self._errors[orjson.loads(line)["error"]["kind"]] += 1
                self._done += len(written)
            self._admitted += len(written)  # records in all: --max-pages counts them too
            self._feeder_wakeup.set()
        if not self._stop_requested and self._previous is not None and self.crawl is not None:
            await self._load_previous()
        if not self._stop_requested:
            if self.shared is not None or self._followers is not None:
                await store.set_meta({"loaded": "1"})  # others may now tell when it is done
            self._input_done = True
            self._known, _ = await store.counts()
            self._feeder_wakeup.set()

    async def _load_previous(self) -> None:
        """--since in a crawl: every page of the previous run joins the frontier at its
        previous depth and parent (a 304 carries no links to find them by)."""
        assert self._previous is not None and self.crawl is not None
        assert self._scope is not None
        max_depth = self.crawl.max_depth
        pos = int((await self.store.get_meta()).get("since_pos", "0"))
        while not self._stop_requested:
            rows = await self._previous.pages_after(pos, LOAD_BATCH)
            if not rows:
                return
            pos = rows[-1][0]
            new = [u for _, u in rows if self._scope.allows(u.url)
                   and (max_depth is None or u.depth <= max_depth)]
            await self.store.add(new, (), {"since_pos": str(pos)})
            self._generation += 1
            self._feeder_wakeup.set()

    # -- feeder: frontier -> scheduler ------------------------------------------------------
    def _wake_feeder(self) -> None:
        self._feeder_wakeup.set()

    def _request_refill(self, host: Host) -> None:
        if not host.overflow and (host.drained == self._generation
                                  or self.sched.queued >= 2 * self.config.frontier_window):
            host.refilling = False  # none of its URLs came since the last refill, or memory
            return
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
                if not host.overflow:  # a short queue: a fair part of the window
                    want = min(want, max(4 * REFILL_LOW, window // max(sched.hosts_active, 1)))
                generation = self._generation  # rows added during the query may be missed
                rows = await store.pending_for_host(host.key, host.last_id, max(want, 1), level)
                host.refilling = False
                if len(rows) < want or room <= len(rows):
                    host.overflow = False
                    overflowing.discard(host.key)
                    host.drained = generation
                for row in rows[:max(want, 0)]:
                    self._admit(row)
            if self._budget() <= 0:
                # --max-pages reached: finish what was taken, take nothing more
                if sched.idle and self._uncommitted == 0 and not self._refills:
                    sched.finish()
                    return
            elif sched.queued < window:
                if self._follower and not self._input_done:
                    meta = await store.get_meta()  # the leader's loader says when it is done
                    self._input_done = meta.get("loaded") == "1"
                # what was known before the query: rows added after it are not in its answer
                input_done, generation = self._input_done, self._generation
                rows = await store.next_pending(cursor, min(2_000, window - sched.queued), level)
                if rows:
                    cursor = rows[-1].id
                    shard = self._shard
                    for row in rows:
                        if shard is not None and not shard.owns(row.host):
                            continue  # another process's host
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

    async def _feed_shared(self) -> None:
        """Claim URLs under leases while the window has room; finish when the job is done
        (its input loaded and no URL pending anywhere, here or in another process)."""
        assert self._leases is not None
        sched, store, window = self.sched, cast(SharedStore, self.store), \
            self.config.frontier_window
        generation = self._generation
        while not self._stop_requested:
            self._feeder_wakeup.clear()
            if generation != self._generation:
                generation = self._generation
                self._leases.found_more()
            rows = await self._leases.claim(window - sched.queued)
            for row in rows:
                self._admit(row)
            if rows and sched.queued < window // 2:
                continue
            if (not rows and self._input_done and sched.idle and self._uncommitted == 0
                    and (await store.get_meta()).get("loaded") == "1"
                    and not await store.has_pending()):
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



def _read_lines(source: Source) -> tuple[list[str], int]:
    """A batch of input lines and the input position after them (blocking)."""
    return source.read(LOAD_BATCH), source.position


def _normalize_lines(lines: list[str], crawl: bool, new: list[NewUrl], done: list[DoneUrl],
                     *, recrawl: bool = False, extract: bool = False) -> None:
    """URLs for the frontier into ``new``, records for the invalid lines into ``done``."""
    for line in lines:
        try:
            url = urls.normalize(line)
        except FetchError as exc:
            done.append(DoneUrl(line, Record(url=line, error=exc, crawl=crawl, recrawl=recrawl,
                                             items=0 if extract else None).to_json()))
            continue
        new.append(NewUrl(url, urls.host_key(url)))

