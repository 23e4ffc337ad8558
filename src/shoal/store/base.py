"""The storage interface the engine talks to; SQLite now, PostgreSQL later."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
# Receives (seq, record line) pairs on the store's thread right after they commit.
Sink = Callable[[list[tuple[int, bytes]]], None]


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A frontier URL waiting for a record."""

    id: int
    url: str
    host: str
    depth: int
    parent: str | None
    kind: int = 0  # PAGE or SITEMAP


PAGE, SITEMAP = 0, 1


@dataclass(frozen=True, slots=True)
class NewUrl:
    """A URL to add to the frontier (pending) ..."""

    url: str
    host: str
    depth: int = 0
    parent: str | None = None
    kind: int = PAGE


@dataclass(frozen=True, slots=True)
class DoneUrl:
    """... or one that already has its record (an invalid input line)."""

    key: str
    record: bytes


@dataclass(frozen=True, slots=True)
class PageData:
    """What a finished page leaves beside its record (kept only if its record is written):
    the items extracted from it, and its validators for a conditional recrawl."""

    url_id: int
    items: Sequence[bytes] = ()  # one JSON object each, in the order they were yielded
    etag: str | None = None
    last_modified: str | None = None


class Store(Protocol):
    """A run's durable state: meta, the frontier, and one record per URL."""

    path: str

    async def open(self, *, fresh: bool = False) -> None: ...
    async def close(self) -> None: ...
    async def get_meta(self) -> dict[str, str]: ...
    async def set_meta(self, values: dict[str, str]) -> None: ...
    async def add(self, new: Sequence[NewUrl], done: Sequence[DoneUrl] = (),
                  meta: dict[str, str] | None = None, sink: Sink | None = None,
                  ) -> list[tuple[int, bytes]]: ...
    async def next_pending(self, after_id: int, limit: int, max_depth: int | None = None
                           ) -> list[PendingRow]: ...
    async def pending_for_host(self, host: str, after_id: int, limit: int,
                               max_depth: int | None = None) -> list[PendingRow]: ...
    async def complete(self, results: Sequence[tuple[int, bytes | None]],
                       meta: dict[str, str] | None = None, sink: Sink | None = None,
                       new: Sequence[NewUrl] = (), pages: Sequence[PageData] = ()) -> int:
        """Store the records of finished URLs (by id), and URLs they found, in one transaction.

        ``sink`` gets (seq, record) for each, in output order (a URL already done is
        skipped), on the store's thread right after the commit. ``pages`` (items,
        validators) are kept for the URLs whose record this call writes. Returns how many
        of ``new`` were not known before.
        """
    async def counts(self) -> tuple[int, int]: ...
    async def done_by_host(self) -> dict[str, int]: ...
    async def records_after(self, seq: int, limit: int = 2000) -> list[tuple[int, bytes]]: ...
    async def items_after(self, after: int, limit: int = 2000) -> list[tuple[int, bytes]]: ...
    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T: ...


@dataclass(frozen=True, slots=True)
class HostState:
    """A host's politeness as kept in a shared frontier, times relative to now (seconds).

    ``robots`` is the host's robots.txt as fetched, ``(status, body, note)``: a status of
    -1 means unreachable (disallow all; ``note`` says why, ``error_kind:message`` when the
    host itself cannot be reached), -2 allow all for a reason in ``note``; None: unknown.
    """

    key: str
    wait: float = 0.0  # until the next request start is allowed
    paused: float = 0.0  # until a Retry-After pause ends
    crawl_delay: float = 0.0
    penalty: float = 0.0
    robots: tuple[int, bytes, str] | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim got: hosts newly owned (with their state) and leased URLs."""

    hosts: list[HostState]
    rows: list[PendingRow]
    short: frozenset[str]  # hosts asked for that gave fewer URLs than asked


class SharedStore(Store, Protocol):
    """A Store many processes work on at once: URLs and hosts are leased, not paged.

    A process owns a host (only the owner starts requests to it, so its limits hold across
    processes) and leases that host's URLs in batches; both leases have a deadline in the
    database, which ``heartbeat`` pushes out. A lease that runs out (the process died) is
    claimed again by another. ``complete`` writes a record only for URLs still leased to
    this process, so every URL ends with exactly one.
    """

    owner: str | None

    def start_leases(self, owner: str, ttl: float) -> None: ...
    async def claim(self, wants: dict[str, int], *, new_hosts: int = 0,
                    hosts: Sequence[str] = (), delay: float = 0.0, default: int = 64,
                    skip: Sequence[str] = ()) -> Claim: ...
    async def heartbeat(self, hosts: Sequence[HostState]) -> set[str]: ...
    async def release_hosts(self, hosts: Sequence[HostState]) -> None: ...
    async def release_all(self, hosts: Sequence[HostState]) -> None: ...
    async def has_pending(self) -> bool: ...
    async def last_seq(self) -> int: ...
