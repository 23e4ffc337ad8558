"""Route handlers: which pages are extracted, by what code, and how it is run.

A handler is matched by a regular expression searched in the page's final URL (the first
route that matches wins). It is given a ``Page`` and yields dicts (items) and
``page.follow(href)`` (links for a crawl to follow). It runs on the event loop under the
run's ``--timeout``; one marked ``cpu=True`` runs in a worker process instead. Whatever it
raises becomes the page record's error (kind ``handler``): a handler cannot end a crawl.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shoal.engine.offload import Offload
from shoal.errors import ConfigError, ErrorKind, FetchError
from shoal.extract.page import Follow, Page

MAX_ITEMS = 10_000  # items one page may yield; more is a handler error
MAX_FOLLOWS = 100_000  # links one page may ask to follow

Handler = Callable[[Page], Any]


@dataclass(frozen=True, slots=True)
class Route:
    """One ``pattern -> handler`` rule."""

    pattern: re.Pattern[str]
    handler: Handler
    cpu: bool = False
    follow_links: bool = False  # crawl: also follow every link, as for a page no route has


@dataclass(slots=True)
class Extracted:
    """What a handler produced for one page."""

    items: list[bytes] = field(default_factory=list)  # one JSON object each
    follows: list[str] = field(default_factory=list)  # absolute, normalised URLs
    error: FetchError | None = None


class Router:
    """The ordered routes of a run."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def __bool__(self) -> bool:
        return bool(self.routes)

    def add(self, pattern: str, handler: Handler, *, cpu: bool = False,
            follow_links: bool = False) -> None:
        """Route pages whose final URL matches ``pattern`` (``re.search``) to ``handler``.

        Raises:
            ConfigError: the pattern does not compile, or the handler cannot run as asked.
        """
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"route pattern {pattern!r} does not compile: {exc}") from exc
        if not callable(handler):
            raise ConfigError(f"route {pattern!r}: the handler must be callable")
        if cpu:
            if inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler):
                raise ConfigError(f"route {pattern!r}: a cpu=True handler runs in another "
                                  "process and must be a plain (not async) function")
            try:
                pickle.dumps(handler)
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                raise ConfigError(f"route {pattern!r}: a cpu=True handler must be a "
                                  f"module-level function, importable by name ({exc})"
                                  ) from exc
        self.routes.append(Route(compiled, handler, cpu, follow_links))

    def match(self, url: str) -> Route | None:
        for route in self.routes:
            if route.pattern.search(url):
                return route
        return None


async def run_handler(route: Route, page: Page, *, limit: float, offload: Offload
                      ) -> Extracted:
    """Run ``route``'s handler on ``page``; every failure is in ``Extracted.error``.

    Cancellation is re-raised (after closing the handler's generator).
    """
    try:
        async with asyncio.timeout(limit):
            if route.cpu:
                items, follows, error = await offload.in_process(
                    _run_sync, route.handler, page.url, page.final_url, page.status,
                    page.headers, page.body, page.depth)
                if error is not None:
                    return Extracted(error=FetchError(ErrorKind.HANDLER, error))
                return Extracted(items, follows)
            out = Extracted()
            result = route.handler(page)
            if inspect.isasyncgen(result):
                async with contextlib.aclosing(result) as gen:
                    async for value in gen:
                        _collect(value, out)
            else:
                if inspect.isawaitable(result):
                    result = await result
                for value in _iterable(result):
                    _collect(value, out)
            return out
    except TimeoutError:
        return Extracted(error=FetchError(
            ErrorKind.HANDLER, f"handler {_name(route)} took longer than --timeout {limit} s"))
    except Exception as exc:
        return Extracted(error=FetchError(ErrorKind.HANDLER, f"{_name(route)}: {_describe(exc)}"))


def _name(route: Route) -> str:
    return getattr(route.handler, "__qualname__", None) or repr(route.handler)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _iterable(result: Any) -> Iterable[Any]:
    if result is None:
        return ()
    if isinstance(result, Mapping | Follow):
        return (result,)
    if isinstance(result, Iterable) and not isinstance(result, str | bytes):
        return result
    raise TypeError(f"handler returned {type(result).__name__}; yield dicts (items) or "
                    "page.follow(href)")


def _collect(value: Any, out: Extracted) -> None:
    if isinstance(value, Follow):
        if len(out.follows) >= MAX_FOLLOWS:
            raise ValueError(f"more than {MAX_FOLLOWS} links to follow from one page")
        out.follows.append(value.url)
    elif isinstance(value, Mapping):
        if len(out.items) >= MAX_ITEMS:
            raise ValueError(f"more than {MAX_ITEMS} items from one page")
        try:
            out.items.append(orjson.dumps(dict(value), option=orjson.OPT_NON_STR_KEYS))
        except TypeError as exc:
            raise TypeError(f"item is not JSON-serialisable: {exc}") from exc
    else:
        raise TypeError(f"handler yielded {type(value).__name__}; yield dicts (items) or "
                        "page.follow(href)")


def _run_sync(handler: Handler, url: str, final_url: str, status: int,
              headers: dict[str, str], body: bytes, depth: int
              ) -> tuple[list[bytes], list[str], str | None]:
    """In a worker process: run a plain handler; failures come back as a message."""
    page = Page(url=url, final_url=final_url, status=status, headers=headers, body=body,
                depth=depth)
    out = Extracted()
    try:
        for value in _iterable(handler(page)):
            _collect(value, out)
    except Exception as exc:
        return [], [], f"{getattr(handler, '__qualname__', handler)}: {_describe(exc)}"
    return out.items, out.follows, None
