"""The service under uvicorn on a loopback port, in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from shoal.client.resolver import TableResolver
from shoal.service.jobs import JobManager
from shoal.service.server import ServiceServer, build_server, listen
from shoal.service.settings import ServiceSettings

FINAL = {"completed", "cancelled", "failed", "paused"}


@dataclass
class Service:
    """A running service and an HTTP client for it."""

    base: str
    server: ServiceServer
    http: aiohttp.ClientSession
    settings: ServiceSettings
    token: str | None = None

    @property
    def manager(self) -> JobManager:
        manager: JobManager = self.server.manager
        return manager

    def headers(self, token: str | None = None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, *, token: str | None = None,
                   expect: int | None = None, headers: dict[str, str] | None = None,
                   **kw: Any) -> tuple[int, Any]:
        headers = {**self.headers(token), **(headers or {})}
        async with self.http.request(method, self.base + path, headers=headers,
                                     **kw) as resp:
            body = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            data: Any = (orjson.loads(body) if "json" in ctype and "ndjson" not in ctype and body
                         else body)
            if expect is not None:
                assert resp.status == expect, (resp.status, data)
            return resp.status, data

    async def start_job(self, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        _, job = await self.call("POST", "/v1/jobs", json=body, expect=201, **kw)
        assert isinstance(job, dict)
        return job

    async def wait_job(self, job_id: str, states: set[str] | None = None,
                       timeout: float = 30, token: str | None = None) -> dict[str, Any]:
        """Poll the job until it reaches one of ``states`` (default: stopped)."""
        states = states or FINAL
        deadline = time.monotonic() + timeout
        while True:
            _, job = await self.call("GET", f"/v1/jobs/{job_id}", expect=200, token=token)
            if job["state"] in states:
                return job  # type: ignore[no-any-return]
            assert time.monotonic() < deadline, f"job still {job['state']}: {job}"
            await asyncio.sleep(0.05)

    async def records(self, job_id: str, **params: Any) -> list[dict[str, Any]]:
        """Every record, following the cursor."""
        out: list[dict[str, Any]] = []
        cursor = 0
        for _ in range(10_000):
            _, page = await self.call("GET", f"/v1/jobs/{job_id}/records", expect=200,
                                      params={"cursor": cursor, **params})
            out += page["items"]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                return out
        raise AssertionError("records never ended")


@contextlib.asynccontextmanager
async def service(tmp_path: Path, *, allow_net: tuple[str, ...] = ("127.0.0.0/8",),
                  resolver: TableResolver | None = None, db: str | None = None,
                  **settings: Any) -> AsyncIterator[Service]:
    """Start the service on 127.0.0.1:<free port>; stop it (as SIGTERM would) at the end."""
    config = ServiceSettings(db=db or str(tmp_path / "service.db"), allow_net=allow_net,
                             **settings)
    sock = listen("127.0.0.1", 0)
    server = build_server(config, host="127.0.0.1", port=0, resolver=resolver)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(20):
            while not server.started:
                assert not task.done(), "the service did not start"
                await asyncio.sleep(0.01)
        port = sock.getsockname()[1]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            yield Service(f"http://127.0.0.1:{port}", server, http, config)
    finally:
        server.manager.begin_shutdown()
        server.should_exit = True
        async with asyncio.timeout(30):
            await task
        sock.close()
