"""Check a tool's output against the farm's ground truth.

Every tool writes JSON lines with at least ``url``, ``status``, ``title`` and ``links``.
fetch: exactly one record per input URL, nothing else. crawl: exactly the reachable set.
Every record: status 200, the page's title, its count of ``<a href>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from farm import Truth

try:
    import orjson

    _loads = orjson.loads
except ImportError:  # the driver runs on any Python; orjson only makes this faster
    _loads = json.loads


@dataclass
class Check:
    expected: int
    records: int = 0
    distinct: int = 0
    missing: int = 0  # expected URLs without a record
    unexpected: int = 0  # records for URLs not expected
    duplicates: int = 0
    torn_lines: int = 0
    not_200: int = 0
    bad_title: int = 0
    bad_links: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.records == self.expected == self.distinct and not self.missing
                and not self.unexpected and not self.torn_lines and not self.not_200
                and not self.bad_title and not self.bad_links)

    def summary(self) -> str:
        if self.ok:
            return "yes"
        parts = [f"{self.records}/{self.expected} records"]
        for name in ("missing", "unexpected", "duplicates", "torn_lines", "not_200",
                     "bad_title", "bad_links"):
            v = getattr(self, name)
            if v:
                parts.append(f"{name.replace('_', ' ')} {v}")
        return "no: " + ", ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}

    def _example(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text[:300])


def check_output(output: Path, expected_urls: Iterable[str], truth: Truth) -> Check:
    expected = set(expected_urls)
    chk = Check(expected=len(expected))
    seen: set[str] = set()
    if not output.exists():
        chk.missing = len(expected)
        chk._example("no output file")
        return chk
    with open(output, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = _loads(line)
                url = rec["url"]
            except (ValueError, KeyError, TypeError):
                chk.torn_lines += 1
                chk._example(f"unreadable line: {line[:120]!r}")
                continue
            chk.records += 1
            if url in seen:
                chk.duplicates += 1
                chk._example(f"duplicate: {url}")
                continue
            seen.add(url)
            if url not in expected:
                chk.unexpected += 1
                chk._example(f"unexpected: {url}")
                continue
            if rec.get("status") != 200:
                chk.not_200 += 1
                chk._example(f"status {rec.get('status')} {rec.get('error')}: {url}")
                continue
            want = truth.expect(url)
            if want is None or rec.get("title") != want[0]:
                chk.bad_title += 1
                chk._example(f"title {rec.get('title')!r} != {want and want[0]!r}: {url}")
            if want is None or rec.get("links") != want[1]:
                chk.bad_links += 1
                chk._example(f"links {rec.get('links')} != {want and want[1]}: {url}")
    chk.distinct = len(seen)
    chk.missing = len(expected - seen)
    if chk.missing:
        chk._example(f"missing e.g. {next(iter(expected - seen))}")
    return chk


def read_urls(path: Path) -> Iterable[str]:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line
