"""The shared frontier of PostgreSQL: host and URL leases, so that many processes (on many
machines) work on one job and every host's limits hold across all of them.

How it works (``PostgresStore`` mixes this in; every statement names the job's schema):

* ``hosts`` holds one row per host: who owns it (``owner``, ``lease_until``), its
  politeness (the next allowed start, a Retry-After pause, Crawl-delay, the adaptive
  penalty) and its robots.txt. Only a host's owner starts requests to it, so in-flight
  counts and delays of a host are kept by one process's scheduler, as in a single run.
  Acquiring hosts is ``SELECT ... FOR UPDATE SKIP LOCKED`` over ``hosts_free`` (hosts with
  pending URLs, those released longest ago first), so claimers never wait on each other.
  Taking over a host whose lease ran out (its owner died) also moves its next start to
  ``lease_until + delay``: the dead owner started nothing after its lease ended.
* The owner leases that host's pending URLs in batches (``urls.owner``; ``SELECT ... FOR
  UPDATE SKIP LOCKED`` over ``urls_pending_host``). The deadline of all of one process's
  URL leases is its row in ``owners``, so a heartbeat is one row however many URLs it
  holds (migration 3; migration 2 kept a deadline per URL, renewed row by row). When it
  runs out, the URLs are claimable by whoever owns their host next.
* ``complete`` (in ``postgres.py``) writes a record only where ``owner`` is still the
  writer, in the same transaction as the record: a late result of a process whose lease
  ran out and was taken over writes nothing.
* Writers adding URLs set ``hosts.pending`` (locking the host row); a release locks the row
  first and then looks for pending URLs in a new snapshot, so a URL added concurrently is
  never left behind on a host marked done. Host rows are always locked in host order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shoal.store.base import Claim, HostState, PendingRow

MIGRATION_3 = """
CREATE TABLE {s}.owners (owner text PRIMARY KEY, lease_until timestamptz NOT NULL);
ALTER TABLE {s}.urls DROP COLUMN lease_until;
"""

MIGRATION = """
ALTER TABLE {s}.urls ADD COLUMN owner text, ADD COLUMN lease_until timestamptz;
CREATE INDEX urls_leased ON {s}.urls (owner) WHERE state = 0 AND owner IS NOT NULL;
CREATE TABLE {s}.hosts (
    host         text PRIMARY KEY,
    pending      boolean NOT NULL DEFAULT true,  -- may have pending URLs
    owner        text,                           -- the process that may start requests
    lease_until  timestamptz,
    turn_at      timestamptz NOT NULL DEFAULT 'epoch',  -- last released: oldest first
    next_start   timestamptz NOT NULL DEFAULT 'epoch',  -- no request starts before this
    paused_until timestamptz NOT NULL DEFAULT 'epoch',  -- Retry-After
    crawl_delay  real NOT NULL DEFAULT 0,
    penalty      real NOT NULL DEFAULT 0,               -- adaptive slow-down (429/503)
    robots_status int,                                  -- robots.txt as fetched, or NULL
    robots_body  bytea,
    robots_note  text
);
CREATE INDEX hosts_free ON {s}.hosts (turn_at, host) WHERE pending;
INSERT INTO {s}.hosts (host) SELECT DISTINCT host FROM {s}.urls WHERE state = 0 AND host <> '';
"""

# Writers: every host of the URLs added may have pending URLs now. ON CONFLICT DO UPDATE
# locks the host row even where its WHERE is false (no new row version then), in host order.
HOSTS_PENDING = """
INSERT INTO {s}.hosts (host)
SELECT DISTINCT h FROM unnest($1::text[]) AS h WHERE h <> '' ORDER BY h
ON CONFLICT (host) DO UPDATE SET pending = true WHERE NOT hosts.pending
"""

_STATE = """h.host,
    extract(epoch FROM greatest(h.next_start, clock_timestamp()) - clock_timestamp())::float8,
    extract(epoch FROM greatest(h.paused_until, clock_timestamp()) - clock_timestamp())::float8,
    h.crawl_delay::float8, h.penalty::float8, h.robots_status, h.robots_body, h.robots_note"""

# Take hosts that nobody holds (or whose owner's lease ran out). $1 owner, $2 lease seconds,
# $3 the job's --delay; {pick} selects the candidate host rows, locked.
_ACQUIRE = """
UPDATE {s}.hosts h SET owner = $1,
    lease_until = clock_timestamp() + make_interval(secs => $2),
    next_start = CASE WHEN h.owner IS NOT NULL AND h.owner <> $1 AND h.lease_until IS NOT NULL
        THEN greatest(h.next_start, h.lease_until
             + make_interval(secs => greatest(h.crawl_delay, h.penalty, $3)))
        ELSE h.next_start END
FROM ({pick}) AS f
WHERE h.host = f.host
RETURNING """ + _STATE
_PICK_FREE = """
SELECT host FROM {s}.hosts
WHERE pending AND (owner IS NULL OR lease_until < clock_timestamp())
  AND host <> ALL($5::text[])
