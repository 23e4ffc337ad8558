"""The test servers do what they claim, checked with a plain aiohttp client and raw sockets.

Also pins what aiohttp 3.14's client raises for each abuse: ``fetch/errors.py`` relies on it.
"""

from __future__ import annotations

import asyncio
import codecs
import gzip
import time
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import aiohttp
import brotli  # type: ignore[import-untyped]
import pytest
from aiohttp import http_exceptions, http_parser
from aiohttp.helpers import DEBUG

from tests import servers as S

pytestmark = pytest.mark.timeout(20)

LIMIT_100MB = 100 * S.MiB
# aiohttp's pure-Python response parser (AIOHTTP_NO_EXTENSIONS=1, no C wheel) is lax unless
# PYTHONASYNCIODEBUG / -X dev: it then takes the first of two Content-Length headers.
LAX_PY_PARSER = http_parser.HttpResponseParser is http_parser.HttpResponseParserPy and not DEBUG


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def get_bytes(session: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, bytes]:
    async with session.get(url, **kw) as r:  # type: ignore[arg-type]
        return r.status, await r.read()


# --------------------------------------------------------------------------- sites and the log


async def test_site_serves_routes_and_logs_requests(session: aiohttp.ClientSession) -> None:
    routes: S.Routes = {
        "/": S.html_page("Home", links=["/a"]),
        "/gone": 410,
        "/teapot": S.reply(418, "short and stout", headers={"X-Kind": "tea"}),
        "/q?x=1": "query route",
        "/robots.txt": "User-agent: *\nDisallow: /private/\n",
    }
    async with S.site(routes) as srv:
        srv.route("/late", S.html_page("added after start"))
        assert srv.url("/a") == f"http://127.0.0.1:{srv.port}/a"
        assert srv.url("x", host="localhost") == f"http://localhost:{srv.port}/x"

        status, body = await get_bytes(session, srv.url("/"))
        assert status == 200 and b"<title>Home</title>" in body and b'href="/a"' in body
        async with session.get(srv.url("/teapot")) as r:
            assert (r.status, r.headers["X-Kind"], await r.text()) == (
                418,
                "tea",
                "short and stout",
            )
        assert (await get_bytes(session, srv.url("/gone")))[0] == 410
        assert (await get_bytes(session, srv.url("/late")))[0] == 200
        assert (await get_bytes(session, srv.url("/q?x=1")))[1] == b"query route"
        assert (await get_bytes(session, srv.url("/nope")))[0] == 404
        async with session.get(srv.url("/robots.txt")) as r:
            assert r.content_type == "text/plain"

    log = srv.log
    assert log.paths() == ["/", "/teapot", "/gone", "/late", "/q?x=1", "/nope", "/robots.txt"]
    assert [e.status for e in log.entries] == [200, 418, 410, 200, 200, 404, 200]
    first = log.entries[0]
    assert first.method == "GET" and first.host == srv.netloc
    assert first.header("user-agent") is not None
    assert first.finished is not None and first.started <= first.finished
    assert log.count(host=srv.base_url) == 7 and log.count(host="other:1") == 0
    assert log.max_in_flight(srv.netloc) == 1 and log.in_flight() == 0


async def test_max_in_flight_and_gaps_per_host(session: aiohttp.ClientSession) -> None:
    shared = S.RequestLog()
    async with S.sites(2, {"/slow": S.slow(0.3), "/": "hi"}, log=shared) as (a, b):
        await asyncio.gather(
            get_bytes(session, a.url("/slow")),
            get_bytes(session, a.url("/slow")),
            get_bytes(session, b.url("/slow")),
        )
        for _ in range(2):
            await get_bytes(session, b.url("/"))
    assert shared.max_in_flight(a.netloc) == 2
    assert shared.max_in_flight(b.url("/")) == 1
    assert shared.max_in_flight() == 3
    assert len(shared.starts(a.netloc)) == 2 and len(shared.starts()) == 5
    assert shared.starts(b.netloc, path_prefix="/slow") == [shared.select(b.netloc)[0].started]
    assert shared.min_gap(a.netloc) < 0.25  # concurrent starts
    assert shared.min_gap(b.netloc, path_prefix="/") >= 0  # sequential
    assert shared.min_gap(b.netloc, path_prefix="/slow") == float("inf")  # one start only
    for e in shared.select(a.netloc, "/slow"):
        assert e.finished is not None and e.finished - e.started >= 0.25


