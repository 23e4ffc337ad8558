"""The event streams' clock: slots woken once a tick, in turn; a stop wakes everyone."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from shoal.service.ticker import Ticker

pytestmark = pytest.mark.timeout(20)

TICK = 0.2


async def test_each_slot_is_woken_once_a_tick_in_turn() -> None:
    ticker = Ticker(TICK, slots=4)
    woken: dict[int, list[float]] = {s: [] for s in range(4)}

    async def stream(slot: int) -> None:
        for _ in range(3):
            assert await ticker.wait(slot)
            woken[slot].append(time.monotonic())

    async with asyncio.TaskGroup() as tg:
        clock = tg.create_task(ticker.run())
        async with asyncio.TaskGroup() as streams:
            for _ in range(3):  # three streams per slot, dealt in turn
                for _ in range(4):
                    streams.create_task(stream(ticker.slot()))
        ticker.stop()
        await clock
    for slot, times in woken.items():
        assert len(times) == 9, (slot, times)  # three streams, three turns each
        turns = sorted(times)
        # a slot's streams wake together, then a tick later
        assert turns[2] - turns[0] < TICK / 4, turns
        assert TICK * 0.7 < turns[3] - turns[0] < TICK * 1.5, turns
    # slots take their turns a quarter of a tick apart
    firsts = sorted(min(t) for t in woken.values())
    gaps = [b - a for a, b in itertools.pairwise(firsts)]
    assert all(TICK / 8 < g < TICK / 2 for g in gaps), gaps


async def test_stop_wakes_every_waiter_and_later_waits_return_at_once() -> None:
    ticker = Ticker(3600.0)  # its turns never come in this test
    async with asyncio.TaskGroup() as tg:
        clock = tg.create_task(ticker.run())
        waiters = [tg.create_task(ticker.wait(ticker.slot())) for _ in range(50)]
        await asyncio.sleep(0)  # the waiters' first steps run
        assert ticker.waiting == 50
        ticker.stop()
        assert [await w for w in waiters] == [False] * 50
        await clock
    assert ticker.waiting == 0
    assert not await ticker.wait(0)


async def test_a_waiter_that_is_cancelled_leaves_the_others_waiting() -> None:
    ticker = Ticker(TICK, slots=1)
    async with asyncio.TaskGroup() as tg:
        clock = tg.create_task(ticker.run())
        gone = tg.create_task(ticker.wait(0))
        kept = tg.create_task(ticker.wait(0))
        await asyncio.sleep(0)
        assert ticker.waiting == 2
        gone.cancel()
        assert await kept is True
        assert gone.cancelled()
        ticker.stop()
        await clock


async def test_the_clock_rests_while_nobody_waits() -> None:
    ticker = Ticker(0.01, slots=2)
    async with asyncio.TaskGroup() as tg:
        clock = tg.create_task(ticker.run())
        await asyncio.sleep(0.05)
        assert not ticker._wanted.is_set()  # asleep until someone waits
        assert await ticker.wait(1)  # it starts again for a new waiter
        ticker.stop()
        await clock


def test_a_tick_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tick must be > 0"):
        Ticker(0)
