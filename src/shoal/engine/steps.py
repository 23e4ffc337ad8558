"""What a worker does with one job: robots.txt first, the request, redirects hop by hop,
retries, and the record (with the links a crawl follows). The engine owns the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from shoal.client.fetcher import Fetcher, Response
from shoal.config import Config, CrawlOptions
from shoal.core import urls
from shoal.core.retry import decide, is_retryable_status, parse_retry_after
from shoal.core.robots import MAX_ROBOTS_BYTES, MAX_ROBOTS_REDIRECTS, RobotsPolicy
from shoal.core.scope import Scope
from shoal.engine.offload import Offload
from shoal.engine.scheduler import Host, Job, Scheduler
from shoal.errors import ErrorKind, FetchError, StoreError
from shoal.extract.page import Page
from shoal.extract.router import Router, run_handler
from shoal.parse.html import ParsedPage, looks_like_html, split_content_type
from shoal.parse.sitemap import MAX_SITEMAP_BYTES, parse_sitemap
from shoal.records import Record
from shoal.store.base import PAGE, SITEMAP, NewUrl, PageData

if TYPE_CHECKING:
    from shoal.recrawl import Previous, Prior
    from shoal.warc import WarcWriter

RETRYABLE_KINDS = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECT, ErrorKind.PROTOCOL})
SEEN_FILTER = 200_000  # recently found links remembered to spare the database duplicates


class Steps:
    """Turns a job into a record, or puts it back on the scheduler for a later step."""

    def __init__(self, config: Config, sched: Scheduler, offload: Offload, *,
                 crawl: CrawlOptions | None, scope: Scope | None,
                 on_robots: Callable[[Host], Awaitable[None]],
                 router: Router | None = None, warc: WarcWriter | None = None,
                 previous: Previous | None = None) -> None:
        self.config = config
        self.sched = sched
        self.crawl = crawl
        self.fetcher: Fetcher | None = None  # set by the engine for the run
        self.out_of_scope = 0  # links found and not followed
        self._offload = offload
        self._scope = scope
        self._on_robots = on_robots  # a host's robots.txt was loaded (sitemaps)
        self._seen: dict[str, int] = {}  # link -> the smallest depth it was found at
        self._router = router or None  # route handlers (extraction), if any
        self._warc = warc  # every response of a page or sitemap is archived there
        self._previous = previous  # --since: the earlier run to compare with

    async def process(self, job: Job) -> Record | None:
        """Take one step for ``job``: a record when it is finished, None when re-queued."""
        sched = self.sched
        host = sched.hosts[job.host]
        if job.robots_load:
            job.robots_load = False
            started = time.monotonic()
            try:
                host.robots = await self._load_robots(job)
            finally:
                host.robots_loading = False
            cd = host.robots.crawl_delay()
            if cd:
                host.crawl_delay = min(cd, self.config.max_crawl_delay)
            # the robots.txt request was this host's first start: pace the next from it,
            # with the Crawl-delay it may have set, and from its answer (it left after
            # ``started``, by as long as the connection took)
            sched.pace(host, started)
            sched.answered(job)
            sched.put(job, front=True)
            if self.crawl is not None and self.crawl.sitemaps:
                await self._on_robots(host)
            return None
        if job.blocked:
            err = FetchError(ErrorKind.ROBOTS_DISALLOWED,
                             host.robots.explain(job.current) if host.robots else "robots.txt")
            if host.robots is not None and host.robots.fetch_error is not None:
                err = host.robots.fetch_error
            return self._failed(job, err)
        headers = None
        if self._previous is not None and job.kind == PAGE:
            if not job.prior_checked:
                job.prior = await self._previous.lookup(job.url)
                job.prior_checked = True
            if job.prior is not None:
                headers = job.prior.conditional_headers(job.current)
        job.attempts += 1
        assert self.fetcher is not None
        started = time.monotonic()
        limit = max(self.config.max_bytes, MAX_SITEMAP_BYTES) if job.kind == SITEMAP else None
        try:
            # the moment it is sent matters only to a host with a delay (pacing)
            paced = sched.delay_of(sched.hosts[job.slot]) > 0
            resp = await self.fetcher.get(job.current, max_bytes=limit,
                                          token=job if paced else None,
                                          headers=headers, capture=self._warc is not None)
        except FetchError as exc:
            job.elapsed += time.monotonic() - started
            if exc.kind in RETRYABLE_KINDS:
                d = decide(self.config.retry, attempt=job.attempts)
                if d.retry:
                    sched.retry_later(job, d.wait)
                    return None
            return self._failed(job, exc, status=exc.status)
        job.elapsed += resp.elapsed
        if paced:
            sched.answered(job)
        if resp.capture is not None:
            await self._archive(job.current, resp)
        if resp.location is not None:
            return self._redirect(job, resp)
        if is_retryable_status(resp.status):
            return self._retry_status(job, host, resp)
        sched.speed_up(host)
        if job.kind == SITEMAP:
            job.found = self._sitemap_urls(job, resp)
            return self._job_record(job, status=resp.status)  # the writer keeps no record
        return await self._record(job, resp)

    async def _archive(self, url: str, resp: Response) -> None:
        """Write the exchange to the WARC (as received), then free its spool."""
        assert self._warc is not None and resp.capture is not None
        cap, resp.capture = resp.capture, None
        try:
            await self._warc.write(url, cap)
        except OSError as exc:
            raise StoreError(f"cannot write WARC file {self._warc.path}: "
                             f"{exc.strerror or exc}") from exc
        finally:
            cap.close()

    def _sitemap_urls(self, job: Job, resp: Response) -> list[NewUrl]:
        """The pages (in scope) and nested sitemaps a sitemap lists."""
        if resp.status != 200 or self._scope is None:
            return []
        is_index, locs = parse_sitemap(resp.body)
        found = []
        for loc in locs:
            try:
                url = urls.normalize(loc)
            except FetchError:
                continue
            if is_index:
                found.append(NewUrl(url, urls.host_key(url), 0, job.url, SITEMAP))
            elif self._scope.allows(url):
                found.append(NewUrl(url, urls.host_key(url), 0, job.url, PAGE))
            else:
                self.out_of_scope += 1
        return found

    def _redirect(self, job: Job, resp: Response) -> Record | None:
        assert resp.location is not None
        try:
            target = urls.normalize(urljoin(job.current, resp.location.strip()))
        except FetchError as exc:
            return self._failed(job, exc, status=resp.status)
        except ValueError as exc:
            return self._failed(job, FetchError(ErrorKind.INVALID_URL,
                                                f"bad redirect Location: {exc}"),
                                status=resp.status)
        chain = [job.url, *job.redirects]
        if target in chain:
            return self._failed(job, FetchError(
                ErrorKind.TOO_MANY_REDIRECTS,
                f"redirect loop: {' -> '.join([*chain[-3:], target])}"), status=resp.status)
        if len(job.redirects) >= self.config.max_redirects:
            return self._failed(job, FetchError(
                ErrorKind.TOO_MANY_REDIRECTS,
                f"more than {self.config.max_redirects} redirects"), status=resp.status)
        if self._scope is not None and job.depth == 0:
            self._scope.add_seed(target)  # http://example.com -> https://www.example.com/
        job.attempts -= 1  # a redirect answer is a hop, not an attempt
        job.redirects.append(target)
        job.current = target
        job.host = urls.host_key(target)
        job.blocked = False
        self.sched.put(job, front=True)  # the next hop waits for its own host's slot
        return None

    def _retry_status(self, job: Job, host: Host, resp: Response) -> Record | None:
        sched, cfg = self.sched, self.config
        if resp.status in (429, 503) and cfg.adaptive:
            sched.slow_down(host, cap=cfg.retry.max_retry_after)
        wait = parse_retry_after(resp.headers.get("Retry-After"), now=time.time())
        d = decide(cfg.retry, attempt=job.attempts, retry_after=wait)
        if d.retry:
            sched.retry_later(job, d.wait, host_wide=d.host_wide)
            return None
        return self._job_record(
            job, status=resp.status, content_type=split_content_type(resp.content_type)[0],
            error=FetchError(ErrorKind.HTTP, f"HTTP {resp.status}: {d.reason}"))

    async def _record(self, job: Job, resp: Response) -> Record:
        prior = job.prior
        if (resp.status == 304 and prior is not None
                and prior.conditional_headers(job.current) is not None):
            return self._unchanged(job, resp, prior)
        mime, charset = split_content_type(resp.content_type)
        body = resp.body
        html = bool(body) and looks_like_html(mime, body)
        route = None
        if self._router is not None and 200 <= resp.status < 300:
            route = self._router.match(job.current)
        crawl = self.crawl is not None
        # a page a route handles follows only what its handler says (unless follow_links)
        every_link = crawl and (route is None or route.follow_links)
        digest, page = await self._offload.page(body, charset, parse=html,
                                                want_links=every_link)
        record = self._job_record(job, status=resp.status, content_type=mime, bytes=len(body),
                                  sha256=digest)
        if self._previous is not None:  # no validators, or the page changed: by content
            record.changed = prior is None or record.sha256 != prior.sha256
        if page is not None:
            record.title, record.links = page.title, page.links
            if every_link:
                job.found = self._follow(job, page)
        items: list[bytes] = []
        if route is not None:
            out = await run_handler(
                route, Page(url=job.url, final_url=job.current, status=resp.status,
                            headers=dict(resp.headers), body=body, depth=job.depth),
                limit=self.config.timeout, offload=self._offload)
            if out.error is not None:
                record.error = out.error  # what it yielded before failing is dropped
            else:
                items = out.items
                record.items = len(items)
                if crawl and out.follows:
                    job.found += self._followed(job, out.follows)
        etag = last_modified = None
        if resp.status == 200:
            etag, last_modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        if items or etag is not None or last_modified is not None:
            job.data = PageData(job.id, items, etag, last_modified)
        return record

    def _unchanged(self, job: Job, resp: Response, prior: Prior) -> Record:
        """A 304 to our conditional GET: the previous body's description, changed false."""
        record = self._job_record(job, status=304, content_type=prior.content_type,
                                  sha256=prior.sha256, title=prior.title, links=prior.links)
        record.changed = False
        # validators for the next run: a 304 may update them (RFC 9110 15.4.5)
        etag = resp.headers.get("ETag") or prior.etag
        last_modified = resp.headers.get("Last-Modified") or prior.last_modified
        job.data = PageData(job.id, [], etag, last_modified)
        return record

    def _followed(self, job: Job, links: list[str]) -> list[NewUrl]:
        """Of ``links`` (absolute, normalised), those a crawl takes: within --max-depth and
        scope, each once (a bounded filter in front of the database's own check)."""
        assert self.crawl is not None and self._scope is not None
        depth = job.depth + 1
        if self.crawl.max_depth is not None and depth > self.crawl.max_depth:
            return []
        seen, scope, found = self._seen, self._scope, []
        for link in dict.fromkeys(links):
            known = seen.get(link)
            if known is not None and known <= depth:
                continue  # found before at this depth or less
            if len(seen) >= SEEN_FILTER:
                seen.clear()  # only a filter in front of the database's own check
            seen[link] = depth
            if not scope.allows(link):
                self.out_of_scope += 1
                continue
            found.append(NewUrl(link, urls.host_key(link), depth, job.url))
        return found

    def _follow(self, job: Job, page: ParsedPage) -> list[NewUrl]:
        """The links of a page a crawl should add to its frontier."""
        assert self.crawl is not None
        max_depth = self.crawl.max_depth
        if page.nofollow or (max_depth is not None and job.depth + 1 > max_depth):
            return []  # before joining its links: nothing of this page is followed
        base = job.current
        if page.base_href:
            base = urls.join(base, page.base_href) or base
        join = urls.join
        return self._followed(job, [link for href in page.hrefs
                                    if (link := join(base, href)) is not None])

    def _job_record(self, job: Job, **fields: Any) -> Record:
        """A record of what ``job`` went through, with the outcome in ``fields``."""
        return Record(url=job.url, final_url=job.current, elapsed_ms=job.elapsed * 1000,
                      attempts=job.attempts, depth=job.depth, redirects=list(job.redirects),
                      parent=job.parent, crawl=self.crawl is not None,
                      recrawl=self._previous is not None,
                      items=0 if self._router is not None else None, **fields)

    def _failed(self, job: Job, error: FetchError, *, status: int | None = None) -> Record:
        return self._job_record(job, status=status, error=error)

    async def _load_robots(self, job: Job) -> RobotsPolicy:
        """Fetch and parse one host's robots.txt (RFC 9309), retrying like a page."""
        assert self.fetcher is not None
        token = self.config.robots_token
        url = urls.robots_url(job.host)
        attempt = 0
        hops = 0
        while True:
            attempt += 1
            try:
                resp = await self.fetcher.get(url, max_bytes=MAX_ROBOTS_BYTES, truncate=True,
                                              token=job)
            except FetchError as exc:
                if exc.kind in RETRYABLE_KINDS:
                    d = decide(self.config.retry, attempt=attempt)
                    if d.retry:
                        await asyncio.sleep(max(d.wait, self.config.delay))
                        continue
                policy = RobotsPolicy.disallow_all(f"robots.txt unreachable: {exc.message}")
                if exc.kind in (ErrorKind.DNS, ErrorKind.BLOCKED_ADDRESS, ErrorKind.TLS):
                    policy.fetch_error = exc  # the page cannot be fetched either: say why
                return policy
            if resp.location is not None:
                hops += 1
                if hops > MAX_ROBOTS_REDIRECTS:
                    return RobotsPolicy.allow_all("robots.txt redirected too often")
                try:
                    url = urls.normalize(urljoin(url, resp.location.strip()))
                except (FetchError, ValueError):
                    return RobotsPolicy.allow_all("robots.txt redirected to a bad URL")
                continue
            if is_retryable_status(resp.status):
                wait = parse_retry_after(resp.headers.get("Retry-After"), now=time.time())
                d = decide(self.config.retry, attempt=attempt, retry_after=wait)
                if d.retry:
                    await asyncio.sleep(max(d.wait, self.config.delay))
                    continue
                return RobotsPolicy.disallow_all(f"robots.txt answered {resp.status}")
            return RobotsPolicy.from_response(resp.status, resp.body, token=token)
