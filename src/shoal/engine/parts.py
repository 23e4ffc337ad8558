"""What the engine's parts share: the state ``Engine.__init__`` sets up, declared once
for the loader and feeder (``feeder.py``) and the writer (``writer.py``)."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shoal.config import Config, CrawlOptions
from shoal.core.scope import Scope
from shoal.engine.scheduler import Host, Scheduler
from shoal.engine.shards import Followers, Shard
from shoal.engine.shared import HOST_TURN, Leases
from shoal.output import Output
from shoal.records import Record
from shoal.store.base import NewUrl, PageData, Store

if TYPE_CHECKING:
    from shoal.recrawl import Previous

STOP_GRACE = 5.0  # seconds requests in flight may take to finish after SIGINT/SIGTERM

# a worker's result: (url id, record, links found, PAGE/SITEMAP, items and validators)
Result = tuple[int, Record, list[NewUrl], int, PageData | None]


@dataclass(frozen=True, slots=True)
class SharedRun:
    """How this process takes part in a job shared through PostgreSQL."""

    owner: str  # unique among the processes on the job
    lease: float | None = None  # seconds; default --timeout + 30
    submit: bool = True  # load the input (the submitting process); workers only join
    meta: dict[str, str] | None = None  # what workers need to run the job (config, crawl)
    turn: float = HOST_TURN  # seconds a host is kept before it is offered to others


class EngineState:
    """The attributes the engine's parts read and write (all set by ``Engine``)."""

    config: Config
    store: Store
    output: Output | None
    output_closed: bool
    sched: Scheduler
    mode: str
    crawl: CrawlOptions | None
    shared: SharedRun | None
    _scope: Scope | None
    _previous: Previous | None
    _extract: bool
    _shard: Shard | None
    _follower: bool
    _followers: Followers | None
    _leases: Leases | None
    _loop: asyncio.AbstractEventLoop | None
    _on_records: Callable[[list[tuple[int, bytes]]], None] | None
    # flow
    _results: asyncio.Queue[Result | None]
    _feeder_wakeup: asyncio.Event
    _refills: deque[Host]
    _input_done: bool
    _stop_requested: bool
    _generation: int  # bumped whenever URLs are added to the frontier
    _admitted: int
    _uncommitted: int  # results handed to the writer and not yet committed
    _tailing: bool  # the tail counts every record (--workers leader)
    _tail_mode: bool  # the tail writes the output, not the sink
    _tail_done: asyncio.Event
    _tail_seq: int
    # statistics of this run
    _known: int
    _done_before: int
    _done: int
    _bytes: int
    _status: Counter[str]
    _errors: Counter[str]

    def request_stop(self, *, grace: float = STOP_GRACE) -> None:
        raise NotImplementedError

    def _sink(self, rows: list[tuple[int, bytes]]) -> None:
        raise NotImplementedError
