"""Shared-tick deadlines behave like asyncio.timeout."""

from __future__ import annotations

import asyncio
import time

import pytest

from shoal.client.deadline import Deadlines


async def test_a_guard_past_its_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines(tick=0.01)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with deadlines.after(0.05):
            await asyncio.sleep(5)
    took = time.monotonic() - started
    assert 0.05 <= took < 1.0
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_guard_left_in_time_never_fires_later() -> None:
    deadlines = Deadlines(tick=0.01)
    async with deadlines.after(0.05):
        await asyncio.sleep(0)
    await asyncio.sleep(0.15)  # past the deadline: nothing cancels this task now
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines(tick=0.01)
    entered = asyncio.Event()

    async def guarded() -> None:
        async with deadlines.after(10):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(guarded())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_outer_cancel_at_the_deadline_is_not_swallowed() -> None:
    """Cancelled from outside and timed out at once: the outer cancellation wins."""
    deadlines = Deadlines(tick=0.01)

    async def guarded() -> None:
        async with deadlines.after(0.02):
            try:
                await asyncio.sleep(5)
            finally:
                # the deadline has fired and the caller cancels too before we leave
                asyncio.current_task().cancel()  # type: ignore[union-attr]

    task = asyncio.create_task(guarded())
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_many_guards_share_timers_and_each_times_out() -> None:
    deadlines = Deadlines(tick=0.05)
    results: list[str] = []

    async def one(i: int) -> None:
        try:
            async with deadlines.after(0.1):
                await asyncio.sleep(5 if i % 2 else 0)
            results.append("done")
        except TimeoutError:
            results.append("timeout")

    async with asyncio.TaskGroup() as tg:
        for i in range(200):
            tg.create_task(one(i))
    assert results.count("timeout") == 100
    assert results.count("done") == 100
    # 200 deadlines fell on at most a few ticks: a handful of timers, none left due
    assert not deadlines._due
