"""A small static server for the farm when nginx is absent (and for the smoke test).

aiohttp, one process. It listens on each farm address (127.0.0.x, never a public one) on
one port, and answers like the nginx config in ``nginx.py``: the host is the loopback
address the request arrived on (the Host header is ignored), ``/p/<n>.html`` and
``robots.txt`` come from ``sites/<address>/``, ``/m/<k>/<n>.html`` serves ``/p/<n>.html``,
anything else is 404. It is slower than nginx (one Python core); use it for correctness,
not for throughput figures.

Usage: python bench/server.py FARM_DIR --port 8088   (prints "ready" once listening)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from pathlib import Path

from aiohttp import web

_ALIAS = re.compile(r"^/m/\d+/(\d+\.html)$")
_PAGE = re.compile(r"^/p/\d+\.html$")


def make_app(farm: Path) -> web.Application:
    sites = farm / "sites"

    async def handle(request: web.Request) -> web.StreamResponse:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        addr = sock[0] if sock else ""
        path = request.path
        m = _ALIAS.match(path)
        if m is not None:
            path = "/p/" + m.group(1)
        if path == "/robots.txt":
            ctype = "text/plain"
        elif _PAGE.match(path):
            ctype = "text/html"
        else:
            raise web.HTTPNotFound()
        try:
            body = (sites / addr / path[1:]).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise web.HTTPNotFound() from None
        return web.Response(body=body, content_type=ctype, charset="utf-8")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    return app


async def serve(farm: Path, port: int, addrs: list[str], ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or forever)."""
    for a in addrs:
        if not a.startswith("127."):
            raise ValueError(f"refusing to listen on a non-loopback address: {a}")
    runner = web.AppRunner(make_app(farm), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        for a in addrs:
            await web.TCPSite(runner, a, port, backlog=1024).start()
        if ready is not None:
            ready.set()
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="serve the benchmark farm on loopback")
    ap.add_argument("farm", type=Path)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    addrs = json.loads((args.farm / "truth.json").read_text())["hosts"]

    async def run() -> None:
        ready, stop = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(serve(args.farm, args.port, addrs, ready, stop))
        await asyncio.wait([task, asyncio.create_task(ready.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            print("ready", flush=True)
        await task

    try:
        import uvloop
        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
