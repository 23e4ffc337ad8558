"""The private-network guard at the one place every connection passes: host resolution.

A TCPConnector whose resolution step drops the addresses the guard refuses. aiohttp
connects only to the addresses this step returns (IP literals included, and the DNS
cache holds what was checked), so the address connected to is the address checked and a
name that re-resolves elsewhere (DNS rebinding) cannot slip past.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult

from shoal.core.netguard import NetGuard, parse_address
from shoal.errors import ErrorKind, FetchError


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that never connects to an address the guard refuses."""

    def __init__(self, guard: NetGuard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._guard = guard

    async def _resolve_host(self, host: str, port: int, traces: Sequence[Any] | None = None
                            ) -> list[ResolveResult]:
        literal = parse_address(host)
        if literal is not None:  # numeric spellings aiohttp would refuse or map itself
            reason = self._guard.why_blocked(literal)
            if reason is not None:
                raise FetchError(ErrorKind.BLOCKED_ADDRESS, f"{host}: {reason}")
        results = await super()._resolve_host(host, port, traces)
        allowed = [r for r in results if self._guard.why_blocked(r["host"]) is None]
        if not allowed:
            reason = self._guard.why_blocked(results[0]["host"]) if results else "no address"
            raise FetchError(ErrorKind.BLOCKED_ADDRESS, f"{host} resolves to {reason}")
        return allowed
