"""`shoal token ... --db postgresql://...` and `shoal serve --db postgresql://...` as a
user runs them: tokens and jobs in the schema "shoal-service", a job's records in its own."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shoal.service.pgservice import SCHEMA, job_schema
from shoal.service.tokens import open_tokens
from tests.conftest import postgres_url, run_shoal
from tests.servers import html_page, site

pytestmark = pytest.mark.timeout(120)


async def _drop_service(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        names = {r[0] for r in await conn.fetch(
            "SELECT schema_name FROM information_schema.schemata")}
        if SCHEMA in names:
            for (job_id,) in await conn.fetch(f'SELECT id FROM "{SCHEMA}".jobs'):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{job_schema(job_id)}" CASCADE')
            await conn.execute(f'DROP SCHEMA "{SCHEMA}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def pg_service() -> AsyncIterator[str]:
    """The test database, its (default) service schema dropped before and after."""
    url = postgres_url()
    await _drop_service(url)
    try:
        yield url
    finally:
        await _drop_service(url)


async def test_token_commands_on_postgres(pg_service: str) -> None:
    url = pg_service
    missing = await run_shoal("token", "list", "--db", url)
    assert missing.code == 2 and "no service database" in missing.stderr, missing.stderr
    assert missing.stderr.count("\n") == 1

    run = await run_shoal("token", "create", "--name", "ci", "--read-only", "--db", url)
    assert run.code == 0, run.stderr
    token = run.stdout.splitlines()[-1]
    assert token.startswith("shoal_") and token not in run.stderr
    with open_tokens(url, create=False) as store:
        info = store.verify(token)
        assert info is not None and info.read_only and info.name == "ci"
    conn = await asyncpg.connect(url)
    try:  # stored hashed: the secret is nowhere in the table
        rows = await conn.fetch(f'SELECT * FROM "{SCHEMA}".tokens')
    finally:
        await conn.close()
    assert len(rows) == 1 and token not in repr([tuple(r) for r in rows])

    listed = await run_shoal("token", "list", "--db", url)
    assert listed.code == 0 and token not in listed.stdout
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(info.id)]
    assert row.split()[:3] == [info.id, "ci", "yes"] and row.split()[-1] == "-"
    revoked = await run_shoal("token", "revoke", info.id, "--db", url)
    assert revoked.code == 0, revoked.stderr
    again = await run_shoal("token", "revoke", "0badc0de", "--db", url)
    assert again.code == 2 and "no token" in again.stderr
    with open_tokens(url, create=False) as store:
        assert store.verify(token) is None and store.count_active() == 0


async def test_serve_on_postgres_end_to_end(pg_service: str, tmp_path: Path) -> None:
    url = pg_service
    made = await run_shoal("token", "create", "--db", url)
    assert made.code == 0, made.stderr
    token = made.stdout.splitlines()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    async with site({f"/{i}": html_page(f"p{i}") for i in range(8)}) as srv:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shoal", "serve", "--port", "0", "--db", url,
            "--allow-net", "127.0.0.0/8", stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
            env={**os.environ, "COLUMNS": "120"})
        try:
            assert proc.stderr is not None
            async with asyncio.timeout(20):
                line = (await proc.stderr.readline()).decode()
            assert "tokens required" in line, line
            port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))  # type: ignore[union-attr]
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession(headers=auth) as http:
                async with http.post(f"{base}/v1/jobs", json={
                        "kind": "fetch", "urls": [srv.url(f"/{i}") for i in range(8)],
                        "options": {"no_robots": True}}) as resp:
                    assert resp.status == 201, await resp.text()
                    job = await resp.json()
                async with asyncio.timeout(30):
                    while True:
                        async with http.get(f"{base}/v1/jobs/{job['id']}") as resp:
                            state = (await resp.json())["state"]
                        if state not in ("queued", "running"):
                            break
                        await asyncio.sleep(0.05)
                assert state == "completed"
                async with http.get(f"{base}/v1/jobs/{job['id']}/export") as resp:
                    assert resp.status == 200
                    assert len((await resp.read()).splitlines()) == 8
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                rest = await proc.stderr.read()
                await proc.wait()
            assert proc.returncode == 0 and b"Traceback" not in rest, rest
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    # the URL file stayed beside the service, the records in the job's schema
    assert (tmp_path / "shoal-service.jobs" / job["id"] / "urls.txt").exists()
    assert not (tmp_path / "shoal-service.jobs" / job["id"] / "state.db").exists()
    conn = await asyncpg.connect(url)
    try:
        n = await conn.fetchval(
            f'SELECT count(*) FROM "{job_schema(job["id"])}".urls WHERE seq IS NOT NULL')
        state = await conn.fetchval(f'SELECT state FROM "{SCHEMA}".jobs')
    finally:
        await conn.close()
    assert n == 8 and state == "completed"


async def test_serve_with_an_unreachable_postgres_is_one_line(tmp_path: Path) -> None:
    run = await run_shoal("serve", "--port", "0", "--db", "postgresql://postgres@127.0.0.1:9/x",
                          cwd=tmp_path)
    assert run.code == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "cannot connect" in run.stderr and "Traceback" not in run.stderr
    run = await run_shoal("serve", "--db", "mysql://x/y", cwd=tmp_path)
    assert run.code == 2 and "postgresql://" in run.stderr
