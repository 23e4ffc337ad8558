"""Scrapy on the same job: a spider over the URL list (or from a seed), feed export to JSON lines.

Settings, chosen to match shoal and to be fair to Scrapy (see bench/README.md):
CONCURRENT_REQUESTS = --concurrency, CONCURRENT_REQUESTS_PER_DOMAIN = --per-host,
DOWNLOAD_DELAY = --delay with no jitter (DOWNLOAD_DELAY_JITTER = 0, which replaces
RANDOMIZE_DOWNLOAD_DELAY = False in Scrapy 2.19), CONCURRENT_ITEMS = 1 (Scrapy
2.13+ on the asyncio reactor starts that many tasks per response; the default 100 costs
a lot), the asyncio reactor on uvloop, ROBOTSTXT_OBEY on like shoal, LOG_LEVEL INFO, no
autothrottle, no telnet console. Titles and links with selectolax like every other tool.
crawl: follow every link (Scrapy's own duplicate filter), CLOSESPIDER_ITEMCOUNT = --max-pages.
"""

from __future__ import annotations

import asyncio
from typing import Any

import scrapy
from common import LagMonitor, absolute_links, extract, parse_args, read_urls, record
from scrapy import signals
from scrapy.crawler import CrawlerProcess


class BenchSpider(scrapy.Spider):
    name = "bench"

    def __init__(self, *a: Any, mode: str, source: str, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.mode, self.source = mode, source
        self.lag = LagMonitor()
        self._lag_task: asyncio.Task[None] | None = None

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> BenchSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider._opened, signal=signals.spider_opened)
        crawler.signals.connect(spider._closed, signal=signals.spider_closed)
        return spider

    def _opened(self, spider: scrapy.Spider) -> None:
        self._lag_task = asyncio.get_event_loop().create_task(self.lag.run())

    def _closed(self, spider: scrapy.Spider) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
        self.lag.report()

    async def start(self):  # type: ignore[override]
        urls = read_urls(self.source) if self.mode == "fetch" else [self.source]
        for url in urls:
            yield scrapy.Request(url, callback=self.parse, errback=self.failed)

    def parse(self, response: scrapy.http.Response):  # type: ignore[override]
        crawl = self.mode == "crawl"
        title, links, hrefs = extract(response.text, want_links=crawl)
        yield record(response.url, response.status, title, links)
        if crawl:
            for url in absolute_links(response.url, hrefs):
                yield scrapy.Request(url, callback=self.parse, errback=self.failed)

    def failed(self, failure: Any):
        request = failure.request
        status = getattr(getattr(failure.value, "response", None), "status", None)
        yield record(request.url, status, None, 0, repr(failure.value)[:200])


def main() -> None:
    args = parse_args()
    settings = {
        "BOT_NAME": "bench",
        "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
        "ASYNCIO_EVENT_LOOP": "uvloop.Loop",
        "CONCURRENT_REQUESTS": args.concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": args.per_host,
        "DOWNLOAD_DELAY": args.delay,
        "DOWNLOAD_DELAY_JITTER": 0,  # Scrapy 2.19 spelling of RANDOMIZE_DOWNLOAD_DELAY=False
        "CONCURRENT_ITEMS": 1,
        "ROBOTSTXT_OBEY": True,
        "AUTOTHROTTLE_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "INFO",
        "DOWNLOAD_TIMEOUT": 30,
        "RETRY_TIMES": 2,
        "FEEDS": {args.output: {"format": "jsonlines", "encoding": "utf8", "overwrite": True}},
    }
    if args.mode == "crawl" and args.max_pages:
        settings["CLOSESPIDER_ITEMCOUNT"] = args.max_pages
    process = CrawlerProcess(settings)
    process.crawl(BenchSpider, mode=args.mode, source=args.source)
    process.start()


if __name__ == "__main__":
    main()
