"""Host slots: which URL may start now, so that every host's limits hold.

All of it runs on the event loop thread and never awaits while deciding, so no lock is
needed. Workers ask ``get()`` for the next job; a host is handed out only when it has
fewer than ``per_host`` requests in flight, its delay since the last start has passed and
it is not paused (Retry-After, back-off). Hosts are served round-robin, so one slow host
never holds up the others.

``limit`` caps the requests in flight of the whole run (``--concurrency``, or the share of
the service's budget a job has now); it can change while the run goes on: lowered, the
requests in flight finish and no new one starts until they are below it; raised, waiting
workers start at once.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shoal.config import Config
from shoal.core.robots import RobotsPolicy
from shoal.store.base import NewUrl, PageData

if TYPE_CHECKING:
    from shoal.recrawl import Prior


@dataclass(slots=True, eq=False)
class Job:
    """One URL on its way to a record; lives in memory while leased from the frontier."""

    id: int  # frontier row id
    url: str  # the normalised URL of the record
    host: str  # host key of the current hop
    depth: int = 0
    parent: str | None = None
    current: str = ""  # the URL of the current hop
    attempts: int = 0
    redirects: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    blocked: bool = False  # robots.txt disallows the current hop
    robots_load: bool = False  # this dispatch loads the host's robots.txt first
    slot: str = ""  # the host whose slot this job holds while in flight
    unsent: bool = False  # taken, and its request not yet written to the socket
    found: list[NewUrl] = field(default_factory=list)  # crawl: links to add with the record
    kind: int = 0  # PAGE, or SITEMAP (yields URLs, not a record)
    data: PageData | None = None  # items and validators to keep with the record
    prior: Prior | None = None  # --since: the URL's record in the previous run
    prior_checked: bool = False  # --since: the previous run was asked

    def __post_init__(self) -> None:
        if not self.current:
            self.current = self.url


PACE_MARGIN = 0.001  # seconds added to a per-host delay counted from our send
REFILL_LOW = 4  # a host's queue this short asks the frontier for more of its URLs
MAX_HOSTS = 50_000  # hosts kept in memory; idle ones beyond this are forgotten
MAX_ROBOTS = 50_000  # robots.txt policies remembered for forgotten hosts


class Host:
    """Pacing state of one host (scheme://host:port)."""

    __slots__ = (
        "active",
        "admitted",
        "crawl_delay",
        "delayed",
        "drained",
        "inflight",
        "key",
        "last_id",
        "last_sent",
        "next_start",
        "overflow",
        "paused_until",
        "penalty",
        "queue",
        "refilling",
        "robots",
        "robots_loading",
        "scheduled",
        "unsent",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.queue: deque[Job] = deque()
        self.delayed: list[tuple[float, int, Job]] = []  # retries waiting for their time
        self.inflight = 0
        self.next_start = 0.0  # monotonic time of the earliest next request start
        self.last_sent: Job | None = None  # the request to it that started last
        self.paused_until = 0.0  # Retry-After: the whole host waits
        self.penalty = 0.0  # adaptive slow-down after 429/503
        self.crawl_delay = 0.0
        self.robots: RobotsPolicy | None = None
        self.robots_loading = False
        self.scheduled = False  # in the ready queue or the timer heap
        self.overflow = False  # the frontier holds pending URLs of this host not in memory
        self.refilling = False
        self.drained = -1  # the frontier generation at which a refill found nothing more
        self.last_id = 0  # highest frontier id of this host taken into memory
        self.active = False
        self.admitted = 0  # URLs of this host taken from the frontier (--max-pages-per-host)
        self.unsent = 0  # requests handed out whose headers have not left yet

    def __repr__(self) -> str:
        return (f"Host({self.key!r}, queued={len(self.queue)}+{len(self.delayed)}, "
                f"inflight={self.inflight})")

    @property
    def waiting(self) -> int:
        return len(self.queue) + len(self.delayed)


class Scheduler:
    """Hands jobs to workers while keeping concurrency, per-host and delay limits."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.config = config
        self.hosts: dict[str, Host] = {}
        self.max_hosts = MAX_HOSTS
        self.keep_hosts = False  # per-host page caps count on every Host: never forget one
        self._idle: OrderedDict[str, None] = OrderedDict()  # idle hosts, oldest first
        self._robots: OrderedDict[str, tuple[RobotsPolicy, float]] = OrderedDict()
        self._clock = clock
        self._ready: deque[Host] = deque()
        self._timers: list[tuple[float, int, Host]] = []
        self._tie = itertools.count()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self.queued = 0  # jobs in memory not in flight
        self.in_flight = 0
        self.limit = config.concurrency  # requests in flight at most (set_limit)
        self.hosts_active = 0
        self.stopping = False  # no new starts; get() returns None
        self.finished = False  # nothing left anywhere; get() returns None
        self.on_low: Callable[[], None] = lambda: None  # the feeder wants to know
        # asked for more URLs of a host; it clears ``refilling`` when done (or at once)
        self.on_refill: Callable[[Host], None] = _no_refill
        self.host_cap = max(config.per_host * 8, 64)  # URLs of one host held in memory
        # Shared frontier: whether this process may start requests to a host now (it owns
        # the host and its leases are fresh); hosts it answers False for wait until poked.
        self.gate: Callable[[Host], bool] | None = None

    # -- adding work ------------------------------------------------------------------------
    def host(self, key: str) -> Host:
        h = self.hosts.get(key)
        if h is None:
            if len(self.hosts) >= self.max_hosts and not self.keep_hosts:
                self._forget_idle_hosts()
            h = self.hosts[key] = Host(key)
            known = self._robots.pop(key, None)
            if known is not None:  # a host seen before: its robots.txt is not fetched again
                h.robots, h.crawl_delay = known
        return h

    def _forget_idle_hosts(self) -> None:
        """Drop idle hosts whose pacing has run out, so millions of hosts stay bounded.

        What a forgotten host knew that still matters (its robots.txt) is kept in a bounded
        cache; its delay and pauses had expired, so a new Host paces it just the same.
        """
        now = self._clock()
        target = int(self.max_hosts * 0.9)
        idle = self._idle
        for _ in range(min(len(idle), 1_000)):  # bounded work per call
            if len(self.hosts) <= target:
                break
            key, _ = idle.popitem(last=False)
            h = self.hosts.get(key)
            if h is None or h.active:
                continue
            if h.scheduled or h.overflow or h.refilling or h.robots_loading \
                    or max(h.next_start, h.paused_until) > now:
                idle[key] = None  # its pacing still runs: look again later
                continue
            del self.hosts[key]
            if h.robots is not None:
                self._robots[key] = (h.robots, h.crawl_delay)
                if len(self._robots) > MAX_ROBOTS:
                    self._robots.popitem(last=False)

    def put(self, job: Job, *, front: bool = False) -> None:
        """Queue a job on its current hop's host."""
        h = self.host(job.host)
        if front:
            h.queue.appendleft(job)
        else:
            h.queue.append(job)
        self.queued += 1
        self._activate(h)
        self._poke(h)

    def retry_later(self, job: Job, wait: float, *, host_wide: bool = False) -> None:
        """Put a job back to start again in ``wait`` seconds (only its host waits)."""
        h = self.host(job.host)
        now = self._clock()
        if host_wide:
            h.paused_until = max(h.paused_until, now + wait)
            h.queue.appendleft(job)
        else:
            heapq.heappush(h.delayed, (now + wait, next(self._tie), job))
        self.queued += 1
        self._activate(h)
        self._poke(h)

    def slow_down(self, host: Host, *, cap: float) -> None:
        """Adaptive politeness: the host answered 429/503, double its extra delay."""
        host.penalty = min(cap, max(0.25, host.penalty * 2))

    def speed_up(self, host: Host) -> None:
        if host.penalty:
            host.penalty = 0.0 if host.penalty < 0.05 else host.penalty * 0.8

    def delay_of(self, host: Host) -> float:
        return max(self.config.delay, host.crawl_delay, host.penalty)

    # -- handing out work -------------------------------------------------------------------
    async def get(self) -> Job | None:
        """The next job a worker may start now; None when the run is over or stopping."""
        loop = asyncio.get_running_loop()
        while True:
            if self.stopping or self.finished:
                return None
            job = self._take()
            if job is not None:
                return job
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            await fut

    def sent(self, job: Job) -> None:
        """``job``'s request has just been written: the host's delay counts from now."""
        if not job.unsent:
            return
        job.unsent = False
        h = self.hosts[job.slot]
        h.unsent -= 1
        h.last_sent = job
        self.pace(h, self._clock())
        self._poke(h)

    def answered(self, job: Job) -> None:
        """``job``'s paced request has its answer. When it is the host's latest start, the
        next waits a delay from now as well: the server saw that request start by the time
        it answered, however late it took it off the socket, so a gap between starts as
        the server logs them is never under the delay (pacing only from our send, a busy
        server that reads one request late sees the gap to the next shrink by as much)."""
        h = self.hosts[job.slot]
        if h.last_sent is job:
            h.last_sent = None
            delay = self.delay_of(h)
            if delay:
                h.next_start = max(h.next_start, self._clock() + delay)

    def pace(self, h: Host, now: float) -> None:
        """A request to ``h`` started at ``now``: the next may start one delay later."""
        delay = self.delay_of(h)
        if delay:
            # From our send the next waits the delay and a millisecond (access logs keep
            # milliseconds); answered() then holds it to a delay after the answer, which
            # is what keeps the gap as the server sees it when it reads a request late.
            # No random jitter: every millisecond more is throughput lost on every host.
            h.next_start = max(h.next_start, now + delay + PACE_MARGIN)

    def release(self, job: Job) -> None:
        """A worker is done with ``job``'s request (finished, re-queued or abandoned)."""
        h = self.hosts[job.slot]  # job.host may have moved on (a redirect to another host)
        if job.unsent:  # it never left (refused connection, DNS, cancelled)
            job.unsent = False
            h.unsent -= 1
        h.inflight -= 1
        self.in_flight -= 1
        if self.in_flight == self.limit - 1:
            self._wake_one()  # the run was at its limit: one more may start
        self._poke(h)
        self._deactivate_if_idle(h)

    def set_limit(self, limit: int) -> None:
        """Allow ``limit`` requests in flight from now on (at least 1)."""
        limit = max(1, limit)
        raised = limit - max(self.limit, self.in_flight)
        self.limit = limit
        for _ in range(min(raised, len(self._waiters))):
            self._wake_one()  # slots opened: as many workers as can start now

    def stop(self) -> None:
        """Stop handing out work (SIGINT); waiting workers return None."""
        self.stopping = True
        self._wake_all()

    def finish(self) -> None:
        """Nothing is left in the frontier or in memory."""
        self.finished = True
        self._wake_all()

    @property
    def idle(self) -> bool:
        return self.queued == 0 and self.in_flight == 0

    def _take(self) -> Job | None:
        if self.in_flight >= self.limit:
            return None  # release() wakes a worker once below the limit
        now = self._clock()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, h = heapq.heappop(timers)
            h.scheduled = False
            self._poke(h, now)
        ready = self._ready
        while ready:
            h = ready.popleft()
            h.scheduled = False
            job = self._pop_job(h, now)
            if job is None:
                self._poke(h, now)
                continue
            self.queued -= 1
            job.slot = h.key
            h.inflight += 1
            self.in_flight += 1
            if job.robots_load or not job.blocked:
                self.pace(h, now)
                job.unsent = True
                h.unsent += 1
            self._poke(h, now)
            if ready:
                self._wake_one()
            if not h.refilling and (
                    (h.overflow and len(h.queue) <= self.host_cap // 2)
                    or (len(h.queue) < REFILL_LOW and self.delay_of(h) > 0)):
                # URLs of a paced host further down the frontier than the window reaches:
                # without them it would sit idle while other hosts fill the window (a host
                # without a delay is not held back: the others take up its share)
                h.refilling = True
                self.on_refill(h)
            if self.queued < self.config.frontier_window // 2:
                self.on_low()
            return job
        self._arm_timer()
        return None

    def _pop_job(self, h: Host, now: float) -> Job | None:
        """The host's next job if it may start now, else None."""
        if self.gate is not None and not self.gate(h):
            return None
        if h.inflight >= self._limit(h):
            return None
        if max(h.next_start, h.paused_until) > now:
            return None
        if h.unsent and self.delay_of(h):
            return None  # the delay counts from the previous request's real start
        if h.delayed and h.delayed[0][0] <= now:
            job = heapq.heappop(h.delayed)[2]
        elif h.queue:
            job = h.queue.popleft()
        else:
            return None
        if self.config.robots and h.robots is None:
            job.robots_load = True
            h.robots_loading = True
        elif h.robots is not None:
            job.blocked = not h.robots.can_fetch(job.current)
        return job

    def _limit(self, h: Host) -> int:
        if self.config.robots and h.robots is None:
            return 1  # one request (robots.txt) until the rules are known
        return self.config.per_host

    def poke(self, h: Host) -> None:
        """``h`` may start requests again (the gate opened): schedule it if it has work."""
        self._poke(h)

    def _poke(self, h: Host, now: float | None = None) -> None:
        """Schedule ``h`` (ready now, or a timer) if it has work it could start."""
        if h.scheduled or h.inflight >= self._limit(h):
            return
        if self.gate is not None and (h.queue or h.delayed) and not self.gate(h):
            return  # poke() again once it may start
        if h.unsent and self.delay_of(h):
            return  # sent() or release() pokes it again
        if h.queue:
            earliest = 0.0
        elif h.delayed:
            earliest = h.delayed[0][0]
        else:
            return
        at = max(h.next_start, h.paused_until, earliest)
        if now is None:
            now = self._clock()
        h.scheduled = True
        if at <= now:
            self._ready.append(h)
            self._wake_one()
        else:
            heapq.heappush(self._timers, (at, next(self._tie), h))
            if at < self._timer_at:
                self._arm_timer()

    def _arm_timer(self) -> None:
        if not self._timers:
            return
        at = self._timers[0][0]
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, at - self._clock())
        self._timer_at = at
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._wake_one()

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        # nobody waiting: a worker will find the work when it asks

    def _wake_all(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = float("inf")

    def _activate(self, h: Host) -> None:
        if not h.active:
            h.active = True
            self.hosts_active += 1
            self._idle.pop(h.key, None)

    def _deactivate_if_idle(self, h: Host) -> None:
        if h.active and not h.inflight and not h.queue and not h.delayed:
            h.active = False
            self.hosts_active -= 1
            self._idle[h.key] = None


def _no_refill(host: Host) -> None:
    host.refilling = False  # nobody feeds this scheduler from a frontier
