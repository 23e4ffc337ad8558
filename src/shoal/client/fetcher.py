"""The HTTP client: one aiohttp session, one hop per call, every attempt under a deadline."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace, TracebackType
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDictProxy
from yarl import URL

from shoal.client.capture import Capture
from shoal.client.deadline import Deadlines
from shoal.client.decoders import Overflow, decoder_for
from shoal.client.errors import map_exception
from shoal.client.guard import GuardedConnector
from shoal.config import Config
from shoal.core.netguard import NetGuard
from shoal.errors import ErrorKind, FetchError

REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_DRAIN_LIMIT = 64 * 1024  # read a redirect body this far to keep the connection


@dataclass(slots=True)
class Response:
    """One hop's answer: status, the headers we use, and the decoded body."""

    url: str
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    elapsed: float  # seconds for this hop
    truncated: bool = False  # only with truncate=True: the body passed the cap
    capture: Capture | None = None  # with capture=True: the exchange as received (WARC)

    @property
    def location(self) -> str | None:
        return self.headers.get("Location") if self.status in REDIRECT_STATUS else None

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


class _ClientResponse(aiohttp.ClientResponse):
    """Remembers how the connection ended: a body that ends at connection close is only
    complete when the close was clean (FIN), not a reset."""

    lost: asyncio.Future[None] | None = None

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        proto = connection.protocol
        if proto is not None and self.lost is None:
            # taken before any answer is read, so connection_lost cannot have come yet
            self.lost = proto.closed
            if self.lost is not None and self.lost not in _WATCHED:
                _WATCHED.add(self.lost)  # once per connection, however often it is reused
                self.lost.add_done_callback(_retrieve)
        return await super().start(connection)

    def reset_at_end(self) -> bool:
        """True when the connection was torn down with an error (e.g. ECONNRESET)."""
        lost = self.lost
        return (lost is not None and lost.done() and not lost.cancelled()
                and lost.exception() is not None)


_WATCHED: weakref.WeakSet[asyncio.Future[None]] = weakref.WeakSet()


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # seen: asyncio must not log it as never retrieved


def too_large(limit: int, status: int) -> FetchError:
    return FetchError(ErrorKind.TOO_LARGE, f"body passed --max-bytes {limit} bytes",
                      status=status)


