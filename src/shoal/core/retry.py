"""Retry decisions: pure functions of the attempt, the outcome and the clock."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from shoal.config import RetryPolicy

_RNG = random.Random()
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504, 507, 508, 509, 520, 521, 522, 523, 524})


def is_retryable_status(status: int) -> bool:
    """5xx and 429 are retried; everything else is an answer."""
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None.

    ``now`` is the current wall-clock time (``time.time()``), used for HTTP dates.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    seconds: float = when.timestamp() - now
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class Decision:
    """Retry after ``wait`` seconds, or give up (``retry`` False) with ``reason``."""

    retry: bool
    wait: float = 0.0
    reason: str = ""
    host_wide: bool = False  # the wait applies to the whole host (Retry-After)


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Exponential back-off with jitter after ``attempt`` (1-based) failed attempts."""
    base = min(policy.backoff_max, policy.backoff_base * 2.0 ** (attempt - 1))
    r: float = (rng or _RNG).random()
    return min(policy.backoff_max, base * (1.0 + 0.5 * r))


def decide(
    policy: RetryPolicy,
    *,
    attempt: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """What to do after failed attempt number ``attempt`` (1-based) of a retryable outcome."""
    if retry_after is not None and retry_after > policy.max_retry_after:
        return Decision(False, reason=f"server asked to retry after {retry_after:.0f} s, "
                        f"over --max-retry-after {policy.max_retry_after:g} s")
    if attempt > policy.retries:
        return Decision(False, reason=f"gave up after {attempt} attempt"
                        f"{'s' if attempt != 1 else ''}")
    if retry_after is not None:
        return Decision(True, wait=max(retry_after, 0.0), host_wide=True)
    return Decision(True, wait=backoff(policy, attempt, rng))
