"""The service's tests run against both backends: ``backend`` is SQLite or PostgreSQL.

PostgreSQL comes from SHOAL_TEST_POSTGRES_URL: without it those cases skip, and fail
under CI. Each PostgreSQL case gets a service schema of its own, dropped at the end with
the schemas of its jobs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shoal.service.pgservice import job_schema
from shoal.service.tokens import Tokens, open_tokens
from tests.conftest import postgres_url


@dataclass(frozen=True)
class Backend:
    """Where a test's service keeps its tables and its jobs' records."""

    name: str  # sqlite | postgres
    tmp_path: Path
    url: str | None = None
    schema: str = "shoal-service"

    @property
    def db(self) -> str:
        return self.url if self.url is not None else str(self.tmp_path / "service.db")

    def kw(self) -> dict[str, Any]:
        """The harness's settings for this backend (the same for a restarted service)."""
        if self.url is None:
            return {"db": self.db}
        return {"db": self.db, "schema": self.schema, "jobs_root": str(self.tmp_path / "jobs")}

    def tokens(self) -> Tokens:
        return open_tokens(self.db, schema=self.schema)

    async def has_schema(self, name: str) -> bool:
        assert self.url is not None
        conn = await asyncpg.connect(self.url)
        try:
            return bool(await conn.fetchval(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1", name))
        finally:
            await conn.close()

    async def schemas(self) -> set[str]:
        """The PostgreSQL schemas of this test (its service schema, its jobs')."""
        assert self.url is not None
        conn = await asyncpg.connect(self.url)
        try:
            names = {r[0] for r in await conn.fetch(
                "SELECT schema_name FROM information_schema.schemata")}
            jobs = set()
            if self.schema in names:
                jobs = {job_schema(r[0]) for r in await conn.fetch(
                    f'SELECT id FROM "{self.schema}".jobs')}
            return names & ({self.schema} | jobs)
        finally:
            await conn.close()


async def drop_schemas(url: str, backend: Backend) -> None:
    """Drop every schema the service of ``backend`` made in the database at ``url``."""
    conn = await asyncpg.connect(url)
    try:
        for schema in await backend.schemas():
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", tmp_path)
        return
    url = postgres_url()
    b = Backend("postgres", tmp_path, url, "shoal-service-t" + uuid.uuid4().hex[:10])
    try:
        yield b
    finally:
        await drop_schemas(url, b)
