"""Event-loop lag: how late a periodic timer wakes up, measured for the whole run."""

from __future__ import annotations

import asyncio
import math

_FLOOR = 1e-5  # seconds: lags below this count as zero
_RATIO = 1.02  # bucket width: percentiles are exact to within 2 %
_LOG_RATIO = math.log(_RATIO)
_BUCKETS = int(math.log(1e3 / _FLOOR) / _LOG_RATIO) + 1  # up to 1,000 s


class LagMonitor:
    """Samples loop lag every ``interval`` seconds into a log-scale histogram.

    Memory and the cost of ``percentiles()`` stay constant however long the run (a
    service's job may run for days and be asked for its statistics every second).
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._counts = [0] * (_BUCKETS + 1)
        self._n = 0
        self._max = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.add(loop.time() - start - self.interval)

    def add(self, lag: float) -> None:
        """Count one sample (seconds)."""
        lag = max(0.0, lag)
        index = 0 if lag < _FLOOR else min(_BUCKETS, int(math.log(lag / _FLOOR) / _LOG_RATIO)
                                           + 1)
        self._counts[index] += 1
        self._n += 1
        self._max = max(self._max, lag)

    def percentiles(self) -> tuple[float, float, float]:
        """(p50, p99, max) in seconds over every sample; p50 and p99 within 2 %."""
        n = self._n
        if not n:
            return 0.0, 0.0, 0.0
        return self._quantile(n // 2 + 1), self._quantile(min(n, (n * 99) // 100 + 1)), self._max

    def _quantile(self, rank: int) -> float:
        seen = 0
        for index, count in enumerate(self._counts):
            seen += count
            if seen >= rank:
                return 0.0 if index == 0 else min(self._max, _FLOOR * _RATIO ** index)
        return self._max
