"""The private-network guard end to end. Every target is on loopback, so even a broken guard
could only ever reach this machine; the guard's allow-list opens 127.0.0.2 for the "public"
side of each test and 127.0.0.1 plays the private network."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

import shoal
from tests.conftest import read_records, run_shoal, write_urls
from tests.servers import html_page, redirect, site

pytestmark = pytest.mark.timeout(60)

PUBLIC = "127.0.0.2"  # allowed by the tests' allow-list
PRIVATE = "127.0.0.1"  # stands for every blocked address


class MapResolver(AbstractResolver):
    """Resolves names by a table (a list of answers per call, to simulate rebinding)."""

    def __init__(self, table: dict[str, Callable[[int], list[str]]]) -> None:
        self.table = table
        self.calls: dict[str, int] = {}

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        n = self.calls[host] = self.calls.get(host, 0) + 1
        return [ResolveResult(hostname=host, host=addr, port=port, family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)
                for addr in self.table[host](n)]

    async def close(self) -> None:
        pass


def guarded(**kw: Any) -> shoal.Config:
    return shoal.Config(block_private=True, allow_net=(f"{PUBLIC}/32",), **kw)


def kinds(records: list[shoal.Record]) -> dict[str, str | None]:
    return {r.url: (str(r.error.kind) if r.error else None) for r in records}


async def test_loopback_is_blocked_by_default_and_nothing_is_sent() -> None:
    async with site({"/": html_page("x")}) as srv:
        records = await shoal.fetch([srv.url("/")], shoal.Config(block_private=True))
    (r,) = records
    assert r.error is not None and r.error.kind == "blocked_address"
    assert "127.0.0.0/8" in r.error.message
    assert srv.log.count() == 0  # not even robots.txt


async def test_allowed_network_is_fetched() -> None:
    async with site({"/": html_page("ok")}, host=PUBLIC) as srv:
        (r,) = await shoal.fetch([srv.url("/")], guarded())
    assert r.status == 200 and r.title == "ok"


async def test_redirect_from_allowed_host_to_blocked_host_is_stopped() -> None:
    async with site({"/secret": html_page("secret")}, host=PRIVATE) as private, \
            site({"/go": redirect(private.url("/secret"))}, host=PUBLIC) as public:
        (r,) = await shoal.fetch([public.url("/go")], guarded())
    assert r.error is not None and r.error.kind == "blocked_address"
    assert r.redirects == [private.url("/secret")]
    assert private.log.count() == 0 and public.log.count(path_prefix="/go") == 1


async def test_names_that_resolve_to_blocked_addresses_are_blocked() -> None:
    async with site({"/": html_page("ok")}, host=PUBLIC) as srv:
        resolver = MapResolver({"good.test": lambda n: [PUBLIC],
                                "evil.test": lambda n: [PRIVATE]})
        urls = [f"http://good.test:{srv.port}/", f"http://evil.test:{srv.port}/"]
        async with shoal.Crawler(guarded(), resolver=resolver) as crawler:
            got = kinds([r async for r in crawler.fetch(urls)])
    assert got == {urls[0]: None, urls[1]: "blocked_address"}


async def test_only_allowed_answers_are_connected_to() -> None:
    # one name, two answers: the blocked one must never be used, whatever the order
    connections: list[str] = []

    async def trap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append("private")  # the blocked address on the very same port
        writer.close()

    async with site({"/": html_page("public")}, host=PUBLIC) as public:
        private = await asyncio.start_server(trap, PRIVATE, public.port)
        try:
            resolver = MapResolver({"mixed.test": lambda n: [PRIVATE, PUBLIC]})
            url = f"http://mixed.test:{public.port}/"
            async with shoal.Crawler(guarded(robots=False), resolver=resolver) as crawler:
                (r,) = [r async for r in crawler.fetch([url])]
        finally:
            private.close()
            await private.wait_closed()
    assert r.status == 200 and r.title == "public"
    assert connections == []


async def test_rebinding_after_a_good_answer_is_caught() -> None:
    # the name answers the allowed address first, then a blocked one (DNS rebinding): every
    # connection is checked on the address it actually uses
    async with site({f"/p/{i}": html_page(str(i)) for i in range(3)}, host=PUBLIC) as srv:
        resolver = MapResolver({"rebind.test": lambda n: [PUBLIC] if n == 1 else [PRIVATE]})
        urls = [f"http://rebind.test:{srv.port}/p/{i}" for i in range(3)]
        cfg = guarded(robots=False, per_host=1, concurrency=1)
        async with shoal.Crawler(cfg, resolver=resolver) as crawler:
            records = [r async for r in crawler.fetch(urls)]
    for r in records:
        assert r.status == 200 or (r.error is not None and r.error.kind == "blocked_address")
    assert srv.log.count() == sum(1 for r in records if r.status == 200)


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.1",
                                      "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "localhost"])
async def test_numeric_and_mapped_spellings_are_blocked(spelling: str) -> None:
    async with site({"/": html_page("x")}, host=PRIVATE) as srv:
        url = f"http://{spelling}:{srv.port}/"
        (r,) = await shoal.fetch([url], guarded(robots=False))
    if r.error is not None and r.error.kind == "invalid_url":
        pytest.skip(f"{spelling} is not a URL host to the normaliser")  # refused earlier
    assert r.error is not None and r.error.kind == "blocked_address", r
    assert srv.log.count() == 0


async def test_cli_block_private_and_allow_net(tmp_path: Path) -> None:
    async with site({"/": html_page("x")}, host=PRIVATE) as srv:
        inp = write_urls(tmp_path / "u.txt", [srv.url("/")])
        out = tmp_path / "o.jsonl"
        run = await run_shoal("fetch", str(inp), "-o", str(out), "-q", "--block-private")
        assert run.code == 0, run.stderr
        assert read_records(out)[0]["error"]["kind"] == "blocked_address"  # type: ignore[index]
        run = await run_shoal("fetch", str(inp), "-o", str(out), "-q", "--fresh",
                              "--block-private", "--allow-net", "127.0.0.0/8")
        assert read_records(out)[0]["status"] == 200
        bad = await run_shoal("fetch", str(inp), "--block-private", "--allow-net", "nope")
    assert bad.code == 2 and "--allow-net 'nope'" in bad.stderr
