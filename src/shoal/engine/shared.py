"""This process's part of a shared frontier: the hosts it owns and the leases it holds.

Only a host's owner starts requests to it, so the scheduler's per-host limits (in flight,
delay, Crawl-delay, Retry-After, back-off) hold across every process on the job. The
scheduler asks ``gate(host)`` before every start: a host not owned here is wanted (a
redirect hop led to it) and acquired at the next claim when free; an owned host is open
only while the leases are fresh enough that a request started now ends (``--timeout``)
before they could run out. The heartbeat pushes the leases forward and saves each host's
politeness in the database, where the next owner finds it; when heartbeats fail for a
whole lease, the engine stops (another process may hold these URLs by now).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable

from shoal.config import Config
from shoal.core.robots import RobotsPolicy, RobotsState
from shoal.engine.scheduler import Host, Scheduler
from shoal.errors import ErrorKind, FetchError, StoreError
from shoal.store.base import HostState, PendingRow, SharedStore

HOST_TURN = 20.0  # default seconds a host is kept before it is drained and offered to others
MAX_HOSTS_OWNED = 1_000
MIN_LEASE_MARGIN = 5.0  # --lease must exceed --timeout by at least this
IDLE_CLAIM = 0.25  # seconds between two looks for free hosts that found none


def lease_for(config: Config, lease: float | None) -> float:
    """The lease in seconds for a job: at least ``--timeout`` + 5 s (default + 30 s)."""
    if lease is None:
        return config.timeout + 30.0
    return max(lease, config.timeout + MIN_LEASE_MARGIN)


class Leases:
    """Hosts owned and URL leases held by this process on one job."""

    def __init__(self, store: SharedStore, sched: Scheduler, config: Config, *, owner: str,
                 ttl: float, on_lost: Callable[[], None], turn: float = HOST_TURN) -> None:
        self.store, self.sched, self.config = store, sched, config
        self.owner, self.ttl = owner, ttl
        # Heartbeats come 4 times within the lease's slack past --timeout (at most every
        # 5 s); the gate closes two heartbeats before a request could outlive the lease.
        self.interval = min(5.0, max(0.2, (ttl - config.timeout) / 4))
        self.margin = 2 * self.interval
        self.valid_until = time.monotonic() + ttl
        self.owned: dict[str, float] = {}  # host -> when this turn on it began
        self.short: set[str] = set()  # owned hosts that had no more URLs at the last claim
        self.wanted: set[str] = set()  # hosts that jobs wait for and that we do not own
        self.robots_saved: set[str] = set()
        self.released: dict[str, float] = {}  # hosts given up lately -> when
        self._idle_until = 0.0  # no free host was found: none asked for until then
        self.lost = False
        self.turn = turn
        # Hosts to own: enough to keep --concurrency busy, and no more, so that processes
        # joining later find hosts left. A host without --delay takes --per-host requests at
        # once; with a delay it is mostly waiting, so one host per request in flight.
        per_host = config.per_host if config.delay == 0 else 1
        self.target = min(MAX_HOSTS_OWNED, max(1, math.ceil(config.concurrency / per_host)))
        self._lock = asyncio.Lock()  # claims, heartbeats and releases one at a time
        self._on_lost = on_lost
        store.start_leases(owner, ttl)

    # -- the scheduler's gate ---------------------------------------------------------------
    def gate(self, h: Host) -> bool:
        if h.key not in self.owned:
            self.wanted.add(h.key)
            return False
        return time.monotonic() + self.config.timeout + self.margin < self.valid_until

    # -- claims -----------------------------------------------------------------------------
    async def claim(self, room: int) -> list[PendingRow]:
        """Lease up to about ``room`` URLs: of hosts owned, and of hosts acquired now."""
        sched, now = self.sched, time.monotonic()
        wants: dict[str, int] = {}
        for key, since in self.owned.items():
            h = sched.hosts.get(key)
            waiting = h.waiting if h is not None else 0
            want = self._want(h)
            # refill a host once half its URLs here are gone: claims come in batches
            if key not in self.short and now - since < self.turn and waiting <= want // 2:
                wants[key] = want - waiting
        budget = max(0, room)
        for key in sorted(wants, key=wants.__getitem__, reverse=True):
            wants[key] = min(wants[key], budget)
            budget -= wants[key]
        new_hosts = max(0, self.target - len(self.owned)) if budget > 0 else 0
        wanted = sorted(self.wanted - self.owned.keys())
        if not any(wants.values()) and not wanted and (not new_hosts or now < self._idle_until):
            return []  # nothing to ask for, or no host was free a moment ago
        # a host given up is left to the others for one turn
        self.released = {k: t for k, t in self.released.items() if now - t < self.turn}
        async with self._lock:
            got = await self.store.claim(wants, new_hosts=new_hosts, hosts=wanted,
                                         delay=self.config.delay, default=self._want(None),
                                         skip=sorted(self.released))
        if not got.hosts and new_hosts:
            # no free host: ask again in a while, not at every request start
            self._idle_until = time.monotonic() + IDLE_CLAIM
        for state in got.hosts:
            self._take(state)
        self.short |= got.short
        self.wanted -= self.owned.keys()
        return got.rows

    def _want(self, h: Host | None) -> int:
        """URLs of a host to hold: what it can start in one turn (delay), at most host_cap."""
        cap = self.sched.host_cap
        delay = self.sched.delay_of(h) if h is not None else self.config.delay
        if delay > 0:
            return min(cap, self.config.per_host + math.ceil(self.turn / delay))
        return cap

    def _take(self, s: HostState) -> None:
        """A host acquired: apply the politeness its previous owners left."""
        now = time.monotonic()
        h = self.sched.host(s.key)
        h.next_start = max(h.next_start, now + s.wait)
        h.paused_until = max(h.paused_until, now + s.paused)
        h.crawl_delay = max(h.crawl_delay, s.crawl_delay)
        h.penalty = max(h.penalty, s.penalty)
        if s.robots is not None and h.robots is None and not h.robots_loading:
            h.robots = robots_policy(s.robots, self.config.robots_token)
            self.robots_saved.add(s.key)
        self.owned[s.key] = now
        self.short.discard(s.key)
        self.sched.poke(h)

    def found_more(self) -> None:
        """URLs were added (links found): owned hosts may have more to claim."""
        self.short.clear()
        self._idle_until = 0.0

    # -- heartbeat and release --------------------------------------------------------------
    def state(self, key: str) -> HostState:
        now = time.monotonic()
        h = self.sched.hosts.get(key)
        if h is None:
            return HostState(key)
        robots = None
        if h.robots is not None and key not in self.robots_saved:
            robots = robots_row(h.robots)
            self.robots_saved.add(key)
        return HostState(key, max(0.0, h.next_start - now), max(0.0, h.paused_until - now),
                         h.crawl_delay, h.penalty, robots)

    async def run(self) -> None:
        """Heartbeat until cancelled; release idle hosts; stop the engine if leases ran out."""
        while True:
            await asyncio.sleep(self.interval)
            sent = time.monotonic()
            try:
                async with self._lock:
                    held = await self.store.heartbeat(
                        [self.state(k) for k in sorted(self.owned)])
            except StoreError:
                held = None  # the database may come back before the leases run out
            if sent >= self.valid_until or (held is None
                                            and time.monotonic() >= self.valid_until):
                # too late: others may hold our URLs and hosts by now
                self.lost = True
                self._on_lost()
                return
            if held is None:
                continue
            self.valid_until = sent + self.ttl
            for key in [k for k in self.owned if k not in held]:
                del self.owned[key]  # taken over (cannot happen while leases are fresh)
            for key in self.owned:
                h = self.sched.hosts.get(key)
                if h is not None and (h.queue or h.delayed):
                    self.sched.poke(h)
            await self._release_idle()

    async def _release_idle(self) -> None:
        now = time.monotonic()
        idle = [key for key, since in self.owned.items()
                if not self._busy(key) and (key in self.short or now - since >= self.turn)]
        if not idle:
            return
        async with self._lock:
            # again under the lock: a claim that held it may have brought URLs for them
            idle = [key for key in idle if key in self.owned and not self._busy(key)]
            # the gate closes before the release is sent: a request started while it is
            # on its way would be missing from the state the next owner paces from
            given = {key: self.owned.pop(key) for key in idle}
            try:
                await self.store.release_hosts([self.state(k) for k in idle])
            except StoreError:
                self.owned.update(given)  # kept, and tried again next time
                return
            except BaseException:
                self.owned.update(given)  # still ours: release_all gives them back
                raise
        for key in idle:
            self.short.discard(key)
            self.released[key] = now

    def _busy(self, key: str) -> bool:
        h = self.sched.hosts.get(key)
        return h is not None and bool(h.inflight or h.waiting or h.robots_loading)

    async def release_all(self) -> None:
        """Return every URL not finished here to pending and every host to the others."""
        async with self._lock:
            await self.store.release_all([self.state(k) for k in sorted(self.owned)])
        self.owned.clear()


def robots_row(policy: RobotsPolicy) -> tuple[int, bytes, str]:
    """A robots policy as the database keeps it (see HostState.robots)."""
    if policy.source is not None:
        return policy.source[0], policy.source[1], policy.reason
    if policy.state is RobotsState.DISALLOW_ALL:
        err = policy.fetch_error
        detail = f"{err.kind}:{err.message}".encode() if err is not None else b""
        return -1, detail, policy.reason
    return -2, b"", policy.reason


def robots_policy(row: tuple[int, bytes, str], token: str) -> RobotsPolicy:
    """The policy back from ``robots_row``."""
    status, body, note = row
    if status >= 0:
        return RobotsPolicy.from_response(status, body, token=token)
    if status == -1:
        policy = RobotsPolicy.disallow_all(note)
        if body:
            kind, _, message = body.decode("utf-8", "replace").partition(":")
            with contextlib.suppress(ValueError):
                policy.fetch_error = FetchError(ErrorKind(kind), message)
        return policy
    return RobotsPolicy.allow_all(note)
