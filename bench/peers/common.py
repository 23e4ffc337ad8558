"""What every peer shares: arguments, the page extraction, the record, the loop-lag monitor.

All peers parse with selectolax's lexbor backend (as shoal does), so the comparison is of
the frameworks around the parser, not of parsers. Each writes one JSON line per URL:
``{"url", "status", "title", "links", "error"}``; ``links`` counts ``<a href>`` elements.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from array import array
from collections.abc import Iterator
from typing import Any
from urllib.parse import urldefrag, urljoin

from selectolax.lexbor import LexborHTMLParser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["fetch", "crawl"])
    ap.add_argument("source", help="fetch: a file of URLs; crawl: the seed URL")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--per-host", type=int, default=100)
    ap.add_argument("--delay", type=float, default=0.0,
                    help="minimum seconds between request starts to one host")
    ap.add_argument("--max-pages", type=int, default=None)
    return ap.parse_args(argv)


def read_urls(path: str) -> Iterator[str]:
    """The URL file, streamed: blank lines and # comments skipped."""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def extract(html: str | bytes, *, want_links: bool) -> tuple[str | None, int, list[str]]:
    """(title, number of <a href>, the hrefs when asked for)."""
    tree = LexborHTMLParser(html)
    node = tree.css_first("title")
    title = " ".join(node.text().split()) if node is not None else None
    anchors = tree.css("a[href]")
    hrefs = [a.attributes.get("href") or "" for a in anchors] if want_links else []
    return title, len(anchors), hrefs


def absolute_links(base: str, hrefs: list[str]) -> list[str]:
    """http(s) URLs the hrefs point to, fragments dropped (mailto:, javascript: etc. skipped)."""
    out = []
    for href in hrefs:
        u = urldefrag(urljoin(base, href.strip()))[0]
        if u.startswith(("http://", "https://")):
            out.append(u)
    return out


def record(url: str, status: int | None, title: str | None, links: int,
           error: str | None = None) -> dict[str, Any]:
    return {"url": url, "status": status, "title": title, "links": links, "error": error}


def dumps(rec: dict[str, Any]) -> str:
    return json.dumps(rec, ensure_ascii=False) + "\n"


class LagMonitor:
    """Loop lag as shoal measures it: how late a 50 ms sleep wakes up, every sample kept."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.samples = array("f")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, loop.time() - start - self.interval))

    def report(self, stream: Any = None) -> None:
        """Print ``loop lag:   p50 X ms, p99 Y ms, max Z ms`` (shoal's summary line)."""
        s = sorted(self.samples)
        n = len(s)
        p50, p99, mx = (s[n // 2], s[min(n - 1, n * 99 // 100)], s[-1]) if n else (0, 0, 0)
        print(f"loop lag:   p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
              f"max {mx * 1000:.1f} ms", file=stream or sys.stderr, flush=True)
