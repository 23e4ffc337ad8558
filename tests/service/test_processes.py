"""Jobs in processes of their own: a shared fetch budget, crashes, stops and restarts."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import run_shoal
from tests.servers import LogEntry, RequestLog, html_page, site, slow
from tests.service.conftest import Backend
from tests.service.harness import Service, service
from tests.service.test_lifecycle import gated_routes

pytestmark = pytest.mark.timeout(90)

FAST = {"no_robots": True, "retries": 0}


def most_at_once(entries: list[LogEntry], until: float) -> int:
    """The most of ``entries`` in flight together at any time before ``until``."""
    starts = [e.started for e in entries if e.started <= until]
    return max((sum(1 for e in entries if e.started <= t
                    and (e.finished is None or e.finished > t)) for t in starts), default=0)


async def poll(svc: Service, job_id: str, check: object, timeout: float = 10
               ) -> dict[str, object]:
    """GET the job until ``check(job)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        _, job = await svc.call("GET", f"/v1/jobs/{job_id}", expect=200)
        if check(job):  # type: ignore[operator]
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def test_jobs_share_the_fetch_budget_and_a_slow_host_starves_none(
        tmp_path: Path, backend: Backend) -> None:
    log = RequestLog()  # both servers': in flight across the two jobs
    opts = {**FAST, "concurrency": 50, "per_host": 50, "timeout": 20}
    # the quick job's pages take 0.1 s: at its share of 10 it runs at least 3 s, so both
    # jobs' processes are fetching at once even when a busy machine starts one late
    async with site({f"/s/{i}": slow(1.0) for i in range(100)}, log=log) as tarpit, \
            site({f"/f/{i}": slow(0.1, html_page(str(i))) for i in range(300)},
                 log=log) as fast, \
            service(tmp_path, **backend.kw(), concurrency=20) as svc:
        held = await svc.start_job({"kind": "fetch", "options": opts,
                                    "urls": [tarpit.url(f"/s/{i}") for i in range(100)]})
        quick = await svc.start_job({"kind": "fetch", "options": opts,
                                     "urls": [fast.url(f"/f/{i}") for i in range(300)]})
        # started together: each may have half of the budget (each asked for 50)
        job = await poll(svc, held["id"], lambda j: j["share"]["concurrency"] == 10)
        assert job["share"] == {"concurrency": 10, "budget": 20}
        done = await svc.wait_job(quick["id"], timeout=30)
        assert done["state"] == "completed" and done["status_classes"] == {"2xx": 300}
        quick_end = max(e.finished or 0.0 for e in log.select(fast.netloc))
        _, job = await svc.call("GET", f"/v1/jobs/{held['id']}", expect=200)
        assert job["state"] == "running"  # the slow host's job did not hold the other back
        assert 0 < most_at_once(log.select(tarpit.netloc), quick_end) <= 10
        # the job that ended gave its share back: the other may now use the whole budget
        await poll(svc, held["id"], lambda j: j["share"]["concurrency"] == 20)
        await until(lambda: log.in_flight(tarpit.netloc) > 10)
        _, body = await svc.call("GET", "/metrics", expect=200)
        assert f'shoal_job_concurrency_share{{job="{held["id"]}"}} 20.0' in body.decode()
        done = await svc.wait_job(held["id"], timeout=30)
        assert done["state"] == "completed" and done["counts"]["done"] == 100
        assert done["share"]["concurrency"] == 0
    assert log.max_in_flight() <= 20  # never more than the budget, both jobs together


async def test_a_killed_job_process_fails_its_job_and_the_service_goes_on(
        tmp_path: Path, backend: Backend) -> None:
    gate = asyncio.Event()
    async with site(gated_routes(gate, 20) | {"/ok": html_page("ok")}) as srv, \
            service(tmp_path, **backend.kw()) as svc:
        urls = [srv.url(f"/{i}") for i in range(20)]
        job = await svc.start_job({"kind": "fetch", "urls": urls, "options": FAST})
        running = await poll(svc, job["id"], lambda j: j["pid"] is not None)
        async with asyncio.timeout(10):
            await srv.log.wait_started(2)
        os.kill(running["pid"], signal.SIGKILL)  # type: ignore[arg-type]
        failed = await svc.wait_job(job["id"], {"failed"})
        assert re.search(r"process \(pid \d+\) was killed by SIGKILL", failed["error"])
        assert "resume" in failed["error"] and failed["pid"] is None
        # the service goes on: it answers and runs other jobs
        assert (await svc.call("GET", "/healthz"))[0] == 200
        other = await svc.start_job({"kind": "fetch", "urls": [srv.url("/ok")]})
        assert (await svc.wait_job(other["id"]))["state"] == "completed"
        # and the failed job resumes from what it committed
        gate.set()
        _, again = await svc.call("POST", f"/v1/jobs/{job['id']}/resume", expect=200)
        assert again["state"] in ("queued", "running") and again["error"] is None
        done = await svc.wait_job(job["id"])
        assert done["state"] == "completed" and done["counts"]["done"] == 20
        records = await svc.records(job["id"])
    assert sorted(r["url"] for r in records) == sorted(urls)  # each once


