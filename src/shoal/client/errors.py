"""The one place where aiohttp, asyncio, ssl and OS errors become an ErrorKind."""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiohttp
from aiohttp import http_exceptions

from shoal.errors import ErrorKind, FetchError


def _text(exc: BaseException) -> str:
    """One line of at most 300 characters (aiohttp's parser errors span several)."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= 300 else msg[:297] + "..."


def map_exception(exc: BaseException, *, timeout: float | None = None) -> FetchError:
    """Classify an exception raised while fetching one URL; most specific class first."""
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        limit = f" within {timeout:g} s (--timeout)" if timeout is not None else ""
        return FetchError(ErrorKind.TIMEOUT, f"no complete response{limit}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return FetchError(ErrorKind.DNS, f"cannot resolve host: {_text(exc)}")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError
                  | ssl.SSLError | ssl.CertificateError):
        return FetchError(ErrorKind.TLS, _text(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, socket.gaierror):
            return FetchError(ErrorKind.DNS, f"cannot resolve host: {_text(exc)}")
        return FetchError(ErrorKind.CONNECT, _text(exc))
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return FetchError(ErrorKind.UNSUPPORTED_SCHEME, _text(exc))
    if isinstance(exc, aiohttp.InvalidURL):
        return FetchError(ErrorKind.INVALID_URL, _text(exc))
    if isinstance(exc, aiohttp.ClientPayloadError):
        return FetchError(ErrorKind.PROTOCOL, f"broken body: {_text(exc)}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return FetchError(ErrorKind.CONNECT, "server closed the connection early")
    if isinstance(exc, aiohttp.ClientResponseError | http_exceptions.HttpProcessingError):
        # raised by the response parser: bad status line, bad or huge headers
        message = " ".join(str(getattr(exc, "message", "") or "").split()) or _text(exc)
        return FetchError(ErrorKind.PROTOCOL, f"malformed response: {message[:300]}")
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError | OSError):
        return FetchError(ErrorKind.CONNECT, _text(exc))
    if isinstance(exc, aiohttp.ClientError):
        return FetchError(ErrorKind.PROTOCOL, _text(exc))
    if isinstance(exc, UnicodeError | ValueError):
        return FetchError(ErrorKind.INVALID_URL, _text(exc))
    raise TypeError(f"unexpected exception while fetching: {exc!r}") from exc
