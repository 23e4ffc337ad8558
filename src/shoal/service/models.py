"""The API's request bodies: job options validated by pydantic (422 names the field).

Option names are the CLI flags with underscores. Ranges repeat those of ``Config`` and
``CrawlOptions`` so that pydantic rejects a bad value with the field's location; whatever
those constructors still refuse (a regex that does not compile) becomes a 422 too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shoal.config import DEFAULT_USER_AGENT, Config, CrawlOptions, RetryPolicy

MAX_SEEDS = 1_000
MAX_PATTERNS = 100

Url = Annotated[str, Field(min_length=1, max_length=8_192, pattern=r"^[^\r\n]+$")]
Pattern = Annotated[str, Field(min_length=1, max_length=1_000)]


class FetchOptions(BaseModel):
    """The options every job takes (the CLI's fetch flags)."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(50, ge=1, le=1_000)
    per_host: int = Field(2, ge=1, le=100)
    delay: float = Field(0.0, ge=0, le=3_600)
    timeout: float = Field(30.0, gt=0, le=600)
    retries: int = Field(2, ge=0, le=20)
    max_retry_after: float = Field(30.0, ge=0, le=3_600)
    max_bytes: int = Field(10 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024)
    no_robots: bool = False
    user_agent: str = Field(DEFAULT_USER_AGENT, min_length=1, max_length=500,
                            pattern=r"^[^\r\n]+$")

    def config(self, *, allow_net: tuple[str, ...]) -> Config:
        """The engine's Config: the private-network guard is always on in the service."""
        return Config(concurrency=self.concurrency, per_host=self.per_host, delay=self.delay,
                      timeout=self.timeout,
                      retry=RetryPolicy(retries=self.retries,
                                        max_retry_after=self.max_retry_after),
                      max_bytes=self.max_bytes, robots=not self.no_robots,
                      user_agent=self.user_agent, block_private=True, allow_net=allow_net)


class CrawlJobOptions(FetchOptions):
    """A crawl's options: the fetch options and the CLI's crawl flags."""

    max_pages: int | None = Field(None, ge=1, le=100_000_000)
    max_depth: int | None = Field(None, ge=0, le=10_000)
    scope: Literal["host", "domain", "any"] = "host"
    include: list[Pattern] = Field(default_factory=list, max_length=MAX_PATTERNS)
    exclude: list[Pattern] = Field(default_factory=list, max_length=MAX_PATTERNS)
    sitemaps: bool = False
    max_pages_per_host: int | None = Field(None, ge=1, le=100_000_000)

    def crawl_options(self) -> CrawlOptions:
        """Raises ConfigError naming the flag (e.g. a pattern that does not compile)."""
        return CrawlOptions(max_pages=self.max_pages, max_depth=self.max_depth,
                            scope=self.scope, include=tuple(self.include),
                            exclude=tuple(self.exclude), sitemaps=self.sitemaps,
                            max_pages_per_host=self.max_pages_per_host)


class FetchJob(BaseModel):
    """``{"kind": "fetch", "urls": [...], "options": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fetch"]
    urls: list[Url] = Field(min_length=1)
    options: FetchOptions = Field(default_factory=FetchOptions)  # type: ignore[arg-type]


class CrawlJob(BaseModel):
    """``{"kind": "crawl", "seeds": [...], "options": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["crawl"]
    seeds: list[Url] = Field(min_length=1, max_length=MAX_SEEDS)
    options: CrawlJobOptions = Field(default_factory=CrawlJobOptions)  # type: ignore[arg-type]


JobRequest = Annotated[FetchJob | CrawlJob, Field(discriminator="kind")]


def job_config(kind: str, options: dict[str, Any], *, allow_net: tuple[str, ...]
               ) -> tuple[Config, CrawlOptions | None]:
    """A stored job's engine settings (its options checked again: they were stored by an
    older version, or ``--allow-net`` changed since).

    Raises:
        pydantic.ValidationError, ConfigError: the options are no longer valid.
    """
    if kind == "crawl":
        opts = CrawlJobOptions.model_validate(options)
        return opts.config(allow_net=allow_net), opts.crawl_options()
    return FetchOptions.model_validate(options).config(allow_net=allow_net), None