async def test_a_stopping_service_drains_its_jobs_processes_and_resumes_them(
        tmp_path: Path, backend: Backend) -> None:
    gate = asyncio.Event()
    routes = gated_routes(gate, 40) | {"/": html_page("home", [f"/{i}" for i in range(20, 40)])}
    async with site(routes) as srv:
        urls = [srv.url(f"/{i}") for i in range(20)]
        async with service(tmp_path, **backend.kw(), drain_grace=5) as svc:
            fetch = await svc.start_job({"kind": "fetch", "urls": urls, "options": FAST})
            crawl = await svc.start_job({"kind": "crawl", "seeds": [srv.url("/")],
                                         "options": FAST})
            pids = [(await poll(svc, j["id"], lambda j: j["pid"] is not None))["pid"]
                    for j in (fetch, crawl)]
            async with asyncio.timeout(10):
                await srv.log.wait_started(5)  # both jobs have requests in flight
            # the requests in flight finish during the drain; no new one starts
            asyncio.get_running_loop().call_later(0.5, gate.set)
        assert all(gone(pid) for pid in pids)  # type: ignore[arg-type]
        first = srv.log.count()
        assert srv.log.in_flight() == 0 and first < 41
        async with service(tmp_path, **backend.kw()) as svc:
            for job, n in ((fetch, 20), (crawl, 21)):
                done = await svc.wait_job(job["id"])
                assert done["state"] == "completed" and done["counts"]["done"] == n
            records = [r["url"] for j in (fetch, crawl) for r in await svc.records(j["id"])]
    assert sorted(records) == sorted(urls + [srv.url("/")] +
                                     [srv.url(f"/{i}") for i in range(20, 40)])
    paths = srv.log.paths()
    assert len(paths) == len(set(paths)) == 41  # none fetched twice: none was cut


async def test_job_processes_ignore_sigint_and_end_with_the_service(tmp_path: Path) -> None:
    gate = asyncio.Event()
    db = str(tmp_path / "service.db")
    async with site(gated_routes(gate, 10)) as srv:
        urls = [srv.url(f"/{i}") for i in range(10)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shoal", "serve", "--port", "0", "--db", db,
            "--allow-net", "127.0.0.0/8", stderr=asyncio.subprocess.PIPE)
        try:
            assert proc.stderr is not None
            async with asyncio.timeout(20):
                line = (await proc.stderr.readline()).decode()
            base = re.search(r"(http://127\.0\.0\.1:\d+)/", line).group(1)  # type: ignore[union-attr]
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/v1/jobs", json={
                        "kind": "fetch", "urls": urls, "options": FAST}) as resp:
                    assert resp.status == 201
                    job = await resp.json()
                async with asyncio.timeout(10):
                    await srv.log.wait_started(2)
                    while True:
                        async with http.get(f"{base}/v1/jobs/{job['id']}") as resp:
                            child = (await resp.json())["pid"]
                        if child is not None:
                            break
                os.kill(child, signal.SIGINT)  # a terminal's Ctrl-C: the service decides
                await asyncio.sleep(0.5)
                async with http.get(f"{base}/v1/jobs/{job['id']}") as resp:
                    assert (await resp.json())["state"] == "running"
                assert not gone(child)
            proc.kill()  # the service dies at once: its job's process follows it
            await proc.wait()
            await until(lambda: gone(child))
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        async with service(tmp_path, db=db) as svc:  # and the job resumes
            gate.set()
            done = await svc.wait_job(job["id"])
            assert done["state"] == "completed" and done["counts"]["done"] == 10
            records = await svc.records(job["id"])
    assert sorted(r["url"] for r in records) == sorted(urls)


async def test_serve_checks_its_fetch_budget(tmp_path: Path) -> None:
    run = await run_shoal("serve", "--concurrency", "3", "--db", str(tmp_path / "s.db"))
    assert run.code == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "--concurrency must be >= --max-running (8)" in run.stderr