ORDER BY turn_at, host LIMIT $4 FOR UPDATE SKIP LOCKED
"""
_PICK_NAMED = """
SELECT host FROM {s}.hosts
WHERE host = ANY($4::text[]) AND (owner IS NULL OR lease_until < clock_timestamp())
ORDER BY host FOR UPDATE SKIP LOCKED
"""
_ENSURE_HOSTS = """
INSERT INTO {s}.hosts (host) SELECT h FROM unnest($1::text[]) AS h ORDER BY h
ON CONFLICT (host) DO NOTHING
"""
# Lease up to n pending URLs of each host owned (leases still running are someone's).
CLAIM_URLS = """
UPDATE {s}.urls u SET owner = $3
FROM (
    SELECT c.id FROM unnest($1::text[], $2::int[]) AS w(host, n)
    CROSS JOIN LATERAL (
        SELECT x.id FROM {s}.urls x
        WHERE x.host = w.host AND x.state = 0
          AND (x.owner IS NULL OR NOT EXISTS (
                SELECT 1 FROM {s}.owners o
                WHERE o.owner = x.owner AND o.lease_until >= clock_timestamp()))
        ORDER BY x.id LIMIT w.n
        FOR UPDATE OF x SKIP LOCKED) AS c
) AS pick
WHERE u.id = pick.id
RETURNING u.id, u.url, u.host, u.depth, u.parent, u.kind
"""
# A process's lease on all its URLs; a claim creates it, only heartbeats push it forward.
_OWNER = """
INSERT INTO {s}.owners (owner, lease_until)
VALUES ($1, clock_timestamp() + make_interval(secs => $2))
ON CONFLICT (owner) DO NOTHING
"""
_RENEW_OWNER = """
INSERT INTO {s}.owners (owner, lease_until)
VALUES ($1, clock_timestamp() + make_interval(secs => $2))
ON CONFLICT (owner) DO UPDATE SET lease_until = excluded.lease_until
"""
# owners of processes gone for an hour: their URLs were claimable since; forget them
_FORGET_OWNERS = """
DELETE FROM {s}.owners WHERE lease_until < clock_timestamp() - interval '1 hour'
"""
_LOCK_OWNED = "SELECT host FROM {s}.hosts WHERE owner = $1 ORDER BY host FOR UPDATE"
_LOCK_NAMED = ("SELECT host FROM {s}.hosts WHERE host = ANY($2::text[]) AND owner = $1 "
               "ORDER BY host FOR UPDATE")
# Push the owner's view of each host's politeness (never earlier than what is stored).
_HOST_COLUMNS = ("unnest($3::text[], $4::float8[], $5::float8[], $6::float8[], $7::float8[], "
                 "$8::int[], $9::bytea[], $10::text[]) "
                 "AS t(host, wait, paused, cd, pen, rs, rb, rn)")
_SAVE_HOSTS = """
UPDATE {s}.hosts h SET
    lease_until = CASE WHEN $11 THEN NULL ELSE clock_timestamp() + make_interval(secs => $2) END,
    owner = CASE WHEN $11 THEN NULL ELSE h.owner END,
    turn_at = CASE WHEN $11 THEN clock_timestamp() ELSE h.turn_at END,
    pending = CASE WHEN $11 THEN EXISTS (
        SELECT 1 FROM {s}.urls u WHERE u.host = h.host AND u.state = 0) ELSE h.pending END,
    next_start = greatest(h.next_start, clock_timestamp() + make_interval(secs => t.wait)),
    paused_until = greatest(h.paused_until, clock_timestamp() + make_interval(secs => t.paused)),
    crawl_delay = t.cd, penalty = t.pen,
    robots_status = coalesce(t.rs, h.robots_status),
    robots_body = CASE WHEN t.rs IS NULL THEN h.robots_body ELSE t.rb END,
    robots_note = CASE WHEN t.rs IS NULL THEN h.robots_note ELSE t.rn END
