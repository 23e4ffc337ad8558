"""The service's API against the real application under uvicorn on loopback, with real
aiohttp sites as crawl targets."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import orjson
import pytest

from shoal.service import records as records_mod
from shoal.service.pgservice import job_schema
from tests.servers import html_page, site, slow
from tests.service.conftest import Backend
from tests.service.harness import service

pytestmark = pytest.mark.timeout(60)


def chain_site(n: int) -> dict[str, str]:
    """Page i links to page i+1 and back to /: a crawl from / finds all n."""
    pages = {"/": html_page("home", ["/p/1"])}
    for i in range(1, n):
        pages[f"/p/{i}"] = html_page(f"page {i}", [f"/p/{i + 1}" if i + 1 < n else "/", "/"])
    pages["/gone"] = "x"
    return pages


async def test_fetch_job_end_to_end(tmp_path: Path, backend: Backend) -> None:
    async with site({"/a": html_page("A"), "/b": html_page("B"), "/missing": 404}) as srv, \
            service(tmp_path, **backend.kw()) as svc:
        urls = [srv.url("/a"), srv.url("/b"), srv.url("/missing"), "not a url"]
        job = await svc.start_job({"kind": "fetch", "urls": urls,
                                   "options": {"concurrency": 4, "no_robots": True}})
        assert job["state"] in ("queued", "running") and job["urls"] == 4
        done = await svc.wait_job(job["id"])
        assert done["state"] == "completed", done
        assert done["counts"]["done"] == 4
        assert done["status_classes"] == {"2xx": 2, "4xx": 1}
        assert done["errors"] == {"invalid_url": 1}
        [host] = done["hosts"]
        assert host["host"] == srv.base_url and host["pages"] == 3

        records = await svc.records(job["id"])
        assert sorted(r["url"] for r in records) == sorted(urls)
        titles = {r["url"]: r["title"] for r in records}
        assert titles[srv.url("/a")] == "A"
        # filters
        assert [r["status"] for r in await svc.records(job["id"], status_class="4xx")] == [404]
        [bad] = await svc.records(job["id"], error_kind="invalid_url")
        assert bad["url"] == "not a url"
        assert len(await svc.records(job["id"], host=srv.base_url)) == 3
        assert [r["url"] for r in await svc.records(job["id"], status_class="none")] == [
            "not a url"]
        assert len(await svc.records(job["id"], error_kind="none")) == 3
        assert await svc.records(job["id"], status_class="5xx") == []
        assert len(await svc.records(job["id"], limit=1)) == 4  # one per page, cursor followed

        _, body = await svc.call("GET", f"/v1/jobs/{job['id']}/export?format=jsonl",
                                      expect=200)
        lines = [orjson.loads(line) for line in body.splitlines()]
        assert lines == records  # the same objects as the CLI's output lines
        _, body = await svc.call("GET", f"/v1/jobs/{job['id']}/export?format=csv",
                                      expect=200)
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert len(rows) == 4 and {r["error_kind"] for r in rows} == {"", "invalid_url"}
        # the state is where the backend keeps it, and only there
        state_file = Path(svc.settings.jobs_dir) / job["id"] / "state.db"
        if backend.name == "postgres":
            assert await backend.has_schema(job_schema(job["id"]))
            assert not state_file.exists()
        else:
            assert state_file.exists()

        _, listing = await svc.call("GET", "/v1/jobs", expect=200)
        assert [j["id"] for j in listing["items"]] == [job["id"]]


async def test_crawl_job_and_listing_pages(tmp_path: Path, backend: Backend) -> None:
    async with site(chain_site(12)) as srv, service(tmp_path, **backend.kw()) as svc:
        ids = []
        for max_pages in (5, 12, 3):
            job = await svc.start_job({"kind": "crawl", "seeds": [srv.url("/")],
                                       "options": {"max_pages": max_pages, "scope": "host"}})
            ids.append(job["id"])
            done = await svc.wait_job(job["id"])
            assert done["state"] == "completed" and done["counts"]["done"] == max_pages
            records = await svc.records(job["id"])
            assert len(records) == max_pages and all("parent" in r for r in records)
        # newest first, two a page
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            params = {"limit": 2} | ({"cursor": cursor} if cursor is not None else {})
            _, page = await svc.call("GET", "/v1/jobs", params=params, expect=200)
            seen += [j["id"] for j in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]


async def test_bad_options_are_422_naming_the_field(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        cases = [
            ({"kind": "fetch", "urls": ["http://127.0.0.1/"], "options": {"per_host": 0}},
             "options.per_host"),
            ({"kind": "fetch", "urls": ["http://127.0.0.1/"], "options": {"bogus": 1}},
             "options.bogus"),
            ({"kind": "crawl", "seeds": ["http://127.0.0.1/"], "options": {"scope": "x"}},
             "options.scope"),
            ({"kind": "crawl", "seeds": ["http://127.0.0.1/"],
              "options": {"include": ["(unclosed"]}}, "--include"),
            ({"kind": "fetch", "urls": []}, "urls"),
            ({"kind": "fetch", "urls": ["http://a.test/\nhttp://b.test/"]}, "urls.0"),
            ({"kind": "zip", "urls": ["x"]}, "kind"),
        ]
        for body, field in cases:
            status, data = await svc.call("POST", "/v1/jobs", json=body)
            assert status == 422, (body, data)
            assert field in data["message"], (field, data)
        status, data = await svc.call("POST", "/v1/jobs", data=b"{nope",
                                      headers={"Content-Type": "application/json"})
        assert status == 422
        status, _ = await svc.call("GET", "/v1/jobs/0123456789ab")
        assert status == 404
        status, _ = await svc.call("GET", "/v1/jobs/../etc")
        assert status == 404


async def test_upload_a_url_file(tmp_path: Path, backend: Backend,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_mod, "EXPORT_BATCH", 64)  # the export reads in batches
    async with site({f"/{i}": html_page(f"p{i}") for i in range(300)}) as srv, \
            service(tmp_path, **backend.kw(), max_body=1024) as svc:
        body = "".join(f"{srv.url(f'/{i}')}\n" for i in range(300)).encode()
        assert len(body) > 1024  # larger than a JSON body may be: uploads have their own
        status, job = await svc.call("POST", "/v1/jobs/upload", data=body,
                                     params={"concurrency": 8, "per_host": 4},
                                     headers={"Content-Type": "text/plain"}, expect=201)
        assert job["urls"] == 300 and job["spec"]["options"]["per_host"] == 4
        done = await svc.wait_job(job["id"])
        assert done["counts"]["done"] == 300 and done["status_classes"] == {"2xx": 300}
        records = await svc.records(job["id"], limit=1000)
        _, body = await svc.call("GET", f"/v1/jobs/{job['id']}/export", expect=200)
        assert [orjson.loads(line) for line in body.splitlines()] == records
        assert len(records) == 300 and len({r["url"] for r in records}) == 300
        _, body = await svc.call("GET", f"/v1/jobs/{job['id']}/export?format=csv", expect=200)
        assert len(list(csv.DictReader(io.StringIO(body.decode())))) == 300
        status, data = await svc.call("POST", "/v1/jobs/upload", data=body,
                                      params={"per_host": -1})
        assert status == 422 and "per_host" in data["message"]
        status, data = await svc.call("POST", "/v1/jobs", json={
            "kind": "fetch", "urls": [srv.url("/1")] * 100})
        assert status == 413, data


async def test_limits_per_token_and_per_job(tmp_path: Path) -> None:
    async with site({"/slow": slow(30)}) as srv, \
            service(tmp_path, max_jobs_per_token=1, max_urls_per_job=3) as svc:
        status, data = await svc.call("POST", "/v1/jobs", json={
            "kind": "fetch", "urls": [srv.url(f"/{i}") for i in range(4)]})
        assert status == 422 and "urls" in data["message"]
        status, data = await svc.call("POST", "/v1/jobs/upload", data=b"a\nb\nc\nd\n")
        assert status == 422
        status, data = await svc.call("POST", "/v1/jobs", json={
            "kind": "crawl", "seeds": [srv.url("/")], "options": {"max_pages": 4}})
        assert status == 422 and "max_pages" in data["message"]
        job = await svc.start_job({"kind": "fetch", "urls": [srv.url("/slow")],
                                   "options": {"no_robots": True}})
        status, data = await svc.call("POST", "/v1/jobs", json={
            "kind": "fetch", "urls": [srv.url("/slow")]})
        assert status == 429, data
        await svc.call("POST", f"/v1/jobs/{job['id']}/cancel", expect=200)
        # a cancelled job no longer counts
        await svc.start_job({"kind": "fetch", "urls": [srv.url("/slow")]})


async def test_pause_resume_cancel_delete(tmp_path: Path, backend: Backend) -> None:
    gate = asyncio.Event()

    async def gated(request: object) -> object:
        from aiohttp import web

        async with asyncio.timeout(30):
            await gate.wait()
        return web.Response(text=html_page("ok"), content_type="text/html")

    routes = {f"/{i}": gated for i in range(20)}
    async with site(routes) as srv, service(tmp_path, **backend.kw(), drain_grace=0.2) as svc:
        urls = [srv.url(f"/{i}") for i in range(20)]
        job = await svc.start_job({"kind": "fetch", "urls": urls,
                                   "options": {"concurrency": 2, "per_host": 2,
                                               "no_robots": True, "retries": 0}})
        jid = job["id"]
        await svc.wait_job(jid, {"running"})
        _, paused = await svc.call("POST", f"/v1/jobs/{jid}/pause", expect=200)
        assert paused["state"] == "paused"
        done_at_pause = paused["counts"]["done"]
        assert done_at_pause < 20
        status, _ = await svc.call("POST", f"/v1/jobs/{jid}/pause")
        assert status == 200  # pausing a paused job changes nothing
        gate.set()
        _, resumed = await svc.call("POST", f"/v1/jobs/{jid}/resume", expect=200)
        assert resumed["state"] in ("queued", "running")
        done = await svc.wait_job(jid, {"completed"})
        records = await svc.records(jid)
        assert sorted(r["url"] for r in records) == sorted(urls)  # each exactly once
        assert done["counts"]["done"] == 20
        status, data = await svc.call("POST", f"/v1/jobs/{jid}/cancel")
        assert status == 409 and "completed" in data["detail"]
        status, data = await svc.call("POST", f"/v1/jobs/{jid}/resume")
        assert status == 409

        gate.clear()
        job2 = await svc.start_job({"kind": "fetch", "urls": urls[:5],
                                    "options": {"no_robots": True}})
        await svc.wait_job(job2["id"], {"running"})
        _, cancelled = await svc.call("POST", f"/v1/jobs/{job2['id']}/cancel", expect=200)
        assert cancelled["state"] == "cancelled"
        await svc.call("DELETE", f"/v1/jobs/{jid}", expect=204)
        status, _ = await svc.call("GET", f"/v1/jobs/{jid}")
        assert status == 404
        assert not (Path(svc.settings.jobs_dir) / jid).exists()
        if backend.name == "postgres":  # the job's state went with it
            assert not await backend.has_schema(job_schema(jid))
            assert await backend.has_schema(job_schema(job2["id"]))


async def test_jobs_over_max_running_wait_their_turn(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def gated(request: object) -> object:
        from aiohttp import web

        async with asyncio.timeout(30):
            await gate.wait()
        return web.Response(text=html_page("ok"), content_type="text/html")

    async with site({"/g": gated, "/a": html_page("a")}) as srv, \
            service(tmp_path, max_running=1) as svc:
        first = await svc.start_job({"kind": "fetch", "urls": [srv.url("/g")],
                                     "options": {"no_robots": True}})
        await svc.wait_job(first["id"], {"running"})
        second = await svc.start_job({"kind": "fetch", "urls": [srv.url("/a")]})
        _, job = await svc.call("GET", f"/v1/jobs/{second['id']}", expect=200)
        assert job["state"] == "queued"
        # a queued job can be paused and resumed without ever running
        _, job = await svc.call("POST", f"/v1/jobs/{second['id']}/pause", expect=200)
        assert job["state"] == "paused"
        _, job = await svc.call("POST", f"/v1/jobs/{second['id']}/resume", expect=200)
        assert job["state"] == "queued"
        gate.set()
        assert (await svc.wait_job(first["id"]))["state"] == "completed"
        done = await svc.wait_job(second["id"])
        assert done["state"] == "completed" and done["counts"]["done"] == 1
        assert done["started"] >= (await svc.wait_job(first["id"]))["finished"]
