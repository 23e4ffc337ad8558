"""``--warc``: request and response records read back with warcio, each matching what the
server sent (headers, status, payload as received), rollover, and never overwriting."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import random
import signal
import zlib
from pathlib import Path
from typing import Any

import brotli  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from warcio.archiveiterator import ArchiveIterator  # type: ignore[import-untyped]

import shoal
from shoal.client.capture import SPOOL_MEMORY, Capture
from tests.conftest import read_records, run_shoal, write_urls
from tests.servers import compressed, encode_body, html_page, redirect, reply, site

pytestmark = pytest.mark.timeout(120)

BIG = ("<html><body>" + "".join(f"<p>line {i} {'x' * (i % 50)}</p>" for i in range(60_000))
       + "</body></html>").encode()


async def chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/html", "X-Served": "chunked"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for part in (b"<html><title>chunked</title>", b"<body>one", b" two</body></html>"):
        await resp.write(part)
    await resp.write_eof()
    return resp


def routes() -> dict[str, Any]:
    return {
        "/plain": reply(200, html_page("plain"), headers={"X-Served": "plain",
                                                          "Set-Cookie": "a=1"}),
        "/gzip": compressed(html_page("gzipped " * 50), "gzip"),
        "/br-big": compressed(BIG, "br"),
        "/chunked": chunked,
        "/moved": redirect("/plain", 301),
        "/missing": 404,
    }


SENT = {  # the payload each path sends, as it goes on the wire (after chunked framing)
    "/plain": html_page("plain").encode(),
    "/gzip": encode_body(html_page("gzipped " * 50).encode(), "gzip"),
    "/br-big": encode_body(BIG, "br"),
    "/chunked": b"<html><title>chunked</title><body>one two</body></html>",
    "/missing": b"",
}


def read_warc(path: Path) -> list[Any]:
    """Every record, its payload read both raw and decoded, digests checked by warcio."""
    out = []
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh, check_digests="raise"):
            raw = content = None
            if rec.rec_type != "response":
                raw = rec.raw_stream.read()
            elif rec.http_headers.get_header("Content-Encoding") == "br":
                # warcio 1.8.1's brotli reader breaks on Brotli >= 1.2 (it sets an attribute
                # the Decompressor no longer allows): decode the stored payload ourselves
                content = brotli.decompress(rec.raw_stream.read())
            else:
                content = rec.content_stream().read()
            out.append((rec, raw, content))
    return out


def gzip_members(path: Path) -> int:
    data, members = path.read_bytes(), 0
    while data:
        d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        d.decompress(data)
        assert d.eof
        data = d.unused_data
        members += 1
    return members


async def test_fetch_archives_requests_and_responses_as_received(tmp_path: Path) -> None:
    warc = tmp_path / "site.warc.gz"
    async with site(routes()) as srv:
        paths = list(routes())
        urls = write_urls(tmp_path / "urls.txt", [srv.url(p) for p in paths])
        run = await run_shoal("fetch", str(urls), "-o", str(tmp_path / "out.jsonl"),
                              "--quiet", "--warc", str(warc), "--user-agent", "warc-test/1")
        assert run.code == 0, run.stderr
    records = read_warc(warc)
    assert records[0][0].rec_type == "warcinfo"
    assert b"shoal/" in records[0][1] and b"WARC File Format 1.1" in records[0][1]
    assert all(r.rec_headers.protocol == "WARC/1.1" for r, _, _ in records)
    responses = {r.rec_headers.get_header("WARC-Target-URI"): (r, c)
                 for r, _, c in records if r.rec_type == "response"}
    requests = {r.rec_headers.get_header("WARC-Target-URI"): r
                for r, _, _ in records if r.rec_type == "request"}
    # every page and the redirect hop and its target; robots.txt is not archived
    assert set(responses) == {srv.url(p) for p in paths} == set(requests)
    assert gzip_members(warc) == len(records)  # one gzip member per record
    for path, payload in SENT.items():
        rec, content = responses[srv.url(path)]
        http = rec.http_headers
        status = 404 if path == "/missing" else 200
        assert http.get_statuscode() == str(status)
        raw = _stored_payload(warc, srv.url(path))
        if path == "/chunked":
            assert http.get_header("Transfer-Encoding") == "chunked"
            assert _unchunk(raw) == payload  # re-framed, same bytes
        else:
            assert raw == payload, path  # still encoded, byte for byte
        if path in ("/gzip", "/br-big"):
            assert http.get_header("Content-Encoding") == ("gzip" if path == "/gzip" else "br")
        decoded = {"/gzip": html_page("gzipped " * 50).encode(), "/br-big": BIG}.get(path,
                                                                                  payload)
        assert content == decoded, path
        req = requests[srv.url(path)]
        assert req.rec_headers.get_header("WARC-Concurrent-To") == rec.rec_headers.get_header(
            "WARC-Record-ID")
        assert req.http_headers.protocol == "GET"
        assert req.http_headers.get_header("User-Agent") == "warc-test/1"
        assert req.http_headers.get_header("Host") == f"127.0.0.1:{srv.port}"
        assert rec.rec_headers.get_header("WARC-IP-Address") == "127.0.0.1"
    plain = responses[srv.url("/plain")][0].http_headers
    assert plain.get_header("X-Served") == "plain" and plain.get_header("Set-Cookie") == "a=1"
    moved = responses[srv.url("/moved")][0].http_headers
    assert moved.get_statuscode() == "301" and moved.get_header("Location") == "/plain"


def _stored_payload(warc: Path, uri: str) -> bytes:
    with open(warc, "rb") as fh:
        for rec in ArchiveIterator(fh):
            if rec.rec_type == "response" and rec.rec_headers.get_header(
                    "WARC-Target-URI") == uri:
                return bytes(rec.raw_stream.read())
    raise AssertionError(uri)


def _unchunk(data: bytes) -> bytes:
    out, buf = b"", io.BytesIO(data)
    while True:
        size = int(buf.readline().strip(), 16)
        if size == 0:
            return out
        out += buf.read(size)
        assert buf.read(2) == b"\r\n"


async def test_rolls_over_and_never_overwrites(tmp_path: Path) -> None:
    warc = tmp_path / "roll.warc.gz"
    rng = random.Random(7)  # incompressible filler: each exchange passes 2K gzipped
    pages = {f"/p/{i}": html_page(f"page {i} " + rng.randbytes(3000).hex()) for i in range(12)}
    async with site(pages) as srv:
        urls = write_urls(tmp_path / "urls.txt", [srv.url(p) for p in pages])
        out = tmp_path / "out.jsonl"
        run = await run_shoal("fetch", str(urls), "-o", str(out), "--quiet", "--warc",
                              str(warc), "--warc-max-size", "2K", "--concurrency", "1")
        assert run.code == 0, run.stderr
        # the same command again in a fresh state: new files after the existing ones
        run = await run_shoal("fetch", str(urls), "-o", str(out), "--quiet", "--warc",
                              str(warc), "--warc-max-size", "1M", "--fresh")
        assert run.code == 0, run.stderr
    files = sorted(tmp_path.glob("roll*.warc.gz"))
    names = [f.name for f in files]
    assert names[0] == "roll-00001.warc.gz" and "roll.warc.gz" in names
    assert len(files) == 12 + 1  # one page a file (each passes 2K), then one for run two
    uris: list[str] = []
    for f in files:
        recs = read_warc(f)
        assert recs[0][0].rec_type == "warcinfo"
        assert recs[0][0].rec_headers.get_header("WARC-Filename") == f.name
        uris += [r.rec_headers.get_header("WARC-Target-URI") for r, _, _ in recs
                 if r.rec_type == "response"]
    assert sorted(uris) == sorted([srv.url(p) for p in pages] * 2)
    assert len(read_records(out)) == 12


async def test_the_library_archives_a_crawl_and_bad_names_are_refused(tmp_path: Path) -> None:
    warc = tmp_path / "lib.warc.gz"
    pages = {"/": html_page("home", ["/a", "/b"]), "/a": html_page("a"), "/b": html_page("b")}
    async with site(pages) as srv, shoal.Crawler(shoal.Config(robots=False),
                                                 warc=warc) as crawler:
        records = [r async for r in crawler.crawl([srv.url("/")])]
    assert len(records) == 3
    got = [r.rec_headers.get_header("WARC-Target-URI") for r, _, _ in read_warc(warc)
           if r.rec_type == "response"]
    assert sorted(got) == sorted(srv.url(p) for p in ("/", "/a", "/b"))
    with gzip.open(warc) as fh:  # plain gzip readers read it whole too
        assert fh.read().count(b"WARC/1.1\r\n") == 7
    for bad, message in ((str(tmp_path / "x.warc"), "must end in .warc.gz"),
                         (str(tmp_path / "no" / "x.warc.gz"), "does not exist")):
        run = await run_shoal("crawl", "http://127.0.0.1:9/", "--warc", bad)
        assert run.code == 2 and message in run.stderr and run.stderr.count("\n") == 1


def test_a_large_body_is_spooled_to_disk_not_held_in_memory() -> None:
    cap = Capture(method="GET", target="/", request_headers=[], protocol="HTTP/1.1",
                  status=200, reason="OK", headers=[], chunked=False, ip=None)
    try:
        cap.feed(b"x" * (SPOOL_MEMORY - 1))
        assert not cap.spool._rolled  # type: ignore[attr-defined]
        cap.feed(b"y" * 10)
        assert cap.spool._rolled  # type: ignore[attr-defined]
        cap.finish()
        assert cap.length == SPOOL_MEMORY + 9
    finally:
        cap.close()


async def test_failed_exchanges_are_not_archived_and_the_run_goes_on(tmp_path: Path) -> None:
    from tests import servers as S

    warc = tmp_path / "bad.warc.gz"
    async with S.gzip_bomb(64 * S.MiB, chunked=True, content_length=False) as bomb, \
            S.truncated_chunked() as cut, site({"/ok": html_page("ok")}) as good:
        config = shoal.Config(robots=False, max_bytes=S.MiB, timeout=10,
                              retry=shoal.RetryPolicy(retries=0))
        async with shoal.Crawler(config, warc=warc) as crawler:
            records = {r.url: r async for r in crawler.fetch(
                [bomb.url("/bomb"), cut.url("/cut"), good.url("/ok")])}
    kinds = {u: r.error.kind if r.error else None for u, r in records.items()}
    assert kinds == {bomb.url("/bomb"): shoal.ErrorKind.TOO_LARGE,
                     cut.url("/cut"): shoal.ErrorKind.PROTOCOL, good.url("/ok"): None}
    got = [r.rec_headers.get_header("WARC-Target-URI") for r, _, _ in read_warc(warc)
           if r.rec_type == "response"]
    assert got == [good.url("/ok")]


def readable_responses(path: Path) -> tuple[list[str], bool]:
    """URIs of the response records read before the end or a torn last member, and
    whether the file ended torn."""
    uris: list[str] = []
    with open(path, "rb") as fh:
        try:
            for rec in ArchiveIterator(fh):
                if rec.rec_type == "response":
                    rec.content_stream().read()
                    uris.append(rec.rec_headers.get_header("WARC-Target-URI"))
        except Exception:
            return uris, True
    return uris, False


async def test_a_killed_run_leaves_a_readable_warc_and_the_rerun_archives_the_rest(
        tmp_path: Path) -> None:
    from tests.integration.test_cli import _start, _wait_for_lines, pages

    n = 300
    warc, out = tmp_path / "k.warc.gz", tmp_path / "out.jsonl"
    async with site(pages(n, delay=0.01)) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(n)]
        inp = write_urls(tmp_path / "u.txt", urls)
        args = ["fetch", str(inp), "-o", str(out), "-q", "--concurrency", "8", "--per-host",
                "8", "--warc", str(warc)]
        proc = await _start(args)
        await _wait_for_lines(out, 50, proc)
        proc.kill()
        await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == -signal.SIGKILL
        first, _torn = readable_responses(warc)
        data = out.read_bytes() if out.exists() else b""
        committed = {json.loads(line)["url"] for line in data[:data.rfind(b"\n") + 1]
                     .splitlines()}  # complete lines (a kill may tear the last)
        assert len(first) >= 50 and committed <= set(first)  # archived before committed
        run = await run_shoal(*args)
        assert run.code == 0, run.stderr
    second, torn = readable_responses(tmp_path / "k-00001.warc.gz")
    assert not torn
    assert set(first) | set(second) == set(urls)  # every page archived at least once
    assert not set(second) & committed  # what had its record was not fetched again
    assert sorted(r["url"] for r in read_records(out)) == sorted(urls)
