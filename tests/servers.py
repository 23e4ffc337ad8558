"""Loopback servers for the test suite: well-behaved aiohttp sites and raw servers that misbehave.

Everything binds to 127.0.0.1 (or another loopback address) on an ephemeral port. A crawler's
"host" is scheme + host + port, so several ``site()``s on different ports are different hosts.

Two families:

* ``site()`` / ``sites()``: an aiohttp app whose routes are a mutable ``path -> handler`` map,
  looked up per request, so routes can be added after start (links between sites need each
  other's ports). Handler factories below cover statuses, retries, redirects, charsets,
  content encodings and robots.txt variants.
* ``RawServer`` factories (``drip()``, ``short_body()``, ``gzip_bomb()``, ...): an
  ``asyncio.start_server`` that reads the request head, answers ``/robots.txt`` with 404 (unless
  told otherwise) and answers every other request with one scripted abuse.

Every request either family receives lands in a ``RequestLog`` (``srv.log``), which also
tracks concurrency per Host header, so tests can prove politeness from the server's side.
All waits are bounded, and leaving the ``async with`` ends every handler and connection.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import html
import ipaddress
import itertools
import math
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import TracebackType
from typing import Literal, TypeAlias
from urllib.parse import urlsplit

import brotli  # type: ignore[import-untyped]
from aiohttp import web

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

Handler: TypeAlias = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route: TypeAlias = Handler | str | int  # str: an HTML page (utf-8); int: that status, empty body
Routes: TypeAlias = Mapping[str, Route]

MAX_HOLD_S = 120.0  # the longest any server keeps a connection open on purpose
_HEAD_TIMEOUT_S = 30.0  # a client that never finishes its request head is dropped
_SHUTDOWN_TIMEOUT_S = 0.5  # aiohttp: how long close waits for handlers before cancelling them


# --------------------------------------------------------------------------- request log


@dataclass(slots=True)
class LogEntry:
    """One request as the server saw it."""

    method: str
    path: str  # the raw request target: path and query, undecoded
    host: str  # the Host header ("" if absent)
    headers: dict[str, str]
    started: float  # time.monotonic() when the request arrived
    finished: float | None = None  # time.monotonic() when its handler ended
    status: int | None = None  # None: no response (connection closed, abuse, cancelled)

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        name = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == name), None)


def _host_key(host: str | None) -> str | None:
    """Accept a Host header value or any URL; compare case-insensitively."""
    if host is None:
        return None
    if "://" in host:
        host = urlsplit(host).netloc
    return host.lower()


@dataclass(slots=True)
class RequestLog:
    """Every request a server received, with in-flight counters per Host header.

    ``max_in_flight(host)`` is the most requests for that Host the server was handling at
    once; ``max_in_flight()`` the most across all hosts this log saw. Several servers may
    share one log (``site(log=...)``, ``sites(log=...)``); Host headers then tell them apart.
    """

    entries: list[LogEntry] = field(default_factory=list)
    connections: int = 0  # raw servers only: accepted TCP connections
    connection_starts: list[float] = field(default_factory=list)  # raw servers only
    _in_flight: dict[str, int] = field(default_factory=dict)
    _max: dict[str, int] = field(default_factory=dict)
    _total: int = 0
    _max_total: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def begin(self, *, method: str, path: str, host: str, headers: dict[str, str]) -> LogEntry:
        entry = LogEntry(method, path, host, headers, started=time.monotonic())
        self.entries.append(entry)
        key = host.lower()
        now = self._in_flight.get(key, 0) + 1
        self._in_flight[key] = now
        self._max[key] = max(self._max.get(key, 0), now)
        self._total += 1
        self._max_total = max(self._max_total, self._total)
        self._idle.clear()
        self._arrived.set()
        return entry

    def end(self, entry: LogEntry, status: int | None) -> None:
        entry.finished = time.monotonic()
        entry.status = status
        self._in_flight[entry.host.lower()] -= 1
        self._total -= 1
        if self._total == 0:
            self._idle.set()

    async def wait_started(self, n: int = 1) -> None:
        """Wait until at least ``n`` requests have arrived in all; bound it with a timeout."""
        while len(self.entries) < n:
            self._arrived.clear()
            await self._arrived.wait()

    async def wait_idle(self) -> None:
        """Wait until no request is in flight (at once if none is); bound it with a timeout."""
        await self._idle.wait()

    def connected(self) -> None:
        self.connections += 1
        self.connection_starts.append(time.monotonic())

    def in_flight(self, host: str | None = None) -> int:
        key = _host_key(host)
        return self._total if key is None else self._in_flight.get(key, 0)

    def max_in_flight(self, host: str | None = None) -> int:
        key = _host_key(host)
        return self._max_total if key is None else self._max.get(key, 0)

    def select(self, host: str | None = None, path_prefix: str | None = None) -> list[LogEntry]:
        key = _host_key(host)
        return [
            e
            for e in self.entries
            if (key is None or e.host.lower() == key)
            and (path_prefix is None or e.path.startswith(path_prefix))
        ]

    def count(self, host: str | None = None, path_prefix: str | None = None) -> int:
        return len(self.select(host, path_prefix))

    def paths(self, host: str | None = None) -> list[str]:
        return [e.path for e in self.select(host)]

    def starts(self, host: str | None = None, path_prefix: str | None = None) -> list[float]:
        return sorted(e.started for e in self.select(host, path_prefix))

    def min_gap(self, host: str | None = None, path_prefix: str | None = None) -> float:
        """Smallest gap in seconds between consecutive request starts; inf if fewer than 2."""
        s = self.starts(host, path_prefix)
        return min((b - a for a, b in itertools.pairwise(s)), default=math.inf)


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"test servers bind to loopback only, got {host!r}")


# --------------------------------------------------------------------------- aiohttp sites

_SITE_KEY: web.AppKey[Site] = web.AppKey("shoal_site")


class _Addressed:
    """URLs of a server listening on ``host``:``port``."""

    host: str
    port: int

    @property
    def netloc(self) -> str:
        """The Host header clients send, e.g. ``127.0.0.1:41234``."""
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.netloc}"

    def url(self, path: str = "/", host: str | None = None) -> str:
        """Absolute URL of ``path`` (``host`` overrides the address in the URL)."""
        if not path.startswith("/"):
            path = "/" + path
        return f"http://{host or self.host}:{self.port}{path}"


class Site(_Addressed):
    """A running aiohttp test site; ``routes`` is looked up per request, so it may change."""

    def __init__(self, routes: Routes | None, *, host: str, log: RequestLog | None) -> None:
        _check_loopback(host)
        self.host = host
        self.log = log if log is not None else RequestLog()
        self.routes: dict[str, Handler] = {}
        self.port = 0
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        if routes:
            self.add(routes)

    def __repr__(self) -> str:
        return f"<Site {self.base_url} routes={len(self.routes)}>"

    def route(self, path: str, spec: Route) -> None:
        """Serve ``spec`` at ``path``; a str for a ``.txt`` path is served as text/plain."""
        if isinstance(spec, str) and urlsplit(path).path.endswith(".txt"):
            spec = reply(200, spec, content_type="text/plain; charset=utf-8")
        self.routes[path] = as_handler(spec)

    def add(self, routes: Routes) -> None:
        for path, spec in routes.items():
            self.route(path, spec)

    async def nap(self, seconds: float) -> None:
        """Sleep up to ``seconds``; returns early when the site is closing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        entry = self.log.begin(
            method=request.method,
            path=request.raw_path,
            host=request.headers.get("Host", ""),
            headers=dict(request.headers),
        )
        status: int | None = None
        try:
            handler = self.routes.get(request.raw_path) or self.routes.get(request.path)
            resp: web.StreamResponse
            if handler is None:
                resp = web.Response(status=404, text="not found")
            else:
                resp = await handler(request)
            gone = request.transport is None or request.transport.is_closing()
            status = None if gone else resp.status  # e.g. flaky(): dropped, nothing sent
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.log.end(entry, status)

    async def start(self) -> None:
        app = web.Application()
        app[_SITE_KEY] = self
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
            handler_cancellation=True,  # a client that leaves ends its handler
        )
        await self._runner.setup()
        tcp = web.TCPSite(self._runner, self.host, 0)
        await tcp.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def site(
    routes: Routes | None = None, *, host: str = "127.0.0.1", log: RequestLog | None = None
) -> AsyncIterator[Site]:
    """Serve ``routes`` (path -> handler / HTML str / status int) on ``host``:ephemeral port."""
    srv = Site(routes, host=host, log=log)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


