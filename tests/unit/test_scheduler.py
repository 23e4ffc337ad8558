"""Host slots on a fake clock: per-host limit, delay, pauses, retries, round-robin."""

from __future__ import annotations

from shoal.config import Config
from shoal.core.robots import RobotsPolicy
from shoal.engine.scheduler import Job, Scheduler


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, **kw: object) -> Scheduler:
    cfg = Config(robots=False, **kw)  # type: ignore[arg-type]
    return Scheduler(cfg, clock=clock)


def job(i: int, host: str = "http://a") -> Job:
    return Job(id=i, url=f"{host}/{i}", host=host)


def paced(jobs: int) -> tuple[Clock, Scheduler, Job]:
    """A host with a delay of 1 s, ``jobs`` queued, the first taken."""
    clock = Clock()
    s = make(clock, per_host=10, delay=1.0)
    for i in range(jobs):
        s.put(job(i))
    first = s._take()
    assert first is not None
    return clock, s, first


async def test_per_host_limit_and_hosts_in_parallel() -> None:
    clock = Clock()
    s = make(clock, per_host=2)
    for i in range(5):
        s.put(job(i, "http://a"))
        s.put(job(10 + i, "http://b"))
    taken = [s._take() for _ in range(4)]
    assert all(j is not None for j in taken)
    assert sorted(j.host for j in taken if j) == ["http://a", "http://a", "http://b", "http://b"]
    assert s._take() is None  # both hosts at their limit
    s.release(taken[0])  # type: ignore[arg-type]
    nxt = s._take()
    assert nxt is not None and nxt.host == taken[0].host  # type: ignore[union-attr]


async def test_delay_is_minimum_gap_between_starts_whatever_per_host() -> None:
    clock, s, first = paced(3)
    s.sent(first)  # its request left at once
    assert s._take() is None  # per_host would allow it, the delay does not
    clock.now += 1.0005  # the delay and a margin of 1 ms: 1.001 s
    assert s._take() is None
    clock.now += 0.001
    assert s._take() is not None


async def test_the_next_start_waits_a_delay_after_the_latest_answer() -> None:
    """A server that takes a request off the socket late sees it start late: the next
    request waits a delay from the answer too, so the server's gap is never shorter."""
    clock, s, first = paced(4)
    s.sent(first)
    clock.now += 0.4  # answered 0.4 s after it left (the server read it late)
    s.answered(first)
    clock.now += 0.7  # 1.1 s after the send: the send alone would allow the next
    assert s._take() is None
    clock.now += 0.3  # a delay after the answer
    second = s._take()
    assert second is not None
    s.sent(second)
    # an answer that is not to the latest start changes nothing
    clock.now += 1.002
    third = s._take()
    assert third is not None
    s.sent(third)
    clock.now += 0.5
    s.answered(second)  # the host's latest start is third: second's answer says nothing
    clock.now += 0.502
    assert s._take() is not None


async def test_delay_counts_from_the_real_send_not_the_hand_out() -> None:
    clock, s, first = paced(3)
    clock.now += 5.0  # handed out, but its request waits (busy loop, slow connect)
    assert s._take() is None  # nothing else starts before it has really left
    s.sent(first)
    clock.now += 0.99
    assert s._take() is None  # a second after the real send, not after the hand-out
    clock.now += 0.2
    second = s._take()
    assert second is not None
    s.release(second)  # never sent (refused connection): frees the host at once
    assert s.hosts["http://a"].unsent == 0


async def test_retry_after_pauses_only_that_host() -> None:
    clock = Clock()
    s = make(clock, per_host=1)
    s.put(job(1, "http://a"))
    s.put(job(2, "http://b"))
    a = s._take()
    assert a is not None and a.host == "http://a"
    s.release(a)
    s.retry_later(a, 5.0, host_wide=True)
    s.put(job(3, "http://a"))
    b = s._take()
    assert b is not None and b.host == "http://b"
    assert s._take() is None  # a is paused, b busy
    clock.now += 5.01
    again = s._take()
    assert again is a  # the paused job comes first when the pause ends


async def test_backoff_delays_one_job_not_its_host() -> None:
    clock = Clock()
    s = make(clock, per_host=1)
    s.put(job(1))
    s.put(job(2))
    first = s._take()
    assert first is not None
    s.release(first)
    s.retry_later(first, 3.0)
    other = s._take()
    assert other is not None and other.id == 2  # the host goes on with other URLs
    s.release(other)
    assert s._take() is None
    clock.now += 3.0
    assert s._take() is first


