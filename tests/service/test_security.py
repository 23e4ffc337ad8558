"""Access control and the private-network guard of the service, end to end."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path

import pytest

from shoal.client.resolver import TableResolver
from tests.conftest import run_shoal
from tests.integration.test_netguard import PRIVATE, PUBLIC
from tests.servers import html_page, redirect, site, slow
from tests.service.conftest import Backend, drop_schemas
from tests.service.harness import service

pytestmark = pytest.mark.timeout(60)


async def test_tokens_required_once_configured(tmp_path: Path, backend: Backend) -> None:
    with backend.tokens() as store:
        writer, _ = store.create(name="w")
        reader, _ = store.create(name="r", read_only=True)
        revoked, info = store.create(name="gone")
        store.revoke(info.id)
    async with site({"/": html_page("x")}) as srv, service(tmp_path, **backend.kw()) as svc:
        body = {"kind": "fetch", "urls": [srv.url("/")]}
        status, _ = await svc.call("GET", "/healthz")
        assert status == 200  # the only endpoint open to all
        for method, path in [("GET", "/v1/jobs"), ("GET", "/metrics"), ("GET", "/readyz"),
                             ("POST", "/v1/jobs"), ("GET", "/v1/jobs/0123456789ab/events")]:
            for token in (None, revoked, "shoal_" + "x" * 43, "garbage"):
                status, data = await svc.call(method, path, token=token,
                                              json=body if method == "POST" else None)
                assert status == 401, (method, path, token, data)
        status, data = await svc.call("POST", "/v1/jobs", json=body, token=reader)
        assert status == 403 and "read-only" in data["detail"]
        job = await svc.start_job(body, token=writer)
        await svc.wait_job(job["id"], token=reader)
        for action in ("pause", "resume", "cancel"):
            status, _ = await svc.call("POST", f"/v1/jobs/{job['id']}/{action}", token=reader)
            assert status == 403
        status, _ = await svc.call("DELETE", f"/v1/jobs/{job['id']}", token=reader)
        assert status == 403
        status, page = await svc.call("GET", f"/v1/jobs/{job['id']}/records", token=reader)
        assert status == 200 and len(page["items"]) == 1
        # a revoked token stops working within a second (checks are cached that long)
        with backend.tokens() as store:
            store.revoke(writer)
        revoked_at = time.monotonic()
        while (await svc.call("GET", "/v1/jobs", token=writer))[0] != 401:
            assert time.monotonic() - revoked_at < 3, "the revoked token still works"
            await asyncio.sleep(0.05)


async def test_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    run = await run_shoal("serve", "--host", "0.0.0.0", "--port", "0", "--db", db)
    assert run.code == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "not loopback" in run.stderr and "shoal token create" in run.stderr
    run = await run_shoal("serve", "--allow-net", "nope", "--db", db)
    assert run.code == 2 and "--allow-net" in run.stderr and run.stderr.count("\n") == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        run = await run_shoal("serve", "--port", port, "--db", db)
    assert run.code == 2 and "cannot listen" in run.stderr and run.stderr.count("\n") == 1


async def test_request_bodies_are_limited(tmp_path: Path) -> None:
    async with service(tmp_path, max_body=2000, max_upload=5000) as svc:
        big = {"kind": "fetch", "urls": ["http://127.0.0.1/" + "x" * 100] * 40}
        status, _ = await svc.call("POST", "/v1/jobs", json=big)
        assert status == 413

        async def chunks() -> object:  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b"http://127.0.0.1/" + b"y" * 1000 + b"\n"

        status, _ = await svc.call("POST", "/v1/jobs/upload", data=chunks())
        assert status == 413
        assert list(Path(svc.settings.jobs_dir).iterdir()) == []  # nothing left behind


async def test_guard_is_on_by_default(tmp_path: Path) -> None:
    async with site({"/": html_page("x", ["/a"]), "/a": "a"}) as srv, \
            service(tmp_path, allow_net=()) as svc:
        job = await svc.start_job({"kind": "crawl", "seeds": [srv.url("/")],
                                   "options": {"sitemaps": True}})
        done = await svc.wait_job(job["id"])
        assert done["errors"] == {"blocked_address": 1}
        [record] = await svc.records(job["id"])
        assert record["error"]["kind"] == "blocked_address"
        assert srv.log.count() == 0  # not the page, not robots.txt, not a sitemap


async def test_guard_with_an_injected_resolver(tmp_path: Path) -> None:
    async with site({"/secret": html_page("secret")}, host=PRIVATE) as private, \
            site({"/ok": html_page("ok"), "/go": redirect(private.url("/secret")),
                  **{f"/r/{i}": html_page(str(i)) for i in range(3)}}, host=PUBLIC) as public:
        resolver = TableResolver({  # plain data: it reaches the job's process
            "good.test": [[PUBLIC]],
            "evil.test": [[PRIVATE]],
            "rebind.test": [[PUBLIC], [PRIVATE]],  # the first lookup, then every other
        })
        port = public.port
        urls = [f"http://good.test:{port}/ok", f"http://evil.test:{port}/ok",
                f"http://good.test:{port}/go",
                *[f"http://rebind.test:{port}/r/{i}" for i in range(3)]]
        async with service(tmp_path, allow_net=(f"{PUBLIC}/32",), resolver=resolver) as svc:
            job = await svc.start_job({"kind": "fetch", "urls": urls, "options": {
                "no_robots": True, "concurrency": 1, "per_host": 1}})
            await svc.wait_job(job["id"])
            got = {r["url"]: r for r in await svc.records(job["id"])}
    assert got[urls[0]]["status"] == 200
    assert got[urls[1]]["error"]["kind"] == "blocked_address"
    assert got[urls[2]]["error"]["kind"] == "blocked_address"  # the redirect's hop
    assert got[urls[2]]["redirects"] == [private.url("/secret")]
    rebound = [got[u] for u in urls[3:]]
    assert rebound[0]["status"] == 200
    for r in rebound[1:]:
        assert r["status"] == 200 or r["error"]["kind"] == "blocked_address"
    assert private.log.count() == 0
    assert public.log.count(path_prefix="/r/") == sum(1 for r in rebound if r["status"] == 200)


async def test_a_slow_host_does_not_starve_another_job(tmp_path: Path) -> None:
    async with site({f"/s/{i}": slow(120) for i in range(50)}) as tarpit, \
            site({f"/f/{i}": html_page(str(i)) for i in range(200)}) as fast, \
            service(tmp_path) as svc:
        stuck = await svc.start_job({"kind": "fetch", "options": {
            "no_robots": True, "concurrency": 50, "per_host": 50, "timeout": 120},
            "urls": [tarpit.url(f"/s/{i}") for i in range(50)]})
        await svc.wait_job(stuck["id"], {"running"})
        async with asyncio.timeout(10):
            await tarpit.log.wait_started(50)
        quick = await svc.start_job({"kind": "fetch", "options": {"no_robots": True},
                                     "urls": [fast.url(f"/f/{i}") for i in range(200)]})
        done = await svc.wait_job(quick["id"], timeout=15)
        assert done["state"] == "completed" and done["status_classes"] == {"2xx": 200}
        # the tarpit job is still held by its slow host: none of its pages is done (its
        # statistics are a snapshot up to STATS_TTL old: poll until one shows the requests)
        deadline = time.monotonic() + 5
        while True:
            _, still = await svc.call("GET", f"/v1/jobs/{stuck['id']}", expect=200)
            assert still["state"] == "running" and still["counts"]["done"] == 0, still
            if still["counts"]["in_flight"] > 0:
                break
            assert time.monotonic() < deadline, still
            await asyncio.sleep(0.05)


async def test_a_lost_database_connection_is_a_503_not_a_crash(tmp_path: Path) -> None:
    import asyncpg

    from tests.conftest import postgres_url

    url = postgres_url()
    backend = Backend("postgres", tmp_path, url, "shoal-service-t" + uuid.uuid4().hex[:10])
    try:
        async with site({"/": html_page("x")}) as srv, \
                service(tmp_path, **backend.kw()) as svc:
            job = await svc.start_job({"kind": "fetch", "urls": [srv.url("/")]})
            await svc.wait_job(job["id"])
            conn = await asyncpg.connect(url)
            try:  # every other session of this database ends: the service's pools too
                await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = current_database() "
                                   "AND pid <> pg_backend_pid()")
            finally:
                await conn.close()
            statuses = []
            for _ in range(20):
                status, data = await svc.call("GET", f"/v1/jobs/{job['id']}/records")
                statuses.append(status)
                if status == 200:
                    break
                assert status == 503 and "database" in data["detail"], (status, data)
            assert statuses[-1] == 200 and len(data["items"]) == 1, statuses
            # and the runner still runs jobs
            again = await svc.start_job({"kind": "fetch", "urls": [srv.url("/")]})
            assert (await svc.wait_job(again["id"]))["state"] == "completed"
    finally:
        await drop_schemas(url, backend)