@contextlib.asynccontextmanager
async def sites(
    n: int,
    routes: Routes | Sequence[Routes] | None = None,
    *,
    host: str = "127.0.0.1",
    log: RequestLog | None = None,
) -> AsyncIterator[tuple[Site, ...]]:
    """Start ``n`` sites (n distinct crawler hosts); ``routes`` is one map for all or one each.

    Each site gets its own log unless ``log`` is given, in which case all share it.
    Stateful handlers (``retry_after``, ``flaky``) in a shared map share their counters.
    """
    if routes is None or isinstance(routes, Mapping):
        per_site: Sequence[Routes | None] = [routes] * n
    else:
        if len(routes) != n:
            raise ValueError(f"sites({n}) got {len(routes)} route maps")
        per_site = routes
    async with contextlib.AsyncExitStack() as stack:
        yield tuple(
            [await stack.enter_async_context(site(r, host=host, log=log)) for r in per_site]
        )


# --------------------------------------------------------------------------- timed server

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux
_TIMESPEC = struct.Struct("qq")


class TimedServer(_Addressed):
    """A small keep-alive HTTP/1.1 server that logs when each request reached the kernel.

    Pacing tests compare gaps between request starts with delays of a few hundred ms. A
    server that stamps a request when its event loop gets to it adds that loop's delays:
    on a loaded 2-core machine 10-20 ms, even in a process of its own. This one reads with
    recvmsg and logs the kernel's receive timestamp (SO_TIMESTAMPNS, set on the listening
    socket so every connection inherits it): when the request arrived, as a remote server's
    network stack sees it. ``log.starts()`` are on the time.monotonic() scale.

    ``routes`` maps a path to an HTML page, or to text for ``/robots.txt``; others get 404.
    """

    def __init__(self, routes: Mapping[str, str], *, host: str = "127.0.0.1",
                 log: RequestLog | None = None) -> None:
        _check_loopback(host)
        self.host = host
        self.port = 0
        self.routes = dict(routes)
        self.log = log if log is not None else RequestLog()
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._to_monotonic = time.monotonic() - time.time()

    async def __aenter__(self) -> TimedServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((self.host, 0))
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept(sock))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._accepting is not None and self._sock is not None
        self._accepting.cancel()  # its task group cancels every connection
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting
        self._sock.close()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            while True:
                conn, _ = await loop.sock_accept(sock)
                conn.setblocking(False)
                self.log.connected()
                tg.create_task(self._serve(conn))

    def _stamp(self, ancillary: list[tuple[int, int, bytes]]) -> float:
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack(data[:_TIMESPEC.size])
                return sec + nsec / 1e9 + self._to_monotonic
        return time.monotonic()  # no stamp (not Linux): when we read it

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        buf, arrived = b"", 0.0
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    await _readable(loop, conn)
                    try:
                        data, ancillary, _, _ = conn.recvmsg(64 * KiB,
                                                             socket.CMSG_SPACE(_TIMESPEC.size))
                    except (BlockingIOError, InterruptedError):
                        continue
                    if not data:
                        return
                    if not buf:
                        arrived = self._stamp(ancillary)
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                first, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = [*first.split(" ", 2), "", ""][:3]
                headers = {k.strip(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
                entry = self.log.begin(method=method, path=target,
                                       host=headers.get("Host", ""), headers=headers)
                entry.started = arrived
                path = urlsplit(target).path
                body = self.routes.get(path)
                status = 200 if body is not None else 404
                ctype = "text/plain" if path == "/robots.txt" else "text/html"
                data = (body or "").encode()
                head_out = http_head(f"HTTP/1.1 {status} {'OK' if body is not None else 'NF'}",
                                     [("Content-Type", f"{ctype}; charset=utf-8"),
                                      ("Content-Length", str(len(data)))])
                # keep-alive: http_head adds Connection: close, which is not wanted here
                head_out = head_out.replace(b"Connection: close\r\n", b"")
                await loop.sock_sendall(conn, head_out + data)
                self.log.end(entry, status)
        except (ConnectionError, OSError):
            pass  # the client left
        finally:
            conn.close()


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


# --------------------------------------------------------------------------- pages and handlers


def html_page(
    title: str, links: Iterable[str] = (), *, charset: str | None = None, body_extra: str = ""
) -> str:
    """A small HTML document; ``charset`` adds ``<meta charset>`` (encoding is the caller's)."""
    meta = f'<meta charset="{html.escape(charset)}">' if charset else ""
    items = "".join(
        f'<li><a href="{html.escape(link)}">{html.escape(link)}</a></li>' for link in links
    )
    return (
        f"<!doctype html>\n<html><head>{meta}<title>{html.escape(title)}</title></head>\n"
        f"<body><h1>{html.escape(title)}</h1><ul>{items}</ul>{body_extra}</body></html>\n"
    )


def reply(
    status: int = 200,
    body: str | bytes = b"",
    *,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = "text/html; charset=utf-8",
) -> Handler:
    """A fixed response. ``headers`` are sent as given (and override ``content_type``)."""
    data = body.encode() if isinstance(body, str) else body
    hdrs = {"Content-Type": content_type} if content_type else {}
    hdrs.update(headers or {})

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=data, headers=hdrs)

    return handler


def as_handler(spec: Route) -> Handler:
    if isinstance(spec, str):
        return reply(200, spec)
    if isinstance(spec, int):
        return reply(spec, content_type=None)
    return spec


def http_date(when: datetime | timedelta) -> str:
    """An IMF-fixdate; a timedelta is taken from now."""
    if isinstance(when, timedelta):
        when = datetime.now(UTC) + when
    return format_datetime(when.astimezone(UTC), usegmt=True)


class RetryAfter:
    """Fails ``n_failures`` times with ``status`` + Retry-After, then answers ``then_status``."""

    def __init__(
        self,
        n_failures: int,
        *,
        status: int = 503,
        retry_after: str | float | datetime | timedelta | None = "1",
        then_status: int = 200,
        body: str = "",
    ) -> None:
        self.n_failures = n_failures
        self.status = status
        self.retry_after = retry_after
        self.then_status = then_status
        self.body = body or html_page("recovered")
        self.count = 0  # requests seen
        self.times: list[float] = []  # monotonic arrival of each request

    def header_value(self) -> str | None:
        ra = self.retry_after
        if ra is None or isinstance(ra, str):
            return ra
        if isinstance(ra, datetime | timedelta):
            return http_date(ra)  # computed per response, so a timedelta stays in the future
        return str(ra)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.count += 1
        self.times.append(time.monotonic())
        if self.count <= self.n_failures:
            value = self.header_value()
            headers = {"Retry-After": value} if value is not None else {}
            return web.Response(status=self.status, text="try later", headers=headers)
        return web.Response(status=self.then_status, text=self.body, content_type="text/html")


def retry_after(
    n_failures: int,
    status: int = 503,
    retry_after: str | float | datetime | timedelta | None = "1",
    then_status: int = 200,
) -> RetryAfter:
    """See ``RetryAfter``; ``retry_after`` may be seconds, a literal header or a date."""
    return RetryAfter(n_failures, status=status, retry_after=retry_after, then_status=then_status)


class Flaky:
    """Closes the connection without any response ``n_failures`` times, then serves 200.

    Note: aiohttp's client silently retries a GET/HEAD once when the server drops the
    connection before the response head, so one client request may use up two failures.
    """

    def __init__(self, n_failures: int, body: str = "") -> None:
        self.n_failures = n_failures
        self.body = body or html_page("finally")
        self.count = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.count += 1
        if self.count <= self.n_failures:
            assert request.transport is not None
            request.transport.close()
            # aiohttp cannot send this (transport closed) and drops the connection quietly
            return web.Response(status=500)
        return web.Response(text=self.body, content_type="text/html")


def flaky(n_failures: int, body: str = "") -> Flaky:
    return Flaky(n_failures, body)


def redirect(to: str, status: int = 302) -> Handler:
    """Answer ``status`` with ``Location: to`` exactly as given (relative stays relative)."""
    return reply(status, b"", headers={"Location": to}, content_type=None)


FTP_TARGET = "ftp://example.com/x"


def redirect_ftp(status: int = 302) -> Handler:
    return redirect(FTP_TARGET, status)


def redirect_chain(
    n: int, *, prefix: str = "/r", final: str = "/final", status: int = 302
) -> dict[str, Route]:
    """Routes ``{prefix}/1 -> {prefix}/2 -> ... -> {prefix}/n -> final`` (n redirects)."""
    routes: dict[str, Route] = {
        f"{prefix}/{i}": redirect(f"{prefix}/{i + 1}" if i < n else final, status)
        for i in range(1, n + 1)
    }
    routes[final] = html_page("final")
    return routes


def redirect_loop(prefix: str = "/loop", status: int = 302) -> dict[str, Route]:
    """Routes ``{prefix}/a -> {prefix}/b -> {prefix}/a``."""
    return {
        f"{prefix}/a": redirect(f"{prefix}/b", status),
        f"{prefix}/b": redirect(f"{prefix}/a", status),
    }


def slow(delay_s: float, body: str = "", *, status: int = 200) -> Handler:
    """Answer after ``delay_s`` (earlier if the site closes or the client leaves)."""
    text = body or html_page(f"slow {delay_s:g}")

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.app[_SITE_KEY].nap(delay_s)
        return web.Response(status=status, text=text, content_type="text/html")

    return handler


def _png_1x1() -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    idat = zlib.compress(b"\x00\xff\x00\x00")  # filter 0, one red pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PNG_BYTES = _png_1x1()
OCTET_BYTES = bytes(range(256)) * 16  # 4 KiB, NULs and high bytes: clearly not text


def binary(content_type: str = "application/octet-stream", body: bytes = OCTET_BYTES) -> Handler:
    return reply(200, body, content_type=content_type)


def png() -> Handler:
    return binary("image/png", PNG_BYTES)


# ---- charsets: the title holds characters that differ between encodings

CP1251_TITLE = "Привет, мир"
LATIN1_TITLE = "Café crème brûlée"
CP1252_TITLE = "“Smart” quotes – 5€"  # bytes 0x93 0x94 0x96 0x80: not UTF-8, not latin-1
INVALID_UTF8_TITLE_BYTES = b"Bad \xc3\x28 and \xff bytes"  # declared utf-8, is not

Declared = Literal["header", "meta", "http-equiv", "bom", "none"]


def encoded_page_bytes(title: str, *, encoding: str, declared_in: Declared = "header") -> bytes:
    """The body ``encoded_page`` serves: the page encoded, declared only in ``declared_in``."""
    meta = ""
    if declared_in == "meta":
        meta = f'<meta charset="{encoding}">'
    elif declared_in == "http-equiv":
        meta = f'<meta http-equiv="Content-Type" content="text/html; charset={encoding}">'
    doc = html_page(title).replace("<head>", "<head>" + meta, 1)
    if declared_in != "bom":
        return doc.encode(encoding)
    boms = {
        "utf-8": codecs.BOM_UTF8,
        "utf-16-le": codecs.BOM_UTF16_LE,
        "utf-16-be": codecs.BOM_UTF16_BE,
        "utf-16": codecs.BOM_UTF16_LE,
    }
    bom = boms.get(encoding.lower())
    if bom is None:
        raise ValueError(f"no BOM for {encoding!r}; use utf-8, utf-16-le or utf-16-be")
    plain = "utf-16-le" if encoding.lower() == "utf-16" else encoding
    return bom + doc.encode(plain)


def encoded_page(title: str, *, encoding: str, declared_in: Declared = "header") -> Handler:
    """Serve ``title``'s page as ``encoding`` bytes, the charset declared in one place only.

    ``header``: ``Content-Type: text/html; charset=...``; ``meta``: ``<meta charset>``;
    ``http-equiv``: the ``<meta http-equiv=Content-Type>`` form; ``bom``: a byte-order mark;
    ``none``: nowhere (the header says plain ``text/html``).
    """
    body = encoded_page_bytes(title, encoding=encoding, declared_in=declared_in)
    ctype = f"text/html; charset={encoding}" if declared_in == "header" else "text/html"
    return reply(200, body, content_type=ctype)


def invalid_utf8_page() -> Handler:
    """Declared ``charset=utf-8`` but the title holds invalid UTF-8 bytes."""
    body = (
        b"<!doctype html>\n<html><head><title>"
        + INVALID_UTF8_TITLE_BYTES
        + b"</title></head><body><p>bad bytes</p></body></html>\n"
    )
    return reply(200, body, content_type="text/html; charset=utf-8")


# ---- content encodings

Coding = Literal["gzip", "deflate", "deflate-raw", "br"]


def encode_body(data: bytes, coding: Coding) -> bytes:
    if coding == "gzip":
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
    elif coding == "deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, 15)
    elif coding == "deflate-raw":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
    elif coding == "br":
        return bytes(brotli.compress(data))
    else:
        raise ValueError(f"unknown coding {coding!r}")
    return c.compress(data) + c.flush()


def compressed(
    body: str | bytes,
    coding: Coding,
    *,
    content_type: str = "text/html; charset=utf-8",
) -> Handler:
    """Serve ``body`` compressed, with ``Content-Encoding: gzip|deflate|br``.

    ``deflate`` is zlib-wrapped (RFC 9110); ``deflate-raw`` is the bare stream some servers
    send, also labelled ``deflate``.
    """
    data = body.encode() if isinstance(body, str) else body
    label = "deflate" if coding == "deflate-raw" else coding
    return reply(
        200,
        encode_body(data, coding),
        headers={"Content-Encoding": label},
        content_type=content_type,
    )


# ---- robots.txt

ROBOTS_CAP = 500 * KiB  # RFC 9309: parse at least this much; Google ignores the rest


def robots_txt(
    *,
    shoal_disallow: Iterable[str] = (),
    shoal_allow: Iterable[str] = (),
    star_disallow: Iterable[str] = ("/",),
    crawl_delay: float | None = None,
    star_crawl_delay: float | None = None,
    sitemaps: Iterable[str] = (),
) -> str:
    """A robots.txt with a ``shoal`` group, a ``*`` group and Sitemap lines."""
    lines = ["# test robots.txt", "User-agent: shoal"]
    lines += [f"Disallow: {p}" for p in shoal_disallow]
    lines += [f"Allow: {p}" for p in shoal_allow]
    if crawl_delay is not None:
        lines.append(f"Crawl-delay: {crawl_delay:g}")
    lines += ["", "User-agent: *"]
    lines += [f"Disallow: {p}" for p in star_disallow]
    if star_crawl_delay is not None:
        lines.append(f"Crawl-delay: {star_crawl_delay:g}")
    lines.append("")
    lines += [f"Sitemap: {s}" for s in sitemaps]
    return "\n".join(lines) + "\n"


def robots(text: str | bytes, *, status: int = 200) -> Handler:
    return reply(status, text, content_type="text/plain; charset=utf-8")


def robots_redirects(
    hops: int, text: str | bytes = "User-agent: *\nDisallow: /private/\n"
) -> dict[str, Route]:
    """``/robots.txt`` redirects ``hops`` times (via /robots-hop/N) before ``text`` is served."""
    if hops < 1:
        raise ValueError(f"hops must be >= 1, got {hops}")
    chain = ["/robots.txt"] + [f"/robots-hop/{i}" for i in range(1, hops)] + ["/robots-final.txt"]
    routes: dict[str, Route] = {a: redirect(b) for a, b in itertools.pairwise(chain)}
    routes["/robots-final.txt"] = robots(text)
    return routes


def huge_robots(
    late_disallow: str = "/after-cap",
    *,
    early_disallow: str = "/before-cap",
    size: int = 600 * KiB,
    user_agent: str = "*",
) -> str:
    """A robots.txt over ``ROBOTS_CAP`` whose ``Disallow: late_disallow`` starts past the cap.

    The group opens with ``Disallow: early_disallow``, then comment padding, then the late rule.
    """
    head = f"User-agent: {user_agent}\nDisallow: {early_disallow}\n"
    late = f"Disallow: {late_disallow}\n"
    pad_line = "# padding " + "x" * 69 + "\n"  # 80 bytes
    n = max(0, size - len(head) - len(late)) // len(pad_line) + 1
    text = head + pad_line * n + late
    if text.encode().index(late.encode()) <= ROBOTS_CAP:
        raise ValueError(f"size must put the late rule past {ROBOTS_CAP} bytes, got {size}")
    return text


# --------------------------------------------------------------------------- compression bombs

BOMB_PREFIX = b"<html><title>bomb</title>"
_BLOCK = MiB
_ZEROS = bytes(_BLOCK)


def _checksum(fn: Callable[[bytes, int], int], start: int, zeros_len: int) -> int:
    value = fn(BOMB_PREFIX, start)
    n, rem = divmod(zeros_len, _BLOCK)
    for _ in range(n):
        value = fn(_ZEROS, value)
    return fn(bytes(rem), value)


@functools.cache
def _raw_deflate_bomb(zeros_len: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(BOMB_PREFIX) + c.flush(zlib.Z_FULL_FLUSH)
    n, rem = divmod(zeros_len, _BLOCK)
    # A full flush resets the compressor, so every 1 MiB block of zeros after it compresses to
    # the same bytes: compress one and repeat it (1 GiB in milliseconds, ~1 MB on the wire).
    block = c.compress(_ZEROS) + c.flush(zlib.Z_FULL_FLUSH) if n else b""
    return head + block * n + c.compress(bytes(rem)) + c.flush()


@functools.cache
def bomb_body(coding: Coding, decompressed_size: int = GiB) -> bytes:
    """A ``coding`` stream decoding to ``BOMB_PREFIX`` + zeros, ``decompressed_size`` in all.

    Cached per process; never holds the decompressed data in memory.
    """
    zeros_len = decompressed_size - len(BOMB_PREFIX)
    if zeros_len < 0:
        raise ValueError(f"decompressed_size must be >= {len(BOMB_PREFIX)}")
    if coding == "br":
        comp = brotli.Compressor(quality=1)  # fast; zeros still shrink ~5000x
        parts = [comp.process(BOMB_PREFIX)]
        n, rem = divmod(zeros_len, _BLOCK)
        parts += [comp.process(_ZEROS) for _ in range(n)]
        parts += [comp.process(bytes(rem)), comp.finish()]
        return b"".join(parts)
    raw = _raw_deflate_bomb(zeros_len)
    if coding == "deflate-raw":
        return raw
    if coding == "deflate":
        adler = _checksum(zlib.adler32, 1, zeros_len)
        return b"\x78\xda" + raw + struct.pack(">I", adler)
    if coding == "gzip":
        crc = _checksum(zlib.crc32, 0, zeros_len)
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        return header + raw + struct.pack("<II", crc, decompressed_size & 0xFFFFFFFF)
    raise ValueError(f"unknown coding {coding!r}")


# --------------------------------------------------------------------------- raw servers


@dataclass(slots=True)
class RawRequest:
    method: str
    target: str
    version: str
    headers: dict[str, str]


class RawConn:
    """One accepted connection, handed to a behaviour after its request head was read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.request: RawRequest | None = None
        self.entry: LogEntry | None = None
        self.gone = asyncio.Event()  # the client closed or reset the connection
        self.stop = asyncio.Event()  # gone, or the server is closing: behaviours should end

    async def send(self, data: bytes) -> bool:
        """Write and drain; False (nothing sent) once the connection is over."""
        if self.stop.is_set() or self.writer.is_closing():
            return False
        if self.entry is not None and self.entry.status is None and data.startswith(b"HTTP/"):
            with contextlib.suppress(ValueError, IndexError):  # garbage stays None
                self.entry.status = int(data.split(b" ", 2)[1])
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            self._left()
            return False
        return True

    async def wait_gone(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True as soon as the client left or the server is closing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stop.wait()
        return self.stop.is_set()

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0) instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def _left(self) -> None:
        self.gone.set()
        self.stop.set()

    async def _watch(self) -> None:
        # Reads (and drops) whatever the client sends until EOF: that is how we learn it left.
        try:
            while await self.reader.read(64 * KiB):
                pass
        except (ConnectionError, OSError):
            pass
        self._left()


Behaviour: TypeAlias = Callable[[RawConn], Awaitable[None]]


def http_head(status_line: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A response head; ``Connection: close`` is always added (raw servers serve one request)."""
    lines = [status_line, *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class RawServer(_Addressed):
    """An asyncio server answering each request with ``behaviour``; one request per connection.

    ``/robots.txt`` gets 404 (or 200 ``robots`` text) unless ``abuse_robots``. With
    ``read_request=False`` the behaviour runs as soon as the connection is accepted.
    ``str(server)`` is the base URL.
    """

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        name: str = "raw",
        robots: str | None = None,
        abuse_robots: bool = False,
        read_request: bool = True,
        host: str = "127.0.0.1",
        setup: Callable[[], object] | None = None,
    ) -> None:
        _check_loopback(host)
        self.behaviour = behaviour
        self.name = name
        self.robots = robots
        self.abuse_robots = abuse_robots
        self.read_request = read_request
        self.host = host
        self.port = 0
        self.log = RequestLog()
        self._setup = setup
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], RawConn] = {}
        self._writers: list[asyncio.StreamWriter] = []

    def __repr__(self) -> str:
        return f"<RawServer {self.name} {self.base_url}>"

    def __str__(self) -> str:
        return self.base_url

    async def __aenter__(self) -> RawServer:
        if self._setup is not None:
            await asyncio.to_thread(self._setup)  # e.g. build a bomb without blocking the loop
        self._server = await asyncio.start_server(self._on_connect, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Connection tasks belong to asyncio.start_server, which reports a cancelled one as an
        # error, so they are asked to end: stop every wait, then abort whatever still blocks.
        assert self._server is not None
        self._server.close()
        for conn in self._conns.values():
            conn.stop.set()
            if conn.request is None and self.read_request:
                conn.writer.transport.abort()  # still waiting for a request head
        if self._conns:
            await asyncio.wait(self._conns, timeout=1.0)
        for conn in self._conns.values():
            conn.writer.transport.abort()  # unblocks a pending read or drain
        if self._conns:
            await asyncio.wait(self._conns, timeout=5.0)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        await self._server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = RawConn(reader, writer)
        self._conns[task] = conn
        self._writers.append(writer)
        self.log.connected()
        try:
            if not self.read_request:
                await self.behaviour(conn)
                return
            async with asyncio.timeout(_HEAD_TIMEOUT_S):
                line, headers, started = await self._read_head(reader)
            await self._serve(conn, line, headers, started)
        except* (
            ConnectionError,
            OSError,
            TimeoutError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # the client misbehaved or left; nothing more to answer
        finally:
            del self._conns[task]
            writer.close()

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], float]:
        first = await reader.readuntil(b"\r\n")
        started = time.monotonic()
        headers: dict[str, str] = {}
        for _ in range(500):
            raw = await reader.readuntil(b"\r\n")
            if raw == b"\r\n":
                return first.decode("latin-1").strip(), headers, started
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip()] = value.strip()
        raise ValueError("request head too long")

    async def _serve(
        self, conn: RawConn, line: str, headers: dict[str, str], started: float
    ) -> None:
        method, target, version = [*line.split(" ", 2), "", ""][:3]
        conn.request = RawRequest(method, target, version, headers)
        entry = self.log.begin(
            method=method, path=target, host=headers.get("Host", ""), headers=headers
        )
        entry.started = started
        conn.entry = entry
        try:
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(conn._watch())
                try:
                    if urlsplit(target).path == "/robots.txt" and not self.abuse_robots:
                        await self._robots(conn)
                    else:
                        await self.behaviour(conn)
                finally:
                    watcher.cancel()
        finally:
            self.log.end(entry, entry.status)

    async def _robots(self, conn: RawConn) -> None:
        if self.robots is None:
            await conn.send(http_head("HTTP/1.1 404 Not Found", [("Content-Length", "0")]))
            return
        body = self.robots.encode()
        head = http_head(
            "HTTP/1.1 200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        await conn.send(head + body)


_OK = "HTTP/1.1 200 OK"
_HTML = ("Content-Type", "text/html; charset=utf-8")


def scripted(
    data: bytes,
    *,
    then: Literal["close", "reset", "hold"] = "close",
    name: str = "scripted",
    robots: str | None = None,
    abuse_robots: bool = False,
) -> RawServer:
    """Send ``data`` verbatim, then close (FIN), reset (RST) or hold the socket up to 120 s."""

    async def behave(conn: RawConn) -> None:
        await conn.send(data)
        if then == "reset":
            await asyncio.sleep(0.1)  # let the bytes reach the client before the RST
            conn.reset()
        elif then == "hold":
            await conn.wait_gone(MAX_HOLD_S)

    return RawServer(behave, name=name, robots=robots, abuse_robots=abuse_robots)


def drip(
    bytes_per_second: float = 1.0, *, length: int = 1000, max_s: float = MAX_HOLD_S
) -> RawServer:
    """Valid headers (Content-Length ``length``), then the body one byte per 1/rate s."""
    interval = 1.0 / bytes_per_second

    async def behave(conn: RawConn) -> None:
        head = http_head(_OK, [_HTML, ("Content-Length", str(length))])
        if not await conn.send(head):
            return
        deadline = time.monotonic() + max_s
        for _ in range(length):
            if await conn.wait_gone(interval) or time.monotonic() > deadline:
                return
            if not await conn.send(b"x"):
                return

    return RawServer(behave, name="drip")


def hold_after_headers(*, length: int = 100) -> RawServer:
    """Headers with Content-Length ``length``, then silence until the client leaves (<= 120 s)."""
    head = http_head(_OK, [_HTML, ("Content-Length", str(length))])
    return scripted(head, then="hold", name="hold_after_headers")


def silent() -> RawServer:
    """Reads the request and never answers (until the client leaves, <= 120 s)."""
    return scripted(b"", then="hold", name="silent")


def garbage_status(kind: Literal["status", "bytes"] = "status") -> RawServer:
    """``HTTP/1.1 ABC WHAT`` as status line, or (kind="bytes") binary garbage, then close."""
    if kind == "status":
        data = b"HTTP/1.1 ABC WHAT\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    else:
        data = b"\x00\xff\xfe\x13garbage\x07\x1b[0m\xde\xad\xbe\xef\r\n\r\n" * 4
    return scripted(data, name=f"garbage_status[{kind}]")


def conflicting_content_length() -> RawServer:
    head = http_head(_OK, [_HTML, ("Content-Length", "10"), ("Content-Length", "20")])
    return scripted(head + b"0123456789" * 2, name="conflicting_content_length")


def bad_content_length() -> RawServer:
    head = http_head(_OK, [_HTML, ("Content-Length", "abc")])
    return scripted(head + b"0123456789", name="bad_content_length")


def short_body() -> RawServer:
    """Content-Length 1000, 10 bytes, then FIN."""
    head = http_head(_OK, [_HTML, ("Content-Length", "1000")])
    return scripted(head + b"<html>0123", name="short_body")


def truncated_chunked() -> RawServer:
    """Chunked encoding, two chunks, then FIN without the terminating 0-chunk."""
    head = http_head(_OK, [_HTML, ("Transfer-Encoding", "chunked")])
    return scripted(head + b"6\r\n<html>\r\n5\r\nhello\r\n", name="truncated_chunked")


def reset_mid_body() -> RawServer:
    """Content-Length 1000, 100 bytes, then RST."""
    head = http_head(_OK, [_HTML, ("Content-Length", "1000")])
    return scripted(head + b"<html>" + b"x" * 94, then="reset", name="reset_mid_body")


def reset_mid_close_delimited_body() -> RawServer:
    """No Content-Length nor chunking (the body ends at close), 100 bytes, then RST, not FIN."""
    head = http_head(_OK, [_HTML])
    return scripted(head + b"<html>" + b"x" * 94, then="reset",
                    name="reset_mid_close_delimited_body")


def huge_headers(kind: Literal["long", "many"] = "long") -> RawServer:
    """200 with one 100 KB header line (``long``) or 10,000 header lines (``many``)."""
    if kind == "long":
        extra = [("X-Huge", "a" * 100_000)]
    else:
        extra = [(f"X-Many-{i}", "v") for i in range(10_000)]
    head = http_head(_OK, [_HTML, *extra, ("Content-Length", "2")])
    return scripted(head + b"ok", name=f"huge_headers[{kind}]")


def close_immediately(*, read_request: bool = True, reset: bool = False) -> RawServer:
    """Close (or RST) without a byte of response; ``read_request=False``: right at accept.

    aiohttp retries a GET once on this, so the log shows two requests per client call.
    """

    async def behave(conn: RawConn) -> None:
        if reset:
            conn.reset()
        else:
            conn.writer.close()

    return RawServer(behave, name="close_immediately", read_request=read_request)


def no_content_length_close_delimited(
    body: str | bytes = "", *, http_version: str = "1.0"
) -> RawServer:
    """A VALID response without Content-Length or chunking: the body ends at connection close."""
    data = body.encode() if isinstance(body, str) else body
    data = data or html_page("close-delimited").encode()
    head = http_head(f"HTTP/{http_version} 200 OK", [_HTML])
    return scripted(head + data, name="close_delimited")


def _bomb(
    coding: Coding, decompressed_size: int, *, content_length: bool, chunked: bool
) -> RawServer:
    if content_length and chunked:
        raise ValueError("a bomb is either content_length or chunked, not both")
    label = "deflate" if coding == "deflate-raw" else coding

    async def behave(conn: RawConn) -> None:
        body = bomb_body(coding, decompressed_size)
        headers = [("Content-Type", "text/html"), ("Content-Encoding", label)]
        if content_length:
            headers.append(("Content-Length", str(len(body))))
        elif chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        if not await conn.send(http_head(_OK, headers)):
            return
        view = memoryview(body)
        for i in range(0, len(body), 64 * KiB):
            piece = bytes(view[i : i + 64 * KiB])
            if chunked:
                piece = b"%x\r\n%s\r\n" % (len(piece), piece)
            if not await conn.send(piece):
                return
        if chunked:
            await conn.send(b"0\r\n\r\n")

    framing = "cl" if content_length else "chunked" if chunked else "close"
    return RawServer(
        behave,
        name=f"{coding}_bomb[{framing}]",
        setup=functools.partial(bomb_body, coding, decompressed_size),
    )


def gzip_bomb(
    decompressed_size: int = GiB, *, content_length: bool = True, chunked: bool = False
) -> RawServer:
    """Content-Encoding gzip, decoding to ``decompressed_size`` bytes (prefix + zeros).

    ``content_length=False`` sends it close-delimited, or chunked with ``chunked=True``.
    """
    return _bomb("gzip", decompressed_size, content_length=content_length, chunked=chunked)


def deflate_bomb(
    decompressed_size: int = GiB,
    *,
    content_length: bool = True,
    chunked: bool = False,
    raw: bool = False,
) -> RawServer:
    """Like ``gzip_bomb`` with Content-Encoding deflate: zlib-wrapped, or bare if ``raw``."""
    coding: Coding = "deflate-raw" if raw else "deflate"
    return _bomb(coding, decompressed_size, content_length=content_length, chunked=chunked)


def brotli_bomb(
    decompressed_size: int = GiB, *, content_length: bool = True, chunked: bool = False
) -> RawServer:
    return _bomb("br", decompressed_size, content_length=content_length, chunked=chunked)