class Fetcher:
    """Owns the aiohttp session; ``get`` makes one request and reads its body under a cap."""

    def __init__(self, config: Config, *, connector: aiohttp.BaseConnector | None = None,
                 resolver: AbstractResolver | None = None) -> None:
        self._config = config
        self._connector = connector
        self._resolver = resolver
        # called with a request's ``token`` the moment its headers are written to the socket
        self.on_sent: Callable[[Any], None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._traced: aiohttp.ClientSession | None = None
        self._deadlines = Deadlines()  # one timer per tick, not one per request

    async def __aenter__(self) -> Fetcher:
        cfg = self._config
        options: dict[str, Any] = {
            "limit": cfg.concurrency + 16,  # our own limits apply first; robots need room
            "limit_per_host": 0,
            "ttl_dns_cache": 300,
            "enable_cleanup_closed": True,
            "resolver": self._resolver,
        }
        connector = self._connector or (
            GuardedConnector(NetGuard(cfg.allow_net), **options) if cfg.block_private
            else aiohttp.TCPConnector(**options))
        common: dict[str, Any] = {
            "timeout": aiohttp.ClientTimeout(total=None, sock_connect=cfg.timeout),
            "auto_decompress": False,  # we decode ourselves, under the size cap
            "response_class": _ClientResponse,
            "cookie_jar": aiohttp.DummyCookieJar(),
            "headers": {
                "User-Agent": cfg.user_agent,
                "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
                "Accept-Encoding": "gzip, deflate, br",
            },
            "raise_for_status": False,
        }
        # Two sessions over one connection pool: requests with a ``token`` go through the
        # traced one, which tells ``on_sent`` when they leave; the rest skip aiohttp's
        # trace signals (a dozen awaits a request).
        self._session = aiohttp.ClientSession(connector=connector, **common)
        self._traced = aiohttp.ClientSession(connector=connector, connector_owner=False,
                                             trace_configs=[self._trace_sends()], **common)
        # aiohttp silently re-sends a GET once when the connection drops before the
        # headers; that second request would skip the host's delay and our attempt count.
        for session in (self._session, self._traced):
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _trace_sends(self) -> aiohttp.TraceConfig:
        """Tell ``on_sent`` when a request really leaves: politeness is measured by the
        server at that moment, not when a worker was handed the URL."""
        trace = aiohttp.TraceConfig()

        async def headers_sent(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                               params: aiohttp.TraceRequestHeadersSentParams) -> None:
            token = ctx.trace_request_ctx
            if token is not None and self.on_sent is not None:
                self.on_sent(token)

        trace.on_request_headers_sent.append(headers_sent)
        return trace

    async def close(self) -> None:
        if self._traced is not None:
            traced, self._traced = self._traced, None
            await traced.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def get(
        self,
        url: str,
        *,
        max_bytes: int | None = None,
        truncate: bool = False,
        headers: dict[str, str] | None = None,
        token: Any = None,
        capture: bool = False,
    ) -> Response:
        """One GET, no redirect following, the whole attempt bounded by ``--timeout``.

        With ``truncate`` a body over the cap is cut (robots.txt); otherwise it raises
        ``FetchError(too_large)``. Every failure is a FetchError. With ``capture`` the
        response carries the exchange as received (for a WARC; the caller closes it).
        With a ``token``, ``on_sent(token)`` is called when the request is written.
        """
        assert self._session is not None, "Fetcher used outside 'async with'"
        session = self._traced if token is not None else self._session
        assert session is not None
        limit = self._config.max_bytes if max_bytes is None else max_bytes
        timeout = self._config.timeout
        started = time.monotonic()
        resp: aiohttp.ClientResponse | None = None
        cap: Capture | None = None
        try:
            async with self._deadlines.after(timeout):
                # the URL is already normalised and percent-encoded: skip yarl's re-quoting
                resp = await session.get(URL(url, encoded=True), allow_redirects=False,
                                         headers=headers, trace_request_ctx=token)
                if capture:
                    cap = _capture(resp)
                if resp.status in REDIRECT_STATUS and "Location" in resp.headers:
                    body = await self._drain(resp)
                    if cap is not None:
                        if resp.content_length is not None and len(body) == resp.content_length:
                            cap.feed(body)
                            cap.finish()
                        else:  # not read (too big to keep the connection for): not archived
                            cap.close()
                            cap = None
                    return Response(url, resp.status, resp.headers, body,
                                    time.monotonic() - started, capture=cap)
                body, cut = await self._read(resp, limit, truncate, cap)
                return Response(url, resp.status, resp.headers, body,
                                time.monotonic() - started, truncated=cut, capture=cap)
        except Exception as exc:
            if cap is not None:
                cap.close()
            if resp is not None:
                resp.close()  # never return a half-read connection to the pool
                resp = None
            raise map_exception(exc, timeout=timeout) from exc
        except BaseException:
            if cap is not None:
                cap.close()
            if resp is not None:
                resp.close()
                resp = None
            raise
        finally:
            if resp is not None:
                resp.release()

    @staticmethod
    async def _drain(resp: aiohttp.ClientResponse) -> bytes:
        """Read a redirect's small body so the connection can be reused; close on a big one."""
        if resp.content_length is not None and resp.content_length <= _DRAIN_LIMIT:
            return await resp.read()
        resp.close()
        return b""

    @staticmethod
    async def _read(resp: aiohttp.ClientResponse, limit: int, truncate: bool,
                    cap: Capture | None = None) -> tuple[bytes, bool]:
        encoding = resp.headers.get("Content-Encoding")
        decoder = decoder_for(encoding)
        length = resp.content_length
        plain = not encoding or encoding.strip().lower() == "identity"
        if plain and length is not None:
            if length <= limit:
                body = await resp.read()  # the fast path: one read of a known size
                if cap is not None:
                    cap.feed(body)
                    cap.finish()
                return body, False
            if not truncate:
                resp.close()
                raise too_large(limit, resp.status)
        parts: list[bytes] = []
        room = limit
        try:
            async for chunk in resp.content.iter_any():
                if cap is not None:
                    cap.feed(chunk)  # as received: still content-encoded
                out = decoder.feed(chunk, room)
                room -= len(out)
                parts.append(out)
            out = decoder.finish(room)
            parts.append(out)
        except Overflow as over:
            resp.close()
            if not truncate:
                raise too_large(limit, resp.status) from None
            parts.append(over.partial)  # robots.txt: keep what fits under the cap
            return b"".join(parts)[:limit], True
        except Exception as exc:
            if isinstance(exc, aiohttp.ClientError | ConnectionError | TimeoutError):
                raise
            # zlib.error, brotli.error: the server's encoding is broken
            raise FetchError(ErrorKind.PROTOCOL,
                             f"cannot decode {encoding} body: {exc}") from exc
        if (length is None and "chunked" not in resp.headers.get("Transfer-Encoding", "").lower()
                and isinstance(resp, _ClientResponse) and resp.reset_at_end()):
            # the body ends at connection close, and the close was a reset: it may be cut
            raise FetchError(ErrorKind.PROTOCOL, "broken body: the connection was reset before "
                             "the end of a body delimited by connection close")
        if cap is not None:
            cap.finish()
        return b"".join(parts), False


def _capture(resp: aiohttp.ClientResponse) -> Capture:
    """Start capturing ``resp`` (its headers as received, the request as sent)."""
    info = resp.request_info
    ip = None
    # the connection is already released when the whole body came with the headers: the
    # stream's protocol still knows the transport then
    transport = resp.connection.transport if resp.connection is not None else None
    if transport is None:
        protocol = getattr(resp.content, "_protocol", None)
        transport = getattr(protocol, "transport", None)
    if transport is not None:
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) and peer else None
    chunked = "chunked" in resp.headers.get("Transfer-Encoding", "").lower()
    return Capture(
        method=info.method, target=info.url.raw_path_qs,
        request_headers=list(info.headers.items()),
        protocol=f"HTTP/{resp.version.major}.{resp.version.minor}" if resp.version
        else "HTTP/1.1",
        status=resp.status, reason=resp.reason or "",
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers],
        chunked=chunked, ip=ip)
