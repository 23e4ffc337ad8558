"""The shared frontier of PostgreSQL, store level: host and URL leases between owners.

Each test opens two or three stores on one job, as separate processes would, each with its
own owner name; lease deadlines are short and waited for by polling, with a bound.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncpg  # type: ignore[import-untyped]
import orjson
import pytest

from shoal.store.base import Claim, HostState, NewUrl
from shoal.store.postgres import PostgresStore
from tests.conftest import postgres_url

pytestmark = pytest.mark.timeout(60)
A, B = "http://a.test", "http://b.test"
T = TypeVar("T")


@pytest.fixture
async def job() -> AsyncIterator[tuple[str, str]]:
    dsn, name = postgres_url(), "l" + uuid.uuid4().hex[:12]
    yield dsn, name
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "shoal_{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def stores(job: tuple[str, str]) -> AsyncIterator[list[PostgresStore]]:
    dsn, name = job
    made = [PostgresStore(dsn, name=name, pool_size=2) for _ in range(3)]
    for i, s in enumerate(made):
        await s.open()
        s.start_leases(f"owner{i}", 60.0)
    try:
        yield made
    finally:
        for s in made:
            await s.close()


def urls(host: str, n: int) -> list[NewUrl]:
    return [NewUrl(f"{host}/{i}", host) for i in range(n)]


def rec(url: str) -> bytes:
    return orjson.dumps({"url": url}) + b"\n"


async def until(fn: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = 10
                ) -> T:
    async with asyncio.timeout(within):
        while True:
            got = await fn()
            if ok(got):
                return got
            await asyncio.sleep(0.05)


async def test_a_host_and_its_urls_go_to_one_owner(stores: list[PostgresStore]) -> None:
    a, b, _ = stores
    await a.add(urls(A, 5) + urls(B, 3))
    first = await a.claim({}, new_hosts=1, default=10)
    assert [h.key for h in first.hosts] == [A]  # one host asked for, the first free
    assert sorted(r.url for r in first.rows) == sorted(u.url for u in urls(A, 5))
    assert first.short == {A}
    second = await b.claim({}, new_hosts=5, default=10)
    assert [h.key for h in second.hosts] == [B]  # A is owned: skipped, not waited for
    assert len(second.rows) == 3
    assert await b.claim({A: 10}) == Claim([], [], frozenset({A}))  # not its host: nothing


async def test_concurrent_claims_never_share_a_url(stores: list[PostgresStore]) -> None:
    await stores[0].add([u for i in range(30) for u in urls(f"http://h{i}.test", 20)])
    claims = await asyncio.gather(*(s.claim({}, new_hosts=8, default=50) for s in stores))
    ids = [r.id for c in claims for r in c.rows]
    hosts = [h.key for c in claims for h in c.hosts]
    assert len(ids) == len(set(ids)) == 20 * len(hosts)
    assert len(hosts) == len(set(hosts)) == 24


async def test_a_late_result_after_a_takeover_writes_no_second_record(
        stores: list[PostgresStore]) -> None:
    a, b, _ = stores
    a.start_leases("owner0", 0.3)  # short leases: a stops heart-beating (it "dies")
    await a.add(urls(A, 2))
    mine = (await a.claim({}, new_hosts=1, default=10)).rows
    assert len(mine) == 2
    taken = await until(lambda: b.claim({}, new_hosts=1, default=10), lambda c: bool(c.rows))
    assert sorted(r.id for r in taken.rows) == sorted(r.id for r in mine)
    written: list[list[tuple[int, bytes]]] = []
    await b.complete([(r.id, rec(r.url)) for r in taken.rows], sink=written.append)
    late: list[list[tuple[int, bytes]]] = []
    await a.complete([(r.id, rec(r.url) + b"late") for r in mine], sink=late.append)
    assert late == [] and len(written[0]) == 2
    records = await a.records_after(0)
    assert [line for _, line in records] == [rec(r.url) for r in sorted(taken.rows,
                                                                      key=lambda r: r.id)]


async def test_a_result_written_in_time_counts_even_after_the_lease_ran_out(
        stores: list[PostgresStore]) -> None:
    a, _, _ = stores
    a.start_leases("owner0", 0.2)
    await a.add(urls(A, 1))
    (row,) = (await a.claim({}, new_hosts=1, default=10)).rows
    await asyncio.sleep(0.3)  # the lease has run out, nobody took the URL over
    await a.complete([(row.id, rec(row.url))])
    assert await a.counts() == (1, 1)


async def test_heartbeat_keeps_leases_and_release_all_returns_them(
        stores: list[PostgresStore]) -> None:
    a, b, _ = stores
    a.start_leases("owner0", 0.5)
    await a.add(urls(A, 3))
    assert len((await a.claim({}, new_hosts=1, default=10)).rows) == 3
    loop = asyncio.get_running_loop()
    end = loop.time() + 1.5  # three lease lengths, renewed all along
    while loop.time() < end:
        await a.heartbeat([HostState(A, wait=0.0)])
        assert (await b.claim({}, new_hosts=1, default=10)).rows == []
        await asyncio.sleep(0.1)
    await a.release_all([HostState(A)])
    got = await b.claim({}, new_hosts=1, default=10)
    assert [h.key for h in got.hosts] == [A] and len(got.rows) == 3


async def test_politeness_and_robots_pass_to_the_next_owner(
        stores: list[PostgresStore]) -> None:
    a, b, c = stores
    await a.add(urls(A, 3))
    await a.claim({}, new_hosts=1, default=1)
    robots = (200, b"User-agent: *\nCrawl-delay: 2\n", "robots.txt")
    await a.release_hosts([HostState(A, wait=1.0, paused=7.0, crawl_delay=2.0, penalty=0.5,
                                     robots=robots)])
    (state,) = (await b.claim({}, new_hosts=1, default=1)).hosts
    assert 0.5 < state.wait <= 1.0 and 6.5 < state.paused <= 7.0
    assert (state.crawl_delay, state.penalty, state.robots) == (2.0, 0.5, robots)
    # b dies; c takes the host over only once b's lease ran out, and then waits
    # --delay past that deadline: b may have started a request up to its end
    b.start_leases("owner1", 0.3)
    await b.heartbeat([HostState(A, crawl_delay=2.0, penalty=0.5)])
    taken = await until(lambda: c.claim({}, new_hosts=1, default=1, delay=1.0),
                        lambda got: bool(got.hosts))
    assert 1.5 < taken.hosts[0].wait <= 2.0  # max(--delay, Crawl-delay, penalty) = 2 s


async def test_a_host_released_empty_comes_back_when_urls_are_added(
        stores: list[PostgresStore]) -> None:
    a, b, _ = stores
    await a.add(urls(A, 1))
    (row,) = (await a.claim({}, new_hosts=1, default=5)).rows
    await a.complete([(row.id, rec(row.url))])
    await a.release_hosts([HostState(A)])
    assert (await b.claim({}, new_hosts=5, default=5)).hosts == []  # nothing pending there
    await b.complete([], new=[NewUrl(A + "/new", A, 1, A + "/0")])  # a link found elsewhere
    got = await b.claim({}, new_hosts=5, default=5)
    assert [h.key for h in got.hosts] == [A] and [r.url for r in got.rows] == [A + "/new"]


async def test_big_inputs_are_loaded_with_copy(stores: list[PostgresStore],
                                               job: tuple[str, str]) -> None:
    a = stores[0]
    many = urls(A, 3000) + urls(B, 10)
    await a.add(many + urls(A, 5))  # duplicates in the batch are merged
    await a.add(many)  # and known ones kept
    assert await a.counts() == (3010, 0)
    got = await a.claim({}, new_hosts=2, default=5000)
    assert len(got.rows) == 3010 and await a.has_pending()
