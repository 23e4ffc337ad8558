"""A resolver answering from a table: for tests that need names on loopback addresses.

It only replaces DNS: the private-network guard still checks every address it returns,
so it can make no request reach an address the guard refuses. The service passes the
table to its jobs' processes (it is plain data), which is how the tests simulate names
that resolve to private addresses, and rebinding.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence

from aiohttp.abc import AbstractResolver, ResolveResult

Table = Mapping[str, Sequence[Sequence[str]]]


class TableResolver(AbstractResolver):
    """``table[name][n - 1]`` answers the n-th lookup of ``name`` (the last answer repeats
    after that); a name not in the table does not resolve."""

    def __init__(self, table: Table) -> None:
        self.table = {name: [list(addrs) for addrs in answers]
                      for name, answers in table.items()}
        self.calls: dict[str, int] = {}

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = self.table.get(host)
        if not answers:
            raise OSError(f"{host}: not in the resolver's table")
        n = self.calls[host] = self.calls.get(host, 0) + 1
        return [ResolveResult(hostname=host, host=addr,
                              port=port, family=socket.AF_INET6 if ":" in addr
                              else socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)
                for addr in answers[min(n, len(answers)) - 1]]

    async def close(self) -> None:
        pass
