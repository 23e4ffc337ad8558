"""Crawlee for Python on the same job: HttpCrawler (its plain HTTP crawler, the fastest).

- concurrency: ConcurrencySettings(min = desired = max = --concurrency), so the autoscaled
  pool runs the same number of requests as the other tools from the start;
- storage: MemoryStorageClient (Crawlee's fastest; the default file-system storage writes a
  JSON file per request); records are written straight to the output file in the handler;
- fetch: ``crawler.run(urls)`` with the whole list (streaming the file through a
  RequestList in tandem with the queue took 1.6 times as long);
- robots.txt respected (``respect_robots_txt_file``), retries 2 like shoal;
- HTTP client: impit, the default and the fastest here (httpx took twice the time, curl-cffi
  10% more); CRAWLEE_HTTP_CLIENT=httpx|curl picks another if its extra is installed;
- politeness (--delay): Crawlee has no per-host concurrency limit. The closest it offers is
  a ThrottlingRequestManager with every farm host listed and a crawl delay of --delay set for
  each, which spaces request *dispatches* per host; in-flight per host is not bounded.
Titles and links with selectolax, as every other tool.
"""

from __future__ import annotations

import asyncio
import logging
import os
from urllib.parse import urlsplit

import uvloop
from common import LagMonitor, absolute_links, dumps, extract, parse_args, read_urls, record
from crawlee import ConcurrencySettings
from crawlee.crawlers import BasicCrawlingContext, HttpCrawler, HttpCrawlingContext
from crawlee.request_loaders import ThrottlingRequestManager
from crawlee.storage_clients import MemoryStorageClient
from crawlee.storages import RequestQueue


def http_client():  # type: ignore[no-untyped-def]
    name = os.environ.get("CRAWLEE_HTTP_CLIENT", "impit")
    if name == "httpx":
        from crawlee.http_clients import HttpxHttpClient
        return HttpxHttpClient()
    if name == "curl":
        from crawlee.http_clients import CurlImpersonateHttpClient
        return CurlImpersonateHttpClient()
    from crawlee.http_clients import ImpitHttpClient
    return ImpitHttpClient()


async def main() -> None:
    args = parse_args()
    lag = LagMonitor()
    lag_task = asyncio.create_task(lag.run())
    storage = MemoryStorageClient()
    crawl = args.mode == "crawl"
    c = args.concurrency
    kwargs = {}
    urls: list[str] | None = None
    if args.delay > 0:
        urls = list(read_urls(args.source)) if not crawl else [args.source]
        hosts = sorted({urlsplit(u).hostname or "" for u in urls})
        queue = await RequestQueue.open(storage_client=storage)
        manager = ThrottlingRequestManager(queue, domains=hosts,
                                           request_manager_opener=RequestQueue.open)
        for h in hosts:
            manager.set_crawl_delay(f"http://{h}/", args.delay)  # type: ignore[arg-type]
        kwargs["request_manager"] = manager
    elif not crawl:
        urls = list(read_urls(args.source))
    crawler = HttpCrawler(
        concurrency_settings=ConcurrencySettings(min_concurrency=c, desired_concurrency=c,
                                                 max_concurrency=c),
        storage_client=storage,
        http_client=http_client(),
        respect_robots_txt_file=True,
        max_request_retries=2,
        max_requests_per_crawl=args.max_pages if crawl else None,
        configure_logging=True,
        **kwargs,
    )
    logging.getLogger("crawlee").setLevel(logging.INFO)
    out = open(args.output, "w")  # noqa: ASYNC230, SIM115 - closed below; plain buffered writes

    @crawler.router.default_handler
    async def handler(ctx: HttpCrawlingContext) -> None:
        body = await ctx.http_response.read()
        title, links, hrefs = extract(body, want_links=crawl)
        url = ctx.request.url
        out.write(dumps(record(url, ctx.http_response.status_code, title, links)))
        if crawl:
            await ctx.add_requests(absolute_links(url, hrefs))

    @crawler.failed_request_handler
    async def failed(ctx: BasicCrawlingContext, error: Exception) -> None:
        out.write(dumps(record(ctx.request.url, None, None, 0, repr(error)[:200])))

    try:
        if crawl:
            await crawler.run([args.source])
        else:
            await crawler.run(urls)
    finally:
        out.close()
        lag_task.cancel()
        lag.report()


if __name__ == "__main__":
    uvloop.run(main())
