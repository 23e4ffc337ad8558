"""The script a reader of asyncio tutorials writes: aiohttp + asyncio.gather + a semaphore.

fetch: one ClientSession, one task per URL under ``asyncio.gather``, an
``asyncio.Semaphore(concurrency)``, selectolax for title and links, uvloop. With
``--delay`` (the polite workload) each host also gets a gate: at most ``--per-host``
requests in flight (the connector's ``limit_per_host``) and request starts at least
``--delay`` apart, waited for before taking a global slot.

crawl: the tutorial queue crawler: an ``asyncio.Queue``, ``concurrency`` worker tasks,
a ``seen`` set for deduplication, stop after ``--max-pages`` URLs.

No robots.txt (tutorials skip it; 100 requests in 100,000 do not change the figures).
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit

import aiohttp
import uvloop
from common import LagMonitor, absolute_links, dumps, extract, parse_args, read_urls, record


class HostGate:
    """Per host: request starts at least ``delay`` apart."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.locks: dict[str, asyncio.Lock] = {}
        self.next_start: dict[str, float] = {}

    async def wait(self, host: str) -> None:
        lock = self.locks.setdefault(host, asyncio.Lock())
        async with lock:
            loop = asyncio.get_running_loop()
            wait = self.next_start.get(host, 0.0) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.next_start[host] = loop.time() + self.delay


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int | None, str, str | None]:
    try:
        async with session.get(url) as resp:
            return resp.status, await resp.text(), None
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, "", f"{type(exc).__name__}: {exc}"


async def fetch_all(args) -> None:
    sem = asyncio.Semaphore(args.concurrency)
    per_host = args.per_host if args.per_host < args.concurrency else 0
    gate = HostGate(args.delay) if args.delay > 0 else None
    host_slots: dict[str, asyncio.Semaphore] = {}
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=per_host)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        with open(args.output, "w") as out:  # noqa: ASYNC230 - buffered writes, as tutorials do

            async def fetch(url: str) -> None:
                if gate is not None:
                    host = urlsplit(url).netloc
                    slot = host_slots.setdefault(host, asyncio.Semaphore(args.per_host))
                    async with slot:
                        await gate.wait(host)
                        async with sem:
                            status, html, error = await get(session, url)
                else:
                    async with sem:
                        status, html, error = await get(session, url)
                title, links, _ = extract(html, want_links=False) if html else (None, 0, [])
                out.write(dumps(record(url, status, title, links, error)))

            await asyncio.gather(*(fetch(url) for url in read_urls(args.source)))


async def crawl(args) -> None:
    max_pages = args.max_pages or sys.maxsize
    queue: asyncio.Queue[str] = asyncio.Queue()
    seen = {args.source}
    queue.put_nowait(args.source)
    connector = aiohttp.TCPConnector(limit=args.concurrency,
                                     limit_per_host=args.per_host
                                     if args.per_host < args.concurrency else 0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        with open(args.output, "w") as out:  # noqa: ASYNC230 - buffered writes, as tutorials do

            async def worker() -> None:
                while True:
                    url = await queue.get()
                    try:
                        status, html, error = await get(session, url)
                        title, links, hrefs = (extract(html, want_links=True) if html
                                               else (None, 0, []))
                        out.write(dumps(record(url, status, title, links, error)))
                        for link in absolute_links(url, hrefs):
                            if link not in seen and len(seen) < max_pages:
                                seen.add(link)
                                queue.put_nowait(link)
                    finally:
                        queue.task_done()

            workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
            await queue.join()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


async def main() -> None:
    args = parse_args()
    lag = LagMonitor()
    lag_task = asyncio.create_task(lag.run())
    try:
        await (fetch_all(args) if args.mode == "fetch" else crawl(args))
    finally:
        lag_task.cancel()
        lag.report()


if __name__ == "__main__":
    uvloop.run(main())