async def test_robots_loads_first_with_one_request_per_host() -> None:
    clock = Clock()
    s = Scheduler(Config(per_host=4), clock=clock)
    for i in range(4):
        s.put(job(i))
    first = s._take()
    assert first is not None and first.robots_load
    assert s._take() is None  # nothing else until the rules are known
    s.hosts["http://a"].robots = RobotsPolicy.from_response(
        200, b"User-agent: *\nDisallow: /2\n", token="shoal")
    first.robots_load = False
    s.put(first, front=True)
    s.release(first)
    taken = [s._take() for _ in range(4)]
    assert [j.id for j in taken if j] == [0, 1, 2, 3]
    assert [j.blocked for j in taken if j] == [False, False, True, False]


async def test_stop_and_finish_wake_waiting_workers() -> None:
    clock = Clock()
    s = make(clock)
    import asyncio

    waiter = asyncio.create_task(s.get())
    await asyncio.sleep(0)
    s.finish()
    assert await asyncio.wait_for(waiter, 1) is None


async def test_release_frees_the_slot_the_job_was_taken_from() -> None:
    clock = Clock()
    s = make(clock, per_host=1)
    s.put(job(1, "http://a"))
    s.put(job(2, "http://a"))
    j = s._take()
    assert j is not None
    j.host = "http://b"  # a redirect moved it to another host
    s.put(j, front=True)
    s.release(j)
    assert s.hosts["http://a"].inflight == 0
    assert s.hosts["http://b"].inflight == 0
    nxt = {s._take().id, s._take().id}  # type: ignore[union-attr]
    assert nxt == {1, 2}  # both hosts can start again


async def test_idle_hosts_are_forgotten_but_their_robots_are_remembered() -> None:
    clock = Clock()
    s = make(clock, per_host=1)
    s.max_hosts = 100
    for i in range(1000):  # a thousand hosts, one URL each, coming and going
        key = f"http://h{i}"
        s.put(job(i, key))
        taken = s._take()
        assert taken is not None
        if i == 0:
            s.hosts[key].robots = RobotsPolicy.allow_all("remembered")
        s.release(taken)
    assert len(s.hosts) <= 100  # bounded, whatever the number of hosts seen
    s.put(job(5000, "http://h0"))  # the first host comes back
    assert s.hosts["http://h0"].robots is not None  # robots.txt is not fetched again
    assert s.hosts["http://h0"].robots.reason == "remembered"  # type: ignore[union-attr]


async def test_hosts_with_pending_pacing_are_not_forgotten() -> None:
    clock = Clock()
    s = make(clock, per_host=1, delay=10.0)
    s.max_hosts = 10
    for i in range(50):
        key = f"http://h{i}"
        s.put(job(i, key))
        taken = s._take()
        assert taken is not None
        s.sent(taken)
        s.release(taken)
    # every host still has a delay running: forgetting one would let it be hit too soon
    assert len(s.hosts) == 50
    clock.now += 20
    s.put(job(99, "http://new"))
    assert len(s.hosts) <= 10


async def test_the_limit_on_requests_in_flight_can_change_while_running() -> None:
    clock = Clock()
    s = make(clock, per_host=10, concurrency=4)
    for i in range(10):
        s.put(job(i, f"http://h{i}"))
    taken = [s._take() for _ in range(4)]
    assert all(taken) and s._take() is None  # at --concurrency
    s.set_limit(2)  # lowered: those in flight finish, nothing new starts above it
    for j in taken[:2]:
        s.release(j)  # type: ignore[arg-type]
    assert s.in_flight == 2 and s._take() is None
    s.release(taken[2])  # type: ignore[arg-type]
    assert s._take() is not None and s._take() is None
    s.set_limit(5)  # raised: more at once
    assert [s._take() is not None for _ in range(4)] == [True, True, True, False]
    assert s.in_flight == 5
    s.set_limit(0)
    assert s.limit == 1  # never below one


async def test_a_raised_limit_wakes_waiting_workers() -> None:
    import asyncio

    s = make(Clock(), per_host=10, concurrency=3)
    s.set_limit(1)
    for i in range(3):
        s.put(job(i))
    workers = [asyncio.create_task(s.get()) for _ in range(3)]
    await asyncio.sleep(0)
    assert sum(w.done() for w in workers) == 1
    s.set_limit(3)
    await asyncio.sleep(0)
    assert all(w.done() for w in workers)
