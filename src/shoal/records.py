"""The output record: one JSON object per URL, one line each."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from shoal.errors import ErrorKind, FetchError

_Bytes = bytes  # the field named `bytes` shadows the type inside the class


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")  # the last second formatted


def utc_now_iso() -> str:
    """The current time as ISO 8601 UTC with millisecond precision, e.g. ``...T10:00:00.123Z``.

    Every record takes one: the second is formatted once (a third of the cost of
    ``datetime.now(UTC).isoformat()``), only the milliseconds each time.
    """
    global _second
    now = time.time()
    whole = int(now)
    second = _second
    if second[0] != whole:  # a tuple swapped in one assignment: safe across threads
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int((now - whole) * 1000):03d}Z"


@dataclass(slots=True, kw_only=True)
class Record:
    """What shoal learned about one URL; serialises to one JSON line."""

    url: str
    final_url: str | None = None
    status: int | None = None
    error: FetchError | None = None
    content_type: str | None = None
    bytes: int = 0
    elapsed_ms: float = 0.0
    attempts: int = 0
    depth: int = 0
    redirects: list[str] = field(default_factory=list)
    title: str | None = None
    links: int = 0
    sha256: str | None = None
    fetched_at: str = field(default_factory=utc_now_iso)
    parent: str | None = None
    crawl: bool = False  # crawl-mode records carry `parent`
    items: int | None = None  # with extraction on: items extracted from the page
    changed: bool | None = None  # with --since: did the page change since the last run
    recrawl: bool = False  # --since records carry `changed`

    @property
    def ok(self) -> bool:
        """True when the URL was fetched without an error (any status)."""
        return self.error is None

    @property
    def error_kind(self) -> ErrorKind | None:
        return self.error.kind if self.error is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object of the output line."""
        d: dict[str, Any] = {
            "url": self.url,
            "final_url": self.final_url,
            "status": self.status,
            "error": None if self.error is None
            else {"kind": str(self.error.kind), "message": self.error.message},
            "content_type": self.content_type,
            "bytes": self.bytes,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "attempts": self.attempts,
            "depth": self.depth,
            "redirects": self.redirects,
            "title": self.title,
            "links": self.links,
            "sha256": self.sha256,
            "fetched_at": self.fetched_at,
        }
        if self.crawl:
            d["parent"] = self.parent
        if self.items is not None:
            d["items"] = self.items
        if self.recrawl:
            d["changed"] = self.changed
        return d

    def to_json(self) -> _Bytes:
        """One output line, newline included."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        err = d.get("error")
        return cls(
            url=d["url"], final_url=d.get("final_url"), status=d.get("status"),
            error=None if err is None else FetchError(ErrorKind(err["kind"]), err["message"]),
            content_type=d.get("content_type"), bytes=d.get("bytes", 0),
            elapsed_ms=d.get("elapsed_ms", 0.0), attempts=d.get("attempts", 0),
            depth=d.get("depth", 0), redirects=list(d.get("redirects", [])),
            title=d.get("title"), links=d.get("links", 0), sha256=d.get("sha256"),
            fetched_at=d.get("fetched_at", ""), parent=d.get("parent"), crawl="parent" in d,
            items=d.get("items"), changed=d.get("changed"), recrawl="changed" in d,
        )

    @classmethod
    def from_json(cls, line: _Bytes | str) -> Record:
        return cls.from_dict(orjson.loads(line))

    @classmethod
    def failed(cls, url: str, error: FetchError, **fields: Any) -> Record:
        """A record for a URL that ended in ``error``."""
        return cls(url=url, error=error, **fields)
