"""Event-loop lag: how late a periodic timer wakes up, measured for the whole run."""

from __future__ import annotations

import asyncio
from array import array


class LagMonitor:
    """Samples loop lag every ``interval`` seconds; keeps every sample compactly."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._samples = array("f")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self._samples.append(max(0.0, loop.time() - start - self.interval))

    def percentiles(self, last: int | None = None) -> tuple[float, float, float]:
        """(p50, p99, max) in seconds, over all samples or the ``last`` few."""
        data = self._samples if last is None else self._samples[-last:]
        if not data:
            return 0.0, 0.0, 0.0
        s = sorted(data)
        n = len(s)
        return s[n // 2], s[min(n - 1, (n * 99) // 100)], s[-1]
