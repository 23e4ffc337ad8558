"""The service's own settings (``shoal serve`` flags), frozen and checked once."""

from __future__ import annotations

import os
from dataclasses import dataclass

from shoal.core.netguard import NetGuard
from shoal.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSettings:
    """Where the service keeps its state and the limits it enforces."""

    db: str = "shoal-service.db"  # the service database: a path or postgresql://...
    schema: str = "shoal-service"  # the service's tables' schema when db is PostgreSQL
    jobs_root: str | None = None  # where each job's URL file (and SQLite state) lives
    allow_net: tuple[str, ...] = ()  # networks the private-network guard lets through
    max_running: int = 8  # jobs running at once; more wait in the queue
    concurrency: int = 200  # requests in flight of all running jobs together (fair shares)
    max_jobs_per_token: int = 4  # queued or running jobs one token may have
    max_urls_per_job: int = 1_000_000  # input URLs of a fetch, pages of a crawl
    max_body: int = 1 * MiB  # largest JSON request body
    max_upload: int = 256 * MiB  # largest uploaded URL file
    drain_grace: float = 5.0  # seconds requests in flight get to finish on shutdown/pause
    tick: float = 1.0  # seconds between two progress events

    def __post_init__(self) -> None:
        NetGuard(self.allow_net)  # raises ConfigError naming --allow-net
        for flag, value in (("--max-running", self.max_running),
                            ("--max-jobs-per-token", self.max_jobs_per_token),
                            ("--max-urls-per-job", self.max_urls_per_job),
                            ("--max-body", self.max_body), ("--max-upload", self.max_upload),
                            ("--concurrency", self.concurrency)):
            if value < 1:
                raise ConfigError(f"{flag} must be >= 1, got {value}")
        if self.concurrency < self.max_running:
            raise ConfigError(f"--concurrency must be >= --max-running ({self.max_running}): "
                              f"every running job needs a request slot, got {self.concurrency}")
        if self.postgres:
            return
        if self.db.startswith("sqlite:///"):
            object.__setattr__(self, "db", self.db[len("sqlite:///"):])
        if "://" in self.db:
            raise ConfigError(f"--db {self.db!r}: give a file path, sqlite:///path or "
                              "postgresql://...")

    @property
    def postgres(self) -> bool:
        """Whether the service's tables and its jobs' states live in PostgreSQL."""
        return self.db.startswith(("postgresql://", "postgres://"))

    @property
    def jobs_dir(self) -> str:
        """Each job's URL file (and, on SQLite, its state database) lives in a directory
        under this one: ``--jobs-dir``, else ``DB.jobs`` beside a SQLite service database,
        else ``shoal-service.jobs`` in the current directory."""
        if self.jobs_root is not None:
            return os.path.abspath(self.jobs_root)
        if self.postgres:
            return os.path.abspath("shoal-service.jobs")
        return os.path.abspath(self.db) + ".jobs"