FROM """ + _HOST_COLUMNS + """
WHERE h.host = t.host AND h.owner = $1
"""
_RENEW_HOSTS = """
UPDATE {s}.hosts SET lease_until = clock_timestamp() + make_interval(secs => $2)
WHERE owner = $1
RETURNING host
"""
_RETURN_URLS = "UPDATE {s}.urls SET owner = NULL WHERE owner = $1 AND state = 0"


def _host_arrays(hosts: Sequence[HostState]) -> list[Any]:
    hs = sorted(hosts, key=lambda h: h.key)
    return [[h.key for h in hs], [h.wait for h in hs], [h.paused for h in hs],
            [h.crawl_delay for h in hs], [h.penalty for h in hs],
            [h.robots[0] if h.robots else None for h in hs],
            [h.robots[1] if h.robots else None for h in hs],
            [h.robots[2] if h.robots else None for h in hs]]


def _state(r: Any) -> HostState:
    robots = None if r[5] is None else (r[5], bytes(r[6] or b""), r[7] or "")
    return HostState(r[0], max(0.0, r[1]), max(0.0, r[2]), r[3], r[4], robots)


class LeaseMixin:
    """The SharedStore methods of PostgresStore (see the module docstring)."""

    owner: str | None = None
    _ttl: float = 60.0

    # provided by PostgresStore
    def _sql(self, template: str) -> str: ...  # type: ignore[empty-body]
    def _conn(self) -> Any: ...

    def start_leases(self, owner: str, ttl: float) -> None:
        """From now on this store claims URLs as ``owner``, with leases of ``ttl`` seconds,
        and ``complete`` writes only records of URLs leased to ``owner``."""
        self.owner, self._ttl = owner, ttl

    async def claim(self, wants: dict[str, int], *, new_hosts: int = 0,
                    hosts: Sequence[str] = (), delay: float = 0.0, default: int = 64,
                    skip: Sequence[str] = ()) -> Claim:
        """Acquire up to ``new_hosts`` free hosts (not those in ``skip``) and the named
        ``hosts`` when free, then lease up to ``wants[host]`` pending URLs of each host
        owned (``default`` for those acquired now)."""
        assert self.owner is not None
        acquired: list[HostState] = []
        async with self._conn() as conn, conn.transaction():
            args = (self.owner, self._ttl, delay)
            if hosts:
                names = sorted(set(hosts))
                await conn.execute(self._sql(_ENSURE_HOSTS), names)
                rows = await conn.fetch(self._sql(_ACQUIRE.replace("{pick}", _PICK_NAMED)),
                                        *args, names)
                acquired += [_state(r) for r in rows]
            if new_hosts > 0:
                rows = await conn.fetch(self._sql(_ACQUIRE.replace("{pick}", _PICK_FREE)),
                                        *args, new_hosts, list(skip))
                acquired += [_state(r) for r in rows]
            ask = dict(wants)
            for h in acquired:
                ask.setdefault(h.key, default)
            ask = {k: n for k, n in ask.items() if n > 0}
            urls: list[PendingRow] = []
            if ask:
                keys = sorted(ask)
                await conn.execute(self._sql(_OWNER), self.owner, self._ttl)
                got = await conn.fetch(self._sql(CLAIM_URLS), keys, [ask[k] for k in keys],
                                       self.owner)
                urls = sorted((PendingRow(*r) for r in got), key=lambda p: p.id)
        per_host: dict[str, int] = {}
        for p in urls:
            per_host[p.host] = per_host.get(p.host, 0) + 1
        short = frozenset(k for k, n in ask.items() if per_host.get(k, 0) < n)
        return Claim(acquired, urls, short)

    async def heartbeat(self, hosts: Sequence[HostState]) -> set[str]:
        """Push every lease of this owner forward, save the politeness of ``hosts``, and
        return the hosts this owner still holds."""
        assert self.owner is not None
        async with self._conn() as conn, conn.transaction():
            await conn.execute(self._sql(_RENEW_OWNER), self.owner, self._ttl)
            await conn.execute(self._sql(_LOCK_OWNED), self.owner)
            held = {r[0] for r in await conn.fetch(self._sql(_RENEW_HOSTS), self.owner,
                                                   self._ttl)}
            if hosts:
                await conn.execute(self._sql(_SAVE_HOSTS), self.owner, self._ttl,
                                   *_host_arrays(hosts), False)
            await conn.execute(self._sql(_FORGET_OWNERS))
        return held

    async def release_hosts(self, hosts: Sequence[HostState]) -> None:
        """Give up ``hosts`` (idle here), saving their politeness for the next owner."""
        assert self.owner is not None
        if not hosts:
            return
        async with self._conn() as conn, conn.transaction():
            # lock first: the pending check below then sees every writer that got there first
            await conn.execute(self._sql(_LOCK_NAMED), self.owner, sorted(h.key for h in hosts))
            await conn.execute(self._sql(_SAVE_HOSTS), self.owner, self._ttl,
                               *_host_arrays(hosts), True)

    async def release_all(self, hosts: Sequence[HostState]) -> None:
        """Return every URL lease of this owner to pending and release every host."""
        assert self.owner is not None
        async with self._conn() as conn, conn.transaction():
            await conn.execute(self._sql(_LOCK_OWNED), self.owner)
            await conn.execute(self._sql(_RETURN_URLS), self.owner)
            if hosts:
                await conn.execute(self._sql(_SAVE_HOSTS), self.owner, self._ttl,
                                   *_host_arrays(hosts), True)
            # hosts owned but not described (never started): released as they are
            await conn.execute(self._sql(
                "UPDATE {s}.hosts SET owner = NULL, lease_until = NULL, "
                "turn_at = clock_timestamp() WHERE owner = $1"), self.owner)
            await conn.execute(self._sql("DELETE FROM {s}.owners WHERE owner = $1"),
                               self.owner)

    async def last_seq(self) -> int:
        """The highest record seq committed so far (0 for none)."""
        async with self._conn() as conn:
            seq: int = await conn.fetchval(self._sql(
                "SELECT coalesce(max(seq), 0) FROM {s}.urls"))
        return seq

    async def has_pending(self) -> bool:
        """Whether any URL of the job still waits for its record (leased or not)."""
        async with self._conn() as conn:
            found: bool = await conn.fetchval(self._sql(
                "SELECT EXISTS (SELECT 1 FROM {s}.urls WHERE state = 0)"))
        return found
