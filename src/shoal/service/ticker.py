"""The event streams' clock: one timer wakes every watcher of every job, a group at a time.

A job's progress event is made once per report of its process (``JobManager._heard``),
and every watcher of the job writes those same bytes. What is left per watcher is to
wake up once a tick and write. Were each stream to sleep on a timer of its own, a
thousand watchers would cost a thousand timers a second, and a cancelled timeout (an
exception thrown into the stream) each time. Here streams are dealt into ``SLOTS``
groups, phases spread over the tick; one task sleeps from one slot's turn to the next
and wakes that slot's streams together. A thousand watchers are written in twenty small
bursts a second rather than one large one, so a request that arrives meanwhile waits for
one burst at most.
"""

from __future__ import annotations

import asyncio
import itertools

SLOTS = 20  # groups of streams, woken one after another over a tick


class Ticker:
    """Wakes the streams waiting on each slot once a tick, until stopped."""

    def __init__(self, tick: float, *, slots: int = SLOTS) -> None:
        if tick <= 0 or slots < 1:
            raise ValueError(f"tick must be > 0 and slots >= 1, got {tick}, {slots}")
        self.tick = tick
        self._slots = [asyncio.Event() for _ in range(slots)]
        self._deal = itertools.cycle(range(slots))
        self._waiting = 0
        self._wanted = asyncio.Event()  # someone waits: the clock runs
        self.stopped = False

    @property
    def waiting(self) -> int:
        """Streams waiting for their turn now."""
        return self._waiting

    def slot(self) -> int:
        """A new stream's slot: its phase of the tick (dealt in turn, so slots stay even)."""
        return next(self._deal)

    async def wait(self, slot: int) -> bool:
        """Wait for the slot's next turn; False once stopped (the stream should end)."""
        if self.stopped:
            return False
        self._waiting += 1
        self._wanted.set()
        try:
            await self._slots[slot].wait()
        finally:
            self._waiting -= 1
        return not self.stopped

    def stop(self) -> None:
        """Wake every waiting stream for the last time; later waits return at once."""
        self.stopped = True
        self._wanted.set()
        for event in self._slots:
            event.set()

    async def run(self) -> None:
        """The clock: wake one slot every ``tick / slots`` seconds while streams wait."""
        loop = asyncio.get_running_loop()
        step = self.tick / len(self._slots)
        turn = loop.time()
        for slot in itertools.cycle(range(len(self._slots))):
            if self.stopped:
                return
            if not self._waiting:  # nobody to wake: sleep until someone waits
                self._wanted.clear()
                await self._wanted.wait()
                turn = loop.time()
                continue
            # late (a busy loop): go on from now rather than wake slots in a burst
            turn = max(turn + step, loop.time())
            await asyncio.sleep(turn - loop.time())
            event = self._slots[slot]
            if not self.stopped:
                event.set()  # the waiters' futures are resolved: clearing keeps them woken
                event.clear()
