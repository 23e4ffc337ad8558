"""Sitemaps (sitemaps.org): URL sets and sitemap indexes, plain or gzipped. CPU only.

The <loc> values are pulled out with a regular expression rather than an XML parser: a
sitemap is flat, and this way entity-expansion bombs and DTD tricks have nothing to act on.
"""

from __future__ import annotations

import html
import re
import zlib

MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the protocol's limit on an uncompressed sitemap
# Linear on any input: no part may run past the next "<" (a URL has none), so a match
# attempt at one <loc> never rescans what follows the next one.
_LOC = re.compile(rb"<loc>(?:\s*<!\[CDATA\[([^\]<]*)\]\]>\s*|([^<]*))</loc>", re.IGNORECASE)
_INDEX = re.compile(rb"<sitemapindex[\s>]", re.IGNORECASE)


def gunzip_capped(body: bytes, limit: int = MAX_SITEMAP_BYTES) -> bytes:
    """Decompress a gzipped sitemap file, at most ``limit`` bytes (the rest is dropped)."""
    return zlib.decompressobj(31).decompress(body, limit)


def parse_sitemap(body: bytes) -> tuple[bool, list[str]]:
    """(is a sitemap index, the <loc> URLs) of a sitemap body, gzipped or not."""
    if body[:2] == b"\x1f\x8b":
        try:
            body = gunzip_capped(body)
        except zlib.error:  # a broken gzip file: nothing usable in it
            return False, []
    locs = []
    for m in _LOC.finditer(body):
        raw = m.group(1) if m.group(1) is not None else m.group(2)
        loc = html.unescape(raw.decode("utf-8", errors="replace")).strip()
        if loc:
            locs.append(loc)
    return bool(_INDEX.search(body, 0, 4096)), locs
