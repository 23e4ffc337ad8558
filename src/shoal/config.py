"""The one frozen configuration object, checked once, passed down explicitly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from shoal import __version__
from shoal.errors import ConfigError

DEFAULT_USER_AGENT = f"shoal/{__version__} (+https://github.com/shoal-crawler/shoal)"
MiB = 1024 * 1024


def _check(ok: bool, flag: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{flag} must be {rule}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How failed attempts are retried: at most ``retries + 1`` attempts."""

    retries: int = 2
    backoff_base: float = 0.5  # first back-off, seconds; doubles per attempt
    backoff_max: float = 30.0
    max_retry_after: float = 30.0  # a longer Retry-After ends the URL with error `http`

    def __post_init__(self) -> None:
        _check(0 <= self.retries <= 100, "--retries", "between 0 and 100", self.retries)
        _check(self.backoff_base >= 0, "backoff_base", ">= 0", self.backoff_base)
        _check(self.backoff_max >= self.backoff_base, "backoff_max", ">= backoff_base",
               self.backoff_max)
        _check(self.max_retry_after >= 0, "--max-retry-after", ">= 0", self.max_retry_after)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a run needs to know; build it with keywords or ``from_cli``."""

    concurrency: int = 100
    per_host: int = 2
    delay: float = 0.0  # minimum seconds between two request starts to one host
    timeout: float = 30.0  # bound on one whole attempt: connect, headers and body
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_bytes: int = 10 * MiB
    max_redirects: int = 10
    robots: bool = True
    max_crawl_delay: float = 10.0  # cap on a robots.txt Crawl-delay, seconds
    user_agent: str = DEFAULT_USER_AGENT
    window: int = 0  # URLs held in memory from the frontier; 0 = derived from concurrency
    adaptive: bool = True  # slow a host down when it answers 429/503
    block_private: bool = False  # the private-network guard (on in the service)
    allow_net: tuple[str, ...] = ()  # networks the guard lets through (CIDR)
    workers: int = 1  # processes, each owning a share of the hosts (command line, fetch)

    def __post_init__(self) -> None:
        _check(1 <= self.concurrency <= 100_000, "--concurrency", "between 1 and 100000",
               self.concurrency)
        _check(1 <= self.per_host <= 10_000, "--per-host", "between 1 and 10000", self.per_host)
        _check(0 <= self.delay <= 3600, "--delay", "between 0 and 3600 seconds", self.delay)
        _check(0 < self.timeout <= 3600, "--timeout", "> 0 and <= 3600 seconds", self.timeout)
        _check(self.max_bytes >= 1, "--max-bytes", ">= 1", self.max_bytes)
        _check(0 <= self.max_redirects <= 100, "max_redirects", "between 0 and 100",
               self.max_redirects)
        _check(self.max_crawl_delay >= 0, "max_crawl_delay", ">= 0", self.max_crawl_delay)
        _check(bool(self.user_agent.strip()) and "\n" not in self.user_agent
               and "\r" not in self.user_agent, "--user-agent", "a non-empty single line",
               self.user_agent)
        _check(self.window >= 0, "window", ">= 0", self.window)
        _check(1 <= self.workers <= 64, "--workers", "between 1 and 64", self.workers)
        from shoal.core.netguard import NetGuard

        NetGuard(self.allow_net)  # raises ConfigError naming --allow-net

    @property
    def frontier_window(self) -> int:
        """How many frontier URLs may be held in memory at once."""
        return self.window or max(2_000, self.concurrency * 20)

    @property
    def robots_token(self) -> str:
        """The product token robots.txt groups are matched against (RFC 9309 2.2.1)."""
        token = self.user_agent.split("/", 1)[0].split()[0] if self.user_agent.strip() else ""
        return token or "shoal"

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class CrawlOptions:
    """What a crawl follows and when it stops."""

    max_pages: int | None = None  # records in all, including earlier runs of the state
    max_depth: int | None = None  # seeds are depth 0
    scope: str = "host"  # host | domain | any
    include: tuple[str, ...] = ()  # regexes a followed URL must match (one of them)
    exclude: tuple[str, ...] = ()  # regexes a followed URL must not match
    sitemaps: bool = False  # seed from robots.txt Sitemap lines and /sitemap.xml
    max_pages_per_host: int | None = None

    def __post_init__(self) -> None:
        if self.max_pages is not None:
            _check(self.max_pages >= 1, "--max-pages", ">= 1", self.max_pages)
        if self.max_depth is not None:
            _check(self.max_depth >= 0, "--max-depth", ">= 0", self.max_depth)
        if self.max_pages_per_host is not None:
            _check(self.max_pages_per_host >= 1, "--max-pages-per-host", ">= 1",
                   self.max_pages_per_host)
        _check(self.scope in ("host", "domain", "any"), "--scope", "one of host, domain, any",
               self.scope)
        from shoal.core.scope import compile_patterns

        compile_patterns(self.include, "--include")
        compile_patterns(self.exclude, "--exclude")
