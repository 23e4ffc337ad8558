"""Sitemap parsing: what it finds, and that hostile input costs linear time."""

from __future__ import annotations

import gzip
import time

import pytest

from shoal.parse.sitemap import parse_sitemap


def test_urlset_index_cdata_whitespace_entities_and_gzip() -> None:
    urlset = (b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/0.9">'
              b"<url><loc>http://a.test/1</loc></url>"
              b"<url><loc>\n   http://a.test/2?x=1&amp;y=2\n  </loc></url>"
              b"<url><LOC><![CDATA[http://a.test/3]]></LOC></url>"
              b"<url><loc> <![CDATA[ http://a.test/4 ]]> </loc></url>"
              b"<url><loc></loc></url></urlset>")
    expected = ["http://a.test/1", "http://a.test/2?x=1&y=2", "http://a.test/3",
                "http://a.test/4"]
    assert parse_sitemap(urlset) == (False, expected)
    assert parse_sitemap(gzip.compress(urlset)) == (False, expected)
    index = (b"<sitemapindex><sitemap><loc>http://a.test/s1.xml.gz</loc></sitemap>"
             b"</sitemapindex>")
    assert parse_sitemap(index) == (True, ["http://a.test/s1.xml.gz"])


@pytest.mark.parametrize("piece", [b"<loc>x", b"<loc><![CDATA[x", b"<loc>" + b" " * 50,
                                   b"<loc>x</lo"])
def test_hostile_sitemap_is_parsed_in_linear_time(piece: bytes) -> None:
    # <loc> after <loc> without an end: a lazy regex scanning to the end from each one
    # was quadratic (60 KB took 12 s, on the event loop)
    body = b"<urlset>" + piece * (2_000_000 // len(piece))
    started = time.process_time()
    assert parse_sitemap(body) == (False, [])
    assert time.process_time() - started < 2.0