async def test_sites_are_distinct_hosts_with_own_routes(session: aiohttp.ClientSession) -> None:
    async with S.sites(3, [{"/": "a"}, {"/": "b"}, {"/": "c"}]) as (a, b, c):
        assert len({a.port, b.port, c.port}) == 3
        bodies = [(await get_bytes(session, s.url("/")))[1] for s in (a, b, c)]
        assert bodies == [b"a", b"b", b"c"]
    assert [s.log.entries[0].host for s in (a, b, c)] == [a.netloc, b.netloc, c.netloc]
    assert a.log is not b.log


async def test_slow_handler_ends_when_client_leaves(session: aiohttp.ClientSession) -> None:
    async with S.site({"/slow": S.slow(30)}) as srv:
        with pytest.raises(TimeoutError):
            await get_bytes(session, srv.url("/slow"), timeout=aiohttp.ClientTimeout(total=0.2))
        async with asyncio.timeout(2):
            await srv.log.wait_idle()
    assert srv.log.entries[0].status is None  # cancelled, nothing sent


async def test_site_close_ends_slow_handlers_quickly(session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    async with asyncio.TaskGroup() as tg, S.site({"/slow": S.slow(30)}) as srv:
        task = tg.create_task(get_bytes(session, srv.url("/slow")))
        async with asyncio.timeout(2):
            await srv.log.wait_started()
    # the nap ends at close: the client got its answer early, or lost the connection
    assert time.monotonic() - started < 3
    assert task.result()[0] == 200


# --------------------------------------------------------------------------- handler factories


async def test_retry_after_fails_n_times_then_succeeds(session: aiohttp.ClientSession) -> None:
    seconds = S.retry_after(2)
    dated = S.retry_after(1, status=429, retry_after=timedelta(seconds=30))
    async with S.site({"/s": seconds, "/d": dated}) as srv:
        for expected in (503, 503, 200, 200):
            async with session.get(srv.url("/s")) as r:
                assert r.status == expected
                assert r.headers.get("Retry-After") == ("1" if expected == 503 else None)
        async with session.get(srv.url("/d")) as r:
            assert r.status == 429
            when = parsedate_to_datetime(r.headers["Retry-After"])
            assert datetime.now(UTC) < when < datetime.now(UTC) + timedelta(seconds=31)
    assert seconds.count == 4 and len(seconds.times) == 4 and dated.count == 1


async def test_flaky_drops_connections_and_aiohttp_retries_once(
    session: aiohttp.ClientSession,
) -> None:
    handler = S.flaky(3)
    async with S.site({"/f": handler}) as srv:
        # aiohttp silently retries an idempotent request once on ServerDisconnectedError
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await get_bytes(session, srv.url("/f"))
        assert handler.count == 2
        assert await get_bytes(session, srv.url("/f")) == (200, S.html_page("finally").encode())
    assert handler.count == 4
    assert [e.status for e in srv.log.entries] == [None, None, None, 200]


async def test_redirect_helpers(session: aiohttp.ClientSession) -> None:
    routes = {**S.redirect_chain(3), **S.redirect_loop(), "/ftp": S.redirect_ftp()}
    routes["/perm"] = S.redirect("/final", 301)
    async with S.site(routes) as srv:
        async with session.get(srv.url("/r/1"), allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/r/2")
        async with session.get(srv.url("/r/3"), allow_redirects=False) as r:
            assert r.headers["Location"] == "/final"
        async with session.get(srv.url("/perm"), allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (301, "/final")
        async with session.get(srv.url("/r/1")) as r:
            assert r.status == 200 and r.url.path == "/final" and len(r.history) == 3
        with pytest.raises(aiohttp.TooManyRedirects):
            await get_bytes(session, srv.url("/loop/a"))
        with pytest.raises(aiohttp.NonHttpUrlRedirectClientError):
            await get_bytes(session, srv.url("/ftp"))
        async with session.get(srv.url("/ftp"), allow_redirects=False) as r:
            assert r.headers["Location"] == S.FTP_TARGET
    assert srv.log.paths()[:4] == ["/r/1", "/r/3", "/perm", "/r/1"]


async def test_binary_handlers(session: aiohttp.ClientSession) -> None:
    async with S.site({"/bin": S.binary(), "/png": S.png()}) as srv:
        async with session.get(srv.url("/bin")) as r:
            assert r.content_type == "application/octet-stream"
            assert await r.read() == S.OCTET_BYTES
        async with session.get(srv.url("/png")) as r:
            assert r.content_type == "image/png"
            assert (await r.read()).startswith(b"\x89PNG\r\n\x1a\n")


CHARSET_CASES = [
    pytest.param(S.CP1251_TITLE, "cp1251", "header", id="cp1251-header"),
    pytest.param(S.LATIN1_TITLE, "latin-1", "header", id="latin1-header"),
    pytest.param(S.CP1251_TITLE, "cp1251", "meta", id="cp1251-meta"),
    pytest.param(S.LATIN1_TITLE, "latin-1", "http-equiv", id="latin1-http-equiv"),
    pytest.param(S.CP1251_TITLE, "utf-8", "bom", id="utf8-bom"),
    pytest.param(S.CP1251_TITLE, "utf-16-le", "bom", id="utf16le-bom"),
    pytest.param(S.CP1251_TITLE, "utf-16-be", "bom", id="utf16be-bom"),
    pytest.param(S.CP1252_TITLE, "cp1252", "none", id="cp1252-undeclared"),
]


@pytest.mark.parametrize(("title", "encoding", "declared_in"), CHARSET_CASES)
async def test_charset_pages_declare_in_one_place_only(
    session: aiohttp.ClientSession, title: str, encoding: str, declared_in: S.Declared
) -> None:
    async with (
        S.site({"/": S.encoded_page(title, encoding=encoding, declared_in=declared_in)}) as srv,
        session.get(srv.url("/")) as r,
    ):
        ctype, body = r.headers["Content-Type"], await r.read()
    assert body == S.encoded_page_bytes(title, encoding=encoding, declared_in=declared_in)
    assert ("charset=" in ctype) == (declared_in == "header")
    if declared_in == "bom":
        assert body.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        text = body.decode("utf-8-sig" if encoding == "utf-8" else "utf-16")
    else:
        assert b"charset" not in body.lower() or declared_in in ("meta", "http-equiv")
        text = body.decode(encoding)
    assert f"<title>{title}</title>" in text
    if encoding != "utf-8":
        with pytest.raises(UnicodeDecodeError):
            body.decode("utf-8")


async def test_invalid_utf8_page(session: aiohttp.ClientSession) -> None:
    async with S.site({"/": S.invalid_utf8_page()}) as srv, session.get(srv.url("/")) as r:
        assert r.charset == "utf-8"
        body = await r.read()
    assert S.INVALID_UTF8_TITLE_BYTES in body
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")


@pytest.mark.parametrize(
    ("coding", "wbits"), [("gzip", 31), ("deflate", 15), ("deflate-raw", -15), ("br", None)]
)
async def test_compressed_pages(coding: S.Coding, wbits: int | None) -> None:
    page = S.html_page("squeezed", body_extra="<p>" + "zip " * 500 + "</p>")
    async with (
        S.site({"/": S.compressed(page, coding)}) as srv,
        aiohttp.ClientSession(auto_decompress=False) as raw_client,
    ):
        async with raw_client.get(srv.url("/")) as r:
            label = r.headers["Content-Encoding"]
            raw = await r.read()
        async with aiohttp.ClientSession() as client, client.get(srv.url("/")) as r:
            assert await r.text() == page
    assert label == ("deflate" if coding == "deflate-raw" else coding)
    assert len(raw) < len(page) // 4
    decoded = brotli.decompress(raw) if wbits is None else zlib.decompress(raw, wbits)
    assert decoded == page.encode()


async def test_robots_variants(session: aiohttp.ClientSession) -> None:
    text = S.robots_txt(
        shoal_disallow=["/private/"], crawl_delay=0.5, sitemaps=["http://x.test/sitemap.xml"]
    )
    assert "User-agent: shoal\nDisallow: /private/\nCrawl-delay: 0.5\n" in text
    assert "User-agent: *\nDisallow: /\n" in text and "Sitemap: http://x.test/sitemap.xml" in text
    async with S.sites(
        4,
        [
            {"/robots.txt": S.robots(text)},
            {"/robots.txt": 500},
            S.robots_redirects(1),
            S.robots_redirects(6),
        ],
    ) as (ok, err, r1, r6):
        async with session.get(ok.url("/robots.txt")) as r:
            assert r.content_type == "text/plain" and await r.text() == text
        assert (await get_bytes(session, err.url("/robots.txt")))[0] == 500
        async with session.get(r1.url("/robots.txt")) as r:
            assert len(r.history) == 1 and "Disallow: /private/" in await r.text()
        async with session.get(r6.url("/robots.txt")) as r:
            assert len(r.history) == 6 and r.status == 200
        with pytest.raises(aiohttp.TooManyRedirects):
            await get_bytes(session, r6.url("/robots.txt"), max_redirects=5)

    huge = S.huge_robots("/after-cap").encode()
    assert len(huge) > 600 * S.KiB - 100
    assert huge.index(b"Disallow: /after-cap") > S.ROBOTS_CAP
    assert huge.index(b"Disallow: /before-cap") < 100


# --------------------------------------------------------------------------- raw servers


def raises_chain(exc: BaseException) -> list[type[BaseException]]:
    chain: list[type[BaseException]] = []
    cur: BaseException | None = exc
    while cur is not None:
        chain.append(type(cur))
        cur = cur.__cause__
    return chain


# (server factory, exception class aiohttp raises, class of its __cause__ chain, or None)
ABUSES: dict[str, tuple[Callable[[], S.RawServer], type[Exception], type[Exception] | None]] = {
    "garbage_status_line": (
        lambda: S.garbage_status("status"),
        aiohttp.ClientResponseError,
        http_exceptions.BadStatusLine,
    ),
    "garbage_bytes": (
        lambda: S.garbage_status("bytes"),
        aiohttp.ClientResponseError,
        http_exceptions.BadStatusLine,
    ),
    "conflicting_content_length": (
        S.conflicting_content_length,
        aiohttp.ClientResponseError,
        http_exceptions.BadHttpMessage,
    ),
    "bad_content_length": (
        S.bad_content_length,
        aiohttp.ClientResponseError,
        http_exceptions.BadHttpMessage,
    ),
    "huge_header_line": (
        lambda: S.huge_headers("long"),
        aiohttp.ClientResponseError,
        http_exceptions.LineTooLong,
    ),
    "many_headers": (
        lambda: S.huge_headers("many"),
        aiohttp.ClientResponseError,
        http_exceptions.BadHttpMessage,
    ),
    "short_body": (S.short_body, aiohttp.ClientPayloadError, http_exceptions.ContentLengthError),
    "truncated_chunked": (
        S.truncated_chunked,
        aiohttp.ClientPayloadError,
        http_exceptions.TransferEncodingError,
    ),
    "reset_mid_body": (
        S.reset_mid_body,
        aiohttp.ClientPayloadError,
        http_exceptions.ContentLengthError,
    ),
    "close_immediately": (S.close_immediately, aiohttp.ServerDisconnectedError, None),
    "close_immediately_rst": (
        lambda: S.close_immediately(reset=True),
        aiohttp.ClientOSError,
        None,
    ),
}


@pytest.mark.parametrize("name", list(ABUSES))
async def test_abuse_raises_in_aiohttp(session: aiohttp.ClientSession, name: str) -> None:
    factory, expected, cause = ABUSES[name]
    if name == "conflicting_content_length" and LAX_PY_PARSER:
        async with factory() as srv:
            assert await get_bytes(session, srv.url("/page")) == (200, b"0123456789")
        return
    async with factory() as srv:
        with pytest.raises(aiohttp.ClientError) as info:
            async with asyncio.timeout(5):
                await get_bytes(session, srv.url("/page"))
    assert type(info.value) is expected, raises_chain(info.value)
    if cause is not None:  # ClientResponseError <- HttpProcessingError <- the parser's error
        assert any(issubclass(c, cause) for c in raises_chain(info.value)), raises_chain(info.value)
    # the log keeps the status the server put on the wire, if it sent a parseable one
    sent = None if name.startswith(("garbage", "close")) else 200
    assert srv.log.entries[0].status == sent
    if name.startswith("close_immediately"):
        assert srv.log.paths() == ["/page", "/page"]  # aiohttp retried the GET once, silently
    else:
        assert srv.log.paths() == ["/page"]


async def test_close_at_accept_resets(session: aiohttp.ClientSession) -> None:
    async with S.close_immediately(read_request=False) as srv:
        with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
            await get_bytes(session, srv.url("/"))
    assert srv.log.connections == 2 and srv.log.entries == []


async def test_raw_socket_sees_reset_mid_body() -> None:
    async with S.reset_mid_body() as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(5):
                    while chunk := await reader.read(4096):
                        got += chunk
        finally:
            writer.close()
        assert got == b"" or got.startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize("http_version", ["1.0", "1.1"])
async def test_close_delimited_body_is_valid(
    session: aiohttp.ClientSession, http_version: str
) -> None:
    body = S.html_page("no length").encode() * 50
    server = S.no_content_length_close_delimited(body, http_version=http_version)
    async with server as srv, session.get(srv.url("/")) as r:
        assert "Content-Length" not in r.headers and "Transfer-Encoding" not in r.headers
        assert await r.read() == body


async def test_drip_really_drips_and_stops_when_client_leaves(
    session: aiohttp.ClientSession,
) -> None:
    async with S.drip(bytes_per_second=20) as srv:
        async with session.get(srv.url("/")) as r:
            assert r.headers["Content-Length"] == "1000"
            t0 = time.monotonic()
            got = b""
            while len(got) < 5:
                got += await r.content.read(1)
            elapsed = time.monotonic() - t0
        # 5 bytes at 20 B/s: about 0.25 s, never a burst
        assert 0.15 < elapsed < 2.0 and got == b"xxxxx"
        left = time.monotonic()
        async with asyncio.timeout(3):
            await srv.log.wait_idle()
    entry = srv.log.entries[0]
    assert entry.status == 200 and entry.finished is not None
    assert entry.finished - left < 1.0  # the drip stopped once the client was gone


async def test_hold_after_headers_and_silent_stall(session: aiohttp.ClientSession) -> None:
    async with S.hold_after_headers() as hold, S.silent() as quiet:
        async with session.get(hold.url("/")) as r:
            assert r.status == 200 and r.headers["Content-Length"] == "100"
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await r.read()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await get_bytes(session, quiet.url("/"))
        async with asyncio.timeout(3):
            await hold.log.wait_idle()
            await quiet.log.wait_idle()


async def test_raw_server_exit_ends_stuck_connections_fast() -> None:
    started = time.monotonic()
    async with S.hold_after_headers() as srv:
        r1, w1 = await asyncio.open_connection("127.0.0.1", srv.port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", srv.port)  # never sends a request
        w1.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await r1.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
    try:
        assert time.monotonic() - started < 3
        async with asyncio.timeout(2):
            assert await r1.read() == b""  # closed by the server
            assert await r2.read() == b""
    finally:
        w1.close()
        w2.close()
    assert srv.log.connections == 2 and srv.log.count() == 1


async def test_raw_servers_answer_robots(session: aiohttp.ClientSession) -> None:
    async with (
        S.short_body() as default,
        S.scripted(b"HTTP/1.1 200 OK\r\n\r\n", robots="User-agent: *\nDisallow: /x\n") as text,
        S.scripted(b"HTTP/1.1 204 No Content\r\n\r\n", abuse_robots=True) as abused,
    ):
        assert await get_bytes(session, default.url("/robots.txt")) == (404, b"")
        assert await get_bytes(session, text.url("/robots.txt")) == (
            200,
            b"User-agent: *\nDisallow: /x\n",
        )
        assert (await get_bytes(session, abused.url("/robots.txt")))[0] == 204
        assert str(default) == default.base_url == f"http://{default.netloc}"
    assert [e.status for e in default.log.entries] == [404]
    assert default.log.entries[0].header("host") == default.netloc


# --------------------------------------------------------------------------- bombs


def test_bomb_bodies_decode_exactly() -> None:
    size = 3 * S.MiB + 12_345
    expected = S.BOMB_PREFIX + bytes(size - len(S.BOMB_PREFIX))
    assert gzip.decompress(S.bomb_body("gzip", size)) == expected  # checks CRC and ISIZE
    assert zlib.decompress(S.bomb_body("deflate", size)) == expected  # checks Adler-32
    assert zlib.decompress(S.bomb_body("deflate-raw", size), -15) == expected
    assert brotli.decompress(S.bomb_body("br", size)) == expected
    assert len(S.bomb_body("gzip")) < 2 * S.MiB  # 1 GiB decompressed


class CappedDecoder:
    """Decodes gzip/deflate/br, never producing more than ``cap`` + 64 KiB of output."""

    def __init__(self, coding: str, cap: int) -> None:
        self.cap, self.total, self.head = cap, 0, b""
        self._br = brotli.Decompressor() if coding == "br" else None
        self._z = None if self._br else zlib.decompressobj(31 if coding == "gzip" else 15)

    def feed(self, data: bytes) -> bool:
        """Feed compressed bytes; True once the output passed the cap."""
        step = 64 * S.KiB
        while self.total <= self.cap:
            if self._br is not None:
                out = self._br.process(data, output_buffer_limit=step)
                data = b""
            else:
                assert self._z is not None
                out = self._z.decompress(data, step)
                data = self._z.unconsumed_tail
            if not self.head:
                self.head = out[:64]
            self.total += len(out)
            if not out and not data:
                break
        return self.total > self.cap


BOMBS: dict[str, Callable[[], S.RawServer]] = {
    "gzip": S.gzip_bomb,
    "gzip_close_delimited": lambda: S.gzip_bomb(content_length=False),
    "gzip_chunked": lambda: S.gzip_bomb(content_length=False, chunked=True),
    "deflate": S.deflate_bomb,
    "deflate_chunked": lambda: S.deflate_bomb(content_length=False, chunked=True),
    "br": S.brotli_bomb,
    "br_close_delimited": lambda: S.brotli_bomb(content_length=False),
}


@pytest.mark.parametrize("name", list(BOMBS))
async def test_bomb_decompresses_past_100mb(name: str) -> None:
    async with (
        BOMBS[name]() as srv,
        aiohttp.ClientSession(auto_decompress=False) as client,
        client.get(srv.url("/")) as r,
    ):
        coding = r.headers["Content-Encoding"]
        framing = (r.headers.get("Content-Length"), r.headers.get("Transfer-Encoding"))
        decoder = CappedDecoder(coding, LIMIT_100MB)
        wire = 0
        async for chunk in r.content.iter_chunked(64 * S.KiB):
            wire += len(chunk)
            if decoder.feed(chunk):
                break
    assert decoder.total > LIMIT_100MB and decoder.head.startswith(S.BOMB_PREFIX)
    assert wire < 2 * S.MiB
    assert coding == name.split("_")[0]
    if "chunked" in name:
        assert framing == (None, "chunked")
    elif "close" in name:
        assert framing == (None, None)
    else:
        assert framing[0] is not None and int(framing[0]) > wire


async def test_timed_server_logs_kernel_arrival_not_when_its_loop_got_to_it() -> None:
    import socket
    import threading

    routes = {"/robots.txt": "User-agent: *\nAllow: /\n", "/p": S.html_page("p")}
    async with S.TimedServer(routes) as srv:
        sent: list[float] = []
        done = threading.Event()

        def client() -> None:  # a blocking client on its own thread, two keep-alive requests
            with socket.create_connection((srv.host, srv.port)) as c:
                for path in ("/robots.txt", "/p"):
                    sent.append(time.monotonic())
                    c.sendall(f"GET {path} HTTP/1.1\r\nHost: {srv.netloc}\r\n\r\n".encode())
                    head = b""
                    while b"</html>" not in head and b"Allow: /" not in head:
                        head += c.recv(65536)
            done.set()

        thread = threading.Thread(target=client)
        thread.start()
        for _ in range(2):
            while len(sent) < len(srv.log.entries) + 1 and not done.is_set():
                time.sleep(0.001)  # wait (blocking the loop) until the request is on its way
            time.sleep(0.15)  # the loop is busy: the server gets to the request 150 ms late
            async with asyncio.timeout(5):
                await srv.log.wait_started(len(sent))
        await asyncio.to_thread(thread.join, 10)
    assert srv.log.paths() == ["/robots.txt", "/p"]
    assert [e.status for e in srv.log.entries] == [200, 200]
    for entry, at in zip(srv.log.entries, sent, strict=True):
        assert 0 <= entry.started - at < 0.05, (entry.started - at)  # not 0.15 late
