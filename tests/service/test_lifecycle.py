"""Live events, health and metrics, and a service that stops and comes back."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.servers import html_page, site
from tests.service.conftest import Backend
from tests.service.harness import service

pytestmark = pytest.mark.timeout(60)


def gated_routes(gate: asyncio.Event, n: int) -> dict[str, Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        async with asyncio.timeout(30):
            await gate.wait()
        return web.Response(text=html_page(request.path), content_type="text/html")

    return {f"/{i}": handler for i in range(n)}


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[tuple[float, dict[str, Any]]]:
    events = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            events.append((time.monotonic(), orjson.loads(line[6:])))
            if len(events) == n:
                break
    return events


async def test_events_stream_progress_about_once_a_second(tmp_path: Path, backend: Backend
                                                          ) -> None:
    gate = asyncio.Event()
    async with site(gated_routes(gate, 10)) as srv, service(tmp_path, **backend.kw()) as svc:
        job = await svc.start_job({"kind": "fetch", "urls": [srv.url(f"/{i}") for i in
                                                             range(10)],
                                   "options": {"no_robots": True}})
        await svc.wait_job(job["id"], {"running"})
        async with svc.http.get(f"{svc.base}/v1/jobs/{job['id']}/events") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            first = await read_events(resp, 3)
            assert [e["state"] for _, e in first] == ["running"] * 3
            assert first[-1][1]["counts"]["in_flight"] == 2
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(first[1:])]
            assert all(0.5 < g < 2.0 for g in gaps), gaps
            gate.set()
            rest = []
            async with asyncio.timeout(15):
                async for raw in resp.content:  # the stream ends after the final state
                    if raw.startswith(b"data: "):
                        rest.append(orjson.loads(raw[6:]))
        assert rest[-1]["state"] == "completed" and rest[-1]["counts"]["done"] == 10
        assert len(rest[-1]["latest"]) == 10


async def test_health_readiness_and_metrics(tmp_path: Path, backend: Backend) -> None:
    async with site({f"/{i}": html_page(str(i)) for i in range(5)} | {"/x": 500}) as srv, \
            service(tmp_path, **backend.kw()) as svc:
        assert (await svc.call("GET", "/healthz"))[1] == {"status": "ok"}
        assert (await svc.call("GET", "/readyz"))[0] == 200
        job = await svc.start_job({"kind": "fetch", "options": {"retries": 0},
                                   "urls": [srv.url(f"/{i}") for i in range(5)]
                                   + [srv.url("/x")]})
        await svc.wait_job(job["id"])
        _, body = await svc.call("GET", "/metrics", expect=200)
        text = body.decode()
        jid = job["id"]
        assert f'shoal_pages_total{{job="{jid}",status_class="2xx"}} 5.0' in text
        assert f'shoal_errors_total{{job="{jid}",kind="http"}} 1.0' in text
        assert "shoal_event_loop_lag_seconds_bucket" in text
        assert re.search(r'shoal_api_request_seconds_count\{method="GET",'
                         r'route="/v1/jobs/\{job_id\}",status="200"\} \d', text), text
        await svc.call("DELETE", f"/v1/jobs/{jid}", expect=204)
        _, body = await svc.call("GET", "/metrics", expect=200)
        assert jid not in body.decode()


async def test_a_restarted_service_resumes_its_running_jobs(tmp_path: Path, backend: Backend
                                                            ) -> None:
    gate = asyncio.Event()
    async with site(gated_routes(gate, 30)) as srv:
        urls = [srv.url(f"/{i}") for i in range(30)]
        async with service(tmp_path, **backend.kw(), drain_grace=0.1) as svc:
            job = await svc.start_job({"kind": "fetch", "urls": urls,
                                       "options": {"no_robots": True, "retries": 0}})
            await svc.wait_job(job["id"], {"running"})
            async with asyncio.timeout(10):
                await srv.log.wait_started(2)
        # stopped with requests in flight: they went back to pending, the job stays running
        async with service(tmp_path, **backend.kw()) as svc:
            _, again = await svc.call("GET", f"/v1/jobs/{job['id']}", expect=200)
            assert again["state"] == "running"
            gate.set()
            done = await svc.wait_job(job["id"])
            assert done["state"] == "completed" and done["counts"]["done"] == 30
            records = await svc.records(job["id"])
    assert sorted(r["url"] for r in records) == sorted(urls)  # each once


async def test_sigterm_drains_and_exits_cleanly(tmp_path: Path) -> None:
    gate = asyncio.Event()
    db = str(tmp_path / "service.db")
    async with site(gated_routes(gate, 5)) as srv:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shoal", "serve", "--port", "0", "--db", db,
            "--allow-net", "127.0.0.0/8", stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "120"})
        try:
            assert proc.stderr is not None
            async with asyncio.timeout(20):
                line = (await proc.stderr.readline()).decode()
            port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))  # type: ignore[union-attr]
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/v1/jobs", json={
                        "kind": "fetch", "urls": [srv.url(f"/{i}") for i in range(5)],
                        "options": {"no_robots": True}}) as resp:
                    assert resp.status == 201
                    job = await resp.json()
                async with asyncio.timeout(10):
                    await srv.log.wait_started(2)
                events = await http.get(f"{base}/v1/jobs/{job['id']}/events")
                assert events.status == 200
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(20):
                    rest = await proc.stderr.read()
                    await proc.wait()
                    await events.read()  # the event stream was ended, not left hanging
                events.release()
            assert proc.returncode == 0, rest
            assert time.monotonic() - started < 12
            assert b"Traceback" not in rest and b"service stopped" in rest
            with sqlite3.connect(db) as conn:  # left running: the next start resumes it
                [(state,)] = conn.execute("SELECT state FROM jobs").fetchall()
            conn.close()
            assert state == "running"
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_restarted_service_resumes_a_crawl_and_keeps_paused_jobs(tmp_path: Path
                                                                          ) -> None:
    gate = asyncio.Event()
    db = str(tmp_path / "service.db")
    routes = gated_routes(gate, 30) | {"/": html_page("home", [f"/{i}" for i in range(30)])}
    async with site(routes) as srv:
        async with service(tmp_path, db=db, drain_grace=0.1) as svc:
            crawl = await svc.start_job({"kind": "crawl", "seeds": [srv.url("/")],
                                         "options": {"no_robots": True, "retries": 0}})
            paused = await svc.start_job({"kind": "fetch", "urls": [srv.url("/0")],
                                          "options": {"no_robots": True}})
            async with asyncio.timeout(10):
                await srv.log.wait_started(3)
            _, job = await svc.call("POST", f"/v1/jobs/{paused['id']}/pause", expect=200)
            assert job["state"] == "paused"
        async with service(tmp_path, db=db) as svc:
            gate.set()
            done = await svc.wait_job(crawl["id"])
            assert done["state"] == "completed" and done["counts"]["done"] == 31
            records = await svc.records(crawl["id"])
            _, job = await svc.call("GET", f"/v1/jobs/{paused['id']}", expect=200)
            assert job["state"] == "paused"  # not started again by itself
    assert sorted(r["url"] for r in records) == sorted(
        [srv.url("/")] + [srv.url(f"/{i}") for i in range(30)])
